//! Runs the default policy as native Rust (the `guest-replicaset` library), for the fixture
//! parity test, the native-vs-sandbox benchmark and `dry-run --native`.
//!
//! wasmtime's and wit-bindgen's generated types are distinct Rust types for the same WIT
//! records; this module only converts between them.

use guest_replicaset::types as g;

use crate::contract::{
    Condition, Controller, Label, LabelSelector, Node, Plan, Pod, PodPhase, ReconcileError, ReplicaSet,
    ReplicaSetStatus, SelectorRequirement, Snapshot, Span,
};

/// A snapshot converted once, so benchmarks time only the policy.
pub struct NativeSnapshot(g::Snapshot);

impl NativeSnapshot {
    /// Converts a contract snapshot.
    pub fn new(s: &Snapshot) -> Self {
        Self(snapshot(s))
    }
}

/// `reconcile` of the default policy, natively.
pub fn reconcile(snapshot: &NativeSnapshot) -> Result<Plan, ReconcileError> {
    match guest_replicaset::reconcile(&snapshot.0) {
        Ok(p) => Ok(Plan {
            adopt: p.adopt,
            release: p.release,
            create: p.create,
            delete: p.delete,
            status: status_back(p.status),
            requeue_after: p.requeue_after,
        }),
        Err(g::ReconcileError::InvalidSelector(m)) => Err(ReconcileError::InvalidSelector(m)),
        Err(g::ReconcileError::InvalidSnapshot(m)) => Err(ReconcileError::InvalidSnapshot(m)),
    }
}

/// `status-after-scale-error` of the default policy, natively.
pub fn status_after_scale_error(
    rs: &ReplicaSet,
    plan_status: &ReplicaSetStatus,
    message: &str,
    now: i64,
) -> ReplicaSetStatus {
    status_back(guest_replicaset::status_after_scale_error(&replica_set(rs), status(plan_status), message, now))
}

fn span(s: &Span) -> g::Span {
    g::Span { start: s.start, len: s.len }
}

fn labels(l: &[Label]) -> Vec<g::Label> {
    l.iter().map(|l| g::Label { key: l.key.clone(), value: l.value.clone() }).collect()
}

fn condition(c: &Condition) -> g::Condition {
    g::Condition {
        condition_type: c.condition_type.clone(),
        status: c.status.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        last_transition_time: c.last_transition_time,
    }
}

fn status(s: &ReplicaSetStatus) -> g::ReplicaSetStatus {
    g::ReplicaSetStatus {
        replicas: s.replicas,
        fully_labeled_replicas: s.fully_labeled_replicas,
        ready_replicas: s.ready_replicas,
        available_replicas: s.available_replicas,
        terminating_replicas: s.terminating_replicas,
        observed_generation: s.observed_generation,
        conditions: s.conditions.iter().map(condition).collect(),
    }
}

fn status_back(s: g::ReplicaSetStatus) -> ReplicaSetStatus {
    ReplicaSetStatus {
        replicas: s.replicas,
        fully_labeled_replicas: s.fully_labeled_replicas,
        ready_replicas: s.ready_replicas,
        available_replicas: s.available_replicas,
        terminating_replicas: s.terminating_replicas,
        observed_generation: s.observed_generation,
        conditions: s
            .conditions
            .into_iter()
            .map(|c| Condition {
                condition_type: c.condition_type,
                status: c.status,
                reason: c.reason,
                message: c.message,
                last_transition_time: c.last_transition_time,
            })
            .collect(),
    }
}

/// A contract selector as the policy library's type (for matching in the host).
pub fn label_selector(s: &LabelSelector) -> g::LabelSelector {
    g::LabelSelector {
        match_labels: labels(&s.match_labels),
        match_expressions: s
            .match_expressions
            .iter()
            .map(|SelectorRequirement { key, operator, values }| g::SelectorRequirement {
                key: key.clone(),
                operator: operator.clone(),
                values: values.clone(),
            })
            .collect(),
    }
}

fn replica_set(rs: &ReplicaSet) -> g::ReplicaSet {
    g::ReplicaSet {
        namespace: rs.namespace.clone(),
        name: rs.name.clone(),
        uid: rs.uid.clone(),
        generation: rs.generation,
        deletion_timestamp: rs.deletion_timestamp,
        replicas: rs.replicas,
        min_ready_seconds: rs.min_ready_seconds,
        selector: label_selector(&rs.selector),
        template_labels: rs.template_labels,
        status: status(&rs.status),
    }
}

fn pod(p: &Pod) -> g::Pod {
    g::Pod {
        name: span(&p.name),
        namespace: span(&p.namespace),
        uid: span(&p.uid),
        labels: p.labels,
        controller: match p.controller {
            Controller::None => g::Controller::None,
            Controller::ThisReplicaSet => g::Controller::ThisReplicaSet,
            Controller::Other => g::Controller::Other,
        },
        creation_timestamp: p.creation_timestamp,
        deletion_timestamp: p.deletion_timestamp,
        deletion_cost: p.deletion_cost.as_ref().map(span),
        phase: match p.phase {
            PodPhase::Pending => g::PodPhase::Pending,
            PodPhase::Running => g::PodPhase::Running,
            PodPhase::Succeeded => g::PodPhase::Succeeded,
            PodPhase::Failed => g::PodPhase::Failed,
            PodPhase::Unknown => g::PodPhase::Unknown,
            PodPhase::Other => g::PodPhase::Other,
        },
        node: p.node,
        ready: p.ready,
        ready_transition: p.ready_transition,
        max_container_restarts: p.max_container_restarts,
        max_sidecar_restarts: p.max_sidecar_restarts,
    }
}

fn snapshot(s: &Snapshot) -> g::Snapshot {
    g::Snapshot {
        replica_set: replica_set(&s.replica_set),
        pods: s.pods.iter().map(pod).collect(),
        label_sets: s.label_sets.iter().map(|set| labels(set)).collect(),
        nodes: s
            .nodes
            .iter()
            .map(|n: &Node| g::Node { name: n.name.clone(), related_active_pods: n.related_active_pods })
            .collect(),
        pod_strings: s.pod_strings.clone(),
        expectations_satisfied: s.expectations_satisfied,
        now: s.now,
        burst_replicas: s.burst_replicas,
    }
}
