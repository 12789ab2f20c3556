//! Builds the policy's input from the caches: pod strings packed in one blob, label sets interned,
//! nodes in a table — so a snapshot crosses into the guest with a few allocations, not several
//! per pod.

use std::{
    collections::{BTreeMap, HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    sync::Arc,
};

use k8s_openapi::api::apps::v1::ReplicaSet;

use crate::{
    contract::{
        Controller, Label, LabelSelector, Node, Pod, PodPhase, ReplicaSet as RsRecord, ReplicaSetStatus, Snapshot, Span,
    },
    informers::cached::{CachedPod, POD_DELETION_COST, Phase},
    selector::ReplicaSetSelector,
    time::nanos,
};

/// Packs per-pod strings into one blob and interns label sets.
#[derive(Debug, Default)]
pub struct StringTable {
    blob: String,
    shared: HashMap<String, Span>,
    label_sets: Vec<Vec<Label>>,
    by_hash: HashMap<u64, Vec<u32>>,
}

impl StringTable {
    /// Appends `text` to the blob.
    pub fn span(&mut self, text: &str) -> Span {
        let start = self.blob.len() as u32;
        self.blob.push_str(text);
        Span { start, len: text.len() as u32 }
    }

    /// Like [`StringTable::span`], but repeated texts (a namespace) share one copy.
    pub fn shared_span(&mut self, text: &str) -> Span {
        if let Some(span) = self.shared.get(text) {
            return *span;
        }
        let span = self.span(text);
        self.shared.insert(text.to_string(), span);
        span
    }

    /// Interns a label set given as `(key, value)` pairs sorted by key; allocates only the first
    /// time a set is seen.
    pub fn label_set<'a>(&mut self, labels: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> u32 {
        let mut hasher = DefaultHasher::new();
        for (k, v) in labels.clone() {
            (k, v).hash(&mut hasher);
        }
        let hash = hasher.finish();
        let candidates = self.by_hash.entry(hash).or_default();
        for &index in candidates.iter() {
            let set = &self.label_sets[index as usize];
            if set.len() == labels.clone().count()
                && set.iter().zip(labels.clone()).all(|(l, (k, v))| l.key == k && l.value == v)
            {
                return index;
            }
        }
        let index = self.label_sets.len() as u32;
        self.label_sets.push(labels.map(|(k, v)| Label { key: k.to_string(), value: v.to_string() }).collect());
        candidates.push(index);
        index
    }

    /// Interns a label map.
    pub fn label_map(&mut self, labels: Option<&BTreeMap<String, String>>) -> u32 {
        self.label_set(labels.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The interned label sets and the blob.
    pub fn finish(self) -> (Vec<Vec<Label>>, String) {
        (self.label_sets, self.blob)
    }
}

/// A snapshot and the cached pods its indices refer to.
pub struct Projection {
    /// What the policy reads (shared with the guest call and the shadow comparison).
    pub snapshot: Arc<Snapshot>,
    /// `pods[i]` is the cached pod behind `snapshot.pods[i]`.
    pub pods: Vec<Arc<CachedPod>>,
}

/// Everything besides the ReplicaSet and its candidate pods that a snapshot carries.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// The host's expectations for the key are satisfied.
    pub expectations_satisfied: bool,
    /// The instant of the sync, Unix nanoseconds.
    pub now: i64,
    /// The burst cap.
    pub burst_replicas: u32,
}

/// Projects `rs` and its candidate pods. `related_per_node` is asked for the colocation counts
/// only when a scale-down is possible (more active owned-or-orphan pods than `spec.replicas`),
/// the only case in which a policy ranks pods for deletion.
pub fn project(
    rs: &ReplicaSet,
    candidates: Vec<Arc<CachedPod>>,
    context: Context,
    related_per_node: impl FnOnce() -> HashMap<String, u32>,
) -> Projection {
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let replicas = rs.spec.replicas.unwrap_or(1);
    let mut strings = StringTable::default();
    let template_labels =
        strings.label_map(rs.spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.as_ref()));

    let claimable =
        candidates.iter().filter(|p| p.is_active() && p.controller_ref().is_none_or(|r| r.uid == uid)).count();
    let related = if claimable as i64 > i64::from(replicas) { related_per_node() } else { HashMap::new() };

    let mut node_index: HashMap<&str, u32> = HashMap::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut pods = Vec::with_capacity(candidates.len());
    for pod in &candidates {
        let node_name = pod.node_name.as_deref().unwrap_or_default();
        let node = *node_index.entry(node_name).or_insert_with(|| {
            nodes.push(Node {
                name: node_name.to_string(),
                related_active_pods: related.get(node_name).copied().unwrap_or(0),
            });
            nodes.len() as u32 - 1
        });
        pods.push(pod_record(&mut strings, pod, uid, node));
    }
    let (label_sets, pod_strings) = strings.finish();
    let snapshot = Snapshot {
        replica_set: replica_set_record(rs, template_labels),
        pods,
        label_sets,
        nodes,
        pod_strings,
        expectations_satisfied: context.expectations_satisfied,
        now: context.now,
        burst_replicas: context.burst_replicas,
    };
    Projection { snapshot: Arc::new(snapshot), pods: candidates }
}

/// Whether `pod`, controlled by the ReplicaSet whose `selector` this is or by nothing, is one of
/// its candidates: every pod it controls, and the orphans its selector matches. An orphan it
/// does not match can never be adopted, so it never reaches the guest and costs it nothing
/// (anyone who may create pods in the namespace could otherwise make every sync there run out of
/// fuel).
pub fn is_candidate(selector: &ReplicaSetSelector, pod: &CachedPod) -> bool {
    let no_labels = BTreeMap::new();
    pod.controller_ref().is_some() || selector.matches(pod.metadata.labels.as_ref().unwrap_or(&no_labels)) == Some(true)
}

/// Active pods per node related to a ReplicaSet: those matching the selector of any of `related`
/// (the ReplicaSets sharing its controller, itself included), each pod counted once (upstream
/// `getIndirectlyRelatedPods`). `pods_in(namespace)` lists a namespace's pods.
pub fn related_active_pods_per_node<'a>(
    related: impl IntoIterator<Item = &'a ReplicaSet>,
    pods_in: impl Fn(&str) -> Vec<Arc<CachedPod>>,
) -> HashMap<String, u32> {
    let mut per_node = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let no_labels = BTreeMap::new();
    for related in related {
        let selector = ReplicaSetSelector::of(related);
        let namespace = related.metadata.namespace.as_deref().unwrap_or_default();
        for pod in pods_in(namespace) {
            let labels = pod.metadata.labels.as_ref().unwrap_or(&no_labels);
            if selector.matches(labels) != Some(true) || !seen.insert(pod.metadata.uid.clone()) {
                continue;
            }
            if pod.is_active() {
                *per_node.entry(pod.node_name.clone().unwrap_or_default()).or_insert(0) += 1;
            }
        }
    }
    per_node
}

/// The snapshot a sync of `rs` would see, built from full lists of its namespace's ReplicaSets
/// and pods instead of the engine's indexes (for tools such as `record`): the same candidates and
/// colocation counts; `context` supplies what only a running engine knows.
pub fn from_lists(
    rs: &ReplicaSet,
    replica_sets: &[ReplicaSet],
    pods: &[Arc<CachedPod>],
    context: Context,
) -> Projection {
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let selector = ReplicaSetSelector::of(rs);
    let candidates = pods
        .iter()
        .filter(|pod| pod.controller_ref().is_none_or(|r| r.uid == uid) && is_candidate(&selector, pod))
        .cloned()
        .collect();
    project(rs, candidates, context, || {
        let Some(owner) = crate::informers::cached::controller_of(&rs.metadata) else { return HashMap::new() };
        let related = replica_sets.iter().filter(|other| {
            crate::informers::cached::controller_of(&other.metadata).is_some_and(|o| o.uid == owner.uid)
        });
        related_active_pods_per_node(related, |namespace| {
            pods.iter().filter(|p| p.metadata.namespace.as_deref() == Some(namespace)).cloned().collect()
        })
    })
}

/// The contract's view of one candidate pod of the ReplicaSet with `rs_uid`, on node `node`.
fn pod_record(strings: &mut StringTable, pod: &CachedPod, rs_uid: &str, node: u32) -> Pod {
    let meta = &pod.metadata;
    Pod {
        name: strings.span(meta.name.as_deref().unwrap_or_default()),
        namespace: strings.shared_span(meta.namespace.as_deref().unwrap_or_default()),
        uid: strings.span(meta.uid.as_deref().unwrap_or_default()),
        labels: strings.label_map(meta.labels.as_ref()),
        controller: match pod.controller_ref() {
            None => Controller::None,
            Some(r) if r.uid == rs_uid && r.kind == "ReplicaSet" => Controller::ThisReplicaSet,
            Some(_) => Controller::Other,
        },
        creation_timestamp: meta.creation_timestamp.as_ref().map(nanos),
        deletion_timestamp: meta.deletion_timestamp.as_ref().map(nanos),
        deletion_cost: meta.annotations.as_ref().and_then(|a| a.get(POD_DELETION_COST)).map(|c| strings.span(c)),
        phase: match pod.phase {
            Phase::Pending => PodPhase::Pending,
            Phase::Running => PodPhase::Running,
            Phase::Succeeded => PodPhase::Succeeded,
            Phase::Failed => PodPhase::Failed,
            Phase::Unknown => PodPhase::Unknown,
            Phase::Other => PodPhase::Other,
        },
        node,
        ready: pod.ready,
        ready_transition: pod.ready_transition,
        max_container_restarts: pod.max_container_restarts,
        max_sidecar_restarts: pod.max_sidecar_restarts,
    }
}

/// The contract's view of a ReplicaSet; `template_labels` indexes the snapshot's label sets.
pub fn replica_set_record(rs: &ReplicaSet, template_labels: u32) -> RsRecord {
    let meta = &rs.metadata;
    RsRecord {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        generation: meta.generation.unwrap_or(0),
        deletion_timestamp: meta.deletion_timestamp.as_ref().map(nanos),
        // The API server defaults spec.replicas to 1.
        replicas: rs.spec.replicas.unwrap_or(1),
        min_ready_seconds: rs.spec.min_ready_seconds.unwrap_or(0),
        selector: LabelSelector::from(&rs.spec.selector),
        template_labels,
        status: ReplicaSetStatus::from(rs.status.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn pairs<'a>(p: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a str, &'a str)> + Clone {
        p.iter().copied()
    }

    fn rs(replicas: i32) -> ReplicaSet {
        testkit::rs("web").namespace("ns").uid("rs1").generation(3).replicas(replicas).build()
    }

    /// A running pod labelled `app: web`, on `node`, controlled by a ReplicaSet with UID `owner`.
    fn pod(name: &str, node: Option<&str>, owner: Option<&str>) -> Arc<CachedPod> {
        let mut pod = testkit::pod(name)
            .namespace("ns")
            .labels(&testkit::labels(&[("app", "web")]))
            .deletion_cost("4")
            .phase("Running");
        if let Some(node) = node {
            pod = pod.node(node);
        }
        if let Some(uid) = owner {
            pod = pod.controller("ReplicaSet", "web", uid);
        }
        pod.cached()
    }

    fn context() -> Context {
        Context { expectations_satisfied: true, now: 42, burst_replicas: 500 }
    }

    #[test]
    fn equal_label_sets_are_stored_once() {
        let mut t = StringTable::default();
        let a = t.label_set(pairs(&[("app", "web")]));
        let b = t.label_set(pairs(&[("app", "db")]));
        let c = t.label_set(pairs(&[("app", "web")]));
        let d = t.label_set(pairs(&[("app", "web"), ("x", "y")]));
        assert_eq!((a, b, c, d), (0, 1, 0, 2));
        assert_eq!(t.finish().0.len(), 3);
    }

    #[test]
    fn spans_point_into_one_blob_and_shared_texts_are_stored_once() {
        let mut t = StringTable::default();
        let ns1 = t.shared_span("default");
        let name = t.span("web-1");
        let ns2 = t.shared_span("default");
        assert_eq!(ns1, ns2);
        let (_, blob) = t.finish();
        assert_eq!(&blob[name.start as usize..(name.start + name.len) as usize], "web-1");
        assert_eq!(blob, "defaultweb-1");
    }

    #[test]
    fn pods_share_their_label_set_and_nodes_become_a_table() {
        let candidates =
            vec![pod("a", Some("n1"), Some("rs1")), pod("b", Some("n1"), None), pod("c", None, Some("other"))];
        let p = project(&rs(3), candidates, context(), || panic!("no scale-down is possible"));
        let s = &p.snapshot;
        assert_eq!(s.label_sets.len(), 1, "template and pods share {{app: web}}");
        assert_eq!(s.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["n1", ""]);
        assert_eq!(
            s.pods.iter().map(|p| p.controller).collect::<Vec<_>>(),
            [Controller::ThisReplicaSet, Controller::None, Controller::Other]
        );
        let cost = s.pods[0].deletion_cost.unwrap();
        assert_eq!(&s.pod_strings[cost.start as usize..(cost.start + cost.len) as usize], "4");
        assert_eq!((s.replica_set.replicas, s.replica_set.generation, s.now), (3, 3, 42));
        assert_eq!(p.pods.len(), 3);
    }

    #[test]
    fn colocation_counts_are_asked_for_only_when_pods_exceed_spec() {
        let candidates = vec![pod("a", Some("n1"), Some("rs1")), pod("b", Some("n1"), Some("rs1"))];
        let p = project(&rs(1), candidates, context(), || HashMap::from([("n1".to_string(), 5)]));
        assert_eq!(p.snapshot.nodes[0].related_active_pods, 5);
    }
}
