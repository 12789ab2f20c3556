//! Test fixtures: builders for snapshots, in the shape of upstream's `newReplicaSet`/`newPod`.
//! Guest authors get them with the `testkit` feature (as a dev-dependency).
//!
//! `snapshot(rs("foobar").replicas(2)).pod(pod("a").running().on("node-1")).build()` interns the
//! strings into `pod-strings`, the label sets into `label-sets` and the nodes into `nodes`, as
//! the host does. Defaults follow upstream's fixtures: namespace `default`, selector
//! `{foo: bar}`, pods controlled by the ReplicaSet and labelled like its selector; unlike
//! upstream the template labels default to the selector's, so pods count as fully labelled.

// The builders' names say what they set; each documents its defaults in the module doc.
#![allow(missing_docs)]

use crate::types::{
    Condition, Controller, Label, LabelSelector, Node, Plan, Pod, PodPhase, ReplicaSet, ReplicaSetStatus,
    SelectorRequirement, Snapshot, Span,
};

pub const NANOS: i64 = 1_000_000_000;
/// The `now` of every built snapshot unless overridden (2023-11-14T22:13:20Z).
pub const T0: i64 = 1_700_000_000 * NANOS;

/// `seconds` before [`T0`].
pub fn ago(seconds: i64) -> i64 {
    T0 - seconds * NANOS
}

/// `millis` milliseconds before [`T0`].
pub fn ago_ms(millis: i64) -> i64 {
    T0 - millis * 1_000_000
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

// === ReplicaSet ===

pub struct RsBuilder {
    name: String,
    namespace: String,
    generation: i64,
    deletion_timestamp: Option<i64>,
    replicas: i32,
    min_ready_seconds: i32,
    match_labels: Vec<(String, String)>,
    match_expressions: Vec<SelectorRequirement>,
    template_labels: Option<Vec<(String, String)>>,
    status: ReplicaSetStatus,
}

/// A ReplicaSet named `name` in `default`, 1 replica, selector `{foo: bar}`.
pub fn rs(name: &str) -> RsBuilder {
    RsBuilder {
        name: name.to_string(),
        namespace: "default".to_string(),
        generation: 1,
        deletion_timestamp: None,
        replicas: 1,
        min_ready_seconds: 0,
        match_labels: owned(&[("foo", "bar")]),
        match_expressions: Vec::new(),
        template_labels: None,
        status: empty_status(),
    }
}

impl RsBuilder {
    pub fn replicas(mut self, replicas: i32) -> Self {
        self.replicas = replicas;
        self
    }
    pub fn min_ready_seconds(mut self, seconds: i32) -> Self {
        self.min_ready_seconds = seconds;
        self
    }
    pub fn deleting(mut self, at: i64) -> Self {
        self.deletion_timestamp = Some(at);
        self
    }
    /// Replaces `matchLabels` (pods without explicit labels get these).
    pub fn selector(mut self, pairs: &[(&str, &str)]) -> Self {
        self.match_labels = owned(pairs);
        self
    }
    pub fn expression(mut self, key: &str, operator: &str, values: &[&str]) -> Self {
        self.match_expressions.push(SelectorRequirement {
            key: key.to_string(),
            operator: operator.to_string(),
            values: values.iter().map(std::string::ToString::to_string).collect(),
        });
        self
    }
    pub fn template_labels(mut self, pairs: &[(&str, &str)]) -> Self {
        self.template_labels = Some(owned(pairs));
        self
    }
    pub fn generation(mut self, generation: i64) -> Self {
        self.generation = generation;
        self
    }
    /// The cached `status`.
    pub fn status(mut self, status: ReplicaSetStatus) -> Self {
        self.status = status;
        self
    }
    /// The cached `status.conditions`.
    pub fn conditions(mut self, conditions: Vec<Condition>) -> Self {
        self.status.conditions = conditions;
        self
    }
}

// === Pod ===

pub struct PodBuilder {
    name: String,
    namespace: Option<String>,
    uid: Option<String>,
    labels: Option<Vec<(String, String)>>,
    controller: Controller,
    creation_timestamp: Option<i64>,
    deletion_timestamp: Option<i64>,
    deletion_cost: Option<String>,
    phase: PodPhase,
    node: String,
    ready: bool,
    ready_transition: Option<i64>,
    max_container_restarts: u32,
    max_sidecar_restarts: u32,
}

/// A pending, unscheduled, not-ready pod controlled by the ReplicaSet, uid `uid-<name>`,
/// labelled like the ReplicaSet's `matchLabels`, without a creation timestamp.
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        name: name.to_string(),
        namespace: None,
        uid: None,
        labels: None,
        controller: Controller::ThisReplicaSet,
        creation_timestamp: None,
        deletion_timestamp: None,
        deletion_cost: None,
        phase: PodPhase::Pending,
        node: String::new(),
        ready: false,
        ready_transition: None,
        max_container_restarts: 0,
        max_sidecar_restarts: 0,
    }
}

impl PodBuilder {
    pub fn labels(mut self, pairs: &[(&str, &str)]) -> Self {
        self.labels = Some(owned(pairs));
        self
    }
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }
    pub fn uid(mut self, uid: &str) -> Self {
        self.uid = Some(uid.to_string());
        self
    }
    pub fn orphan(mut self) -> Self {
        self.controller = Controller::None;
        self
    }
    pub fn other_controller(mut self) -> Self {
        self.controller = Controller::Other;
        self
    }
    pub fn phase(mut self, phase: PodPhase) -> Self {
        self.phase = phase;
        self
    }
    /// Running and Ready (without a transition time), like upstream's `newPod(.., PodRunning, nil, ..)`.
    pub fn running(mut self) -> Self {
        self.phase = PodPhase::Running;
        self.ready = true;
        self
    }
    /// Ready condition not True; a transition time set earlier stays (the condition has one).
    pub fn not_ready(mut self) -> Self {
        self.ready = false;
        self
    }
    /// Running and Ready since `at`.
    pub fn ready_since(mut self, at: i64) -> Self {
        self.phase = PodPhase::Running;
        self.ready = true;
        self.ready_transition = Some(at);
        self
    }
    pub fn on(mut self, node: &str) -> Self {
        self.node = node.to_string();
        self
    }
    pub fn created(mut self, at: i64) -> Self {
        self.creation_timestamp = Some(at);
        self
    }
    pub fn deleting(mut self, at: i64) -> Self {
        self.deletion_timestamp = Some(at);
        self
    }
    /// The raw pod-deletion-cost annotation.
    pub fn cost(mut self, value: &str) -> Self {
        self.deletion_cost = Some(value.to_string());
        self
    }
    pub fn restarts(mut self, count: u32) -> Self {
        self.max_container_restarts = count;
        self
    }
    pub fn sidecar_restarts(mut self, count: u32) -> Self {
        self.max_sidecar_restarts = count;
        self
    }
}

// === Snapshot ===

pub struct SnapshotBuilder {
    rs: RsBuilder,
    pods: Vec<PodBuilder>,
    related: Vec<(String, u32)>,
    expectations_satisfied: bool,
    now: i64,
    burst: u32,
}

/// A snapshot of `rs` at [`T0`], expectations satisfied, burst 500, no pods.
pub fn snapshot(rs: RsBuilder) -> SnapshotBuilder {
    SnapshotBuilder { rs, pods: Vec::new(), related: Vec::new(), expectations_satisfied: true, now: T0, burst: 500 }
}

impl SnapshotBuilder {
    pub fn pod(mut self, pod: PodBuilder) -> Self {
        self.pods.push(pod);
        self
    }
    pub fn pods(mut self, pods: impl IntoIterator<Item = PodBuilder>) -> Self {
        self.pods.extend(pods);
        self
    }
    /// Sets `related-active-pods` of `node` ("" for unscheduled); every other node has 0.
    pub fn related(mut self, node: &str, count: u32) -> Self {
        self.related.push((node.to_string(), count));
        self
    }
    pub fn expectations_unsatisfied(mut self) -> Self {
        self.expectations_satisfied = false;
        self
    }
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    pub fn build(self) -> Snapshot {
        let rs = self.rs;
        let mut strings = String::new();
        let mut label_sets: Vec<Vec<Label>> = Vec::new();
        let mut nodes: Vec<Node> = vec![Node { name: String::new(), related_active_pods: 0 }];

        let template = rs.template_labels.clone().unwrap_or_else(|| rs.match_labels.clone());
        let template_labels = intern_labels(&mut label_sets, &template);
        let pods: Vec<Pod> = self
            .pods
            .iter()
            .map(|p| {
                let labels = p.labels.clone().unwrap_or_else(|| rs.match_labels.clone());
                Pod {
                    name: push(&mut strings, &p.name),
                    namespace: push(&mut strings, p.namespace.as_deref().unwrap_or(&rs.namespace)),
                    uid: push(&mut strings, &p.uid.clone().unwrap_or_else(|| format!("uid-{}", p.name))),
                    labels: intern_labels(&mut label_sets, &labels),
                    controller: p.controller,
                    creation_timestamp: p.creation_timestamp,
                    deletion_timestamp: p.deletion_timestamp,
                    deletion_cost: p.deletion_cost.as_deref().map(|c| push(&mut strings, c)),
                    phase: p.phase,
                    node: intern_node(&mut nodes, &p.node),
                    ready: p.ready,
                    ready_transition: p.ready_transition,
                    max_container_restarts: p.max_container_restarts,
                    max_sidecar_restarts: p.max_sidecar_restarts,
                }
            })
            .collect();
        for (node, count) in &self.related {
            let index = intern_node(&mut nodes, node);
            nodes[index as usize].related_active_pods = *count;
        }

        let to_labels = |pairs: &[(String, String)]| -> Vec<Label> {
            pairs.iter().map(|(k, v)| Label { key: k.clone(), value: v.clone() }).collect()
        };
        Snapshot {
            replica_set: ReplicaSet {
                namespace: rs.namespace.clone(),
                name: rs.name.clone(),
                uid: "rs-uid".to_string(),
                generation: rs.generation,
                deletion_timestamp: rs.deletion_timestamp,
                replicas: rs.replicas,
                min_ready_seconds: rs.min_ready_seconds,
                selector: LabelSelector {
                    match_labels: to_labels(&rs.match_labels),
                    match_expressions: rs.match_expressions.clone(),
                },
                template_labels,
                status: rs.status.clone(),
            },
            pods,
            label_sets,
            nodes,
            pod_strings: strings,
            expectations_satisfied: self.expectations_satisfied,
            now: self.now,
            burst_replicas: self.burst,
        }
    }
}

fn push(strings: &mut String, text: &str) -> Span {
    let start = strings.len() as u32;
    strings.push_str(text);
    Span { start, len: text.len() as u32 }
}

fn intern_labels(sets: &mut Vec<Vec<Label>>, pairs: &[(String, String)]) -> u32 {
    let set: Vec<Label> = pairs.iter().map(|(k, v)| Label { key: k.clone(), value: v.clone() }).collect();
    let same =
        |a: &Vec<Label>| a.len() == set.len() && a.iter().zip(&set).all(|(x, y)| x.key == y.key && x.value == y.value);
    if let Some(index) = sets.iter().position(same) {
        index as u32
    } else {
        sets.push(set);
        (sets.len() - 1) as u32
    }
}

fn intern_node(nodes: &mut Vec<Node>, name: &str) -> u32 {
    if let Some(index) = nodes.iter().position(|n| n.name == name) {
        index as u32
    } else {
        nodes.push(Node { name: name.to_string(), related_active_pods: 0 });
        (nodes.len() - 1) as u32
    }
}

// === Expected values ===

/// The cached status of a fresh ReplicaSet: all zero, no conditions, terminating unreported.
pub fn empty_status() -> ReplicaSetStatus {
    ReplicaSetStatus {
        replicas: 0,
        fully_labeled_replicas: 0,
        ready_replicas: 0,
        available_replicas: 0,
        terminating_replicas: None,
        observed_generation: 0,
        conditions: Vec::new(),
    }
}

/// A plan's status: the given counts, `terminatingReplicas: 0`, no conditions.
pub fn status(replicas: i32, fully_labeled: i32, ready: i32, available: i32) -> ReplicaSetStatus {
    ReplicaSetStatus {
        replicas,
        fully_labeled_replicas: fully_labeled,
        ready_replicas: ready,
        available_replicas: available,
        terminating_replicas: Some(0),
        ..empty_status()
    }
}

/// A plan that does nothing but write `status`.
pub fn plan(status: ReplicaSetStatus) -> Plan {
    Plan { adopt: Vec::new(), release: Vec::new(), create: 0, delete: Vec::new(), status, requeue_after: None }
}

pub fn condition(condition_type: &str, status: &str, reason: &str, message: &str, at: Option<i64>) -> Condition {
    Condition {
        condition_type: condition_type.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: at,
    }
}

/// The names of the pods at `indices`, for readable assertions.
pub fn names<'a>(snapshot: &'a Snapshot, indices: &[u32]) -> Vec<&'a str> {
    indices
        .iter()
        .map(|&i| {
            let span = snapshot.pods[i as usize].name;
            &snapshot.pod_strings[span.start as usize..(span.start + span.len) as usize]
        })
        .collect()
}
