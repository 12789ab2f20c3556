//! An example policy: upstream's ReplicaSet policy in every respect but one — a scale-down
//! deletes the newest pods first (by creation time), whatever their readiness or node.
//!
//! It shows the guest author's loop end to end (see the README): reuse the upstream pipeline
//! through [`guest_replicaset::reconcile_with`] and replace only the choice of victims.

use guest_replicaset::{View, bindings, reconcile_with, status_after_scale_error, types};

/// The component's exports.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct NewestFirst;

impl bindings::Guest for NewestFirst {
    fn reconcile(snapshot: types::Snapshot) -> Result<types::Plan, types::ReconcileError> {
        reconcile_with(&snapshot, newest_first)
    }

    fn status_after_scale_error(
        rs: types::ReplicaSet,
        plan_status: types::ReplicaSetStatus,
        message: String,
        now: i64,
    ) -> types::ReplicaSetStatus {
        status_after_scale_error(&rs, plan_status, &message, now)
    }
}

/// Picks the `n` newest candidates; ties (equal creation times) go to the lexically greater name,
/// so the choice never depends on snapshot order. A pod without a creation time counts as newest.
pub fn newest_first(view: &View<'_>, candidates: &[u32], n: usize) -> Vec<u32> {
    let mut victims = candidates.to_vec();
    victims.sort_by(|&a, &b| {
        let (pa, pb) = (view.pod(a), view.pod(b));
        let created = |p: &types::Pod| p.creation_timestamp.unwrap_or(i64::MAX);
        created(pb).cmp(&created(pa)).then_with(|| view.pod_name(pb).cmp(view.pod_name(pa)))
    });
    victims.truncate(n);
    victims
}

#[cfg(target_arch = "wasm32")]
bindings::export_policy!(NewestFirst);

#[cfg(test)]
mod tests {
    use guest_replicaset::testkit::{ago, pod, rs, snapshot};

    use super::*;

    fn names(snapshot: &types::Snapshot, indices: &[u32]) -> Vec<String> {
        let view = View::new(snapshot).unwrap();
        indices.iter().map(|&i| view.pod_name(view.pod(i)).to_string()).collect()
    }

    #[test]
    fn a_scale_down_deletes_the_newest_pods_even_when_they_are_ready() {
        let snap = snapshot(rs("web").replicas(1))
            .pod(pod("old").running().ready_since(ago(7200)).created(ago(7200)).on("n1"))
            .pod(pod("new").running().ready_since(ago(60)).created(ago(60)).on("n1"))
            .pod(pod("newer").running().ready_since(ago(30)).created(ago(30)).on("n2"))
            .build();
        let plan = reconcile_with(&snap, newest_first).unwrap();
        assert_eq!(names(&snap, &plan.delete), ["newer", "new"]);
    }

    #[test]
    fn everything_but_the_victims_is_upstream() {
        // Upstream deletes the unscheduled pending pod first; this policy the newest one.
        let snap = snapshot(rs("web").replicas(1))
            .pod(pod("pending").created(ago(7200)))
            .pod(pod("running").running().ready_since(ago(60)).created(ago(60)).on("n1"))
            .build();
        let upstream = guest_replicaset::reconcile(&snap).unwrap();
        let ours = reconcile_with(&snap, newest_first).unwrap();
        assert_eq!(names(&snap, &upstream.delete), ["pending"]);
        assert_eq!(names(&snap, &ours.delete), ["running"]);
        assert_eq!(
            (ours.create, &ours.status, ours.requeue_after),
            (upstream.create, &upstream.status, upstream.requeue_after)
        );
    }
}
