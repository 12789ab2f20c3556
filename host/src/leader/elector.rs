//! The candidate's loop: acquire, then renew until the deadline passes or a stop, then maybe release.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::telemetry::Throttle;

use super::{
    ConfigError, JITTER_FACTOR, LeaderElectionConfig, LeaderHandle,
    lease::{Attempt, LeaseError},
    record::Observed,
};

/// One candidate in a Lease election. Create with [`LeaderElector::new`], then [`run`](Self::run).
pub struct LeaderElector {
    pub(super) config: LeaderElectionConfig,
    pub(super) leases: Api<Lease>,
    pub(super) handle: LeaderHandle,
    /// Per-request timeout, client-go's `max(1s, renewDeadline/2)` (`NewFromKubeconfig`), so one
    /// hung request cannot use up the whole renew deadline.
    pub(super) request_timeout: Duration,
    /// The record last read or written and when it changed on our clock (client-go's
    /// `observedRecord` + `observedTime`).
    pub(super) observed: Option<Observed>,
    /// The Lease object last read or written: its resourceVersion makes our update conditional.
    pub(super) lease: Option<Lease>,
    /// Spaces out the warning while attempts keep failing.
    pub(super) failures: Throttle,
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
            handle: LeaderHandle { identity: config.identity.as_str().into(), state: std::sync::Arc::default() },
            request_timeout: (config.renew_deadline / 2).max(Duration::from_secs(1)),
            observed: None,
            lease: None,
            failures: Throttle::default(),
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
                Attempt::Holding => {
                    self.answered();
                    return Some(started);
                }
                Attempt::HeldBy(holder) => {
                    self.answered();
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
                Ok(Attempt::Holding) => {
                    self.answered();
                    deadline = started + renew_deadline;
                }
                Ok(Attempt::HeldBy(holder)) => return Renewal::Lost(format!("the lease is now held by {holder:?}")),
                Ok(Attempt::Failed(error)) => self.log_failure("renew", &error),
                Err(_) => self.log_failure("renew", &LeaseError::Timeout(deadline - started)),
            }
        }
    }

    /// An attempt failed: a conflict is part of the protocol; anything else is the reason this
    /// replica is not leading (or may stop), warned about once per backoff step.
    fn log_failure(&mut self, action: &str, error: &LeaseError) {
        let (identity, lease) = (&self.config.identity, self.config.describe());
        if error.is_conflict() {
            // Someone wrote the Lease between our read and our update: not acquired this round.
            debug!(%identity, %lease, %error, "conflict while trying to {action} the lease");
            return;
        }
        self.handle.lock().last_error = Some(format!("failed to {action} the lease {lease}: {error}"));
        let Some(left_out) = self.failures.allow() else { return };
        if action == "renew" {
            warn!(%identity, %lease, %error, left_out, "failed to renew the lease; leading ends at the renew deadline unless a renewal succeeds");
        } else {
            warn!(%identity, %lease, %error, left_out, "not leading: failed to acquire the lease, retrying; this replica reconciles nothing until it leads");
        }
    }

    /// An attempt got an answer (ours or someone else's lease): failures are over.
    fn answered(&mut self) {
        self.handle.lock().last_error = None;
        if self.failures.clear() {
            let (identity, lease) = (&self.config.identity, self.config.describe());
            info!(%identity, %lease, "the lease can be read and written again");
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

/// Resolves once `stop` holds `true` or its sender is gone (a dropped sender counts as stop).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&stop| stop).await;
}

/// client-go's `wait.Jitter`: `period` plus `unit * factor * period`, with `unit` in `[0, 1)`.
fn jitter(period: Duration, factor: f64, unit: f64) -> Duration {
    period + period.mul_f64(unit.clamp(0.0, 1.0) * factor)
}

// === tests ===

#[cfg(test)]
mod tests {
    use super::*;

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
