//! The status to write: `calculateStatus`, and its variant after a failed scale.
//!
//! The plan carries the status for a sync whose scaling succeeds (or is not attempted), which
//! is upstream's `calculateStatus` with `manageReplicasErr == nil`. Only the host knows whether
//! scaling failed; when it does, it asks [`status_after_scale_error`] for the status upstream
//! would have written with that error instead.

use crate::availability::is_pod_available;
use crate::condition::{REPLICA_FAILURE, get_condition, new_replica_set_condition, remove_condition, set_condition};
use crate::types::{ReplicaSet, ReplicaSetStatus};
use crate::view::View;

/// Mirrors `calculateStatus(rs, activePods, terminatingPods, manageReplicasErr, features, now)`.
///
/// Starts from the cached status (keeping `observedGeneration`, which the host overwrites, and
/// the other conditions) and counts the claimed `active_pods`:
/// - `replicas`: all of them;
/// - `fullyLabeledReplicas`: those whose labels contain every template label (`fully_labeled`
///   is indexed by label set, computed once per set);
/// - `readyReplicas`: Ready ones; `availableReplicas`: ready ones that are available;
/// - `terminatingReplicas`: always reported (the `DeploymentReplicaSetTerminatingReplicas`
///   gate is on by default since 1.35).
///
/// `ReplicaFailure`: with an error and no such condition, one is added (reason `FailedCreate`
/// below `spec.replicas`, `FailedDelete` above); with an error and the condition present, it
/// is left untouched; without an error the condition is removed, including syncs that did not
/// scale at all (expectations pending, ReplicaSet deleting).
pub fn calculate_status(
    view: &View<'_>,
    active_pods: &[u32],
    fully_labeled: &[bool],
    terminating_replicas: i32,
    manage_replicas_err: Option<&str>,
) -> ReplicaSetStatus {
    let rs = view.replica_set();
    let now = view.now();
    let mut new_status = rs.status.clone();

    let mut fully_labeled_replicas = 0;
    let mut ready_replicas = 0;
    let mut available_replicas = 0;
    for &index in active_pods {
        let pod = view.pod(index);
        if fully_labeled[pod.labels as usize] {
            fully_labeled_replicas += 1;
        }
        if pod.ready {
            ready_replicas += 1;
            if is_pod_available(pod, rs.min_ready_seconds, now) {
                available_replicas += 1;
            }
        }
    }

    let replicas = count(active_pods.len());
    match manage_replicas_err {
        Some(message) if get_condition(&rs.status, REPLICA_FAILURE).is_none() => {
            set_condition(&mut new_status, replica_failure(replicas, rs.replicas, message, now));
        }
        Some(_) => {}
        None => remove_condition(&mut new_status, REPLICA_FAILURE),
    }

    new_status.replicas = replicas;
    new_status.fully_labeled_replicas = fully_labeled_replicas;
    new_status.ready_replicas = ready_replicas;
    new_status.available_replicas = available_replicas;
    new_status.terminating_replicas = Some(terminating_replicas);
    new_status
}

/// The status to write when creating or deleting the plan's pods failed with `message`: what
/// `calculateStatus` gives with that `manageReplicasErr`, derived from the plan's status.
///
/// The plan's status was computed without an error, so it lacks `ReplicaFailure`. If the
/// cached status (`rs.status`) has one, upstream keeps it untouched: it is put back exactly,
/// at its old position. Otherwise a new one is appended: `True`, reason `FailedCreate` if the
/// plan's `replicas` is below `spec.replicas`, `FailedDelete` if above, empty if equal, with
/// `message` and `now` as transition time. Counts and `observedGeneration` stay as planned.
pub fn status_after_scale_error(
    rs: &ReplicaSet,
    plan_status: ReplicaSetStatus,
    message: &str,
    now: i64,
) -> ReplicaSetStatus {
    let mut status = plan_status;
    if let Some(position) = rs.status.conditions.iter().position(|c| c.condition_type == REPLICA_FAILURE) {
        // Only this ReplicaFailure may exist; a plan from another policy might carry its own.
        remove_condition(&mut status, REPLICA_FAILURE);
        let at = position.min(status.conditions.len());
        status.conditions.insert(at, rs.status.conditions[position].clone());
    } else {
        let condition = replica_failure(status.replicas, rs.replicas, message, now);
        set_condition(&mut status, condition);
    }
    status
}

/// The condition `calculateStatus` adds for a failed `manageReplicas`.
fn replica_failure(replicas: i32, spec_replicas: i32, message: &str, now: i64) -> crate::types::Condition {
    let reason = match replicas.cmp(&spec_replicas) {
        std::cmp::Ordering::Less => "FailedCreate",
        std::cmp::Ordering::Greater => "FailedDelete",
        std::cmp::Ordering::Equal => "",
    };
    new_replica_set_condition(REPLICA_FAILURE, "True", reason, message, now)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::types::{Condition, Snapshot};
    use crate::view::label_value;

    /// `calculate_status` over every pod of the snapshot (all treated as claimed and active).
    fn calculate(snap: &Snapshot, terminating: i32, err: Option<&str>) -> ReplicaSetStatus {
        let view = View::new(snap).unwrap();
        let template = view.label_set(snap.replica_set.template_labels);
        let fully_labeled: Vec<bool> = snap
            .label_sets
            .iter()
            .map(|set| template.iter().all(|t| label_value(set, &t.key) == Some(t.value.as_str())))
            .collect();
        let all: Vec<u32> = (0..snap.pods.len() as u32).collect();
        calculate_status(&view, &all, &fully_labeled, terminating, err)
    }

    const FULL: &[(&str, &str)] = &[("name", "foo"), ("type", "production")];
    const PARTIAL: &[(&str, &str)] = &[("name", "foo")];

    /// upstream `newReplicaSet(n, labels)`: template labels {name: foo, type: production}.
    fn upstream_rs(replicas: i32, selector: &[(&str, &str)]) -> RsBuilder {
        rs("foobar").replicas(replicas).selector(selector).template_labels(FULL)
    }

    #[test]
    fn calculate_status_matches_every_upstream_case() {
        // TestCalculateStatus; terminatingReplicas is always reported here (the gate is on), so
        // the gate-off and ReplicationController cases become "reported as counted".
        let cases: Vec<(&str, RsBuilder, Vec<PodBuilder>, i32, ReplicaSetStatus)> = vec![
            ("1 fully labelled pod", upstream_rs(2, FULL), vec![pod("pod1").running()], 0, status(1, 1, 1, 1)),
            ("1 not fully labelled pod", upstream_rs(1, PARTIAL), vec![pod("pod1").running()], 0, status(1, 0, 1, 1)),
            (
                "2 fully labelled pods",
                upstream_rs(2, FULL),
                vec![pod("pod1").running(), pod("pod2").running()],
                0,
                status(2, 2, 2, 2),
            ),
            (
                "2 not fully labelled pods",
                upstream_rs(1, PARTIAL),
                vec![pod("pod1").running(), pod("pod2").running()],
                0,
                status(2, 0, 2, 2),
            ),
            (
                "1 fully labelled pod, 1 not fully labelled pod",
                upstream_rs(1, PARTIAL),
                vec![pod("pod1").running(), pod("pod2").running().labels(FULL)],
                0,
                status(2, 1, 2, 2),
            ),
            ("1 non-ready pod", upstream_rs(2, FULL), vec![pod("pod1")], 0, status(1, 1, 0, 0)),
            (
                "1 ready but non-available pod",
                upstream_rs(1, FULL).min_ready_seconds(3600),
                vec![pod("pod1").ready_since(T0)],
                0,
                status(1, 1, 1, 0),
            ),
            (
                "1 available pod with minReadySeconds",
                upstream_rs(1, FULL).min_ready_seconds(3600),
                vec![pod("pod1").ready_since(ago(3600))],
                0,
                status(1, 1, 1, 1),
            ),
            (
                "1 available pod for a long time with minReadySeconds",
                upstream_rs(1, FULL).min_ready_seconds(3600),
                vec![pod("pod1").ready_since(ago(7200))],
                0,
                status(1, 1, 1, 1),
            ),
            (
                "1 fully labelled pods and 2 terminating with DeploymentReplicaSetTerminatingReplicas",
                upstream_rs(2, FULL),
                vec![pod("pod1").running()],
                2,
                ReplicaSetStatus { terminating_replicas: Some(2), ..status(1, 1, 1, 1) },
            ),
        ];
        for (name, rs, pods, terminating, expected) in cases {
            let snap = snapshot(rs).pods(pods).build();
            assert_eq!(calculate(&snap, terminating, None), expected, "{name}");
        }
    }

    #[test]
    fn empty_template_labels_count_every_pod_as_fully_labelled() {
        let snap = snapshot(rs("foobar").template_labels(&[])).pod(pod("a").labels(&[])).build();
        assert_eq!(calculate(&snap, 0, None), status(1, 1, 0, 0));
    }

    #[test]
    fn the_cached_observed_generation_and_other_conditions_are_kept() {
        let other = condition("Custom", "True", "Because", "", Some(ago(5)));
        let cached = ReplicaSetStatus { observed_generation: 7, conditions: vec![other.clone()], ..status(9, 9, 9, 9) };
        let snap = snapshot(rs("foobar").status(cached)).pod(pod("a").running()).build();
        let expected = ReplicaSetStatus { observed_generation: 7, conditions: vec![other], ..status(1, 1, 1, 1) };
        assert_eq!(calculate(&snap, 0, None), expected);
    }

    fn failure(reason: &str, message: &str, at: Option<i64>) -> Condition {
        condition(REPLICA_FAILURE, "True", reason, message, at)
    }

    #[test]
    fn calculate_status_conditions_match_every_upstream_case() {
        // TestCalculateStatusConditions.
        let err = Some("fake manageReplicasErr");
        let existing = vec![failure("", "", None)];

        // "manageReplicasErr != nil && failureCond == nil, diff < 0".
        let snap = snapshot(rs("foobar").replicas(2)).pod(pod("pod1").running()).build();
        let got = calculate(&snap, 0, err);
        assert_eq!(got.conditions, [failure("FailedCreate", "fake manageReplicasErr", Some(T0))]);

        // "manageReplicasErr != nil && failureCond == nil, diff > 0".
        let snap = snapshot(rs("foobar").replicas(2))
            .pods([pod("pod1").running(), pod("pod2").running(), pod("pod3").running()])
            .build();
        let got = calculate(&snap, 0, err);
        assert_eq!(got.conditions, [failure("FailedDelete", "fake manageReplicasErr", Some(T0))]);

        // "manageReplicasErr == nil && failureCond != nil": removed.
        let snap = snapshot(rs("foobar").replicas(10).conditions(existing.clone())).pod(pod("pod1").running()).build();
        assert_eq!(calculate(&snap, 0, None).conditions, []);

        // "manageReplicasErr != nil && failureCond != nil": unchanged.
        let snap = snapshot(rs("foobar").replicas(10).conditions(existing.clone())).pod(pod("pod1").running()).build();
        assert_eq!(calculate(&snap, 0, err).conditions, existing);

        // "manageReplicasErr == nil && failureCond == nil": none.
        let snap = snapshot(rs("foobar").replicas(2)).pod(pod("pod1").running()).build();
        assert_eq!(calculate(&snap, 0, None).conditions, []);
    }

    #[test]
    fn after_a_scale_error_a_new_replica_failure_is_appended() {
        let other = condition("Custom", "True", "Because", "", None);
        let rs = snapshot(rs("foobar").replicas(3).conditions(vec![other.clone()])).build().replica_set;
        let planned = ReplicaSetStatus { conditions: vec![other.clone()], ..status(1, 1, 1, 1) };
        let got = status_after_scale_error(&rs, planned, "quota exceeded", T0);
        let expected = ReplicaSetStatus {
            conditions: vec![other, failure("FailedCreate", "quota exceeded", Some(T0))],
            ..status(1, 1, 1, 1)
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn after_a_scale_error_the_reason_follows_the_planned_replicas() {
        let rs = snapshot(rs("foobar").replicas(3)).build().replica_set;
        let reason = |replicas| {
            let got = status_after_scale_error(&rs, status(replicas, 0, 0, 0), "boom", T0);
            got.conditions[0].reason.clone()
        };
        assert_eq!(reason(2), "FailedCreate");
        assert_eq!(reason(4), "FailedDelete");
        assert_eq!(reason(3), "");
    }

    #[test]
    fn after_a_scale_error_an_existing_replica_failure_is_kept_untouched_in_place() {
        let old = failure("FailedCreate", "first error", Some(ago(600)));
        let a = condition("A", "True", "", "", None);
        let b = condition("B", "False", "", "", None);
        let cached = vec![a.clone(), old.clone(), b.clone()];
        let rs = snapshot(rs("foobar").replicas(3).conditions(cached.clone())).build().replica_set;
        // The plan removed it (no error assumed); a scale error puts it back exactly.
        let planned = ReplicaSetStatus { observed_generation: 4, conditions: vec![a, b], ..status(5, 5, 5, 5) };
        let got = status_after_scale_error(&rs, planned, "second error", T0);
        assert_eq!(got, ReplicaSetStatus { observed_generation: 4, conditions: cached, ..status(5, 5, 5, 5) });
    }
}
