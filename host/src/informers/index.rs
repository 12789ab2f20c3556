//! Secondary indexes over the caches, so mapping an event to ReplicaSet keys and building one
//! snapshot cost O(pods of that ReplicaSet), not O(all pods).
//!
//! Mirrors upstream's pod indexer keyed by controller (`AddPodControllerIndexer`: pods by
//! controller, orphans by namespace) and the ReplicaSet indexer keyed by the ReplicaSet's own
//! controller UID (`controllerUIDIndex`).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use k8s_openapi::api::apps::v1::ReplicaSet;

use super::cached::{CachedPod, controller_of};

type Bucket<K> = HashMap<Arc<str>, Arc<K>>;

/// Pods by controller UID, orphans by namespace, and all pods by namespace.
#[derive(Default)]
pub struct PodIndex {
    inner: RwLock<PodIndexInner>,
}

#[derive(Default)]
struct PodIndexInner {
    by_controller: HashMap<String, Bucket<CachedPod>>,
    orphans: HashMap<String, Bucket<CachedPod>>,
    by_namespace: HashMap<String, Bucket<CachedPod>>,
}

fn namespace(pod: &CachedPod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or_default()
}

impl PodIndex {
    /// Records `pod` (replacing whatever `old` put in).
    pub fn upsert(&self, old: Option<&CachedPod>, pod: &Arc<CachedPod>) {
        let key: Arc<str> = Arc::from(pod.key());
        let mut inner = self.inner.write().expect("pod index lock");
        if let Some(old) = old {
            inner.remove(old, &key);
        }
        let ns = namespace(pod).to_string();
        match pod.controller_ref() {
            Some(owner) => inner.by_controller.entry(owner.uid.clone()).or_default().insert(key.clone(), pod.clone()),
            None => inner.orphans.entry(ns.clone()).or_default().insert(key.clone(), pod.clone()),
        };
        inner.by_namespace.entry(ns).or_default().insert(key, pod.clone());
    }

    /// Forgets `pod`.
    pub fn remove(&self, pod: &CachedPod) {
        let key: Arc<str> = Arc::from(pod.key());
        self.inner.write().expect("pod index lock").remove(pod, &key);
    }

    /// Pods whose controller reference has `uid`, in `namespace` (candidates owned by a
    /// ReplicaSet), followed by that namespace's orphans.
    pub fn owned_and_orphans(&self, namespace: &str, uid: &str) -> Vec<Arc<CachedPod>> {
        let inner = self.inner.read().expect("pod index lock");
        let owned = inner
            .by_controller
            .get(uid)
            .into_iter()
            .flat_map(|b| b.values())
            .filter(|p| self::namespace(p) == namespace);
        let orphans = inner.orphans.get(namespace).into_iter().flat_map(|b| b.values());
        owned.chain(orphans).cloned().collect()
    }

    /// Every pod in `namespace` (for the related-pods count of the deletion ranking).
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<CachedPod>> {
        let inner = self.inner.read().expect("pod index lock");
        inner.by_namespace.get(namespace).map(|b| b.values().cloned().collect()).unwrap_or_default()
    }

    /// How many pods are indexed.
    pub fn len(&self) -> usize {
        self.inner.read().expect("pod index lock").by_namespace.values().map(HashMap::len).sum()
    }

    /// Whether no pod is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PodIndexInner {
    fn remove(&mut self, pod: &CachedPod, key: &Arc<str>) {
        let ns = namespace(pod);
        let bucket = match pod.controller_ref() {
            Some(owner) => (&mut self.by_controller, owner.uid.as_str()),
            None => (&mut self.orphans, ns),
        };
        remove_from(bucket.0, bucket.1, key);
        remove_from(&mut self.by_namespace, ns, key);
    }
}

fn remove_from<K>(map: &mut HashMap<String, Bucket<K>>, bucket: &str, key: &Arc<str>) {
    if let Some(b) = map.get_mut(bucket) {
        b.remove(key);
        if b.is_empty() {
            map.remove(bucket);
        }
    }
}

/// ReplicaSets by namespace and by the UID of their own controller (e.g. a Deployment).
#[derive(Default)]
pub struct ReplicaSetIndex {
    inner: RwLock<ReplicaSetIndexInner>,
}

#[derive(Default)]
struct ReplicaSetIndexInner {
    by_namespace: HashMap<String, Bucket<ReplicaSet>>,
    by_controller: HashMap<String, Bucket<ReplicaSet>>,
}

fn rs_key(rs: &ReplicaSet) -> Arc<str> {
    Arc::from(super::key_of(rs))
}

impl ReplicaSetIndex {
    /// Records `rs` (replacing whatever `old` put in).
    pub fn upsert(&self, old: Option<&ReplicaSet>, rs: &Arc<ReplicaSet>) {
        let key = rs_key(rs);
        let mut inner = self.inner.write().expect("replicaset index lock");
        if let Some(old) = old {
            inner.remove(old, &key);
        }
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        inner.by_namespace.entry(ns).or_default().insert(key.clone(), rs.clone());
        if let Some(owner) = controller_of(&rs.metadata) {
            inner.by_controller.entry(owner.uid.clone()).or_default().insert(key, rs.clone());
        }
    }

    /// Forgets `rs`.
    pub fn remove(&self, rs: &ReplicaSet) {
        let key = rs_key(rs);
        self.inner.write().expect("replicaset index lock").remove(rs, &key);
    }

    /// The ReplicaSets of `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<ReplicaSet>> {
        let inner = self.inner.read().expect("replicaset index lock");
        inner.by_namespace.get(namespace).map(|b| b.values().cloned().collect()).unwrap_or_default()
    }

    /// The ReplicaSet called `name` in `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<ReplicaSet>> {
        let inner = self.inner.read().expect("replicaset index lock");
        inner.by_namespace.get(namespace)?.get(format!("{namespace}/{name}").as_str()).cloned()
    }

    /// ReplicaSets whose controller has `uid` (upstream `getReplicaSetsWithSameController`).
    pub fn with_controller(&self, uid: &str) -> Vec<Arc<ReplicaSet>> {
        let inner = self.inner.read().expect("replicaset index lock");
        inner.by_controller.get(uid).map(|b| b.values().cloned().collect()).unwrap_or_default()
    }
}

impl ReplicaSetIndexInner {
    fn remove(&mut self, rs: &ReplicaSet, key: &Arc<str>) {
        remove_from(&mut self.by_namespace, rs.metadata.namespace.as_deref().unwrap_or_default(), key);
        if let Some(owner) = controller_of(&rs.metadata) {
            remove_from(&mut self.by_controller, &owner.uid, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn pod(name: &str, ns: &str, owner: Option<&str>) -> Arc<CachedPod> {
        let pod = testkit::pod(name).namespace(ns);
        match owner {
            Some(uid) => pod.controller("ReplicaSet", "rs", uid),
            None => pod,
        }
        .cached()
    }

    fn names(pods: &[Arc<CachedPod>]) -> Vec<String> {
        let mut n: Vec<String> = pods.iter().map(|p| p.key()).collect();
        n.sort();
        n
    }

    #[test]
    fn candidates_are_the_pods_owned_in_the_namespace_plus_its_orphans() {
        let index = PodIndex::default();
        index.upsert(None, &pod("a", "ns1", Some("rs1")));
        index.upsert(None, &pod("b", "ns1", Some("rs2")));
        index.upsert(None, &pod("c", "ns1", None));
        index.upsert(None, &pod("d", "ns2", None));
        index.upsert(None, &pod("e", "ns2", Some("rs1")));
        assert_eq!(names(&index.owned_and_orphans("ns1", "rs1")), ["ns1/a", "ns1/c"]);
        assert_eq!(names(&index.in_namespace("ns2")), ["ns2/d", "ns2/e"]);
        assert_eq!(index.len(), 5);
    }

    #[test]
    fn an_adoption_moves_a_pod_from_the_orphans_to_its_owner() {
        let index = PodIndex::default();
        let orphan = pod("a", "ns", None);
        index.upsert(None, &orphan);
        let adopted = pod("a", "ns", Some("rs1"));
        index.upsert(Some(&orphan), &adopted);
        assert_eq!(names(&index.owned_and_orphans("ns", "rs1")), ["ns/a"]);
        assert!(index.owned_and_orphans("ns", "other").is_empty());
        index.remove(&adopted);
        assert!(index.is_empty());
    }
}
