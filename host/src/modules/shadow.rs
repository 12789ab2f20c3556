//! Shadow mode: the candidate module plans on the same snapshot as the serving one; the two
//! plans are compared and counted, and the candidate's is never applied.

use std::sync::{Arc, atomic::Ordering};

use crate::{
    contract::{Plan, ReconcileError, Snapshot},
    fixtures::render::{pod_name, status_line},
    policy::ActivePolicy,
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
    let names = |indices: &[u32]| indices.iter().map(|&i| pod_name(snapshot, i)).collect::<Vec<_>>().join(",");
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
        parts.push(format!("status: active ({}) vs shadow ({})", status_line(&a.status), status_line(&b.status)));
    }
    if a.requeue_after != b.requeue_after {
        parts.push(format!("requeueAfter: active {:?} vs shadow {:?}", a.requeue_after, b.requeue_after));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Fixture;

    #[test]
    fn different_victims_are_named() {
        let f =
            Fixture::parse("x", "description: d\nreplicaSet: {replicas: 1}\npods: [{name: a}, {name: b}]\n").unwrap();
        let plan = |delete: Vec<u32>| {
            Ok(Plan {
                adopt: vec![],
                release: vec![],
                create: 0,
                delete,
                status: f.snapshot.replica_set.status.clone(),
                requeue_after: None,
            })
        };
        assert_eq!(difference(&f.snapshot, &plan(vec![0]), &plan(vec![0])), None);
        assert_eq!(
            difference(&f.snapshot, &plan(vec![0]), &plan(vec![1])).as_deref(),
            Some("delete: active [a] vs shadow [b]")
        );
    }
}
