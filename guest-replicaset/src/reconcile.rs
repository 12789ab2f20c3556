//! The pipeline: the pure half of `syncReplicaSet`, from a snapshot to a plan.
//!
//! Steps, numbered as in upstream's `syncReplicaSet` (the host did 1-4 and 6: key, consistency
//! gate, lister, expectations, pod listing):
//! 5. turn `spec.selector` into a selector; an invalid one ends the sync (no plan);
//! 7-8. `FilterActivePods` and `claimPods`: the plan's `adopt` and `release`;
//! 9. count the terminating pods the ReplicaSet owns;
//! 10. `manageReplicas`, only with satisfied expectations and a ReplicaSet not being deleted;
//! 11. `calculateStatus`, assuming the scaling succeeds;
//! 15. when to look again for pods turning available.

use crate::availability::requeue_after;
use crate::claims::{claim_pods, count_terminating};
use crate::diff::{Scale, manage_replicas};
use crate::log;
use crate::rank::get_pods_to_delete;
use crate::selector::Selector;
use crate::status::calculate_status;
use crate::types::{Label, Plan, ReconcileError, Snapshot};
use crate::view::{View, label_value};

/// Computes upstream's plan for one ReplicaSet: [`reconcile_with`] using upstream's deletion
/// ranking ([`get_pods_to_delete`]).
pub fn reconcile(snapshot: &Snapshot) -> Result<Plan, ReconcileError> {
    reconcile_with(snapshot, get_pods_to_delete)
}

/// Computes the plan for one ReplicaSet, letting `choose_victims` decide which pods a scale-down
/// deletes. Everything else (validation, claiming, the create/delete counts, status, requeue)
/// is upstream's.
///
/// `choose_victims(view, candidates, n)` is called at most once, only when the ReplicaSet must
/// shrink: `candidates` are the claimed active pods (indices into `snapshot.pods`, in snapshot
/// order, adopted orphans included) and `n` (`1 <= n <= candidates.len()`, already capped by
/// `burst-replicas`) is how many to delete. It must return `n` distinct entries of
/// `candidates`, most preferred victim first; the plan carries them as returned, and the host's
/// guard rails reject a plan that deletes anything else. `view` gives the rest of the snapshot
/// (timestamps, nodes, label sets). For example, a policy deleting the newest pods first:
///
/// ```
/// use guest_replicaset::{View, reconcile_with, types};
///
/// fn newest_first(view: &View<'_>, candidates: &[u32], n: usize) -> Vec<u32> {
///     let mut victims = candidates.to_vec();
///     // `sort_by_key` is stable and its key is a total order (missing timestamps first).
///     victims.sort_by_key(|&i| std::cmp::Reverse(view.pod(i).creation_timestamp.unwrap_or(i64::MAX)));
///     victims.truncate(n);
///     victims
/// }
///
/// fn reconcile(snapshot: &types::Snapshot) -> Result<types::Plan, types::ReconcileError> {
///     reconcile_with(snapshot, newest_first)
/// }
/// ```
pub fn reconcile_with(
    snapshot: &Snapshot,
    choose_victims: impl FnOnce(&View<'_>, &[u32], usize) -> Vec<u32>,
) -> Result<Plan, ReconcileError> {
    let view = View::new(snapshot)?;
    let rs = view.replica_set();

    // 5. An invalid selector ends the sync: upstream logs it and neither scales nor writes status.
    let selector = Selector::from_label_selector(&rs.selector)?;
    // Pods of one ReplicaSet share a few label sets: match each set once, not each pod.
    let template = view.label_set(rs.template_labels);
    let selected: Vec<bool> = snapshot.label_sets.iter().map(|set| selector.matches(set)).collect();
    let fully_labeled: Vec<bool> = snapshot.label_sets.iter().map(|set| contains_all(set, template)).collect();

    // 7-8. Only active pods are claimed; adoptions and releases happen even while expectations
    // are pending, but never while the ReplicaSet is being deleted (see `claims`).
    let claims = claim_pods(&view, &selected);
    if !claims.adopt.is_empty() || !claims.release.is_empty() {
        log::debug(
            "claiming pods",
            &[("adopting", claims.adopt.len() as i64), ("releasing", claims.release.len() as i64)],
        );
    }

    // 9. Terminating pods are only counted, for status.terminatingReplicas.
    let terminating = count_terminating(&view, &selected);

    // 10. A deleting ReplicaSet, or one with creations/deletions still unobserved, does not scale.
    let scale = if snapshot.expectations_satisfied && rs.deletion_timestamp.is_none() {
        manage_replicas(&view, &claims.claimed, choose_victims)
    } else {
        Scale::default()
    };

    // 11. The status assumes the scaling succeeds; `status_after_scale_error` covers failure.
    let status = calculate_status(&view, &claims.claimed, &fully_labeled, terminating, None);

    // 15. Look again when the next ready pod turns available.
    let requeue_after = requeue_after(&view, &claims.claimed, &status);

    Ok(Plan {
        adopt: claims.adopt,
        release: claims.release,
        create: scale.create,
        delete: scale.delete,
        status,
        requeue_after,
    })
}

/// Whether `labels` has every label of `template` (upstream matches the template labels as a
/// selector: `labels.Set(template).AsSelectorPreValidated()`; an empty template matches all).
fn contains_all(labels: &[Label], template: &[Label]) -> bool {
    template.iter().all(|t| label_value(labels, &t.key) == Some(t.value.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::REPLICA_FAILURE;
    use crate::testkit::*;
    use crate::types::{PodPhase, ReplicaSetStatus};

    fn running(n: usize) -> impl Iterator<Item = PodBuilder> {
        (0..n).map(|i| pod(&format!("pod{i}")).running().on("node"))
    }

    #[test]
    fn a_matching_count_does_nothing() {
        // TestSyncReplicaSetDoesNothing: 2 running owned pods, replicas 2.
        let snap = snapshot(rs("foobar").replicas(2)).pods(running(2)).build();
        assert_eq!(reconcile(&snap).unwrap(), plan(status(2, 2, 2, 2)));
    }

    #[test]
    fn create_count_is_the_whole_shortfall_for_the_host_to_batch() {
        // TestSyncReplicaSetCreateFailures / TestSlowStartBatch (policy half): one plan asks for
        // all 100; slow start (1, 2, 4, ...) and stopping at the first failure are the host's.
        let snap = snapshot(rs("foobar").replicas(100)).build();
        assert_eq!(reconcile(&snap).unwrap(), Plan { create: 100, ..plan(status(0, 0, 0, 0)) });
    }

    #[test]
    fn burst_replicas_caps_each_sync_in_both_directions() {
        // TestControllerBurstReplicas (policy half) for (burst, replicas) = (5, 30), (5, 12), (3, 2).
        for (burst, replicas) in [(5u32, 30i32), (5, 12), (3, 2)] {
            // Scale up from nothing: min(burst, replicas) per sync.
            let snap = snapshot(rs("foobar").replicas(replicas)).burst(burst).build();
            let create = burst.min(replicas as u32);
            assert_eq!(reconcile(&snap).unwrap(), Plan { create, ..plan(status(0, 0, 0, 0)) });

            // Scale down to 0: min(burst, replicas) deletions, input order (all would go at once
            // if burst allowed; with fewer, the ranking picks; the pods tie, so input order).
            let snap = snapshot(rs("foobar").replicas(0)).pods(running(replicas as usize)).burst(burst).build();
            let delete: Vec<u32> = (0..burst.min(replicas as u32)).collect();
            let n = replicas;
            assert_eq!(reconcile(&snap).unwrap(), Plan { delete, ..plan(status(n, n, n, n)) });
        }
    }

    #[test]
    fn nothing_scales_while_expectations_are_unsatisfied() {
        // TestControllerBurstReplicas: no new creates until the last expected pod is observed;
        // TestSyncReplicaSetDormancy: the status is still written.
        let snap = snapshot(rs("foobar").replicas(5)).pods(running(2)).expectations_unsatisfied().build();
        assert_eq!(reconcile(&snap).unwrap(), plan(status(2, 2, 2, 2)));
        let snap = snapshot(rs("foobar").replicas(0)).pods(running(2)).expectations_unsatisfied().build();
        assert_eq!(reconcile(&snap).unwrap(), plan(status(2, 2, 2, 2)));
    }

    #[test]
    fn adoption_and_release_still_happen_while_expectations_are_unsatisfied() {
        let snap = snapshot(rs("foobar").replicas(1))
            .pod(pod("orphan").orphan().running())
            .pod(pod("stray").running().labels(&[("foo", "other")]))
            .expectations_unsatisfied()
            .build();
        let expected = Plan { adopt: vec![0], release: vec![1], ..plan(status(1, 1, 1, 1)) };
        assert_eq!(reconcile(&snap).unwrap(), expected);
    }

    #[test]
    fn a_pod_of_another_controller_is_not_adopted_and_replicas_are_created() {
        // TestDoNotPatchPodWithOtherControlRef: no patch, 2 creates.
        let snap = snapshot(rs("foobar").replicas(2)).pod(pod("pod").running().other_controller()).build();
        assert_eq!(reconcile(&snap).unwrap(), Plan { create: 2, ..plan(status(0, 0, 0, 0)) });
    }

    #[test]
    fn a_deleting_replica_set_neither_adopts_nor_creates() {
        // TestDoNotAdoptOrCreateIfBeingDeleted: no patch, no create, no error.
        let snap = snapshot(rs("foobar").replicas(2).deleting(T0)).pod(pod("pod1").orphan().running()).build();
        assert_eq!(reconcile(&snap).unwrap(), plan(status(0, 0, 0, 0)));
    }

    #[test]
    fn a_deleting_replica_set_neither_deletes_nor_releases_but_reports_status() {
        let snap = snapshot(rs("foobar").replicas(0).deleting(T0))
            .pods(running(2))
            .pod(pod("stray").running().labels(&[("foo", "other")]))
            .pod(pod("going").running().deleting(T0))
            .build();
        let expected = ReplicaSetStatus { terminating_replicas: Some(1), ..status(2, 2, 2, 2) };
        assert_eq!(reconcile(&snap).unwrap(), plan(expected));
    }

    #[test]
    fn adopted_orphans_count_and_can_be_deleted_in_the_same_plan() {
        // TestExtraPodsAdoptionAndDeletion (policy half): 3 matching orphans, replicas 2.
        let snap = snapshot(rs("foobar").replicas(2))
            .pod(pod("a").orphan().running().on("n"))
            .pod(pod("b").orphan().on("n"))
            .pod(pod("c").orphan().running().on("n"))
            .build();
        let expected = Plan { adopt: vec![0, 1, 2], delete: vec![1], ..plan(status(3, 3, 2, 2)) };
        assert_eq!(reconcile(&snap).unwrap(), expected);
    }

    #[test]
    fn released_pods_are_replaced() {
        // TestPodOrphaningAndAdoptionWhenLabelsChange (policy half): the relabelled pod is
        // released and no longer counts, so one is created.
        let snap = snapshot(rs("foobar").replicas(2))
            .pod(pod("kept").running())
            .pod(pod("relabelled").running().labels(&[("foo", "moved")]))
            .build();
        let expected = Plan { release: vec![1], create: 1, ..plan(status(1, 1, 1, 1)) };
        assert_eq!(reconcile(&snap).unwrap(), expected);
    }

    #[test]
    fn terminating_and_failed_pods_are_replaced() {
        // TestDeletingAndFailedPods (policy half): one deleting, one Failed -> 2 replacements.
        let snap = snapshot(rs("foobar").replicas(2))
            .pod(pod("deleting").running().deleting(T0))
            .pod(pod("failed").phase(PodPhase::Failed))
            .build();
        let expected =
            Plan { create: 2, ..plan(ReplicaSetStatus { terminating_replicas: Some(1), ..status(0, 0, 0, 0) }) };
        assert_eq!(reconcile(&snap).unwrap(), expected);
    }

    #[test]
    fn the_ranking_picks_victims_when_not_all_go() {
        let snap = snapshot(rs("foobar").replicas(2))
            .pod(pod("ready-old").ready_since(ago(1000)).on("n"))
            .pod(pod("pending").on("n"))
            .pod(pod("ready-new").ready_since(ago(1)).on("n"))
            .pod(pod("unscheduled"))
            .build();
        let got = reconcile(&snap).unwrap();
        assert_eq!(names(&snap, &got.delete), ["unscheduled", "pending"]);
        assert_eq!(got, Plan { delete: vec![3, 1], ..plan(status(4, 4, 2, 2)) });
    }

    #[test]
    fn a_custom_chooser_decides_the_victims() {
        let snap = snapshot(rs("foobar").replicas(1))
            .pod(pod("old").running().on("n").created(ago(100)))
            .pod(pod("new").running().on("n").created(ago(10)))
            .pod(pod("newest").running().on("n").created(ago(1)))
            .build();
        let oldest_first = |view: &View<'_>, candidates: &[u32], n: usize| {
            let mut victims = candidates.to_vec();
            victims.sort_by_key(|&i| view.pod(i).creation_timestamp);
            victims.truncate(n);
            victims
        };
        assert_eq!(
            reconcile_with(&snap, oldest_first).unwrap(),
            Plan { delete: vec![0, 1], ..plan(status(3, 3, 3, 3)) }
        );
    }

    #[test]
    fn the_chooser_is_not_called_unless_scaling_down() {
        let snap = snapshot(rs("foobar").replicas(3)).pods(running(2)).build();
        let got = reconcile_with(&snap, |_, _, _| panic!("chooser called"));
        assert_eq!(got.unwrap(), Plan { create: 1, ..plan(status(2, 2, 2, 2)) });
    }

    #[test]
    fn an_existing_replica_failure_is_removed_when_no_error_is_assumed() {
        // calculateStatus with manageReplicasErr == nil, even when scaling was skipped.
        let failure = condition(REPLICA_FAILURE, "True", "FailedCreate", "quota", Some(ago(60)));
        let other = condition("Custom", "True", "", "", None);
        let snap = snapshot(rs("foobar").replicas(1).conditions(vec![failure, other.clone()]))
            .pod(pod("a").running())
            .expectations_unsatisfied()
            .build();
        let expected = ReplicaSetStatus { conditions: vec![other], ..status(1, 1, 1, 1) };
        assert_eq!(reconcile(&snap).unwrap(), plan(expected));
    }

    #[test]
    fn ready_pods_waiting_for_min_ready_seconds_requeue_at_the_first_to_turn_available() {
        // TestReplicaSetAvailabilityCheck: replicas 4, minReadySeconds 5; pods pending, ready now,
        // ready 2 s ago, ready 4.3 s ago -> ready 3, available 0, next check in 0.7 s.
        let snap = snapshot(rs("foobar").replicas(4).min_ready_seconds(5))
            .pod(pod("foobar-1"))
            .pod(pod("foobar-2").ready_since(T0))
            .pod(pod("foobar-3").ready_since(ago(2)))
            .pod(pod("foobar-4").ready_since(ago_ms(4300)))
            .build();
        let expected = Plan { requeue_after: Some(700_000_000), ..plan(status(4, 4, 3, 0)) };
        assert_eq!(reconcile(&snap).unwrap(), expected);
    }

    #[test]
    fn ready_and_available_replicas_follow_min_ready_seconds() {
        // TestReadyAndAvailableReplicas (integration, policy half): minReadySeconds 3600;
        // not ready, ready now, ready 2 h ago -> replicas 3, ready 2, available 1.
        let snap = snapshot(rs("foobar").replicas(3).min_ready_seconds(3600))
            .pod(pod("not-ready").phase(PodPhase::Running))
            .pod(pod("ready-now").ready_since(T0))
            .pod(pod("ready-long").ready_since(ago(7200)))
            .build();
        let expected = Plan { requeue_after: Some(3600 * NANOS as u64), ..plan(status(3, 3, 2, 1)) };
        assert_eq!(reconcile(&snap).unwrap(), expected);
    }

    #[test]
    fn fully_labeled_replicas_count_pods_with_every_template_label() {
        // TestFullyLabeledReplicas (integration, policy half): the template gained a label that
        // only one of the two pods carries.
        let snap = snapshot(rs("foobar").replicas(2).template_labels(&[("foo", "bar"), ("extra", "1")]))
            .pod(pod("a").running().labels(&[("foo", "bar"), ("extra", "1")]))
            .pod(pod("b").running())
            .build();
        assert_eq!(reconcile(&snap).unwrap(), plan(status(2, 1, 2, 2)));
    }

    #[test]
    fn the_cached_observed_generation_is_returned_for_the_host_to_overwrite() {
        let cached = ReplicaSetStatus { observed_generation: 3, ..status(1, 1, 1, 1) };
        let snap = snapshot(rs("foobar").generation(4).status(cached)).pod(pod("a").running()).build();
        let expected = ReplicaSetStatus { observed_generation: 3, ..status(1, 1, 1, 1) };
        assert_eq!(reconcile(&snap).unwrap(), plan(expected));
    }

    #[test]
    fn selector_expressions_decide_what_is_claimed() {
        let snap = snapshot(rs("foobar").replicas(1).selector(&[]).expression("env", "In", &["prod"]))
            .pod(pod("prod").running().labels(&[("env", "prod")]))
            .pod(pod("dev").orphan().running().labels(&[("env", "dev")]))
            .pod(pod("canary").orphan().running().labels(&[("env", "prod"), ("canary", "1")]))
            .build();
        // The matching orphan is adopted; with 2 claimed and 1 wanted, one goes (input order
        // once the ranking ties: both running, ready, unscheduled). The template labels follow
        // the (empty) matchLabels, so every pod counts as fully labelled.
        let expected = Plan { adopt: vec![2], delete: vec![0], ..plan(status(2, 2, 2, 2)) };
        assert_eq!(reconcile(&snap).unwrap(), expected);
    }

    #[test]
    fn an_invalid_selector_produces_no_plan() {
        let snap = snapshot(rs("foobar").expression("foo", "Invalid", &[])).pod(pod("a")).build();
        let err = ReconcileError::InvalidSelector(r#""Invalid" is not a valid label selector operator"#.to_string());
        assert_eq!(reconcile(&snap).unwrap_err(), err);
    }

    #[test]
    fn an_invalid_snapshot_produces_no_plan() {
        let mut snap = snapshot(rs("foobar")).pod(pod("a")).pod(pod("b")).build();
        snap.pods[1].node = 4;
        let err = ReconcileError::InvalidSnapshot("pods[1].node: index 4 is out of range (1 nodes)".to_string());
        assert_eq!(reconcile(&snap).unwrap_err(), err);
    }

    #[test]
    fn plans_for_large_scale_downs_respect_every_guard_rail() {
        for n in [10u32, 100, 1000, 5000] {
            let snap = snapshot(rs("foobar").replicas((n / 2) as i32))
                .pods((0..n).map(|i| {
                    pod(&format!("p{i}"))
                        .ready_since(ago(i64::from(i % 100)))
                        .on(&format!("node-{}", i % 17))
                        .created(ago(i64::from(1000 + i)))
                }))
                .pod(pod("orphan").orphan().running())
                .related("node-3", 40)
                .build();
            let got = reconcile(&snap).unwrap();
            let claimed = n as usize + 1;
            let want = (claimed - (n / 2) as usize).min(500);
            assert_eq!(got.adopt, [n]);
            assert_eq!(got.create, 0);
            assert_eq!(got.delete.len(), want, "n = {n}");
            let mut unique = got.delete.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), want);
            assert!(unique.iter().all(|&i| i <= n));
        }
    }
}
