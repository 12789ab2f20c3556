//! Leader election on a `coordination.k8s.io/v1` Lease, ported from client-go's `tools/leaderelection` (non-coordinated, `LeaseLock`): this module owns the Lease's read-modify-write, the acquire/renew/release loop and the leader status it reports.
//!
//! As in client-go, a candidate never trusts the timestamps written in the Lease: it only notes,
//! on its own monotonic clock, *when it last saw the record change* (`observedTime`), and treats a
//! foreign holder's lease as expired once `leaseDurationSeconds` have passed since then without a
//! change. Clock skew between nodes therefore does not matter, only clock *rate* skew does, which
//! `lease_duration > renew_deadline` absorbs. Like client-go this is not fencing: it makes two
//! leaders unlikely, not impossible (a paused process may act on a lease it has lost).
//!
//! Use: build a [`LeaderElector`] from a [`LeaderElectionConfig`], keep a [`LeaderHandle`] for
//! status reporting, and spawn [`LeaderElector::run`]; sync only while its `leading` channel says
//! `true`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// client-go's `JitterFactor`: acquire attempts are `retry_period` apart plus up to 120 % more, so
/// candidates that start together do not keep colliding.
pub const JITTER_FACTOR: f64 = 1.2;

/// Settings of one election; the defaults are kube-controller-manager's
/// (`--leader-elect-lease-duration=15s`, `--leader-elect-renew-deadline=10s`,
/// `--leader-elect-retry-period=2s`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity, unique among all candidates (e.g. the pod name).
    pub identity: String,
    /// How long a non-leader waits, from the last change of the record it saw, before taking the
    /// lease over. Written to the Lease as `leaseDurationSeconds`, so whole seconds only.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal before it gives up.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire (jittered by [`JITTER_FACTOR`]) or renew.
    pub retry_period: Duration,
    /// Release the lease (empty holder, 1 s duration) when stopped while leading, so a successor
    /// need not wait out the lease. Only safe if the caller has stopped all leader work first.
    pub release_on_cancel: bool,
}

impl LeaderElectionConfig {
    /// A config for Lease `namespace/name` and `identity` with kube-controller-manager's timings
    /// (15 s / 10 s / 2 s) and `release_on_cancel` off (client-go's default).
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            release_on_cancel: false,
        }
    }

    /// Checks what client-go's `NewLeaderElector` checks (`lease_duration > renew_deadline >
    /// retry_period * 1.2`, all positive, identity non-empty), plus what a Lease can store.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |reason: String| Err(ConfigError(reason));
        if self.lease_duration <= self.renew_deadline {
            return fail(format!(
                "lease_duration ({:?}) must be greater than renew_deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        // client-go's rule: the deadline must outlast a (jittered) retry period, so that a single
        // failed renewal is never fatal.
        if self.renew_deadline <= self.retry_period.mul_f64(JITTER_FACTOR) {
            return fail(format!(
                "renew_deadline ({:?}) must be greater than retry_period ({:?}) * {JITTER_FACTOR}",
                self.renew_deadline, self.retry_period
            ));
        }
        for (field, value) in [
            ("lease_duration", self.lease_duration),
            ("renew_deadline", self.renew_deadline),
            ("retry_period", self.retry_period),
        ] {
            if value.is_zero() {
                return fail(format!("{field} must be greater than zero"));
            }
        }
        // Not in client-go, which silently truncates: other candidates expire the lease after the
        // *stored* whole seconds, so 2.5 s would be honoured as 2 s, possibly below renew_deadline.
        if self.lease_duration.subsec_nanos() != 0 || self.lease_duration.as_secs() > i32::MAX as u64 {
            return fail(format!(
                "lease_duration ({:?}) must be a whole number of seconds (the Lease stores leaseDurationSeconds)",
                self.lease_duration
            ));
        }
        for (field, value) in [("namespace", &self.namespace), ("name", &self.name), ("identity", &self.identity)] {
            if value.is_empty() {
                return fail(format!("{field} must not be empty"));
            }
        }
        Ok(())
    }

    fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A [`LeaderElectionConfig`] that [`LeaderElectionConfig::validate`] rejected; the message says
/// which rule, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid leader election config: {0}")]
pub struct ConfigError(String);

/// A cheap, cloneable view of an elector's state for health and readiness reporting.
#[derive(Clone, Debug)]
pub struct LeaderHandle {
    identity: Arc<str>,
    state: Arc<Mutex<HandleState>>,
}

#[derive(Debug, Default)]
struct HandleState {
    leading: bool,
    holder: Option<String>,
}

impl LeaderHandle {
    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether the run loop last reported `true` on its `leading` channel. Stays as it was if the
    /// run task is aborted rather than stopped.
    pub fn is_leader(&self) -> bool {
        self.lock().leading
    }

    /// The holder identity in the last Lease record this elector read or wrote (client-go's
    /// `GetLeader`); `None` before the first read, or when the lease was released.
    pub fn holder(&self) -> Option<String> {
        self.lock().holder.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HandleState> {
        // The state is two plain fields, always consistent: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One candidate in a Lease election. Create with [`LeaderElector::new`], then [`run`](Self::run).
pub struct LeaderElector {
    config: LeaderElectionConfig,
    leases: Api<Lease>,
    handle: LeaderHandle,
    /// Per-request timeout, client-go's `max(1s, renewDeadline/2)` (`NewFromKubeconfig`), so one
    /// hung request cannot use up the whole renew deadline.
    request_timeout: Duration,
    /// The record last read or written and when it changed on our clock (client-go's
    /// `observedRecord` + `observedTime`).
    observed: Option<Observed>,
    /// The Lease object last read or written: its resourceVersion makes our update conditional.
    lease: Option<Lease>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .field("observed", &self.observed)
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// A candidate for the Lease named in `config`, using `client` (which needs get, create and
    /// update on `leases` in that namespace). Fails if `config` is invalid.
    pub fn new(client: kube::Client, config: LeaderElectionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            leases: Api::namespaced(client, &config.namespace),
            handle: LeaderHandle { identity: config.identity.as_str().into(), state: Default::default() },
            request_timeout: (config.renew_deadline / 2).max(Duration::from_secs(1)),
            observed: None,
            lease: None,
            config,
        })
    }

    /// A handle reporting this elector's state; stays valid after `run` returns.
    pub fn handle(&self) -> LeaderHandle {
        self.handle.clone()
    }

    /// Runs the election until `stop` turns `true` (or its sender is dropped).
    ///
    /// Sends `true` on `leading` once the lease is acquired and `false` as soon as leadership
    /// ends: no successful renewal for `renew_deadline`, or another holder seen in the record.
    /// After a loss it goes back to acquiring (client-go's `Run` returns instead, and
    /// kube-controller-manager exits). On stop it sends `false` first, then, if leading and
    /// `release_on_cancel`, releases the lease; `leading` is `false` when it returns.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, leading: watch::Sender<bool>) {
        let lease = self.config.describe();
        let identity = self.config.identity.clone();
        info!(%identity, %lease, "attempting to acquire the leader lease");
        loop {
            let Some(acquired_at) = self.acquire(&mut stop).await else { break };
            self.set_leading(&leading, true);
            info!(%identity, %lease, "became leader");
            match self.renew(&mut stop, acquired_at).await {
                Renewal::Lost(reason) => {
                    self.set_leading(&leading, false);
                    warn!(%identity, %lease, %reason, "lost the lease");
                }
                Renewal::Stopped => {
                    // Stop the caller's leader work before a successor can take over.
                    self.set_leading(&leading, false);
                    info!(%identity, %lease, "stopped leading");
                    if self.config.release_on_cancel && self.release().await {
                        info!(%identity, %lease, "released the lease");
                    }
                    break;
                }
            }
        }
        self.set_leading(&leading, false);
    }

    fn set_leading(&self, leading: &watch::Sender<bool>, value: bool) {
        self.handle.lock().leading = value;
        leading.send_if_modified(|current| std::mem::replace(current, value) != value);
    }

    /// client-go's `acquire`: tries at once, then every jittered `retry_period` (measured after
    /// each attempt, `sliding`). Returns when the attempt that succeeded started, or `None` on stop.
    async fn acquire(&mut self, stop: &mut watch::Receiver<bool>) -> Option<Instant> {
        loop {
            let started = Instant::now();
            let attempt = tokio::select! {
                biased;
                () = stopped(stop) => return None,
                attempt = self.try_acquire_or_renew() => attempt,
            };
            match attempt {
                Attempt::Holding => return Some(started),
                Attempt::HeldBy(holder) => {
                    let (identity, lease) = (&self.config.identity, self.config.describe());
                    debug!(%identity, %lease, %holder, "lease is held by another candidate and has not expired");
                }
                Attempt::Failed(error) => self.log_failure("acquire", &error),
            }
            let pause = jitter(self.config.retry_period, JITTER_FACTOR, crate::random::fraction());
            tokio::select! {
                biased;
                () = stopped(stop) => return None,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// client-go's `renew`: renews every `retry_period`; leadership ends once `renew_deadline` has
    /// passed since the start of the last successful renewal.
    ///
    /// Why from the *start*: other candidates start their lease-duration countdown no earlier than
    /// the moment our write lands, which is after we sent it, so giving up `renew_deadline` after
    /// sending keeps us `lease_duration - renew_deadline` clear of any successor. (client-go
    /// restarts its deadline `retry_period` after each success, allowing up to `retry_period`
    /// more; this is the stricter reading.) Also unlike client-go, which keeps retrying until the
    /// deadline, reading a record held by someone else ends leadership at once: that record is
    /// exactly what client-go's `IsLeader()` already reports as lost.
    async fn renew(&mut self, stop: &mut watch::Receiver<bool>, acquired_at: Instant) -> Renewal {
        let renew_deadline = self.config.renew_deadline;
        let mut deadline = acquired_at + renew_deadline;
        loop {
            let next = (Instant::now() + self.config.retry_period).min(deadline);
            tokio::select! {
                biased;
                () = stopped(stop) => return Renewal::Stopped,
                () = tokio::time::sleep_until(next) => {}
            }
            let started = Instant::now();
            if started >= deadline {
                return Renewal::Lost(format!("no successful renewal within the renew deadline ({renew_deadline:?})"));
            }
            let attempt = tokio::select! {
                biased;
                () = stopped(stop) => return Renewal::Stopped,
                attempt = tokio::time::timeout(deadline - started, self.try_acquire_or_renew()) => attempt,
            };
            match attempt {
                Ok(Attempt::Holding) => deadline = started + renew_deadline,
                Ok(Attempt::HeldBy(holder)) => return Renewal::Lost(format!("the lease is now held by {holder:?}")),
                Ok(Attempt::Failed(error)) => self.log_failure("renew", &error),
                Err(_) => self.log_failure("renew", &LeaseError::Timeout(deadline - started)),
            }
        }
    }

    fn log_failure(&self, action: &str, error: &LeaseError) {
        let (identity, lease) = (&self.config.identity, self.config.describe());
        if error.is_conflict() {
            // Someone wrote the Lease between our read and our update: not acquired this round.
            debug!(%identity, %lease, %error, "conflict while trying to {action} the lease");
        } else {
            warn!(%identity, %lease, %error, "failed to {action} the lease");
        }
    }

    /// client-go's `tryAcquireOrRenew`: one optimistic read-modify-write of the Lease.
    async fn try_acquire_or_renew(&mut self) -> Attempt {
        // 1. Fast path: a leader whose lease is still valid updates the object it last wrote,
        //    skipping the GET; a conflict just falls back to the slow path.
        if let Some(observed) = &self.observed
            && observed.record.holder_identity == self.config.identity
            && observed.is_valid_at(Instant::now())
        {
            let record = LeaseRecord {
                holder_identity: self.config.identity.clone(),
                lease_duration_seconds: self.config.lease_duration_seconds(),
                acquire_time: observed.record.acquire_time,
                renew_time: Some(Timestamp::now()),
                lease_transitions: observed.record.lease_transitions,
            };
            match self.update(record).await {
                Ok(()) => return Attempt::Holding,
                Err(error) => {
                    let (identity, lease) = (&self.config.identity, self.config.describe());
                    debug!(%identity, %lease, %error, "failed to update the lease optimistically, using the slow path");
                }
            }
        }

        // 2. Read the Lease, or create it holding it ourselves.
        let lease = match bounded(self.request_timeout, self.leases.get_opt(&self.config.name)).await {
            Err(error) => return Attempt::Failed(error),
            Ok(Some(lease)) => lease,
            Ok(None) => {
                let record =
                    LeaseRecord::initial(&self.config.identity, self.config.lease_duration_seconds(), Timestamp::now());
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(record.to_spec()),
                };
                return match bounded(self.request_timeout, self.leases.create(&PostParams::default(), &lease)).await {
                    Ok(created) => {
                        self.remember_write(created);
                        Attempt::Holding
                    }
                    Err(error) => Attempt::Failed(error),
                };
            }
        };

        // 3. Note when the record changed, then decide on our clock.
        let now = Instant::now();
        let record = LeaseRecord::from_spec(lease.spec.as_ref());
        self.lease = Some(lease);
        let observed = Observed::update(self.observed.take(), record, now);
        self.set_observed(observed);
        let observed = self.observed.as_ref().expect("set just above");
        match decide(observed, &self.config.identity, self.config.lease_duration_seconds(), now, Timestamp::now()) {
            Decision::Wait { holder } => Attempt::HeldBy(holder),
            // 4. Write it back, conditional on the resourceVersion we read.
            Decision::Renew(record) | Decision::Take(record) => match self.update(record).await {
                Ok(()) => Attempt::Holding,
                Err(error) => Attempt::Failed(error),
            },
        }
    }

    /// Replaces the spec of the Lease last read or written with `record`; the update carries that
    /// object's resourceVersion, so it fails with 409 Conflict if anyone wrote in between.
    async fn update(&mut self, record: LeaseRecord) -> Result<(), LeaseError> {
        let mut lease = self.lease.clone().ok_or(LeaseError::NotRead)?;
        // Like client-go's LeaderElectionRecordToLeaseSpec, the whole spec is ours: the
        // coordinated-election fields (strategy, preferredHolder) are cleared.
        lease.spec = Some(record.to_spec());
        let updated =
            bounded(self.request_timeout, self.leases.replace(&self.config.name, &PostParams::default(), &lease))
                .await?;
        self.remember_write(updated);
        Ok(())
    }

    /// After our own successful write the observed time restarts unconditionally (client-go's
    /// `setObservedRecord` after `Update`).
    fn remember_write(&mut self, lease: Lease) {
        let record = LeaseRecord::from_spec(lease.spec.as_ref());
        self.lease = Some(lease);
        self.set_observed(Observed { record, at: Instant::now() });
    }

    fn set_observed(&mut self, observed: Observed) {
        let holder = Some(observed.record.holder_identity.clone()).filter(|h| !h.is_empty());
        self.observed = Some(observed);
        let previous = std::mem::replace(&mut self.handle.lock().holder, holder.clone());
        // client-go's maybeReportTransition / OnNewLeader.
        if previous != holder
            && let Some(holder) = holder
        {
            let (identity, lease) = (&self.config.identity, self.config.describe());
            info!(%identity, %lease, %holder, "new leader observed");
        }
    }

    /// client-go's `release`: within `renew_deadline`, rewrite the lease as free (empty holder,
    /// 1 s duration, times now, transitions kept), retrying on conflict. Returns whether it wrote
    /// the release.
    async fn release(&mut self) -> bool {
        let (identity, lease) = (self.config.identity.clone(), self.config.describe());
        let deadline = self.config.renew_deadline;
        let attempt = async {
            loop {
                let current = match bounded(self.request_timeout, self.leases.get_opt(&self.config.name)).await {
                    Ok(Some(current)) => current,
                    Ok(None) => {
                        info!(%identity, %lease, "lease not found, nothing to release");
                        return false;
                    }
                    Err(error) => {
                        warn!(%identity, %lease, %error, "failed to read the lease to release it");
                        return false;
                    }
                };
                let record = LeaseRecord::from_spec(current.spec.as_ref());
                self.lease = Some(current);
                // client-go checks its cached record here; the fresh one avoids freeing a lease
                // that a successor took while we were stopping.
                if record.holder_identity != self.config.identity {
                    let holder = &record.holder_identity;
                    info!(%identity, %lease, %holder, "the lease is no longer ours, nothing to release");
                    return false;
                }
                match self.update(record.released(Timestamp::now())).await {
                    Ok(()) => return true,
                    Err(error) if error.is_conflict() => {
                        // A renewal cancelled by the stop may have landed after all: read again.
                        debug!(%identity, %lease, "conflict while releasing the lease, retrying");
                    }
                    Err(error) => {
                        warn!(%identity, %lease, %error, "failed to release the lease");
                        return false;
                    }
                }
            }
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(released) => released,
            Err(_) => {
                warn!(%identity, %lease, "timed out releasing the lease");
                false
            }
        }
    }
}

/// How the renew loop ended.
enum Renewal {
    /// Leadership lost; the reason, for the log.
    Lost(String),
    /// `stop` turned true while leading.
    Stopped,
}

/// The result of one [`LeaderElector::try_acquire_or_renew`].
enum Attempt {
    /// We hold the lease now (created, taken or renewed).
    Holding,
    /// Another candidate holds an unexpired lease.
    HeldBy(String),
    /// The request failed (conflict, API error, timeout): not acquired this round.
    Failed(LeaseError),
}

#[derive(Debug, thiserror::Error)]
enum LeaseError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("the lease has not been read yet")]
    NotRead,
}

impl LeaseError {
    fn is_conflict(&self) -> bool {
        matches!(self, LeaseError::Api(kube::Error::Api(status)) if status.is_conflict())
    }
}

/// `fut` with a timeout, its error as a [`LeaseError`].
async fn bounded<T>(timeout: Duration, fut: impl Future<Output = Result<T, kube::Error>>) -> Result<T, LeaseError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result.map_err(LeaseError::from),
        Err(_) => Err(LeaseError::Timeout(timeout)),
    }
}

/// Resolves once `stop` holds `true` or its sender is gone (a dropped sender counts as stop).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&stop| stop).await;
}

/// client-go's `wait.Jitter`: `period` plus `unit * factor * period`, with `unit` in `[0, 1)`.
fn jitter(period: Duration, factor: f64, unit: f64) -> Duration {
    period + period.mul_f64(unit.clamp(0.0, 1.0) * factor)
}

// === pure core ===

/// The leader-election fields of a Lease's spec (client-go's `LeaderElectionRecord`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct LeaseRecord {
    /// Empty when nobody holds the lease (never held, or released).
    holder_identity: String,
    lease_duration_seconds: i32,
    acquire_time: Option<Timestamp>,
    renew_time: Option<Timestamp>,
    lease_transitions: i32,
}

impl LeaseRecord {
    /// The record a candidate creates a missing Lease with.
    fn initial(identity: &str, lease_duration_seconds: i32, now: Timestamp) -> Self {
        Self {
            holder_identity: identity.to_string(),
            lease_duration_seconds,
            acquire_time: Some(now),
            renew_time: Some(now),
            lease_transitions: 0,
        }
    }

    /// client-go's `tryRelease` record: nobody holds it, it expires after one second for
    /// candidates that still wait on a duration, and the transition count is kept.
    fn released(&self, now: Timestamp) -> Self {
        Self {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(now),
            renew_time: Some(now),
            lease_transitions: self.lease_transitions,
        }
    }

    fn from_spec(spec: Option<&LeaseSpec>) -> Self {
        let Some(spec) = spec else { return Self::default() };
        Self {
            holder_identity: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            lease_transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder_identity.clone()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.lease_transitions),
            ..Default::default()
        }
    }
}

/// A record together with the instant, on our monotonic clock, at which we first saw it in its
/// current form (client-go's `observedRecord` and `observedTime`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    record: LeaseRecord,
    at: Instant,
}

impl Observed {
    /// The observation after reading `record` at `now`: the observed time only moves when the
    /// record differs from the previous one. A live holder changes `renewTime` at every renewal,
    /// so "unchanged for `leaseDurationSeconds` of our time" means the holder stopped renewing,
    /// whatever its clock says the time is.
    fn update(previous: Option<Observed>, record: LeaseRecord, now: Instant) -> Observed {
        match previous {
            Some(previous) if previous.record == record => previous,
            _ => Observed { record, at: now },
        }
    }

    /// client-go's `isLeaseValid`: `observedTime + leaseDurationSeconds` (the *record's* duration,
    /// as its holder configured it) is still after `now`.
    fn is_valid_at(&self, now: Instant) -> bool {
        let duration = Duration::from_secs(u64::try_from(self.record.lease_duration_seconds).unwrap_or(0));
        self.at + duration > now
    }
}

/// What to do after reading the record (steps 3 and 4 of client-go's `tryAcquireOrRenew`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    /// Someone else holds an unexpired lease: try again later.
    Wait {
        /// The current holder.
        holder: String,
    },
    /// We hold it: write this record (acquire time and transitions kept, renew time now).
    Renew(LeaseRecord),
    /// It is free (empty holder) or expired: write this record (transitions + 1, acquired now).
    Take(LeaseRecord),
}

/// Decides, from the observation just made, whether `identity` waits, renews or takes the lease.
/// `now` is our monotonic clock (for expiry), `wall_now` the time written into the record.
fn decide(
    observed: &Observed,
    identity: &str,
    lease_duration_seconds: i32,
    now: Instant,
    wall_now: Timestamp,
) -> Decision {
    let current = &observed.record;
    if current.holder_identity == identity {
        // Even past its expiry our own lease is ours to renew: nobody else wrote in between, or
        // the record would name them.
        return Decision::Renew(LeaseRecord {
            holder_identity: identity.to_string(),
            lease_duration_seconds,
            acquire_time: current.acquire_time,
            renew_time: Some(wall_now),
            lease_transitions: current.lease_transitions,
        });
    }
    // An empty holder is a released lease, free at once (client-go since Kubernetes 1.14).
    if !current.holder_identity.is_empty() && observed.is_valid_at(now) {
        return Decision::Wait { holder: current.holder_identity.clone() };
    }
    Decision::Take(LeaseRecord {
        holder_identity: identity.to_string(),
        lease_duration_seconds,
        acquire_time: Some(wall_now),
        renew_time: Some(wall_now),
        lease_transitions: current.lease_transitions.saturating_add(1),
    })
}

// === tests ===

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";
    const OTHER: &str = "other";

    fn wall(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn record(holder: &str, duration: i32, renewed: i64, transitions: i32) -> LeaseRecord {
        LeaseRecord {
            holder_identity: holder.to_string(),
            lease_duration_seconds: duration,
            acquire_time: Some(wall(1_000)),
            renew_time: Some(wall(renewed)),
            lease_transitions: transitions,
        }
    }

    fn observed(record: LeaseRecord, at: Instant) -> Observed {
        Observed { record, at }
    }

    #[test]
    fn a_foreign_lease_is_valid_until_its_duration_has_passed_since_we_saw_it_change() {
        let t0 = Instant::now();
        let seen = observed(record(OTHER, 15, 2_000, 3), t0);
        let decide_at = |elapsed: u64| decide(&seen, ME, 15, t0 + Duration::from_secs(elapsed), wall(9_999));
        assert_eq!(decide_at(0), Decision::Wait { holder: OTHER.into() });
        assert_eq!(decide_at(14), Decision::Wait { holder: OTHER.into() });
        // client-go: valid while observedTime + duration is strictly After(now).
        let Decision::Take(taken) = decide_at(15) else { panic!("expired at exactly the lease duration") };
        assert_eq!(
            taken,
            LeaseRecord {
                holder_identity: ME.into(),
                lease_duration_seconds: 15,
                acquire_time: Some(wall(9_999)),
                renew_time: Some(wall(9_999)),
                lease_transitions: 4,
            }
        );
    }

    #[test]
    fn expiry_uses_the_duration_in_the_record_not_ours() {
        let t0 = Instant::now();
        let seen = observed(record(OTHER, 60, 2_000, 0), t0);
        assert_eq!(
            decide(&seen, ME, 15, t0 + Duration::from_secs(30), wall(0)),
            Decision::Wait { holder: OTHER.into() }
        );
        assert!(matches!(decide(&seen, ME, 15, t0 + Duration::from_secs(60), wall(0)), Decision::Take(_)));
    }

    #[test]
    fn wall_clock_times_in_the_record_do_not_matter_only_when_we_saw_it_change() {
        // A holder whose clock is hours behind (renewTime long past) is still alive to us as long
        // as the record keeps changing.
        let t0 = Instant::now();
        let mut seen = observed(record(OTHER, 15, 1, 0), t0);
        for step in 1..10u64 {
            let now = t0 + Duration::from_secs(10 * step);
            seen = Observed::update(Some(seen), record(OTHER, 15, 1 + step as i64, 0), now);
            assert_eq!(seen.at, now);
            assert_eq!(decide(&seen, ME, 15, now, wall(1_000_000)), Decision::Wait { holder: OTHER.into() });
        }
    }

    #[test]
    fn an_unchanged_record_keeps_its_observed_time() {
        let t0 = Instant::now();
        let first = Observed::update(None, record(OTHER, 15, 5, 0), t0);
        assert_eq!(first.at, t0);
        let later = t0 + Duration::from_secs(16);
        let again = Observed::update(Some(first), record(OTHER, 15, 5, 0), later);
        assert_eq!(again.at, t0, "re-reading the same record must not extend the lease");
        assert!(matches!(decide(&again, ME, 15, later, wall(0)), Decision::Take(_)));
        let changed = Observed::update(Some(again), record(OTHER, 15, 6, 0), later);
        assert_eq!(changed.at, later);
    }

    #[test]
    fn our_own_lease_is_renewed_keeping_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let seen = observed(record(ME, 15, 2_000, 7), t0);
        let expected = LeaseRecord {
            holder_identity: ME.into(),
            lease_duration_seconds: 15,
            acquire_time: Some(wall(1_000)),
            renew_time: Some(wall(3_000)),
            lease_transitions: 7,
        };
        assert_eq!(decide(&seen, ME, 15, t0, wall(3_000)), Decision::Renew(expected.clone()));
        // Even once expired on our clock: the record still names us, so nobody took it.
        assert_eq!(decide(&seen, ME, 15, t0 + Duration::from_secs(100), wall(3_000)), Decision::Renew(expected));
    }

    #[test]
    fn a_released_lease_is_free_at_once_and_counts_a_transition() {
        let t0 = Instant::now();
        let released = record(OTHER, 15, 2_000, 2).released(wall(2_001));
        assert_eq!(released.holder_identity, "");
        assert_eq!(released.lease_duration_seconds, 1);
        assert_eq!(released.lease_transitions, 2, "release keeps the transition count");
        assert_eq!(released.acquire_time, Some(wall(2_001)));
        let seen = observed(released, t0);
        let Decision::Take(taken) = decide(&seen, ME, 15, t0, wall(2_002)) else { panic!("released lease not taken") };
        assert_eq!(taken.lease_transitions, 3);
        assert_eq!(taken.acquire_time, Some(wall(2_002)));
        // An empty Lease (no spec fields) is free too.
        let empty = observed(LeaseRecord::from_spec(None), t0);
        let Decision::Take(taken) = decide(&empty, ME, 15, t0, wall(5)) else { panic!("empty lease not taken") };
        assert_eq!(taken.lease_transitions, 1);
    }

    #[test]
    fn a_created_lease_starts_with_zero_transitions_and_round_trips_through_the_spec() {
        let initial = LeaseRecord::initial(ME, 15, wall(42));
        assert_eq!(initial, LeaseRecord { acquire_time: Some(wall(42)), ..record(ME, 15, 42, 0) });
        assert_eq!(LeaseRecord::from_spec(Some(&initial.to_spec())), initial);
        let spec = initial.to_spec();
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.strategy, None);
    }

    fn config() -> LeaderElectionConfig {
        LeaderElectionConfig::new("ns", "lease", ME)
    }

    #[test]
    fn config_defaults_are_kube_controller_managers_and_valid() {
        let c = config();
        assert_eq!(
            (c.lease_duration, c.renew_deadline, c.retry_period),
            (Duration::from_secs(15), Duration::from_secs(10), Duration::from_secs(2))
        );
        assert!(!c.release_on_cancel);
        c.validate().unwrap();
        let fast = LeaderElectionConfig {
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1500),
            retry_period: Duration::from_millis(300),
            ..config()
        };
        fast.validate().unwrap();
    }

    #[test]
    fn config_validation_follows_client_go() {
        let ms = Duration::from_millis;
        let err = |c: LeaderElectionConfig| c.validate().unwrap_err().to_string();
        let with = |lease: u64, renew: u64, retry: u64| LeaderElectionConfig {
            lease_duration: ms(lease),
            renew_deadline: ms(renew),
            retry_period: ms(retry),
            ..config()
        };
        assert_eq!(
            err(with(10_000, 10_000, 2_000)),
            "invalid leader election config: lease_duration (10s) must be greater than renew_deadline (10s)"
        );
        assert!(
            err(with(15_000, 2_400, 2_000))
                .contains("renew_deadline (2.4s) must be greater than retry_period (2s) * 1.2")
        );
        with(15_000, 2_401, 2_000).validate().unwrap();
        assert!(err(with(15_000, 10_000, 0)).contains("retry_period must be greater than zero"));
        assert!(err(with(2_500, 2_000, 1_000)).contains("whole number of seconds"));
        assert!(
            err(LeaderElectionConfig { identity: String::new(), ..config() }).contains("identity must not be empty")
        );
        for message in [err(with(1_000, 1_000, 1)), err(with(15_000, 10_000, 0))] {
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn jitter_adds_up_to_the_factor() {
        let period = Duration::from_secs(2);
        assert_eq!(jitter(period, JITTER_FACTOR, 0.0), period);
        assert_eq!(jitter(period, JITTER_FACTOR, 0.5), Duration::from_millis(3_200));
        for _ in 0..100 {
            let unit = crate::random::fraction();
            assert!((0.0..1.0).contains(&unit), "{unit}");
            let d = jitter(period, JITTER_FACTOR, unit);
            assert!(d >= period && d < Duration::from_millis(4_400), "{d:?}");
        }
        assert_ne!(crate::random::fraction(), crate::random::fraction());
    }

    #[tokio::test]
    async fn a_dropped_stop_sender_counts_as_stop() {
        let (tx, mut rx) = watch::channel(false);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(1), stopped(&mut rx)).await.unwrap();
        let (tx, mut rx) = watch::channel(false);
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), stopped(&mut rx)).await.unwrap();
    }
}
