//! How far to scale in one sync: the arithmetic of `manageReplicas`.
//!
//! `diff = len(activePods) - spec.replicas` over the claimed active pods. Too few: create
//! `min(-diff, burstReplicas)`. Too many: delete `min(diff, burstReplicas)`, the victims chosen
//! by the ranking (or by whatever chooser the guest passes, see [`crate::reconcile_with`]).
//! The host does the rest of upstream's `manageReplicas`: expectations, slow-start batches of
//! creations, concurrent deletions and their events.
//!
//! Whether to scale at all (expectations satisfied, ReplicaSet not deleting) is decided by the
//! caller, as `syncReplicaSet` decides before calling `manageReplicas`.

use crate::log;
use crate::view::View;

/// What one sync asks for: never both creations and deletions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scale {
    /// Pods to create from the template.
    pub create: u32,
    /// Pods to delete (indices into `snapshot.pods`), most preferred victim first.
    pub delete: Vec<u32>,
}

/// Mirrors `manageReplicas(activePods, rs)` up to the API calls. `active_pods` are the claimed
/// active pods; `choose_victims(view, active_pods, n)` picks the `n` to delete (`n` is at least
/// 1 and at most `active_pods.len()`).
pub fn manage_replicas(
    view: &View<'_>,
    active_pods: &[u32],
    choose_victims: impl FnOnce(&View<'_>, &[u32], usize) -> Vec<u32>,
) -> Scale {
    let spec_replicas = i64::from(view.replica_set().replicas);
    let burst = i64::from(view.snapshot().burst_replicas);
    let active = active_pods.len() as i64;
    let diff = active - spec_replicas;
    if diff < 0 {
        // Too few replicas: create the difference, at most `burstReplicas` per sync.
        let create = (-diff).min(burst);
        log::debug("too few replicas", &[("need", spec_replicas), ("creating", create)]);
        Scale { create: u32::try_from(create).unwrap_or(u32::MAX), delete: Vec::new() }
    } else if diff > 0 {
        // Too many replicas: delete the difference, at most `burstReplicas` per sync. The cap by
        // `active` only matters for a negative spec.replicas, which the API server never stores.
        let n = diff.min(burst).min(active);
        log::debug("too many replicas", &[("need", spec_replicas), ("deleting", n)]);
        if n == 0 {
            return Scale::default();
        }
        Scale { create: 0, delete: choose_victims(view, active_pods, n as usize) }
    } else {
        Scale::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rank::get_pods_to_delete;
    use crate::testkit::*;
    use crate::types::Snapshot;

    fn manage(snap: &Snapshot) -> Scale {
        let view = View::new(snap).unwrap();
        let all: Vec<u32> = (0..snap.pods.len() as u32).collect();
        manage_replicas(&view, &all, get_pods_to_delete)
    }

    fn pods(n: usize) -> impl Iterator<Item = PodBuilder> {
        (0..n).map(|i| pod(&format!("pod{i}")).running().on("node"))
    }

    #[test]
    fn nothing_to_do_when_the_count_matches() {
        let snap = snapshot(rs("foobar").replicas(2)).pods(pods(2)).build();
        assert_eq!(manage(&snap), Scale::default());
    }

    #[test]
    fn too_few_replicas_creates_the_difference() {
        let snap = snapshot(rs("foobar").replicas(5)).pods(pods(2)).build();
        assert_eq!(manage(&snap), Scale { create: 3, delete: vec![] });
    }

    #[test]
    fn creations_are_capped_by_burst_replicas() {
        // TestSyncReplicaSetCreateFailures (policy half): 100 wanted, one plan asks for them
        // all (burst 500); the host's slow start and the quota limit stop it at 10.
        let snap = snapshot(rs("foobar").replicas(100)).build();
        assert_eq!(manage(&snap), Scale { create: 100, delete: vec![] });
        // TestControllerBurstReplicas (policy half): burst 5, 30 replicas -> 5 per sync.
        let snap = snapshot(rs("foobar").replicas(30)).burst(5).build();
        assert_eq!(manage(&snap), Scale { create: 5, delete: vec![] });
        let snap = snapshot(rs("foobar").replicas(12)).pods(pods(10)).burst(5).build();
        assert_eq!(manage(&snap), Scale { create: 2, delete: vec![] });
    }

    #[test]
    fn too_many_replicas_deletes_the_difference() {
        let snap = snapshot(rs("foobar").replicas(1)).pods(pods(3)).build();
        assert_eq!(manage(&snap), Scale { create: 0, delete: vec![0, 1] });
    }

    #[test]
    fn deletions_are_capped_by_burst_replicas() {
        // TestControllerBurstReplicas (policy half): burst 3, scaling 30 -> 2 deletes 3 per sync.
        let snap = snapshot(rs("foobar").replicas(2)).pods(pods(30)).burst(3).build();
        assert_eq!(manage(&snap), Scale { create: 0, delete: vec![0, 1, 2] });
    }

    #[test]
    fn scaling_to_zero_deletes_everything_in_input_order() {
        let snap = snapshot(rs("foobar").replicas(0)).pod(pod("ready").running().on("n")).pod(pod("pending")).build();
        assert_eq!(manage(&snap), Scale { create: 0, delete: vec![0, 1] });
    }

    #[test]
    fn a_zero_burst_neither_creates_nor_deletes() {
        let snap = snapshot(rs("foobar").replicas(5)).pods(pods(2)).burst(0).build();
        assert_eq!(manage(&snap), Scale::default());
        let snap = snapshot(rs("foobar").replicas(0)).pods(pods(2)).burst(0).build();
        assert_eq!(manage(&snap), Scale::default());
    }

    #[test]
    fn a_negative_spec_never_deletes_more_than_exist() {
        let snap = snapshot(rs("foobar").replicas(-3)).pods(pods(2)).build();
        assert_eq!(manage(&snap), Scale { create: 0, delete: vec![0, 1] });
    }

    #[test]
    fn the_chooser_gets_the_candidates_and_the_capped_count() {
        let snap = snapshot(rs("foobar").replicas(1)).pods(pods(4)).burst(2).build();
        let view = View::new(&snap).unwrap();
        let scale = manage_replicas(&view, &[3, 1, 0, 2], |_, candidates, n| {
            assert_eq!((candidates, n), (&[3, 1, 0, 2][..], 2));
            vec![2, 0]
        });
        assert_eq!(scale, Scale { create: 0, delete: vec![2, 0] });
    }
}
