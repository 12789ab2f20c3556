//! `status.conditions` helpers: `GetCondition`, `SetCondition`, `RemoveCondition`.

use crate::types::{Condition, ReplicaSetStatus};

/// The only condition type the ReplicaSet controller manages.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Mirrors `NewReplicaSetCondition` (the host passes `now`: the guest has no clock).
pub fn new_replica_set_condition(
    condition_type: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: i64,
) -> Condition {
    Condition {
        condition_type: condition_type.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: Some(now),
    }
}

/// Mirrors `GetCondition`: the condition of type `condition_type`, if present.
pub fn get_condition<'a>(status: &'a ReplicaSetStatus, condition_type: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.condition_type == condition_type)
}

/// Mirrors `SetCondition`: a no-op when a condition of the same type already has the same
/// status and reason (so its transition time is kept); otherwise any condition of that type is
/// dropped and `condition` appended.
pub fn set_condition(status: &mut ReplicaSetStatus, condition: Condition) {
    if let Some(current) = get_condition(status, &condition.condition_type)
        && current.status == condition.status
        && current.reason == condition.reason
    {
        return;
    }
    filter_out_condition(status, &condition.condition_type);
    status.conditions.push(condition);
}

/// Mirrors `RemoveCondition`: drops every condition of type `condition_type`, keeping the order
/// of the others.
pub fn remove_condition(status: &mut ReplicaSetStatus, condition_type: &str) {
    filter_out_condition(status, condition_type);
}

fn filter_out_condition(status: &mut ReplicaSetStatus, condition_type: &str) {
    status.conditions.retain(|c| c.condition_type != condition_type);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";

    fn cond_image_pull_back_off() -> Condition {
        condition(IMAGE_PULL_BACK_OFF, "True", "NonExistentImage", "", None)
    }

    fn cond_replica_failure() -> Condition {
        condition(REPLICA_FAILURE, "True", "OtherFailure", "", None)
    }

    fn cond_replica_failure_2() -> Condition {
        condition(REPLICA_FAILURE, "True", "AnotherFailure", "", None)
    }

    fn with_conditions(conditions: Vec<Condition>) -> ReplicaSetStatus {
        ReplicaSetStatus { conditions, ..empty_status() }
    }

    #[test]
    fn get_condition_finds_an_existing_type_only() {
        // TestGetCondition: "condition exists" / "condition does not exist".
        let status = with_conditions(vec![cond_replica_failure()]);
        assert_eq!(get_condition(&status, REPLICA_FAILURE), Some(&cond_replica_failure()));
        assert_eq!(get_condition(&status, IMAGE_PULL_BACK_OFF), None);
    }

    #[test]
    fn set_condition_sets_appends_and_overwrites() {
        // TestSetCondition: "set for the first time".
        let mut status = empty_status();
        set_condition(&mut status, cond_replica_failure());
        assert_eq!(status, with_conditions(vec![cond_replica_failure()]));

        // "simple set": another type is kept, the new one appended.
        let mut status = with_conditions(vec![cond_image_pull_back_off()]);
        set_condition(&mut status, cond_replica_failure());
        assert_eq!(status, with_conditions(vec![cond_image_pull_back_off(), cond_replica_failure()]));

        // "overwrite": same type, different reason.
        let mut status = with_conditions(vec![cond_replica_failure()]);
        set_condition(&mut status, cond_replica_failure_2());
        assert_eq!(status, with_conditions(vec![cond_replica_failure_2()]));
    }

    #[test]
    fn set_condition_keeps_an_equal_condition_and_its_transition_time() {
        let old = condition(REPLICA_FAILURE, "True", "FailedCreate", "old message", Some(ago(60)));
        let mut status = with_conditions(vec![old.clone(), cond_image_pull_back_off()]);
        set_condition(&mut status, condition(REPLICA_FAILURE, "True", "FailedCreate", "new message", Some(T0)));
        assert_eq!(status, with_conditions(vec![old, cond_image_pull_back_off()]));
    }

    #[test]
    fn set_condition_moves_a_changed_condition_to_the_end() {
        let mut status = with_conditions(vec![cond_replica_failure(), cond_image_pull_back_off()]);
        set_condition(&mut status, cond_replica_failure_2());
        assert_eq!(status, with_conditions(vec![cond_image_pull_back_off(), cond_replica_failure_2()]));
    }

    #[test]
    fn remove_condition_drops_only_the_given_type() {
        // TestRemoveCondition: "remove from empty status".
        let mut status = empty_status();
        remove_condition(&mut status, REPLICA_FAILURE);
        assert_eq!(status, empty_status());

        // "simple remove".
        let mut status = with_conditions(vec![cond_replica_failure()]);
        remove_condition(&mut status, REPLICA_FAILURE);
        assert_eq!(status, empty_status());

        // "doesn't remove anything".
        let mut status = with_conditions(vec![cond_replica_failure()]);
        remove_condition(&mut status, IMAGE_PULL_BACK_OFF);
        assert_eq!(status, with_conditions(vec![cond_replica_failure()]));
    }
}
