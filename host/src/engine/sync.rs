//! One sync of one ReplicaSet key, in upstream `syncReplicaSet`'s order. Never runs twice at
//! once for a key (the work queue guarantees it).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::api::apps::v1::ReplicaSet;

use super::{Engine, claims, scale};
use crate::{
    consistency::{Resource, StaleCache},
    contract::{Controller, Plan, ReconcileError},
    engine::status::{ReplicaSetControl, update_replica_set_status},
    pod_control::{PodControl, api_message},
    sandbox::{GuestError, PolicyModule},
    selector::ReplicaSetSelector,
    snapshot::{self, Context, Projection},
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
    /// Adopting or releasing pods failed; nothing was scaled and no status written.
    #[error("{0}")]
    Claim(String),
    /// Creating or deleting pods failed (the status was still written).
    #[error("{0}")]
    Scale(String),
    /// Writing the status failed.
    #[error("updating status: {}", api_message(.0))]
    Status(kube::Error),
}

impl SyncError {
    /// RBAC refused one of the controller's requests (readiness reports it). The API server's
    /// message for that is `<resource> is forbidden: User "<user>" cannot <verb> resource ...`;
    /// a quota refusal is also a 403 but says "exceeded quota", and is no access problem.
    pub fn is_access_denied(&self) -> bool {
        let text = self.to_string();
        text.contains("is forbidden: User ") && text.contains(" cannot ")
    }

    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidKey(_) => "invalid_key",
            Self::StaleCache(_) => "stale_cache",
            Self::Guest(_) => "guest",
            Self::Claim(_) => "claim",
            Self::Scale(_) => "scale",
            Self::Status(_) => "status",
        }
    }
}

/// What a successful sync did, for the log line and metrics.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// The ReplicaSet was not in the cache (deleted).
    pub gone: bool,
    /// Pods adopted, released, created and deleted.
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

/// Adoptions that found their pod gone force a new plan; the loop is bounded all the same.
const MAX_PLANS_PER_SYNC: usize = 3;

impl<P: PodControl, R: ReplicaSetControl> Engine<P, R> {
    /// Syncs one key; see the module doc for the order of steps.
    pub async fn sync_replica_set(&self, key: &str) -> Result<SyncReport, SyncError> {
        let serving = self.shared.policy.serving();
        let module = serving.module.clone();
        let mut plan_text = None;
        let result = self.sync_with(key, module.clone(), &mut plan_text).await;
        match &result {
            Err(SyncError::Guest(error)) => self.shared.policy.record_failure(&serving, key, error),
            Ok(report) if !report.gone => self.shared.policy.record_success(&serving),
            _ => {}
        }
        if self.shared.sync_log.receiver_count() > 0 {
            let outcome = match &result {
                Ok(report) => Ok(report.summary()),
                Err(e) => Err(e.to_string()),
            };
            let record =
                super::SyncRecord { key: key.to_string(), module: module.digest.short(), plan: plan_text, outcome };
            let _ = self.shared.sync_log.send(record);
        }
        result
    }

    async fn sync_with(
        &self,
        key: &str,
        module: Arc<PolicyModule>,
        plan_text: &mut Option<String>,
    ) -> Result<SyncReport, SyncError> {
        let shared = &self.shared;
        // 1. The key.
        let (namespace, name) = key.split_once('/').ok_or_else(|| SyncError::InvalidKey(key.to_string()))?;
        // 2. The consistency gate: never act on a cache older than our own writes.
        shared.consistency.ensure_ready(key, |resource| match resource {
            Resource::Pods => self.pod_informer.last_resource_version(),
            Resource::ReplicaSets => self.rs_informer.last_resource_version(),
        })?;
        // 3. A ReplicaSet gone from the cache: forget it.
        let Some(rs) = shared.replica_sets.get(namespace, name) else {
            shared.consistency.clear(key, None);
            shared.expectations.delete_expectations(key);
            return Ok(SyncReport { gone: true, ..SyncReport::default() });
        };
        // 4. Expectations are read before the pods are listed, so a pod observed in between is
        // counted (TestRSSyncExpectations).
        let expectations_satisfied = shared.expectations.satisfied_expectations(key);
        let started = Instant::now();
        let now = unix_nanos();
        // 6. Candidates: pods this ReplicaSet controls plus the namespace's orphans.
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let candidates = shared.pods.owned_and_orphans(namespace, &uid);
        let context = Context { expectations_satisfied, now, burst_replicas: shared.burst_replicas };
        let mut projection = snapshot::project(&rs, candidates, context, || self.related_pods_per_node(&rs));

        let mut report = SyncReport::default();
        let mut plans = 0;
        let plan = loop {
            plans += 1;
            let key_arc: Arc<str> = Arc::from(key);
            let snapshot = Arc::new(projection.snapshot);
            let guest_started = Instant::now();
            let (outcome, stats) = shared
                .policy
                .sandbox()
                .reconcile(&module, &key_arc, &snapshot)
                .await
                .inspect_err(|e| shared.metrics.guest_failure(e))?;
            shared.metrics.observe_guest_call(&module.digest.short(), "reconcile", &stats);
            report.guest_time += guest_started.elapsed();
            if plans == 1 {
                // The shadow candidate sees the same snapshot; its plan is compared, never applied.
                crate::modules::shadow::compare_later(&shared.policy, &key_arc, &snapshot, &outcome);
            }
            projection.snapshot = Arc::unwrap_or_clone(snapshot);
            let plan = match outcome {
                Ok(plan) => {
                    if shared.sync_log.receiver_count() > 0 {
                        *plan_text = Some(crate::fixtures::render::plan_text(&projection.snapshot, &plan));
                    }
                    plan
                }
                // 5. An invalid selector: upstream logs it and neither scales, writes status nor retries.
                Err(ReconcileError::InvalidSelector(why)) => {
                    tracing::error!(error = %why, "error converting pod selector to selector for rs {key}");
                    report.invalid_selector = Some(why);
                    return Ok(report);
                }
                Err(ReconcileError::InvalidSnapshot(_)) => unreachable!("the sandbox turns this into a GuestError"),
            };
            // 7-8. Releases and adoptions; any failure ends the sync before scaling and status.
            let claimed = claims::apply(self, &rs, &projection, &plan).await.map_err(SyncError::Claim)?;
            report.adopted += claimed.adopted.len();
            report.released += plan.release.len();
            if claimed.vanished.is_empty() || plans == MAX_PLANS_PER_SYNC {
                break plan;
            }
            // An orphan vanished before we could adopt it. Upstream just counts one pod fewer;
            // we ask the policy again, on the snapshot as it now stands, so its counts, victims and
            // status agree with what really happened.
            let context = context_of(&projection, expectations_satisfied);
            projection = settle_claims(&rs, projection, &plan, &claimed, context);
        };

        // 10. Scale (the plan only asks when expectations are satisfied and the RS is not deleting).
        let scaled = scale::apply(self, key, &rs, &projection, &plan).await;
        report.created = scaled.created;
        report.deleted = scaled.deleted;

        // 11. The status: the plan's, or the policy's answer to the scale error.
        let status = match &scaled.error {
            None => plan.status.clone(),
            Some(message) => {
                let key_arc: Arc<str> = Arc::from(key);
                let guest_started = Instant::now();
                let status = shared
                    .policy
                    .sandbox()
                    .status_after_scale_error(
                        &module,
                        &key_arc,
                        projection.snapshot.replica_set.clone(),
                        plan.status.clone(),
                        message.clone(),
                        now,
                    )
                    .await?;
                report.guest_time += guest_started.elapsed();
                status
            }
        };
        // 12-13. Write it (skipped when unchanged) and remember the write for the consistency gate.
        report.status_written = !super::status::status_unchanged(&rs, &status);
        let updated = update_replica_set_status(&self.rs_control, &rs, &status).await.map_err(SyncError::Status)?;
        if let Some(rv) = updated.metadata.resource_version.as_deref() {
            shared.consistency.wrote_at(key, &uid, Resource::ReplicaSets, rv);
        }
        // 14. A scale error is retried with backoff, and without an availability check.
        if let Some(message) = scaled.error {
            return Err(SyncError::Scale(message));
        }
        // 15. Look again when the next ready pod turns available (measured from the snapshot's now).
        if let Some(after) = plan.requeue_after {
            let remaining = Duration::from_nanos(after).saturating_sub(started.elapsed());
            shared.queue.add_after(key, remaining);
        }
        Ok(report)
    }

    /// Active pods per node that are related to `rs`: those matching the selector of any
    /// ReplicaSet sharing its controller (upstream `getIndirectlyRelatedPods`); none without a
    /// controller.
    fn related_pods_per_node(&self, rs: &ReplicaSet) -> HashMap<String, u32> {
        let mut per_node = HashMap::new();
        let Some(owner) = crate::informers::cached::controller_of(&rs.metadata) else {
            // Upstream logs "ReplicaSet has no controller" and ranks without colocation.
            return per_node;
        };
        let mut seen = std::collections::HashSet::new();
        for related in self.shared.replica_sets.with_controller(&owner.uid) {
            let selector = ReplicaSetSelector::of(&related);
            let namespace = related.metadata.namespace.as_deref().unwrap_or_default();
            for pod in self.shared.pods.in_namespace(namespace) {
                let no_labels = std::collections::BTreeMap::new();
                let labels = pod.metadata.labels.as_ref().unwrap_or(&no_labels);
                if selector.matches(labels) != Some(true) || !seen.insert(pod.metadata.uid.clone()) {
                    continue;
                }
                if pod.is_active() {
                    *per_node.entry(pod.node_name.clone().unwrap_or_default()).or_insert(0) += 1;
                }
            }
        }
        per_node
    }
}

fn context_of(projection: &Projection, expectations_satisfied: bool) -> Context {
    let s = &projection.snapshot;
    Context { expectations_satisfied, now: s.now, burst_replicas: s.burst_replicas }
}

/// The snapshot after the claims of `plan`: vanished pods gone, adopted pods owned, released
/// pods orphaned (their labels no longer match, so they stay unclaimed).
fn settle_claims(
    rs: &ReplicaSet,
    projection: Projection,
    plan: &Plan,
    claimed: &claims::Claimed,
    context: Context,
) -> Projection {
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
            refs.push(crate::pod_control::controller_ref(rs));
            pod.metadata.owner_references = Some(refs);
        } else if plan.release.contains(&i) && snapshot.pods[i as usize].controller == Controller::ThisReplicaSet {
            pod.metadata.owner_references = None;
        }
        kept.push(Arc::new(pod));
    }
    snapshot::project(rs, kept, context, || related)
}

fn unix_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
