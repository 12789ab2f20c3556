//! Which pods to delete first: `getPodsToDelete` and `ActivePodsWithRanks.Less`.
//!
//! `Less(i, j)` says pod i is deleted before pod j; the first rule on which the two differ wins:
//! 1. Unassigned < assigned (no `spec.nodeName` first).
//! 2. PodPending < PodUnknown < PodRunning (any other phase ranks like Pending).
//! 3. Not ready < ready.
//! 4. Lower pod-deletion-cost < higher pod-deletion-cost.
//! 5. Doubled up < not doubled up: more related active pods on the same node first.
//! 6. Both ready: been ready for empty time < less time < more time, compared on a log2 scale
//!    of `now - readyTime` ([`crate::log_scale`]); within one bucket the lower UID goes first.
//! 7. Higher container restart count first, then higher sidecar (restartable init) restarts.
//! 8. Empty creation time < newer < older, on the same log2 scale with the same UID tie-break.
//! 9. Otherwise equal: the input order is kept (see [`crate::sort`]).
//!
//! Every per-pod input of `Less` is computed once into a [`RankKey`] before sorting (the
//! deletion cost is parsed once, the log2 buckets taken once), so sorting thousands of pods
//! costs only integer comparisons.

use crate::deletion_cost::get_deletion_cost_from_pod_annotations;
use crate::log_scale::logarithmic_rank;
use crate::sort::merge_sort_by;
use crate::types::{Pod, PodPhase};
use crate::view::View;

/// Mirrors `getPodsToDelete`: the `n` pods of `candidates` to delete, most preferred first.
///
/// `candidates` are the claimed active pods (indices into `snapshot.pods`). When all of them go
/// (`n >= candidates.len()`) ranking them would change nothing, so, like upstream, they come back
/// in input order unsorted.
pub fn get_pods_to_delete(view: &View<'_>, candidates: &[u32], n: usize) -> Vec<u32> {
    if n >= candidates.len() {
        return candidates.to_vec();
    }
    let mut ranked = rank_pods_for_deletion(view, candidates);
    ranked.truncate(n);
    ranked
}

/// All of `candidates`, sorted by `ActivePodsWithRanks.Less` (the first is deleted first).
///
/// The rank of a pod is its node's `related-active-pods`, upstream's
/// `getPodsRankedByRelatedPodsOnSameNode`.
pub fn rank_pods_for_deletion(view: &View<'_>, candidates: &[u32]) -> Vec<u32> {
    let keys: Vec<RankKey<'_>> = candidates.iter().map(|&index| RankKey::new(view, view.pod(index))).collect();
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    merge_sort_by(&mut order, |&a, &b| keys[a as usize].less(&keys[b as usize]));
    order.into_iter().map(|k| candidates[k as usize]).collect()
}

/// Everything `ActivePodsWithRanks.Less` reads about one pod, precomputed.
#[derive(Debug, Clone, Copy)]
pub struct RankKey<'a> {
    unassigned: bool,
    phase: u8,
    ready: bool,
    deletion_cost: i32,
    rank: u32,
    /// `podReadyTime`: the Ready condition's transition time, for ready pods only.
    ready_time: Option<i64>,
    ready_bucket: i64,
    restarts: u32,
    sidecar_restarts: u32,
    created: Option<i64>,
    created_bucket: i64,
    uid: Uid<'a>,
}

impl<'a> RankKey<'a> {
    /// The key of `pod`, ranked against the other pods at `view.now()`.
    pub fn new(view: &View<'a>, pod: &Pod) -> Self {
        let now = view.now();
        let node = view.node(pod.node);
        let ready_time = if pod.ready { pod.ready_transition } else { None };
        RankKey {
            unassigned: node.name.is_empty(),
            phase: phase_ordinal(pod.phase),
            ready: pod.ready,
            deletion_cost: get_deletion_cost_from_pod_annotations(view.pod_deletion_cost(pod)),
            rank: node.related_active_pods,
            ready_time,
            ready_bucket: ready_time.map_or(-1, |t| logarithmic_rank(now, t)),
            restarts: pod.max_container_restarts,
            sidecar_restarts: pod.max_sidecar_restarts,
            created: pod.creation_timestamp,
            created_bucket: pod.creation_timestamp.map_or(-1, |t| logarithmic_rank(now, t)),
            uid: Uid::new(view.pod_uid(pod)),
        }
    }

    /// Mirrors `ActivePodsWithRanks.Less`: whether `self` is deleted before `other`.
    pub fn less(&self, other: &Self) -> bool {
        let (i, j) = (self, other);
        // 1. Unassigned < assigned: a pod not yet bound to a node goes first.
        if i.unassigned != j.unassigned {
            return i.unassigned;
        }
        // 2. Phase: Pending < Unknown < Running.
        if i.phase != j.phase {
            return i.phase < j.phase;
        }
        // 3. Not ready < ready.
        if i.ready != j.ready {
            return !i.ready;
        }
        // 4. Cheaper to delete (lower pod-deletion-cost annotation) goes first.
        if i.deletion_cost != j.deletion_cost {
            return i.deletion_cost < j.deletion_cost;
        }
        // 5. Doubled up < not doubled up: the pod sharing its node with more related active
        //    pods goes first (the colocation rank).
        if i.rank != j.rank {
            return i.rank > j.rank;
        }
        // 6. Among ready pods, the one ready for the shortest time goes first (log2 buckets).
        if i.ready && j.ready && i.ready_time != j.ready_time {
            return newer_first(i.ready_time, i.ready_bucket, &i.uid, j.ready_time, j.ready_bucket, &j.uid);
        }
        // 7. More container restarts goes first...
        if i.restarts != j.restarts {
            return i.restarts > j.restarts;
        }
        // ...and on a tie, more sidecar restarts.
        if i.sidecar_restarts != j.sidecar_restarts {
            return i.sidecar_restarts > j.sidecar_restarts;
        }
        // 8. Younger goes first; a pod without a creation time counts as youngest (log2 buckets).
        if i.created != j.created {
            return newer_first(i.created, i.created_bucket, &i.uid, j.created, j.created_bucket, &j.uid);
        }
        // 9. Otherwise neither is less: the sort keeps their input order.
        false
    }
}

/// Rules 6 and 8 for two *different* timestamps: the newer one goes first, with time measured
/// on a log2 scale so pods of similar age are spread by UID instead (upstream's
/// LogarithmicScaleDown). A missing time uses `afterOrZero`: it counts as the newest.
fn newer_first(t1: Option<i64>, bucket1: i64, uid1: &Uid<'_>, t2: Option<i64>, bucket2: i64, uid2: &Uid<'_>) -> bool {
    match (t1, t2) {
        (Some(_), Some(_)) => {
            // logarithmicRankDiff: an equal bucket is decided by UID, with no further rule.
            if bucket1 == bucket2 { uid1 < uid2 } else { bucket1 < bucket2 }
        }
        // afterOrZero: if one of them is zero, the zero time is seen as after the other.
        _ => t1.is_none(),
    }
}

/// A pod UID for Go's bytewise string comparison, with its first 8 bytes read as a big-endian
/// number: UIDs are random from the first character, so that number almost always decides and
/// the sort seldom compares strings. Zero padding keeps the order exact for short UIDs (a
/// prefix compares below any extension of it), and equal numbers fall back to the strings.
#[derive(Debug, Clone, Copy)]
struct Uid<'a> {
    prefix: u64,
    text: &'a str,
}

impl<'a> Uid<'a> {
    fn new(text: &'a str) -> Self {
        let mut head = [0u8; 8];
        let len = text.len().min(8);
        head[..len].copy_from_slice(&text.as_bytes()[..len]);
        Uid { prefix: u64::from_be_bytes(head), text }
    }
}

impl PartialEq for Uid<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl PartialOrd for Uid<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.prefix.cmp(&other.prefix).then_with(|| self.text.cmp(other.text)))
    }
}

/// `podPhaseToOrdinal`: Pending 0, Unknown 1, Running 2; phases not in the map count as 0.
fn phase_ordinal(phase: PodPhase) -> u8 {
    match phase {
        PodPhase::Unknown => 1,
        PodPhase::Running => 2,
        PodPhase::Pending | PodPhase::Succeeded | PodPhase::Failed | PodPhase::Other => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::types::Snapshot;

    /// Deletes `n` of all the snapshot's pods (candidates in snapshot order), by name.
    fn delete(snap: &Snapshot, n: usize) -> Vec<&str> {
        let view = View::new(snap).unwrap();
        let candidates: Vec<u32> = (0..snap.pods.len() as u32).collect();
        names(snap, &get_pods_to_delete(&view, &candidates, n))
    }

    /// The full deletion order of the snapshot's pods, by name.
    fn ranked(snap: &Snapshot) -> Vec<&str> {
        let view = View::new(snap).unwrap();
        let candidates: Vec<u32> = (0..snap.pods.len() as u32).collect();
        names(snap, &rank_pods_for_deletion(&view, &candidates))
    }

    // --- each rule deciding on its own ---

    #[test]
    fn rule_1_unassigned_pods_go_before_assigned_ones() {
        // Even though the assigned pod loses on every later rule.
        let snap = snapshot(rs("foobar"))
            .pod(pod("assigned").on("node-1").cost("-100").created(T0))
            .pod(pod("unassigned").running().cost("100").created(ago(1000)))
            .related("node-1", 9)
            .build();
        assert_eq!(ranked(&snap), ["unassigned", "assigned"]);
    }

    #[test]
    fn rule_2_pending_before_unknown_before_running() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("running").phase(PodPhase::Running).on("n"))
            .pod(pod("unknown").phase(PodPhase::Unknown).on("n"))
            .pod(pod("pending").on("n"))
            .build();
        assert_eq!(ranked(&snap), ["pending", "unknown", "running"]);
    }

    #[test]
    fn rule_2_unrecognised_phases_rank_like_pending() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("unknown").phase(PodPhase::Unknown).on("n"))
            .pod(pod("other").phase(PodPhase::Other).on("n"))
            .pod(pod("pending").on("n"))
            .build();
        // Other and Pending tie on every rule, so they keep their input order.
        assert_eq!(ranked(&snap), ["other", "pending", "unknown"]);
    }

    #[test]
    fn rule_3_not_ready_before_ready() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("ready").running().on("n").cost("100"))
            .pod(pod("not-ready").running().not_ready().on("n").cost("-100"))
            .build();
        assert_eq!(ranked(&snap), ["not-ready", "ready"]);
    }

    #[test]
    fn rule_4_lower_deletion_cost_first() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("high").running().on("a").cost("10"))
            .pod(pod("none").running().on("a"))
            .pod(pod("negative").running().on("a").cost("-5"))
            .pod(pod("invalid").running().on("a").cost("+1"))
            .build();
        // "+1" is invalid and costs 0 like a missing annotation; the two keep input order.
        assert_eq!(ranked(&snap), ["negative", "none", "invalid", "high"]);
    }

    #[test]
    fn rule_4_deletion_cost_beats_colocation() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("crowded").running().on("a").cost("1"))
            .pod(pod("alone").running().on("b"))
            .related("a", 5)
            .related("b", 1)
            .build();
        assert_eq!(ranked(&snap), ["alone", "crowded"]);
    }

    #[test]
    fn rule_5_pods_on_crowded_nodes_go_first() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("alone").ready_since(ago(1)).on("a"))
            .pod(pod("crowded").ready_since(ago(10_000)).on("b"))
            .related("a", 1)
            .related("b", 3)
            .build();
        assert_eq!(ranked(&snap), ["crowded", "alone"]);
    }

    #[test]
    fn rule_6_the_more_recently_ready_pod_goes_first_across_log2_buckets() {
        // 10 s (bucket 33) against 20 s (bucket 34): the UIDs would say otherwise.
        let snap = snapshot(rs("foobar"))
            .pod(pod("older").uid("a").ready_since(ago(20)).on("n").restarts(9))
            .pod(pod("newer").uid("b").ready_since(ago(10)).on("n"))
            .build();
        assert_eq!(ranked(&snap), ["newer", "older"]);
    }

    #[test]
    fn rule_6_within_one_log2_bucket_the_lower_uid_goes_first() {
        // 10 s and 12 s are both in bucket 33; the UID decides, restarts are never consulted.
        let snap = snapshot(rs("foobar"))
            .pod(pod("newer").uid("b").ready_since(ago(10)).on("n").restarts(9))
            .pod(pod("older").uid("a").ready_since(ago(12)).on("n"))
            .build();
        assert_eq!(ranked(&snap), ["older", "newer"]);
    }

    #[test]
    fn rule_6_a_ready_pod_without_transition_time_counts_as_newest() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("timed").uid("a").ready_since(ago(1)).on("n"))
            .pod(pod("untimed").uid("b").running().on("n"))
            .build();
        assert_eq!(ranked(&snap), ["untimed", "timed"]);
    }

    #[test]
    fn rule_6_equal_ready_times_fall_through_to_restarts() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("calm").uid("a").ready_since(ago(10)).on("n"))
            .pod(pod("flappy").uid("b").ready_since(ago(10)).on("n").restarts(3))
            .build();
        assert_eq!(ranked(&snap), ["flappy", "calm"]);
    }

    #[test]
    fn rule_6_a_future_ready_time_is_bucket_minus_one() {
        // Clock skew: a transition after `now` ranks as the most recent.
        let snap = snapshot(rs("foobar"))
            .pod(pod("past").uid("a").ready_since(ago(1)).on("n"))
            .pod(pod("future").uid("b").ready_since(T0 + NANOS).on("n"))
            .build();
        assert_eq!(ranked(&snap), ["future", "past"]);
    }

    #[test]
    fn rule_6_only_applies_when_both_pods_are_ready() {
        // Not-ready pods' transition times are ignored: restarts decide, not recency.
        let snap = snapshot(rs("foobar"))
            .pod(pod("recent").ready_since(ago(1)).not_ready().on("n").created(ago(100)))
            .pod(pod("restarted").ready_since(ago(1000)).not_ready().on("n").restarts(1).created(ago(100)))
            .build();
        assert_eq!(ranked(&snap), ["restarted", "recent"]);
    }

    #[test]
    fn rule_7_more_container_restarts_first() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("few").running().on("n").restarts(1).sidecar_restarts(50).created(T0))
            .pod(pod("many").running().on("n").restarts(5).created(ago(1000)))
            .build();
        assert_eq!(ranked(&snap), ["many", "few"]);
    }

    #[test]
    fn rule_7_sidecar_restarts_break_a_container_restart_tie() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("quiet-sidecar").running().on("n").restarts(2).created(T0))
            .pod(pod("busy-sidecar").running().on("n").restarts(2).sidecar_restarts(4).created(ago(1000)))
            .build();
        assert_eq!(ranked(&snap), ["busy-sidecar", "quiet-sidecar"]);
    }

    #[test]
    fn rule_8_newer_pods_go_first_across_log2_buckets() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("old").uid("a").running().on("n").created(ago(100)))
            .pod(pod("new").uid("b").running().on("n").created(ago(10)))
            .build();
        assert_eq!(ranked(&snap), ["new", "old"]);
    }

    #[test]
    fn rule_8_within_one_log2_bucket_the_lower_uid_goes_first() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("new").uid("z").running().on("n").created(ago(10)))
            .pod(pod("old").uid("y").running().on("n").created(ago(12)))
            .build();
        assert_eq!(ranked(&snap), ["old", "new"]);
    }

    #[test]
    fn rule_8_a_missing_creation_time_counts_as_newest() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("dated").uid("a").running().on("n").created(ago(1)))
            .pod(pod("undated").uid("b").running().on("n"))
            .build();
        assert_eq!(ranked(&snap), ["undated", "dated"]);
    }

    #[test]
    fn rule_9_pods_equal_on_every_rule_keep_their_input_order() {
        let snap = snapshot(rs("foobar"))
            .pods(
                (0..40)
                    .map(|i| pod(&format!("p{i:02}")).uid(&format!("u{}", 40 - i)).running().on("n").created(ago(5))),
            )
            .build();
        let expected: Vec<String> = (0..40).map(|i| format!("p{i:02}")).collect();
        assert_eq!(ranked(&snap), expected);
    }

    #[test]
    fn an_intransitive_set_of_pods_still_sorts_deterministically() {
        // a~b tie on time (restarts decide a first); b and c, a and c are decided by UID within
        // one bucket: a cycle. The sort must not panic and must give the same answer each time.
        let build = || {
            snapshot(rs("foobar"))
                .pod(pod("a").uid("3").ready_since(ago(10)).on("n").restarts(1))
                .pod(pod("b").uid("1").ready_since(ago(10)).on("n"))
                .pod(pod("c").uid("2").ready_since(ago(11)).on("n"))
                .build()
        };
        let first = build();
        let second = build();
        assert_eq!(ranked(&first), ranked(&second));
        assert_eq!(ranked(&first).len(), 3);
    }

    // --- getPodsToDelete ---

    #[test]
    fn deleting_every_candidate_keeps_input_order_without_ranking() {
        let snap = snapshot(rs("foobar")).pod(pod("ready").running().on("n")).pod(pod("pending")).build();
        assert_eq!(delete(&snap, 2), ["ready", "pending"]);
    }

    #[test]
    fn deleting_fewer_takes_the_first_of_the_ranking() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("ready").running().on("n"))
            .pod(pod("pending").on("n"))
            .pod(pod("unscheduled"))
            .build();
        assert_eq!(delete(&snap, 2), ["unscheduled", "pending"]);
        assert_eq!(delete(&snap, 0), Vec::<&str>::new());
    }

    /// Mirrors TestGetPodsToDelete's fixtures: pods of `newReplicaSet(1, {name: foo})`.
    fn upstream_pod(kind: &str, name: &str) -> PodBuilder {
        let p = pod(name);
        match kind {
            "unscheduled-pending" => p,
            "scheduled-pending" => p.on("fake-node"),
            "scheduled-running-not-ready" => p.phase(PodPhase::Running).on("fake-node"),
            "ready-on-node-1" => p.running().on("fake-node-1"),
            "ready-on-node-2" => p.running().on("fake-node-2"),
            _ => unreachable!("{kind}"),
        }
    }

    /// Related pods default to the pods themselves in TestGetPodsToDelete; these are the
    /// resulting per-node counts of active pods.
    fn with_related(mut snap: SnapshotBuilder, related: &[(&str, u32)]) -> Snapshot {
        for (node, count) in related {
            snap = snap.related(node, *count);
        }
        snap.build()
    }

    #[test]
    fn get_pods_to_delete_matches_every_upstream_case() {
        // TestGetPodsToDelete: "len(pods) = 0 (i.e., diff = 0 too)".
        let snap = snapshot(rs("foobar")).build();
        assert_eq!(delete(&snap, 0), Vec::<&str>::new());

        // "diff = len(pods)": all, in input order.
        let snap = snapshot(rs("foobar"))
            .pod(upstream_pod("scheduled-running-not-ready", "not-ready"))
            .pod(upstream_pod("ready-on-node-1", "ready-1"));
        let snap = with_related(snap, &[("fake-node", 1), ("fake-node-1", 1)]);
        assert_eq!(delete(&snap, 2), ["not-ready", "ready-1"]);

        // "diff < len(pods)".
        let snap = snapshot(rs("foobar"))
            .pod(upstream_pod("ready-on-node-1", "ready-1"))
            .pod(upstream_pod("scheduled-running-not-ready", "not-ready"));
        let snap = with_related(snap, &[("fake-node", 1), ("fake-node-1", 1)]);
        assert_eq!(delete(&snap, 1), ["not-ready"]);

        // "various pod phases and conditions, diff = len(pods)", with related pods and without.
        for related in [&[("fake-node-1", 2), ("fake-node-2", 1), ("fake-node", 2), ("", 1)][..], &[]] {
            let snap = snapshot(rs("foobar"))
                .pod(upstream_pod("ready-on-node-1", "ready-1a"))
                .pod(upstream_pod("ready-on-node-1", "ready-1b"))
                .pod(upstream_pod("ready-on-node-2", "ready-2"))
                .pod(upstream_pod("scheduled-running-not-ready", "not-ready"))
                .pod(upstream_pod("scheduled-pending", "scheduled-pending"))
                .pod(upstream_pod("unscheduled-pending", "unscheduled-pending"));
            let snap = with_related(snap, related);
            assert_eq!(
                delete(&snap, 6),
                ["ready-1a", "ready-1b", "ready-2", "not-ready", "scheduled-pending", "unscheduled-pending"]
            );
        }

        // "scheduled vs unscheduled, diff < len(pods)".
        let snap = snapshot(rs("foobar"))
            .pod(upstream_pod("scheduled-pending", "scheduled-pending"))
            .pod(upstream_pod("unscheduled-pending", "unscheduled-pending"));
        let snap = with_related(snap, &[("fake-node", 1), ("", 1)]);
        assert_eq!(delete(&snap, 1), ["unscheduled-pending"]);

        // "ready vs not-ready, diff < len(pods)".
        let snap = snapshot(rs("foobar"))
            .pod(upstream_pod("ready-on-node-1", "ready-1"))
            .pod(upstream_pod("scheduled-running-not-ready", "not-ready-a"))
            .pod(upstream_pod("scheduled-running-not-ready", "not-ready-b"));
        let snap = with_related(snap, &[("fake-node-1", 1), ("fake-node", 2)]);
        assert_eq!(delete(&snap, 2), ["not-ready-a", "not-ready-b"]);

        // "ready and colocated with another ready pod vs not colocated, diff < len(pods)":
        // related = [ready-1, ready-2, ready-2], so node 2 has rank 2.
        let snap = snapshot(rs("foobar"))
            .pod(upstream_pod("ready-on-node-1", "ready-1"))
            .pod(upstream_pod("ready-on-node-2", "ready-2"));
        let snap = with_related(snap, &[("fake-node-1", 1), ("fake-node-2", 2)]);
        assert_eq!(delete(&snap, 1), ["ready-2"]);

        // "pending vs running, diff < len(pods)".
        let snap = snapshot(rs("foobar"))
            .pod(upstream_pod("scheduled-pending", "scheduled-pending"))
            .pod(upstream_pod("scheduled-running-not-ready", "not-ready"));
        let snap = with_related(snap, &[("fake-node", 2)]);
        assert_eq!(delete(&snap, 1), ["scheduled-pending"]);

        // "various pod phases and conditions, diff < len(pods)".
        let snap = snapshot(rs("foobar"))
            .pod(upstream_pod("ready-on-node-1", "ready-1"))
            .pod(upstream_pod("ready-on-node-2", "ready-2"))
            .pod(upstream_pod("scheduled-running-not-ready", "not-ready"))
            .pod(upstream_pod("scheduled-pending", "scheduled-pending"))
            .pod(upstream_pod("unscheduled-pending", "unscheduled-pending"));
        let snap = with_related(snap, &[("fake-node-1", 1), ("fake-node-2", 1), ("fake-node", 2), ("", 1)]);
        assert_eq!(delete(&snap, 3), ["unscheduled-pending", "scheduled-pending", "not-ready"]);
    }

    #[test]
    fn a_costlier_or_steadier_pod_survives_a_scale_down() {
        // TestPodDeletionCost (integration, policy half): scaling 2 -> 1 keeps the costlier pod;
        // with equal or no cost the pod with more restarts goes.
        let snap = snapshot(rs("foobar"))
            .pod(pod("cheap").running().on("n").cost("100"))
            .pod(pod("dear").running().on("n").cost("200"))
            .build();
        assert_eq!(delete(&snap, 1), ["cheap"]);
        let snap = snapshot(rs("foobar"))
            .pod(pod("steady").running().on("n"))
            .pod(pod("crashy").running().on("n").restarts(3))
            .build();
        assert_eq!(delete(&snap, 1), ["crashy"]);
    }

    #[test]
    fn ranking_five_thousand_pods_is_fast_and_complete() {
        let snap = snapshot(rs("foobar"))
            .pods((0..5000).map(|i| {
                pod(&format!("p{i}"))
                    .uid(&format!("{:08x}", (i as u64).wrapping_mul(2_654_435_761) % 100_000_000))
                    .ready_since(ago(i % 300))
                    .on(&format!("node-{}", i % 50))
                    .restarts((i % 7) as u32)
                    .created(ago(1000 + i % 900))
            }))
            .related("node-1", 3)
            .build();
        let view = View::new(&snap).unwrap();
        let candidates: Vec<u32> = (0..5000).collect();
        let start = std::time::Instant::now();
        let victims = get_pods_to_delete(&view, &candidates, 2500);
        let elapsed = start.elapsed();
        let mut unique = victims.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 2500);
        // Generous even for an unoptimised test build on a busy machine.
        assert!(elapsed.as_millis() < 2000, "{elapsed:?}");
    }
}
