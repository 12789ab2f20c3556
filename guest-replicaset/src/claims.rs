//! Which pods the ReplicaSet owns: `FilterActivePods`, then `ClaimPods` (adopt, release, keep).
//!
//! Mirrors `ControllerRefManager.ClaimObject` for each *active* pod, in snapshot order:
//! 1. controlled by another object: ignored, never claimed;
//! 2. ours and the selector matches: claimed, even while the ReplicaSet is being deleted,
//!    because keeping what we own takes no action;
//! 3. ours and the selector no longer matches: released, unless the ReplicaSet is being deleted
//!    (then neither claimed nor released);
//! 4. an orphan: adopted (and claimed) only if the ReplicaSet is not being deleted, the selector
//!    matches, the pod is not being deleted and it lives in the ReplicaSet's namespace.
//!
//! Terminating pods are never claimed here (`FilterActivePods` comes first); they are only
//! counted, by [`count_terminating`], for `status.terminatingReplicas`.

use crate::types::Controller;
use crate::view::{View, is_pod_active, is_pod_terminating};

/// The outcome of claiming: the plan's `adopt` and `release`, and the claimed active pods.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// Active pods the ReplicaSet owns after this sync (kept and adopted), in snapshot order.
    pub claimed: Vec<u32>,
    /// Orphans to adopt, in snapshot order.
    pub adopt: Vec<u32>,
    /// Owned pods whose labels no longer match, to release, in snapshot order.
    pub release: Vec<u32>,
}

/// Mirrors `FilterActivePods` followed by `claimPods`. `selected[s]` says whether label set `s`
/// matches the ReplicaSet's selector (computed once per label set, not per pod).
pub fn claim_pods(view: &View<'_>, selected: &[bool]) -> Claims {
    let rs = view.replica_set();
    let rs_deleting = rs.deletion_timestamp.is_some();
    let mut claims = Claims::default();
    for (index, pod) in view.pods().iter().enumerate() {
        // FilterActivePods runs before claiming: terminating and finished pods are not candidates.
        if !is_pod_active(pod) {
            continue;
        }
        let index = index as u32;
        let matches = selected[pod.labels as usize];
        match pod.controller {
            // 1. Owned by someone else. Ignore.
            Controller::Other => {}
            // 2. We already own it and the selector matches.
            Controller::ThisReplicaSet if matches => claims.claimed.push(index),
            // 3. Owned by us but the selector doesn't match: release, unless we're being deleted.
            Controller::ThisReplicaSet => {
                if !rs_deleting {
                    claims.release.push(index);
                }
            }
            // 4. An orphan: adopt it if every precondition of ClaimObject holds.
            Controller::None => {
                let adoptable = !rs_deleting
                    && matches
                    && pod.deletion_timestamp.is_none()
                    // Newer upstream refuses cross-namespace adoption (an orphan index hit in
                    // another namespace must not be taken over).
                    && view.pod_namespace(pod) == rs.namespace;
                if adoptable {
                    claims.adopt.push(index);
                    claims.claimed.push(index);
                }
            }
        }
    }
    claims
}

/// Mirrors `FilterClaimedPods(rs, selector, FilterTerminatingPods(allRSPods))`: pods controlled by
/// this ReplicaSet whose labels match, with a deletion timestamp and a phase that is not final.
pub fn count_terminating(view: &View<'_>, selected: &[bool]) -> i32 {
    let count = view
        .pods()
        .iter()
        .filter(|pod| {
            pod.controller == Controller::ThisReplicaSet && selected[pod.labels as usize] && is_pod_terminating(pod)
        })
        .count();
    i32::try_from(count).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::Selector;
    use crate::testkit::*;
    use crate::types::{PodPhase, Snapshot};

    fn selected(snap: &Snapshot) -> Vec<bool> {
        let selector = Selector::from_label_selector(&snap.replica_set.selector).unwrap();
        snap.label_sets.iter().map(|set| selector.matches(set)).collect()
    }

    fn claim(snap: &Snapshot) -> Claims {
        claim_pods(&View::new(snap).unwrap(), &selected(snap))
    }

    fn terminating(snap: &Snapshot) -> i32 {
        count_terminating(&View::new(snap).unwrap(), &selected(snap))
    }

    #[test]
    fn owned_matching_pods_are_claimed_without_action() {
        let snap = snapshot(rs("foobar")).pod(pod("a")).pod(pod("b")).build();
        assert_eq!(claim(&snap), Claims { claimed: vec![0, 1], adopt: vec![], release: vec![] });
    }

    #[test]
    fn owned_matching_pods_stay_claimed_while_the_replica_set_is_deleting() {
        let snap = snapshot(rs("foobar").deleting(T0)).pod(pod("a")).build();
        assert_eq!(claim(&snap), Claims { claimed: vec![0], adopt: vec![], release: vec![] });
    }

    #[test]
    fn owned_pods_whose_labels_no_longer_match_are_released() {
        let snap = snapshot(rs("foobar")).pod(pod("a")).pod(pod("b").labels(&[("foo", "other")])).build();
        assert_eq!(claim(&snap), Claims { claimed: vec![0], adopt: vec![], release: vec![1] });
    }

    #[test]
    fn a_deleting_replica_set_does_not_release_mismatching_pods() {
        let snap = snapshot(rs("foobar").deleting(T0)).pod(pod("b").labels(&[("foo", "other")])).build();
        assert_eq!(claim(&snap), Claims::default());
    }

    #[test]
    fn pods_of_another_controller_are_ignored() {
        // Mirrors TestDoNotPatchPodWithOtherControlRef (policy half: no adoption, not counted).
        let snap = snapshot(rs("foobar")).pod(pod("a").other_controller()).build();
        assert_eq!(claim(&snap), Claims::default());
    }

    #[test]
    fn matching_orphans_are_adopted_and_claimed() {
        let snap = snapshot(rs("foobar")).pod(pod("a")).pod(pod("b").orphan()).build();
        assert_eq!(claim(&snap), Claims { claimed: vec![0, 1], adopt: vec![1], release: vec![] });
    }

    #[test]
    fn orphans_are_not_adopted_by_a_deleting_replica_set() {
        // Mirrors TestDoNotAdoptOrCreateIfBeingDeleted (policy half).
        let snap = snapshot(rs("foobar").deleting(T0)).pod(pod("a").orphan()).build();
        assert_eq!(claim(&snap), Claims::default());
    }

    #[test]
    fn orphans_whose_labels_do_not_match_are_not_adopted() {
        let snap = snapshot(rs("foobar")).pod(pod("a").orphan().labels(&[("foo", "baz")])).build();
        assert_eq!(claim(&snap), Claims::default());
    }

    #[test]
    fn orphans_in_another_namespace_are_not_adopted() {
        let snap = snapshot(rs("foobar")).pod(pod("a").orphan().namespace("other")).build();
        assert_eq!(claim(&snap), Claims::default());
    }

    #[test]
    fn inactive_pods_are_neither_claimed_adopted_nor_released() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("owned-deleting").running().deleting(T0))
            .pod(pod("owned-failed").phase(PodPhase::Failed))
            .pod(pod("owned-succeeded-mismatch").phase(PodPhase::Succeeded).labels(&[("foo", "x")]))
            .pod(pod("orphan-deleting").orphan().deleting(T0))
            .pod(pod("orphan-failed").orphan().phase(PodPhase::Failed))
            .build();
        assert_eq!(claim(&snap), Claims::default());
    }

    #[test]
    fn terminating_counts_only_owned_matching_pods_that_are_not_finished() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("active"))
            .pod(pod("terminating").running().deleting(T0))
            .pod(pod("terminating-pending").deleting(T0))
            .pod(pod("terminated").phase(PodPhase::Failed).deleting(T0))
            .pod(pod("orphan-terminating").orphan().deleting(T0))
            .pod(pod("other-terminating").other_controller().deleting(T0))
            .pod(pod("mismatch-terminating").labels(&[("foo", "x")]).deleting(T0))
            .build();
        assert_eq!(terminating(&snap), 2);
    }

    #[test]
    fn terminating_pods_are_counted_even_while_the_replica_set_is_deleting() {
        let snap = snapshot(rs("foobar").deleting(T0)).pod(pod("a").deleting(T0)).build();
        assert_eq!(terminating(&snap), 1);
    }
}
