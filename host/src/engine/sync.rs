//! One sync of one ReplicaSet key, as upstream's `syncReplicaSet`: gate → snapshot → plan →
//! claims → scale → status → requeue. Never runs twice at once for a key (the work queue
//! guarantees it).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::apps::v1::ReplicaSet;

use super::{
    Engine,
    claims::{self, ClaimError},
    scale::{self, ScaleError, Scaled},
};
use crate::{
    apply::{ApiCalls, WriteError, status_unchanged},
    consistency::{Resource, StaleCache},
    contract::{Controller, Plan, ReconcileError, ReplicaSetStatus, Snapshot},
    policy::{PlanError, SyncPolicy},
    sandbox::GuestError,
    selector::ReplicaSetSelector,
    snapshot::{self, Context, Projection},
    time::unix_nanos,
};

/// Why a sync failed; every variant means "retry with backoff".
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The `namespace/name` key is malformed.
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// The informers have not yet seen one of our own writes.
    #[error(transparent)]
    StaleCache(#[from] StaleCache),
    /// The policy module failed (trap, fuel, deadline, memory, invalid plan).
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The policy fails on this ReplicaSet's snapshot, and so does the last good module: the
    /// input is the problem, so no rollback; an Event on the ReplicaSet says so.
    #[error("the policy cannot handle this ReplicaSet's input (the last good module fails on it too): {0}")]
    Input(GuestError),
    /// Adopting or releasing pods failed; nothing was scaled and no status written.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// Creating or deleting pods failed (the status was still written).
    #[error(transparent)]
    Scale(#[from] ScaleError),
    /// Writing the status failed.
    #[error("updating status: {0}")]
    Status(#[source] WriteError),
    /// A watch broke, and reading where the API server stands, to check the cache, failed.
    #[error("reading the live state after a watch interruption: {0}")]
    Confirm(#[source] WriteError),
}

impl SyncError {
    /// RBAC refused one of the controller's requests (readiness reports it).
    pub fn is_access_denied(&self) -> bool {
        match self {
            Self::Claim(e) => e.write_errors().any(WriteError::is_access_denied),
            Self::Scale(e) => e.write_error().is_access_denied(),
            Self::Status(e) | Self::Confirm(e) => e.is_access_denied(),
            Self::InvalidKey(_) | Self::StaleCache(_) | Self::Guest(_) | Self::Input(_) => false,
        }
    }

    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidKey(_) => "invalid_key",
            Self::StaleCache(_) => "stale_cache",
            Self::Guest(_) => "guest",
            Self::Input(_) => "input",
            Self::Claim(_) => "claim",
            Self::Scale(_) => "scale",
            Self::Status(_) => "status",
            Self::Confirm(_) => "confirm",
        }
    }
}

/// What a sync did, for the log line, the sync log and metrics.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// The ReplicaSet was not in the cache (deleted).
    pub gone: bool,
    /// Pods adopted.
    pub adopted: usize,
    /// Pods released.
    pub released: usize,
    /// Pods created.
    pub created: usize,
    /// Pods deleted.
    pub deleted: usize,
    /// Whether the status was written.
    pub status_written: bool,
    /// The policy refused the selector; nothing was done.
    pub invalid_selector: Option<String>,
    /// Time spent in the guest.
    pub guest_time: Duration,
    /// The last snapshot planned on and its plan; kept only while someone reads the sync log.
    pub planned: Option<(Arc<Snapshot>, Plan)>,
    /// The snapshot the policy failed on; kept only while someone reads the sync log.
    pub failed_on: Option<Arc<Snapshot>>,
}

impl SyncReport {
    /// One line: what the sync did.
    pub fn summary(&self) -> String {
        if self.gone {
            return "the ReplicaSet is gone; its expectations are dropped".into();
        }
        if let Some(why) = &self.invalid_selector {
            return format!("invalid selector, nothing done: {why}");
        }
        format!(
            "adopted {}, released {}, created {}, deleted {}, status {}",
            self.adopted,
            self.released,
            self.created,
            self.deleted,
            if self.status_written { "written" } else { "unchanged" }
        )
    }
}

/// The Event reason of a sync whose input the policy cannot handle (our own; upstream has none).
pub const POLICY_INPUT_FAILED: &str = "PolicyInputFailed";

/// Adoptions that found their pod gone force a new plan; the loop is bounded all the same.
const MAX_PLANS_PER_SYNC: usize = 3;

impl<A: ApiCalls> Engine<A> {
    /// Syncs one key (upstream `syncReplicaSet`) and reports it to the sync log.
    pub async fn sync_replica_set(&self, key: &str) -> Result<SyncReport, SyncError> {
        let mut policy = self.shared.policy.for_sync(key, &self.shared.metrics);
        let mut report = SyncReport::default();
        let result = self.sync_steps(key, &mut policy, &mut report).await;
        self.log_sync(key, &policy, &report, &result);
        result.map(|()| report)
    }

    /// The steps, in upstream's order; each is one function below.
    async fn sync_steps(
        &self,
        key: &str,
        policy: &mut SyncPolicy<'_>,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let (namespace, name) = key.split_once('/').ok_or_else(|| SyncError::InvalidKey(key.to_string()))?;
        let mut laps = Laps::new(&self.shared.metrics);
        self.consistency_gate(key)?;
        laps.lap("gate");
        let Some(rs) = self.shared.replica_sets.get(namespace, name) else {
            self.forget(key);
            report.gone = true;
            return Ok(());
        };
        self.confirm_after_interruption(key, &rs).await?;
        let started = Instant::now();
        let projection = self.snapshot(key, &rs);
        tracing::debug!(
            candidates = projection.pods.len(),
            expectations_satisfied = projection.snapshot.expectations_satisfied,
            "snapshot"
        );
        laps.lap("snapshot");
        let planned = self.plan_and_claim(&rs, projection, policy, report).await;
        laps.split("guest", "claims", report.guest_time);
        if let Err(SyncError::Input(error)) = &planned {
            let message = format!(
                "The policy fails on this ReplicaSet's pods, and so does the last good module; nothing was changed: {error}"
            );
            self.writes.warn(&rs, POLICY_INPUT_FAILED, message);
        }
        let Some((plan, projection)) = planned? else {
            return Ok(());
        };
        let scaled = scale::apply(self, key, &rs, &projection, &plan).await;
        (report.created, report.deleted) = (scaled.created, scaled.deleted);
        laps.lap("scale");
        let status = self.status_after_scaling(&projection, &plan, &scaled, policy, report).await?;
        report.status_written = !status_unchanged(&rs, &status);
        self.writes.update_status(&rs, &status).await.map_err(SyncError::Status)?;
        laps.lap("status");
        // A scale error is retried with backoff, and without an availability check.
        if let Some(error) = scaled.error {
            return Err(SyncError::Scale(error));
        }
        self.requeue_for_availability(key, &plan, started);
        Ok(())
    }

    /// Never act on a cache older than our own writes (upstream's consistency store).
    fn consistency_gate(&self, key: &str) -> Result<(), StaleCache> {
        self.shared.consistency.ensure_ready(key, |resource| match resource {
            Resource::Pods => self.pod_informer.last_resource_version(),
            Resource::ReplicaSets => self.rs_informer.last_resource_version(),
        })
    }

    /// While an informer's watch is interrupted (from a failure until its next event, and for
    /// [`crate::informers::CATCH_UP`] after it), its cache may lack changes made meanwhile, and
    /// acting on it can create pods beyond the spec: a scale-down made during a partition, or a
    /// pod whose create reached the API server just before the cut while its answer never came
    /// back, both unseen when a sync runs after the heal (the soak caught both). So read where
    /// the API server stands (the live ReplicaSet; the newest version among its pods) and
    /// record it in the consistency store: the gate then holds the sync until the informers
    /// have caught up. Upstream acts on its cache as it stands; we differ on purpose (README,
    /// "Where we differ").
    async fn confirm_after_interruption(&self, key: &str, cached: &ReplicaSet) -> Result<(), SyncError> {
        let (rs_interrupted, pods_interrupted) =
            (self.rs_informer.watch_interrupted(), self.pod_informer.watch_interrupted());
        if !rs_interrupted && !pods_interrupted {
            return Ok(());
        }
        let namespace = cached.metadata.namespace.as_deref().unwrap_or_default();
        let name = cached.metadata.name.as_deref().unwrap_or_default();
        let uid = cached.metadata.uid.as_deref().unwrap_or_default();
        let consistency = &self.shared.consistency;
        if rs_interrupted {
            let live = self.writes.get_replica_set(namespace, name).await.map_err(SyncError::Confirm)?;
            if let Some(rv) = live.metadata.resource_version.as_deref() {
                consistency.wrote_at(key, live.metadata.uid.as_deref().unwrap_or_default(), Resource::ReplicaSets, rv);
            }
        }
        if pods_interrupted {
            let rv = self.writes.pods_version(namespace, &cached.spec.selector).await.map_err(SyncError::Confirm)?;
            consistency.wrote_at(key, uid, Resource::Pods, &rv.to_string());
        }
        Ok(self.consistency_gate(key)?)
    }

    /// A ReplicaSet gone from the cache: forget what we expected of it.
    fn forget(&self, key: &str) {
        self.shared.consistency.clear(key, None);
        self.shared.expectations.delete_expectations(key);
    }

    /// The policy's input: the ReplicaSet, the pods it controls, and the orphans of its namespace
    /// that its selector matches. An orphan it does not match can never be adopted, so it never
    /// reaches the guest and costs it nothing (anyone who may create pods in the namespace could
    /// otherwise make every sync there run out of fuel). Expectations are read before the pods
    /// are listed, so a pod observed in between is counted (upstream `TestRSSyncExpectations`).
    fn snapshot(&self, key: &str, rs: &ReplicaSet) -> Projection {
        let shared = &self.shared;
        let context = Context {
            expectations_satisfied: shared.expectations.satisfied_expectations(key),
            now: unix_nanos(),
            burst_replicas: shared.burst_replicas,
        };
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let selector = ReplicaSetSelector::of(rs);
        let candidates = shared
            .pods
            .owned_and_orphans(namespace, rs.metadata.uid.as_deref().unwrap_or_default())
            .into_iter()
            .filter(|pod| snapshot::is_candidate(&selector, pod))
            .collect();
        snapshot::project(rs, candidates, context, || self.related_pods_per_node(rs))
    }

    /// Plans, then applies the plan's releases and adoptions. An orphan that vanished before we
    /// could adopt it makes us ask the policy again on the snapshot as it now stands, where
    /// upstream just counts one pod fewer; so counts, victims and status agree with what really
    /// happened. `None`: the policy refused the selector, and the sync does nothing more.
    async fn plan_and_claim(
        &self,
        rs: &ReplicaSet,
        mut projection: Projection,
        policy: &mut SyncPolicy<'_>,
        report: &mut SyncReport,
    ) -> Result<Option<(Plan, Projection)>, SyncError> {
        let mut plans = 0;
        loop {
            plans += 1;
            let Some(plan) = self.plan(&projection.snapshot, policy, report).await? else { return Ok(None) };
            let claimed = claims::apply(self, rs, &projection, &plan).await?;
            report.adopted += claimed.adopted.len();
            report.released += plan.release.len();
            if claimed.vanished.is_empty() || plans == MAX_PLANS_PER_SYNC {
                return Ok(Some((plan, projection)));
            }
            projection = settle_claims(rs, projection, &plan, &claimed);
        }
    }

    /// One `reconcile` call. An invalid selector is logged and ends the sync without status or
    /// retry, as upstream does.
    async fn plan(
        &self,
        snapshot: &Arc<Snapshot>,
        policy: &mut SyncPolicy<'_>,
        report: &mut SyncReport,
    ) -> Result<Option<Plan>, SyncError> {
        let started = Instant::now();
        let outcome = policy.plan(snapshot).await.map_err(|e| {
            if self.shared.sync_log.receiver_count() > 0 {
                report.failed_on = Some(snapshot.clone());
            }
            match e {
                PlanError::Module(e) => SyncError::Guest(e),
                PlanError::Input(e) => SyncError::Input(e),
            }
        })?;
        report.guest_time += started.elapsed();
        match outcome {
            Ok(plan) => {
                if self.shared.sync_log.receiver_count() > 0 {
                    report.planned = Some((snapshot.clone(), plan.clone()));
                }
                Ok(Some(plan))
            }
            Err(ReconcileError::InvalidSelector(why)) => {
                let key = format!("{}/{}", snapshot.replica_set.namespace, snapshot.replica_set.name);
                tracing::error!(error = %why, "error converting pod selector to selector for rs {key}");
                report.invalid_selector = Some(why);
                Ok(None)
            }
            Err(ReconcileError::InvalidSnapshot(_)) => unreachable!("the sandbox turns this into a GuestError"),
        }
    }

    /// The status to write: the plan's, or the policy's answer to the scale error.
    async fn status_after_scaling(
        &self,
        projection: &Projection,
        plan: &Plan,
        scaled: &Scaled,
        policy: &SyncPolicy<'_>,
        report: &mut SyncReport,
    ) -> Result<ReplicaSetStatus, SyncError> {
        let Some(error) = &scaled.error else { return Ok(plan.status.clone()) };
        let started = Instant::now();
        let snapshot = &projection.snapshot;
        let status = policy
            .status_after_scale_error(
                snapshot.replica_set.clone(),
                plan.status.clone(),
                error.to_string(),
                snapshot.now,
            )
            .await?;
        report.guest_time += started.elapsed();
        Ok(status)
    }

    /// Look again when the next ready pod turns available, measured from the snapshot's now.
    fn requeue_for_availability(&self, key: &str, plan: &Plan, started: Instant) {
        if let Some(after) = plan.requeue_after {
            let remaining = Duration::from_nanos(after).saturating_sub(started.elapsed());
            self.shared.queue.add_after(key, remaining);
        }
    }

    /// Sends the sync's outcome to whoever subscribed to the sync log (the demo, tests).
    fn log_sync(&self, key: &str, policy: &SyncPolicy<'_>, report: &SyncReport, result: &Result<(), SyncError>) {
        if self.shared.sync_log.receiver_count() == 0 {
            return;
        }
        let outcome = match result {
            Ok(()) => Ok(report.summary()),
            Err(e) => Err(e.to_string()),
        };
        let record = super::SyncRecord {
            key: key.to_string(),
            module: policy.module().digest.short(),
            planned: report.planned.clone(),
            failed_on: report.failed_on.clone(),
            outcome,
        };
        let _ = self.shared.sync_log.send(record);
    }

    /// Active pods per node that are related to `rs` (see
    /// [`snapshot::related_active_pods_per_node`]), from the indexes.
    fn related_pods_per_node(&self, rs: &ReplicaSet) -> HashMap<String, u32> {
        let Some(owner) = crate::informers::cached::controller_of(&rs.metadata) else {
            // Upstream logs "ReplicaSet has no controller" and ranks without colocation.
            return HashMap::new();
        };
        let related = self.shared.replica_sets.with_controller(&owner.uid);
        snapshot::related_active_pods_per_node(related.iter().map(|rs| &**rs), |namespace| {
            self.shared.pods.in_namespace(namespace)
        })
    }
}

/// Times the steps of one sync into `wasm_replicaset_sync_phase_seconds`.
struct Laps<'a> {
    metrics: &'a crate::metrics::Metrics,
    since: Instant,
}

impl<'a> Laps<'a> {
    fn new(metrics: &'a crate::metrics::Metrics) -> Self {
        Self { metrics, since: Instant::now() }
    }

    /// The step `phase` ended now.
    fn lap(&mut self, phase: &'static str) {
        let now = Instant::now();
        self.metrics.observe_phase(phase, now.duration_since(self.since).as_secs_f64());
        self.since = now;
    }

    /// Two interleaved steps ended now, of which `first` took `first_took`.
    fn split(&mut self, first: &'static str, second: &'static str, first_took: Duration) {
        let now = Instant::now();
        let total = now.duration_since(self.since);
        self.metrics.observe_phase(first, first_took.as_secs_f64());
        self.metrics.observe_phase(second, total.saturating_sub(first_took).as_secs_f64());
        self.since = now;
    }
}

/// The snapshot after the claims of `plan`: vanished pods gone, adopted pods owned, released
/// pods orphaned (their labels no longer match, so they stay unclaimed).
fn settle_claims(rs: &ReplicaSet, projection: Projection, plan: &Plan, claimed: &claims::Claimed) -> Projection {
    let Projection { snapshot, pods } = projection;
    let related: HashMap<String, u32> =
        snapshot.nodes.iter().map(|n| (n.name.clone(), n.related_active_pods)).collect();
    let mut kept = Vec::with_capacity(pods.len());
    for (i, pod) in pods.into_iter().enumerate() {
        let i = i as u32;
        if claimed.vanished.contains(&i) {
            continue;
        }
        let mut pod = Arc::unwrap_or_clone(pod);
        if claimed.adopted.contains(&i) {
            let mut refs = pod.metadata.owner_references.take().unwrap_or_default();
            refs.push(crate::apply::pods::controller_ref(rs));
            pod.metadata.owner_references = Some(refs);
        } else if plan.release.contains(&i) && snapshot.pods[i as usize].controller == Controller::ThisReplicaSet {
            pod.metadata.owner_references = None;
        }
        kept.push(Arc::new(pod));
    }
    let context = Context {
        expectations_satisfied: snapshot.expectations_satisfied,
        now: snapshot.now,
        burst_replicas: snapshot.burst_replicas,
    };
    snapshot::project(rs, kept, context, || related)
}
