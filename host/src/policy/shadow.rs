//! Shadow mode: the candidate module plans on the same snapshot as the serving one; the two
//! plans are compared and counted, and the candidate's is never applied.

use std::sync::{Arc, atomic::Ordering};

use super::ActivePolicy;
use crate::{
    contract::{Plan, ReconcileError, Snapshot},
    sandbox::ReconcileOutcome,
};

/// Runs the shadow candidate (if any) on `snapshot` in the background and records how its plan
/// compares with `serving`'s. Never delays the sync that called it.
pub fn compare_later(policy: &ActivePolicy, key: &Arc<str>, snapshot: &Arc<Snapshot>, serving: &ReconcileOutcome) {
    let Some(shadow) = policy.shadow() else { return };
    let (sandbox, key, snapshot, serving) = (policy.sandbox().clone(), key.clone(), snapshot.clone(), serving.clone());
    tokio::spawn(async move {
        match sandbox.reconcile(&shadow.candidate.module, &key, &snapshot).await {
            Err(error) => {
                shadow.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(key = %key, shadow = %shadow.candidate.module.digest.short(), %error, "shadow module failed");
            }
            Ok((candidate, _)) => match difference(&snapshot, &serving, &candidate) {
                None => {
                    shadow.agreements.fetch_add(1, Ordering::Relaxed);
                }
                Some(diff) => {
                    shadow.differences.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(key = %key, shadow = %shadow.candidate.module.digest.short(), difference = %diff, "shadow plan differs");
                    *shadow.example.lock().expect("shadow example lock") = Some((key.to_string(), diff));
                }
            },
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
