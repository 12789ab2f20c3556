//! Shadow mode: the candidate module plans on the same snapshot as the serving one; the two
//! plans are compared and counted, and the candidate's is never applied.

use std::sync::{Arc, atomic::Ordering};

use super::ActivePolicy;
use crate::{
    contract::{Plan, ReconcileError, Snapshot},
    sandbox::{Digest, ReconcileOutcome},
};

/// A comparison that found the candidate planning differently (or failing), with everything
/// needed to replay it: the snapshot and both outcomes.
#[derive(Debug, Clone)]
pub struct ShadowDifference {
    /// The ReplicaSet key.
    pub key: Arc<str>,
    /// The snapshot both modules planned on.
    pub snapshot: Arc<Snapshot>,
    /// The serving module.
    pub serving: Digest,
    /// What the serving module returned (and the engine applied).
    pub serving_outcome: ReconcileOutcome,
    /// The shadow candidate.
    pub candidate: Digest,
    /// What the candidate returned, or why its call failed (one line).
    pub candidate_outcome: Result<ReconcileOutcome, String>,
    /// The difference in one line, naming pods.
    pub difference: String,
}

/// Runs the shadow candidate (if any) on `snapshot` in the background and records how its plan
/// compares with `serving`'s (the outcome of the module `serving_module`). Never delays the sync
/// that called it.
pub fn compare_later(
    policy: &ActivePolicy,
    serving_module: Digest,
    key: &Arc<str>,
    snapshot: &Arc<Snapshot>,
    serving: &ReconcileOutcome,
) {
    let Some(shadow) = policy.shadow() else { return };
    let log = policy.shadow_log.clone();
    let (sandbox, key, snapshot, serving) = (policy.sandbox().clone(), key.clone(), snapshot.clone(), serving.clone());
    tokio::spawn(async move {
        let candidate = shadow.candidate.module.digest;
        let (candidate_outcome, summary) = match sandbox.reconcile(&shadow.candidate.module, &key, &snapshot).await {
            Err(error) => {
                shadow.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %key, shadow = %candidate.short(), %error, "shadow module failed");
                (Err(error.failure.to_string()), format!("shadow failed: {}", error.failure))
            }
            Ok((outcome, _)) => match difference(&snapshot, &serving, &outcome) {
                None => {
                    shadow.agreements.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(diff) => {
                    shadow.differences.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(key = %key, shadow = %candidate.short(), difference = %diff, "shadow plan differs");
                    *shadow.example.lock().expect("shadow example lock") = Some((key.to_string(), diff.clone()));
                    (Ok(outcome), diff)
                }
            },
        };
        if log.receiver_count() > 0 {
            let _ = log.send(ShadowDifference {
                key,
                snapshot,
                serving: serving_module,
                serving_outcome: serving,
                candidate,
                candidate_outcome,
                difference: summary,
            });
        }
    });
}

/// How two outcomes differ, in one line naming pods; `None` when they are the same.
pub fn difference(snapshot: &Snapshot, serving: &ReconcileOutcome, candidate: &ReconcileOutcome) -> Option<String> {
    if serving == candidate {
        return None;
    }
    let describe = |e: &ReconcileError| format!("{e:?}");
    let (a, b) = match (serving, candidate) {
        (Ok(a), Ok(b)) => (a, b),
        (Ok(_), Err(e)) => return Some(format!("active planned; shadow refused: {}", describe(e))),
        (Err(e), Ok(_)) => return Some(format!("active refused ({}); shadow planned", describe(e))),
        (Err(a), Err(b)) => return Some(format!("active refused ({}); shadow refused ({})", describe(a), describe(b))),
    };
    Some(plan_difference(snapshot, a, b))
}

fn plan_difference(snapshot: &Snapshot, a: &Plan, b: &Plan) -> String {
    let names = |indices: &[u32]| snapshot.pod_names(indices);
    let mut parts = Vec::new();
    for (field, x, y) in
        [("adopt", &a.adopt, &b.adopt), ("release", &a.release, &b.release), ("delete", &a.delete, &b.delete)]
    {
        if x != y {
            parts.push(format!("{field}: active [{}] vs shadow [{}]", names(x), names(y)));
        }
    }
    if a.create != b.create {
        parts.push(format!("create: active {} vs shadow {}", a.create, b.create));
    }
    if a.status != b.status {
        parts.push(format!("status: active ({}) vs shadow ({})", a.status, b.status));
    }
    if a.requeue_after != b.requeue_after {
        parts.push(format!("requeueAfter: active {:?} vs shadow {:?}", a.requeue_after, b.requeue_after));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::StringTable;

    #[test]
    fn different_victims_are_named() {
        let mut strings = StringTable::default();
        let template = strings.label_map(None);
        let pod = |strings: &mut StringTable, name: &str| crate::contract::Pod {
            name: strings.span(name),
            namespace: strings.shared_span("default"),
            uid: strings.span(name),
            labels: template,
            controller: crate::contract::Controller::ThisReplicaSet,
            creation_timestamp: None,
            deletion_timestamp: None,
            deletion_cost: None,
            phase: crate::contract::PodPhase::Running,
            node: 0,
            ready: false,
            ready_transition: None,
            max_container_restarts: 0,
            max_sidecar_restarts: 0,
        };
        let pods = vec![pod(&mut strings, "a"), pod(&mut strings, "b")];
        let (label_sets, pod_strings) = strings.finish();
        let rs = crate::testkit::rs("web").uid("u").build();
        let snapshot = Snapshot {
            replica_set: crate::snapshot::replica_set_record(&rs, template),
            pods,
            label_sets,
            nodes: vec![crate::contract::Node { name: String::new(), related_active_pods: 0 }],
            pod_strings,
            expectations_satisfied: true,
            now: 0,
            burst_replicas: 500,
        };
        let plan = |delete: Vec<u32>| {
            Ok(Plan {
                adopt: vec![],
                release: vec![],
                create: 0,
                delete,
                status: snapshot.replica_set.status.clone(),
                requeue_after: None,
            })
        };
        assert_eq!(difference(&snapshot, &plan(vec![0]), &plan(vec![0])), None);
        assert_eq!(
            difference(&snapshot, &plan(vec![0]), &plan(vec![1])).as_deref(),
            Some("delete: active [a] vs shadow [b]")
        );
    }
}
