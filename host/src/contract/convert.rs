//! Conversions between Kubernetes API types and the contract's types (nothing else lives here).

use k8s_openapi::{
    api::apps::v1::{ReplicaSetCondition, ReplicaSetStatus as ApiStatus},
    apimachinery::pkg::apis::meta::v1::LabelSelector as ApiSelector,
};

use super::{Condition, Label, LabelSelector, ReplicaSetStatus, SelectorRequirement};
use crate::time::{nanos, time};

impl From<&ApiSelector> for LabelSelector {
    fn from(s: &ApiSelector) -> Self {
        Self {
            match_labels: s
                .match_labels
                .iter()
                .flatten()
                .map(|(key, value)| Label { key: key.clone(), value: value.clone() })
                .collect(),
            match_expressions: s
                .match_expressions
                .iter()
                .flatten()
                .map(|r| SelectorRequirement {
                    key: r.key.clone(),
                    operator: r.operator.clone(),
                    values: r.values.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

impl From<&ReplicaSetCondition> for Condition {
    fn from(c: &ReplicaSetCondition) -> Self {
        Self {
            condition_type: c.type_.clone().unwrap_or_default(),
            status: c.status.clone().unwrap_or_default(),
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
            last_transition_time: c.last_transition_time.as_ref().map(nanos),
        }
    }
}

impl From<&Condition> for ReplicaSetCondition {
    fn from(c: &Condition) -> Self {
        Self {
            type_: Some(c.condition_type.clone()),
            status: Some(c.status.clone()),
            reason: Some(c.reason.clone()).filter(|r| !r.is_empty()),
            message: Some(c.message.clone()).filter(|m| !m.is_empty()),
            last_transition_time: c.last_transition_time.map(time),
        }
    }
}

impl From<Option<&ApiStatus>> for ReplicaSetStatus {
    fn from(s: Option<&ApiStatus>) -> Self {
        let Some(s) = s else {
            return Self {
                replicas: 0,
                fully_labeled_replicas: 0,
                ready_replicas: 0,
                available_replicas: 0,
                terminating_replicas: None,
                observed_generation: 0,
                conditions: vec![],
            };
        };
        Self {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            terminating_replicas: s.terminating_replicas,
            observed_generation: s.observed_generation.unwrap_or(0),
            conditions: s.conditions.iter().flatten().map(Condition::from).collect(),
        }
    }
}

impl From<&ReplicaSetStatus> for ApiStatus {
    fn from(s: &ReplicaSetStatus) -> Self {
        // Zero counts are omitted, as Go's `omitempty` does, so a written status reads back equal.
        let nonzero = |n: i32| (n != 0).then_some(n);
        Self {
            replicas: s.replicas,
            fully_labeled_replicas: nonzero(s.fully_labeled_replicas),
            ready_replicas: nonzero(s.ready_replicas),
            available_replicas: nonzero(s.available_replicas),
            terminating_replicas: s.terminating_replicas,
            observed_generation: (s.observed_generation != 0).then_some(s.observed_generation),
            conditions: (!s.conditions.is_empty())
                .then(|| s.conditions.iter().map(ReplicaSetCondition::from).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_through_the_api_type() {
        let status = ReplicaSetStatus {
            replicas: 3,
            fully_labeled_replicas: 3,
            ready_replicas: 0,
            available_replicas: 0,
            terminating_replicas: Some(0),
            observed_generation: 2,
            conditions: vec![Condition {
                condition_type: "ReplicaFailure".into(),
                status: "True".into(),
                reason: "FailedCreate".into(),
                message: "quota".into(),
                last_transition_time: Some(1_000_000_000),
            }],
        };
        let api = ApiStatus::from(&status);
        assert_eq!(api.ready_replicas, None);
        assert_eq!(ReplicaSetStatus::from(Some(&api)), status);
    }
}
