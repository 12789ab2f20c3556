//! What informer events do: keep the indexes current, lower expectations, and enqueue the
//! ReplicaSet keys an event concerns (upstream's `addRS` … `deletePod`).

use std::{sync::Arc, time::Duration};

use k8s_openapi::{api::apps::v1::ReplicaSet, apimachinery::pkg::apis::meta::v1::OwnerReference};

use super::Shared;
use crate::{
    informers::{Handler, cached::CachedPod, key_of},
    selector::ReplicaSetSelector,
};

/// ReplicaSet informer events.
pub struct ReplicaSetEvents(pub(super) Arc<Shared>);

impl Handler<ReplicaSet> for ReplicaSetEvents {
    fn on_add(&self, rs: &Arc<ReplicaSet>) {
        self.0.replica_sets.upsert(None, rs);
        self.0.queue.add(&key_of(rs.as_ref()));
    }

    fn on_update(&self, old: &Arc<ReplicaSet>, cur: &Arc<ReplicaSet>) {
        self.0.replica_sets.upsert(Some(old), cur);
        if old.metadata.uid != cur.metadata.uid {
            // The informer collapsed a delete and a re-create into one update: forget the old one.
            self.forget(old);
        }
        // Upstream syncs on every update, resyncs included: "it is safer to sync any time".
        self.0.queue.add(&key_of(cur.as_ref()));
    }

    fn on_delete(&self, rs: &Arc<ReplicaSet>) {
        self.0.replica_sets.remove(rs);
        self.forget(rs);
        self.0.queue.add(&key_of(rs.as_ref()));
    }
}

impl ReplicaSetEvents {
    /// Upstream `deleteRS`: its expectations and consistency record go with it.
    fn forget(&self, rs: &ReplicaSet) {
        let key = key_of(rs);
        self.0.consistency.clear(&key, rs.metadata.uid.as_deref());
        self.0.expectations.delete_expectations(&key);
    }
}

/// Pod informer events.
pub struct PodEvents(pub(super) Arc<Shared>);

impl Handler<CachedPod> for PodEvents {
    fn on_add(&self, pod: &Arc<CachedPod>) {
        self.0.pods.upsert(None, pod);
        if pod.metadata.deletion_timestamp.is_some() {
            // After a restart a pod may show up already pending deletion: that is no creation.
            self.deleted(pod);
            return;
        }
        if let Some(owner) = pod.controller_ref() {
            // With a controller reference, that's all that matters.
            if let Some(key) = self.resolve(pod, owner) {
                self.0.expectations.creation_observed(&key);
                self.0.queue.add(&key);
            }
            return;
        }
        // An orphan: every matching ReplicaSet may want to adopt it. No expectation changes:
        // no controller waits for an orphan.
        for key in self.matching_replica_sets(pod) {
            self.0.queue.add(&key);
        }
    }

    fn on_update(&self, old: &Arc<CachedPod>, cur: &Arc<CachedPod>) {
        self.0.pods.upsert(Some(old), cur);
        if old.metadata.resource_version == cur.metadata.resource_version {
            // A relist that found nothing new.
            return;
        }
        let labels_changed = old.metadata.labels != cur.metadata.labels;
        if cur.metadata.deletion_timestamp.is_some() {
            // Graceful deletion: a pod gets a deletionTimestamp long before it is gone. Count it as
            // deleted now so a replacement starts early; the later delete event is not counted again.
            self.deleted(cur);
            if labels_changed {
                // The old labels may have pointed at another ReplicaSet that must also hear of it.
                self.deleted(old);
            }
            return;
        }
        let (cur_owner, old_owner) = (cur.controller_ref(), old.controller_ref());
        let owner_changed = cur_owner != old_owner;
        if owner_changed && let Some(key) = old_owner.and_then(|o| self.resolve(old, o)) {
            // The old controller lost a pod: sync it.
            self.0.queue.add(&key);
        }
        if let Some(owner) = cur_owner {
            let Some(key) = self.resolve(cur, owner) else { return };
            self.0.queue.add(&key);
            let min_ready_seconds = self.min_ready_seconds(cur, owner);
            if !old.ready && cur.ready && min_ready_seconds > 0 {
                // No other event will say when this pod turns available: look again then.
                self.0.queue.add_after(&key, Duration::from_secs(min_ready_seconds as u64));
            }
            return;
        }
        // An orphan whose labels or controller changed: whoever matches now may adopt it.
        if labels_changed || owner_changed {
            for key in self.matching_replica_sets(cur) {
                self.0.queue.add(&key);
            }
        }
    }

    fn on_delete(&self, pod: &Arc<CachedPod>) {
        self.0.pods.remove(pod);
        self.deleted(pod);
    }
}

impl PodEvents {
    /// Upstream `deletePod`: an owned pod's deletion is observed and its owner synced; orphans
    /// are ignored (no controller was waiting for them).
    fn deleted(&self, pod: &CachedPod) {
        let Some(owner) = pod.controller_ref() else { return };
        let Some(key) = self.resolve(pod, owner) else { return };
        self.0.expectations.deletion_observed(&key, &pod.key());
        self.0.queue.add(&key);
    }

    /// Upstream `resolveControllerRef`: the cached ReplicaSet the reference names, if its UID
    /// matches (we cannot look up by UID, so by name, then verify).
    fn resolve(&self, pod: &CachedPod, owner: &OwnerReference) -> Option<String> {
        if owner.kind != "ReplicaSet" {
            return None;
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let rs = self.0.replica_sets.get(namespace, &owner.name)?;
        (rs.metadata.uid.as_deref() == Some(owner.uid.as_str())).then(|| key_of(rs.as_ref()))
    }

    fn min_ready_seconds(&self, pod: &CachedPod, owner: &OwnerReference) -> i32 {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        self.0.replica_sets.get(namespace, &owner.name).and_then(|rs| rs.spec.min_ready_seconds).unwrap_or(0)
    }

    /// Upstream `getPodReplicaSets`: the ReplicaSets of the pod's namespace whose selector
    /// matches its labels. A pod without labels matches none, and here an empty or invalid
    /// selector matches nothing, not everything.
    fn matching_replica_sets(&self, pod: &CachedPod) -> Vec<String> {
        let Some(labels) = pod.metadata.labels.as_ref().filter(|l| !l.is_empty()) else { return vec![] };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let keys: Vec<String> = self
            .0
            .replica_sets
            .in_namespace(namespace)
            .iter()
            .filter(|rs| {
                let selector = ReplicaSetSelector::of(rs);
                !selector.is_empty() && selector.matches(labels) == Some(true)
            })
            .map(|rs| key_of(rs.as_ref()))
            .collect();
        if keys.len() > 1 {
            // The controller reference keeps this safe, but it is a user error all the same.
            tracing::warn!(pod = %pod.key(), replicasets = ?keys, "user error! more than one ReplicaSet is selecting pods with these labels");
        }
        keys
    }
}
