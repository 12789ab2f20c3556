//! Builders for the API objects tests make, in the spirit of upstream's `newReplicaSet` and
//! `newPodList`: `rs("web").replicas(3).build()`, `pod("web-1").owned_by(&web).ready_since(t)`.
//!
//! Host unit tests use them directly; the integration tests get them with the `testkit` feature.
//! Every builder writes the object as the API server would serve it (JSON), so a cached pod goes
//! through the same trimming decoder as in production.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::{apps::v1::ReplicaSet, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use serde_json::{Value, json};

use crate::{
    contract::{Label, Snapshot},
    informers::cached::{CachedPod, POD_DELETION_COST},
    snapshot::{StringTable, replica_set_record},
};

/// The container every built pod and template runs.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// A label map from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A ReplicaSet named `name` in namespace `default` selecting and labelling `app: <name>`, one
/// replica, generation 1, a pause container.
pub fn rs(name: &str) -> ReplicaSetBuilder {
    ReplicaSetBuilder(json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default", "generation": 1},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": PAUSE_IMAGE}]}
            }
        }
    }))
}

/// See [`rs`].
#[must_use = "a builder does nothing until built"]
#[derive(Clone)]
pub struct ReplicaSetBuilder(Value);

impl ReplicaSetBuilder {
    /// In namespace `ns`.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.0["metadata"]["namespace"] = json!(ns);
        self
    }

    /// Without a namespace, for creating it through a namespaced API.
    pub fn without_namespace(mut self) -> Self {
        remove(&mut self.0["metadata"], "namespace");
        self
    }

    /// With UID `uid` (a created object has one; the API server assigns it).
    pub fn uid(mut self, uid: &str) -> Self {
        self.0["metadata"]["uid"] = json!(uid);
        self
    }

    /// `spec.replicas`.
    pub fn replicas(mut self, replicas: i32) -> Self {
        self.0["spec"]["replicas"] = json!(replicas);
        self
    }

    /// Selects and labels its pods with `labels` (selector `matchLabels` and template labels).
    pub fn labels(mut self, labels: &BTreeMap<String, String>) -> Self {
        self.0["spec"]["selector"] = json!({"matchLabels": labels});
        self.0["spec"]["template"]["metadata"]["labels"] = json!(labels);
        self
    }

    /// The template's labels only (the selector unchanged), e.g. a superset of the selector.
    pub fn template_labels(mut self, labels: &BTreeMap<String, String>) -> Self {
        self.0["spec"]["template"]["metadata"]["labels"] = json!(labels);
        self
    }

    /// This exact `spec.selector` (expressions, or an invalid one); template labels unchanged.
    pub fn selector(mut self, selector: Value) -> Self {
        self.0["spec"]["selector"] = selector;
        self
    }

    /// `spec.minReadySeconds`.
    pub fn min_ready_seconds(mut self, seconds: i32) -> Self {
        self.0["spec"]["minReadySeconds"] = json!(seconds);
        self
    }

    /// `metadata.generation`.
    pub fn generation(mut self, generation: i64) -> Self {
        self.0["metadata"]["generation"] = json!(generation);
        self
    }

    /// `metadata.resourceVersion`.
    pub fn resource_version(mut self, rv: &str) -> Self {
        self.0["metadata"]["resourceVersion"] = json!(rv);
        self
    }

    /// The cached `status` (e.g. `json!({"replicas": 3, "observedGeneration": 1})`).
    pub fn status(mut self, status: Value) -> Self {
        self.0["status"] = status;
        self
    }

    /// Controlled by `kind/name` with `uid` (a Deployment, for colocation ranks).
    pub fn controlled_by(mut self, kind: &str, name: &str, uid: &str) -> Self {
        self.0["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true}]);
        self
    }

    /// Being deleted since `at` (RFC 3339).
    pub fn deleting(mut self, at: &str) -> Self {
        self.0["metadata"]["deletionTimestamp"] = json!(at);
        self
    }

    /// The ReplicaSet.
    pub fn build(self) -> ReplicaSet {
        serde_json::from_value(self.0).expect("the builder writes a valid ReplicaSet")
    }

    /// The ReplicaSet, shared as the caches hold it.
    pub fn arc(self) -> Arc<ReplicaSet> {
        Arc::new(self.build())
    }
}

/// A pod named `name` in namespace `default` with UID `uid-<name>`, a pause container, no
/// labels, no owner, unscheduled, no status.
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "app", "image": PAUSE_IMAGE}]}
    }))
}

/// See [`pod`].
#[must_use = "a builder does nothing until built"]
#[derive(Clone)]
pub struct PodBuilder(Value);

impl PodBuilder {
    /// In namespace `ns`.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.0["metadata"]["namespace"] = json!(ns);
        self
    }

    /// Without a namespace or UID, for creating it through a namespaced API.
    pub fn unsaved(mut self) -> Self {
        remove(&mut self.0["metadata"], "namespace");
        remove(&mut self.0["metadata"], "uid");
        self
    }

    /// With UID `uid`.
    pub fn uid(mut self, uid: &str) -> Self {
        self.0["metadata"]["uid"] = json!(uid);
        self
    }

    /// `metadata.labels`.
    pub fn labels(mut self, labels: &BTreeMap<String, String>) -> Self {
        self.0["metadata"]["labels"] = json!(labels);
        self
    }

    /// Controlled by `rs` (its name and UID), as the controller's own pods are.
    pub fn owned_by(self, rs: &ReplicaSet) -> Self {
        let (name, uid) =
            (rs.metadata.name.as_deref().unwrap_or_default(), rs.metadata.uid.as_deref().unwrap_or_default());
        self.controller("ReplicaSet", name, uid)
    }

    /// Controlled by `kind/name` with `uid`.
    pub fn controller(mut self, kind: &str, name: &str, uid: &str) -> Self {
        self.0["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true}]);
        self
    }

    /// Exactly these owner references (any mix of controller and `blockOwnerDeletion` flags).
    pub fn owner_references(mut self, refs: &[OwnerReference]) -> Self {
        self.0["metadata"]["ownerReferences"] = json!(refs);
        self
    }

    /// Bound to node `node`.
    pub fn node(mut self, node: &str) -> Self {
        self.0["spec"]["nodeName"] = json!(node);
        self
    }

    /// `status.phase`.
    pub fn phase(mut self, phase: &str) -> Self {
        self.0["status"]["phase"] = json!(phase);
        self
    }

    /// Running and Ready since `at` (RFC 3339).
    pub fn ready_since(mut self, at: &str) -> Self {
        self.0["status"]["phase"] = json!("Running");
        self.0["status"]["conditions"] = json!([{"type": "Ready", "status": "True", "lastTransitionTime": at}]);
        self
    }

    /// Its container restarted `count` times.
    pub fn restarts(mut self, count: i32) -> Self {
        self.0["status"]["containerStatuses"] = json!([{
            "name": "app", "image": PAUSE_IMAGE, "imageID": "", "ready": false, "restartCount": count
        }]);
        self
    }

    /// The pod-deletion-cost annotation.
    pub fn deletion_cost(self, cost: &str) -> Self {
        self.annotation(POD_DELETION_COST, cost)
    }

    /// One more annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0["metadata"]["annotations"][key] = json!(value);
        self
    }

    /// `metadata.creationTimestamp` (RFC 3339).
    pub fn created(mut self, at: &str) -> Self {
        self.0["metadata"]["creationTimestamp"] = json!(at);
        self
    }

    /// Being deleted since `at` (RFC 3339).
    pub fn deleting(mut self, at: &str) -> Self {
        self.0["metadata"]["deletionTimestamp"] = json!(at);
        self
    }

    /// `metadata.resourceVersion`.
    pub fn resource_version(mut self, rv: &str) -> Self {
        self.0["metadata"]["resourceVersion"] = json!(rv);
        self
    }

    /// The pod.
    pub fn build(self) -> Pod {
        serde_json::from_value(self.0).expect("the builder writes a valid Pod")
    }

    /// The pod as the informer caches it.
    pub fn cached(self) -> Arc<CachedPod> {
        Arc::new(serde_json::from_value(self.0).expect("the builder writes a valid Pod"))
    }
}

fn remove(object: &mut Value, field: &str) {
    if let Some(map) = object.as_object_mut() {
        map.remove(field);
    }
}

/// `n` distinct labels `k0=v`, `k1=v`, … as the contract carries them.
pub fn numbered_labels(n: usize) -> Vec<Label> {
    (0..n).map(|i| Label { key: format!("k{i}"), value: "v".into() }).collect()
}

/// A snapshot of ReplicaSet `web` with no pods and exactly `label_sets`, of which the first (if
/// any) is its template's: for tests of what label-heavy input costs a guest call.
pub fn snapshot_with_label_sets(label_sets: Vec<Vec<Label>>) -> Snapshot {
    let rs = rs("web").uid("u1").build();
    let mut strings = StringTable::default();
    // The first label set interned is the template's, at index 0.
    let template = strings.label_map(None);
    let (_, pod_strings) = strings.finish();
    Snapshot {
        replica_set: replica_set_record(&rs, template),
        pods: vec![],
        label_sets,
        nodes: vec![],
        pod_strings,
        expectations_satisfied: true,
        now: 0,
        burst_replicas: 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_pod_of_a_replica_set_is_controlled_by_it_and_cached_trimmed() {
        let web = rs("web").uid("u1").replicas(3).build();
        assert_eq!(web.spec.replicas, Some(3));
        let cached = pod("web-1").owned_by(&web).node("n1").ready_since("2026-01-01T00:00:00Z").restarts(2).cached();
        assert_eq!(cached.controller_ref().map(|r| r.uid.as_str()), Some("u1"));
        assert_eq!((cached.node_name.as_deref(), cached.ready, cached.max_container_restarts), (Some("n1"), true, 2));
        assert_eq!(cached.key(), "default/web-1");
    }

    #[test]
    fn objects_for_a_namespaced_api_carry_no_namespace() {
        assert_eq!(rs("web").without_namespace().build().metadata.namespace, None);
        let p = pod("p").unsaved().build();
        assert_eq!((p.metadata.namespace, p.metadata.uid), (None, None));
    }
}
