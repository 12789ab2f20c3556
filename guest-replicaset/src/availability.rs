//! When a ready pod becomes available: `IsPodAvailable` and the next availability check.
//!
//! A pod is available once it has been Ready for `minReadySeconds`. Nothing about the pod
//! changes at that instant, so no watch event arrives; upstream therefore requeues the
//! ReplicaSet for the moment the next ready pod turns available (`syncReplicaSet` step 15,
//! `FindMinNextPodAvailabilityCheck`), falling back to `minReadySeconds` itself.

use crate::types::{Pod, ReplicaSetStatus};
use crate::view::View;

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Mirrors `podutil.IsPodAvailable` (newest, inclusive boundary): ready, and either
/// `minReadySeconds` is 0 or the Ready transition time is set and
/// `transition + minReadySeconds <= now`.
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: i64) -> bool {
    if !pod.ready {
        return false;
    }
    if min_ready_seconds == 0 {
        return true;
    }
    pod.ready_transition.is_some_and(|ltt| ltt.saturating_add(seconds(min_ready_seconds)) <= now)
}

/// Mirrors `nextPodAvailabilityCheck`: how long until a ready pod turns available, if it is
/// ready, has a transition time and has not turned available yet.
fn next_pod_availability_check(pod: &Pod, min_ready_seconds: i32, now: i64) -> Option<i64> {
    if !pod.ready || min_ready_seconds <= 0 {
        return None;
    }
    let ltt = pod.ready_transition?;
    let next_check = ltt.saturating_add(seconds(min_ready_seconds)).saturating_sub(now);
    (next_check > 0).then_some(next_check)
}

/// Mirrors `FindMinNextPodAvailabilityCheck` over the claimed active pods: the soonest instant
/// (as a duration from `now`, in nanoseconds) at which one of them turns available.
///
/// Upstream re-evaluates the winning pod against a fresh clock reading; the guest has no clock
/// and `now` is the only instant, so that re-evaluation would give the same positive value.
pub fn find_min_next_pod_availability_check(
    view: &View<'_>,
    active_pods: &[u32],
    min_ready_seconds: i32,
) -> Option<i64> {
    active_pods
        .iter()
        .filter_map(|&index| next_pod_availability_check(view.pod(index), min_ready_seconds, view.now()))
        .min()
}

/// `syncReplicaSet` step 15: when to look at the ReplicaSet again (nanoseconds), given the new
/// status. Only when `minReadySeconds > 0` and some ready pods are not yet available; then the
/// next availability check, or `minReadySeconds` if no pod has a pending check.
///
/// The host applies it only when the plan applied without error (upstream returns the scaling
/// error before requeueing, and the rate-limited retry takes over).
pub fn requeue_after(view: &View<'_>, active_pods: &[u32], status: &ReplicaSetStatus) -> Option<u64> {
    let min_ready_seconds = view.replica_set().min_ready_seconds;
    if min_ready_seconds <= 0 || status.ready_replicas == status.available_replicas {
        return None;
    }
    let next = find_min_next_pod_availability_check(view, active_pods, min_ready_seconds)
        .unwrap_or_else(|| seconds(min_ready_seconds));
    u64::try_from(next).ok()
}

fn seconds(count: i32) -> i64 {
    i64::from(count) * NANOS_PER_SECOND
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::types::Snapshot;

    fn available(p: PodBuilder, min_ready_seconds: i32) -> bool {
        let snap = snapshot(rs("foobar")).pod(p).build();
        is_pod_available(&snap.pods[0], min_ready_seconds, snap.now)
    }

    fn next_check(snap: &Snapshot) -> Option<i64> {
        let view = View::new(snap).unwrap();
        let all: Vec<u32> = (0..snap.pods.len() as u32).collect();
        find_min_next_pod_availability_check(&view, &all, snap.replica_set.min_ready_seconds)
    }

    #[test]
    fn a_not_ready_pod_is_never_available() {
        assert!(!available(pod("a").ready_since(ago(100)).not_ready(), 0));
        assert!(!available(pod("a").ready_since(ago(100)).not_ready(), 5));
    }

    #[test]
    fn without_min_ready_seconds_every_ready_pod_is_available() {
        assert!(available(pod("a").running(), 0));
        assert!(available(pod("a").ready_since(T0), 0));
    }

    #[test]
    fn a_ready_pod_becomes_available_at_exactly_min_ready_seconds() {
        // The boundary is inclusive (newest upstream): ready 5 s ago with minReadySeconds 5.
        assert!(available(pod("a").ready_since(ago(5)), 5));
        assert!(!available(pod("a").ready_since(ago(5) + 1), 5));
        assert!(available(pod("a").ready_since(ago(10)), 5));
    }

    #[test]
    fn a_ready_pod_without_transition_time_is_not_available_with_min_ready_seconds() {
        assert!(!available(pod("a").running(), 5));
    }

    #[test]
    fn the_next_check_is_the_soonest_pod_to_turn_available() {
        let snap = snapshot(rs("foobar").min_ready_seconds(10))
            .pod(pod("pending"))
            .pod(pod("fresh").ready_since(T0))
            .pod(pod("half").ready_since(ago(6)))
            .pod(pod("done").ready_since(ago(30)))
            .pod(pod("untimed").running())
            .build();
        assert_eq!(next_check(&snap), Some(4 * NANOS));
    }

    #[test]
    fn there_is_no_next_check_when_no_ready_pod_is_waiting() {
        let snap = snapshot(rs("foobar").min_ready_seconds(10))
            .pod(pod("done").ready_since(ago(10)))
            .pod(pod("untimed").running())
            .pod(pod("not-ready").ready_since(T0).not_ready())
            .build();
        assert_eq!(next_check(&snap), None);
    }

    #[test]
    fn requeue_uses_the_next_check_when_ready_and_available_differ() {
        let snap = snapshot(rs("foobar").min_ready_seconds(10)).pod(pod("a").ready_since(ago(3))).build();
        let view = View::new(&snap).unwrap();
        assert_eq!(requeue_after(&view, &[0], &status(1, 1, 1, 0)), Some(7 * NANOS as u64));
    }

    #[test]
    fn requeue_falls_back_to_min_ready_seconds() {
        // Ready without a transition time: never available, no check to wait for.
        let snap = snapshot(rs("foobar").min_ready_seconds(10)).pod(pod("a").running()).build();
        let view = View::new(&snap).unwrap();
        assert_eq!(requeue_after(&view, &[0], &status(1, 1, 1, 0)), Some(10 * NANOS as u64));
    }

    #[test]
    fn no_requeue_when_every_ready_pod_is_available_or_min_ready_seconds_is_zero() {
        let snap = snapshot(rs("foobar").min_ready_seconds(10)).pod(pod("a").ready_since(ago(30))).build();
        let view = View::new(&snap).unwrap();
        assert_eq!(requeue_after(&view, &[0], &status(1, 1, 1, 1)), None);
        let snap = snapshot(rs("foobar")).pod(pod("a").ready_since(T0)).build();
        let view = View::new(&snap).unwrap();
        assert_eq!(requeue_after(&view, &[0], &status(1, 1, 1, 0)), None);
    }
}
