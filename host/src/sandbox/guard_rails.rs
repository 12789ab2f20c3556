//! Checks every plan against the host's safety rules before the engine may apply any of it.
//!
//! Whatever a module computes, these hold for what reaches the API server: no pod is deleted or
//! released that the ReplicaSet does not control (or adopt in the same plan), only orphans are
//! adopted, no pod is created beyond `spec.replicas` and none deleted below it, creations and
//! deletions stay within the burst cap, never both at once, and nothing scales while the
//! expectations are pending or the ReplicaSet is being deleted.

use crate::contract::{Controller, Plan, PodPhase, ReplicaSetStatus, Snapshot};

/// A broken rule, naming the pod index or numbers involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// An index that is not a pod of the snapshot.
    #[error("{list} refers to pod index {index}, but the snapshot has {pods} pods")]
    IndexOutOfRange {
        /// `adopt`, `release` or `delete`.
        list: &'static str,
        /// The bad index.
        index: u32,
        /// How many pods the snapshot has.
        pods: usize,
    },
    /// The same pod twice in one list, or in two lists that exclude each other.
    #[error("pod index {index} appears twice in {list}")]
    Duplicate {
        /// The list(s) involved.
        list: &'static str,
        /// The repeated index.
        index: u32,
    },
    /// Adoption of a pod that has a controller.
    #[error("adopt: pod index {index} is not an orphan")]
    AdoptNotOrphan {
        /// The pod.
        index: u32,
    },
    /// Adoption or release while the ReplicaSet is being deleted.
    #[error("{list} while the ReplicaSet is being deleted")]
    ClaimWhileDeleting {
        /// `adopt` or `release`.
        list: &'static str,
    },
    /// Release of a pod the ReplicaSet does not control.
    #[error("release: pod index {index} is not controlled by this ReplicaSet")]
    ReleaseNotControlled {
        /// The pod.
        index: u32,
    },
    /// Deletion of a pod the ReplicaSet neither controls nor adopts in this plan.
    #[error("delete: pod index {index} is not controlled by this ReplicaSet nor adopted in this plan")]
    DeleteNotOwned {
        /// The pod.
        index: u32,
    },
    /// Adoption or deletion of a pod that is already terminating or terminated.
    #[error("{list}: pod index {index} is not active (terminating, Succeeded or Failed)")]
    NotActive {
        /// `adopt` or `delete`.
        list: &'static str,
        /// The pod.
        index: u32,
    },
    /// Creations and deletions in one plan.
    #[error("creates {create} pods and deletes {delete} in the same plan")]
    CreateAndDelete {
        /// Pods to create.
        create: u32,
        /// Pods to delete.
        delete: usize,
    },
    /// More than the burst cap.
    #[error("{list} {count} pods, more than the burst cap of {burst}")]
    OverBurst {
        /// `creates` or `deletes`.
        list: &'static str,
        /// How many.
        count: u64,
        /// The cap.
        burst: u32,
    },
    /// Scaling when the snapshot says it is not allowed.
    #[error("scales while scaling is not allowed ({0})")]
    ScalingNotAllowed(&'static str),
    /// Creations beyond `spec.replicas`.
    #[error("creates {create} pods but only {room} fit under spec.replicas")]
    CreateBeyondSpec {
        /// Pods to create.
        create: u32,
        /// Room under `spec.replicas` after claims.
        room: i64,
    },
    /// Deletions below `spec.replicas`.
    #[error("deletes {delete} pods but only {surplus} are above spec.replicas")]
    DeleteBelowSpec {
        /// Pods to delete.
        delete: usize,
        /// Active claimed pods above `spec.replicas`.
        surplus: i64,
    },
    /// A status that cannot be true.
    #[error("status is inconsistent: {0}")]
    InconsistentStatus(String),
}

/// Checks `plan` against `snapshot`; the first broken rule is returned.
pub fn check_plan(snapshot: &Snapshot, plan: &Plan) -> Result<(), Violation> {
    let roles = Roles::of(snapshot, plan)?;
    check_claims(snapshot, plan, &roles)?;
    check_deletions(snapshot, plan, &roles)?;
    check_scaling(snapshot, plan, &roles)?;
    check_status(&plan.status)
}

/// Where each pod ends up in the plan (bits: adopt, release, delete), with the plan's lists
/// checked for range and duplicates on the way.
struct Roles(Vec<u8>);

impl Roles {
    const ADOPT: u8 = 1;
    const RELEASE: u8 = 2;
    const DELETE: u8 = 4;

    fn of(snapshot: &Snapshot, plan: &Plan) -> Result<Self, Violation> {
        let pods = snapshot.pods.len();
        let mut roles = vec![0u8; pods];
        for (list, indices, bit) in [
            ("adopt", &plan.adopt, Self::ADOPT),
            ("release", &plan.release, Self::RELEASE),
            ("delete", &plan.delete, Self::DELETE),
        ] {
            for &index in indices {
                let slot = roles.get_mut(index as usize).ok_or(Violation::IndexOutOfRange { list, index, pods })?;
                if *slot & bit != 0 {
                    return Err(Violation::Duplicate { list, index });
                }
                *slot |= bit;
            }
        }
        Ok(Self(roles))
    }

    fn has(&self, index: u32, bit: u8) -> bool {
        self.0[index as usize] & bit != 0
    }
}

/// Not terminating, not Succeeded or Failed (upstream `IsPodActive`).
fn active(snapshot: &Snapshot, index: u32) -> bool {
    let p = &snapshot.pods[index as usize];
    p.deletion_timestamp.is_none() && !matches!(p.phase, PodPhase::Succeeded | PodPhase::Failed)
}

/// Adopt only active orphans, release only our own pods, neither while the ReplicaSet is deleting.
fn check_claims(snapshot: &Snapshot, plan: &Plan, roles: &Roles) -> Result<(), Violation> {
    let deleting = snapshot.replica_set.deletion_timestamp.is_some();
    for &index in &plan.adopt {
        if deleting {
            return Err(Violation::ClaimWhileDeleting { list: "adopt" });
        }
        if snapshot.pods[index as usize].controller != Controller::None {
            return Err(Violation::AdoptNotOrphan { index });
        }
        if !active(snapshot, index) {
            return Err(Violation::NotActive { list: "adopt", index });
        }
    }
    for &index in &plan.release {
        if deleting {
            return Err(Violation::ClaimWhileDeleting { list: "release" });
        }
        if snapshot.pods[index as usize].controller != Controller::ThisReplicaSet {
            return Err(Violation::ReleaseNotControlled { index });
        }
        if roles.has(index, Roles::DELETE) {
            return Err(Violation::Duplicate { list: "release and delete", index });
        }
    }
    Ok(())
}

/// Delete only active pods the ReplicaSet controls or adopts in the same plan.
fn check_deletions(snapshot: &Snapshot, plan: &Plan, roles: &Roles) -> Result<(), Violation> {
    for &index in &plan.delete {
        let owned =
            snapshot.pods[index as usize].controller == Controller::ThisReplicaSet || roles.has(index, Roles::ADOPT);
        if !owned {
            return Err(Violation::DeleteNotOwned { index });
        }
        if !active(snapshot, index) {
            return Err(Violation::NotActive { list: "delete", index });
        }
    }
    Ok(())
}

/// Create or delete, never both; only when allowed; within the burst cap; never past spec.
fn check_scaling(snapshot: &Snapshot, plan: &Plan, roles: &Roles) -> Result<(), Violation> {
    let (create, delete) = (plan.create, plan.delete.len());
    if create > 0 || delete > 0 {
        if create > 0 && delete > 0 {
            return Err(Violation::CreateAndDelete { create, delete });
        }
        if snapshot.replica_set.deletion_timestamp.is_some() {
            return Err(Violation::ScalingNotAllowed("the ReplicaSet is being deleted"));
        }
        if !snapshot.expectations_satisfied {
            return Err(Violation::ScalingNotAllowed("earlier creations or deletions are not observed yet"));
        }
    }
    let burst = snapshot.burst_replicas;
    if create > burst {
        return Err(Violation::OverBurst { list: "creates", count: create.into(), burst });
    }
    if delete > burst as usize {
        return Err(Violation::OverBurst { list: "deletes", count: delete as u64, burst });
    }
    // Active pods the ReplicaSet holds once the claims are applied.
    let claimed = (0..snapshot.pods.len() as u32)
        .filter(|&i| active(snapshot, i))
        .filter(|&i| {
            let ours = snapshot.pods[i as usize].controller == Controller::ThisReplicaSet;
            (ours && !roles.has(i, Roles::RELEASE)) || roles.has(i, Roles::ADOPT)
        })
        .count() as i64;
    let spec = i64::from(snapshot.replica_set.replicas);
    if create > 0 && i64::from(create) > spec - claimed {
        return Err(Violation::CreateBeyondSpec { create, room: spec - claimed });
    }
    if delete > 0 && delete as i64 > claimed - spec {
        return Err(Violation::DeleteBelowSpec { delete, surplus: claimed - spec });
    }
    Ok(())
}

/// No negative count; ready ≤ replicas, available ≤ ready, fully labeled ≤ replicas. Also
/// checked on the status returned after a failed scale.
pub fn check_status(s: &ReplicaSetStatus) -> Result<(), Violation> {
    let counts = [
        ("replicas", s.replicas),
        ("fullyLabeledReplicas", s.fully_labeled_replicas),
        ("readyReplicas", s.ready_replicas),
        ("availableReplicas", s.available_replicas),
        ("terminatingReplicas", s.terminating_replicas.unwrap_or(0)),
    ];
    if let Some((name, value)) = counts.iter().find(|(_, v)| *v < 0) {
        return Err(Violation::InconsistentStatus(format!("{name} is {value}")));
    }
    if s.ready_replicas > s.replicas || s.available_replicas > s.ready_replicas || s.fully_labeled_replicas > s.replicas
    {
        return Err(Violation::InconsistentStatus(format!(
            "replicas {} fullyLabeled {} ready {} available {}",
            s.replicas, s.fully_labeled_replicas, s.ready_replicas, s.available_replicas
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{LabelSelector, Node, Pod, ReplicaSet, ReplicaSetStatus, Span};

    fn status() -> ReplicaSetStatus {
        ReplicaSetStatus {
            replicas: 0,
            fully_labeled_replicas: 0,
            ready_replicas: 0,
            available_replicas: 0,
            terminating_replicas: Some(0),
            observed_generation: 1,
            conditions: vec![],
        }
    }

    fn pod(controller: Controller) -> Pod {
        let span = Span { start: 0, len: 0 };
        Pod {
            name: span,
            namespace: span,
            uid: span,
            labels: 0,
            controller,
            creation_timestamp: None,
            deletion_timestamp: None,
            deletion_cost: None,
            phase: PodPhase::Running,
            node: 0,
            ready: true,
            ready_transition: None,
            max_container_restarts: 0,
            max_sidecar_restarts: 0,
        }
    }

    /// A ReplicaSet of `replicas` with the given candidate pods.
    fn snapshot(replicas: i32, pods: Vec<Pod>) -> Snapshot {
        Snapshot {
            replica_set: ReplicaSet {
                namespace: "default".into(),
                name: "rs".into(),
                uid: "uid".into(),
                generation: 1,
                deletion_timestamp: None,
                replicas,
                min_ready_seconds: 0,
                selector: LabelSelector { match_labels: vec![], match_expressions: vec![] },
                template_labels: 0,
                status: status(),
            },
            pods,
            label_sets: vec![vec![]],
            nodes: vec![Node { name: String::new(), related_active_pods: 0 }],
            pod_strings: String::new(),
            expectations_satisfied: true,
            now: 0,
            burst_replicas: 500,
        }
    }

    fn plan() -> Plan {
        Plan { adopt: vec![], release: vec![], create: 0, delete: vec![], status: status(), requeue_after: None }
    }

    #[test]
    fn an_empty_plan_passes() {
        assert_eq!(check_plan(&snapshot(0, vec![]), &plan()), Ok(()));
    }

    #[test]
    fn deleting_a_pod_of_another_controller_is_refused() {
        let s = snapshot(0, vec![pod(Controller::Other)]);
        let p = Plan { delete: vec![0], ..plan() };
        assert_eq!(check_plan(&s, &p), Err(Violation::DeleteNotOwned { index: 0 }));
    }

    #[test]
    fn deleting_an_orphan_is_allowed_only_when_adopted_in_the_same_plan() {
        let s = snapshot(0, vec![pod(Controller::None)]);
        assert_eq!(check_plan(&s, &Plan { delete: vec![0], ..plan() }), Err(Violation::DeleteNotOwned { index: 0 }));
        assert_eq!(check_plan(&s, &Plan { adopt: vec![0], delete: vec![0], ..plan() }), Ok(()));
    }

    #[test]
    fn out_of_range_and_repeated_indices_are_refused() {
        let s = snapshot(0, vec![pod(Controller::ThisReplicaSet)]);
        assert_eq!(
            check_plan(&s, &Plan { delete: vec![3], ..plan() }),
            Err(Violation::IndexOutOfRange { list: "delete", index: 3, pods: 1 })
        );
        assert_eq!(
            check_plan(&s, &Plan { delete: vec![0, 0], ..plan() }),
            Err(Violation::Duplicate { list: "delete", index: 0 })
        );
    }

    #[test]
    fn adopting_a_controlled_or_terminating_pod_is_refused() {
        let s = snapshot(5, vec![pod(Controller::Other), pod(Controller::ThisReplicaSet)]);
        assert_eq!(check_plan(&s, &Plan { adopt: vec![0], ..plan() }), Err(Violation::AdoptNotOrphan { index: 0 }));
        assert_eq!(check_plan(&s, &Plan { adopt: vec![1], ..plan() }), Err(Violation::AdoptNotOrphan { index: 1 }));
        let mut terminating = pod(Controller::None);
        terminating.deletion_timestamp = Some(1);
        let s = snapshot(5, vec![terminating]);
        assert_eq!(
            check_plan(&s, &Plan { adopt: vec![0], ..plan() }),
            Err(Violation::NotActive { list: "adopt", index: 0 })
        );
    }

    #[test]
    fn releasing_a_pod_not_controlled_is_refused() {
        let s = snapshot(0, vec![pod(Controller::None)]);
        assert_eq!(
            check_plan(&s, &Plan { release: vec![0], ..plan() }),
            Err(Violation::ReleaseNotControlled { index: 0 })
        );
    }

    #[test]
    fn claims_while_the_replica_set_is_deleting_are_refused() {
        let mut s = snapshot(1, vec![pod(Controller::None)]);
        s.replica_set.deletion_timestamp = Some(1);
        assert_eq!(
            check_plan(&s, &Plan { adopt: vec![0], ..plan() }),
            Err(Violation::ClaimWhileDeleting { list: "adopt" })
        );
    }

    #[test]
    fn creating_and_deleting_together_is_refused() {
        let s = snapshot(1, vec![pod(Controller::ThisReplicaSet), pod(Controller::ThisReplicaSet)]);
        assert_eq!(
            check_plan(&s, &Plan { create: 1, delete: vec![0], ..plan() }),
            Err(Violation::CreateAndDelete { create: 1, delete: 1 })
        );
    }

    #[test]
    fn scaling_with_pending_expectations_or_while_deleting_is_refused() {
        let mut s = snapshot(3, vec![]);
        s.expectations_satisfied = false;
        assert!(matches!(check_plan(&s, &Plan { create: 1, ..plan() }), Err(Violation::ScalingNotAllowed(_))));
        let mut s = snapshot(3, vec![]);
        s.replica_set.deletion_timestamp = Some(1);
        assert!(matches!(check_plan(&s, &Plan { create: 1, ..plan() }), Err(Violation::ScalingNotAllowed(_))));
    }

    #[test]
    fn creations_beyond_the_burst_cap_or_spec_are_refused() {
        let mut s = snapshot(1000, vec![]);
        s.burst_replicas = 500;
        assert_eq!(
            check_plan(&s, &Plan { create: 501, ..plan() }),
            Err(Violation::OverBurst { list: "creates", count: 501, burst: 500 })
        );
        let s = snapshot(2, vec![pod(Controller::ThisReplicaSet)]);
        assert_eq!(
            check_plan(&s, &Plan { create: 2, ..plan() }),
            Err(Violation::CreateBeyondSpec { create: 2, room: 1 })
        );
        assert_eq!(check_plan(&s, &Plan { create: 1, ..plan() }), Ok(()));
    }

    #[test]
    fn deletions_below_spec_are_refused_and_released_pods_do_not_count() {
        let owned = || pod(Controller::ThisReplicaSet);
        let s = snapshot(1, vec![owned(), owned(), owned()]);
        assert_eq!(check_plan(&s, &Plan { delete: vec![0, 1], ..plan() }), Ok(()));
        assert_eq!(
            check_plan(&s, &Plan { release: vec![2], delete: vec![0, 1], ..plan() }),
            Err(Violation::DeleteBelowSpec { delete: 2, surplus: 1 })
        );
    }

    #[test]
    fn plans_that_do_not_scale_pass_whatever_the_surplus_or_shortfall() {
        let owned = || pod(Controller::ThisReplicaSet);
        assert_eq!(check_plan(&snapshot(1, vec![owned(), owned()]), &plan()), Ok(()));
        assert_eq!(check_plan(&snapshot(5, vec![owned()]), &plan()), Ok(()));
    }

    #[test]
    fn impossible_status_counts_are_refused() {
        let mut p = plan();
        p.status.ready_replicas = 2;
        p.status.replicas = 1;
        assert!(matches!(check_plan(&snapshot(1, vec![]), &p), Err(Violation::InconsistentStatus(_))));
        let mut p = plan();
        p.status.available_replicas = -1;
        assert!(matches!(check_plan(&snapshot(1, vec![]), &p), Err(Violation::InconsistentStatus(_))));
    }
}
