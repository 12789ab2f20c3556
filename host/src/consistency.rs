//! The stale-cache consistency gate: a sync waits until the informers have seen every write the
//! controller made for that ReplicaSet (upstream `pkg/controller/util/consistency`, beta and on
//! by default since 1.36).
//!
//! Without it, a sync that starts right after our own status write or pod creation reads a
//! cache that predates them, computes from stale data and, at best, loses a status PUT to a
//! conflict. The gate records the resourceVersion each write returned and refuses to sync the
//! key (a rate-limited retry) until the informer for that resource has processed it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// The resources whose writes the gate tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `pods` (creations and patches).
    Pods,
    /// `apps/replicasets` (status writes).
    ReplicaSets,
}

impl Resource {
    /// `resource.group`, as upstream's `GroupResource.String()` prints it.
    pub fn group_resource_string(self) -> &'static str {
        match self {
            Self::Pods => "pods",
            Self::ReplicaSets => "replicasets.apps",
        }
    }

    /// `group/resource` as upstream's metric labels spell it.
    pub fn group_resource(self) -> (&'static str, &'static str) {
        match self {
            Self::Pods => ("", "pods"),
            Self::ReplicaSets => ("apps", "replicasets"),
        }
    }
}

/// A sync refused because the cache is older than our own write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("read version: {read} is not as new as written version: {wrote} for group resource {}", resource.group_resource_string())]
pub struct StaleCache {
    /// The resource whose informer lags.
    pub resource: Resource,
    /// The informer's last resourceVersion.
    pub read: u64,
    /// The resourceVersion we wrote.
    pub wrote: u64,
}

/// What each ReplicaSet key has written, by resource.
#[derive(Default, Clone)]
pub struct ConsistencyStore {
    writes: Arc<Mutex<HashMap<String, OwnerRecord>>>,
}

struct OwnerRecord {
    uid: String,
    versions: HashMap<Resource, u64>,
}

impl ConsistencyStore {
    /// Records that a write for the ReplicaSet `key` (with `uid`) returned `resource_version`.
    /// Unparsable versions are ignored (the gate cannot compare them).
    pub fn wrote_at(&self, key: &str, uid: &str, resource: Resource, resource_version: &str) {
        let Ok(rv) = resource_version.parse::<u64>() else { return };
        let mut writes = self.writes.lock().expect("consistency lock");
        let record = writes
            .entry(key.to_string())
            .or_insert_with(|| OwnerRecord { uid: uid.to_string(), versions: HashMap::new() });
        if record.uid != uid {
            // The ReplicaSet was recreated: the old writes are irrelevant.
            *record = OwnerRecord { uid: uid.to_string(), versions: HashMap::new() };
        }
        let newest = record.versions.entry(resource).or_insert(rv);
        *newest = (*newest).max(rv);
    }

    /// Forgets the key's writes; with a `uid`, only if they belong to that ReplicaSet.
    pub fn clear(&self, key: &str, uid: Option<&str>) {
        let mut writes = self.writes.lock().expect("consistency lock");
        if writes.get(key).is_some_and(|r| uid.is_none_or(|u| r.uid == u)) {
            writes.remove(key);
        }
    }

    /// Ok when every informer has reached the key's writes (the record is then dropped).
    /// `last_synced` gives each informer's newest processed resourceVersion.
    pub fn ensure_ready(&self, key: &str, last_synced: impl Fn(Resource) -> u64) -> Result<(), StaleCache> {
        let mut writes = self.writes.lock().expect("consistency lock");
        let Some(record) = writes.get(key) else { return Ok(()) };
        for (&resource, &wrote) in &record.versions {
            let read = last_synced(resource);
            if read < wrote {
                return Err(StaleCache { resource, read, wrote });
            }
        }
        writes.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_without_writes_is_ready() {
        assert_eq!(ConsistencyStore::default().ensure_ready("ns/rs", |_| 0), Ok(()));
    }

    #[test]
    fn a_sync_waits_until_the_informer_reaches_our_newest_write() {
        let store = ConsistencyStore::default();
        store.wrote_at("ns/rs", "u1", Resource::Pods, "10");
        store.wrote_at("ns/rs", "u1", Resource::Pods, "7");
        store.wrote_at("ns/rs", "u1", Resource::ReplicaSets, "12");
        let lagging = |r: Resource| if r == Resource::Pods { 9 } else { 12 };
        assert_eq!(
            store.ensure_ready("ns/rs", lagging),
            Err(StaleCache { resource: Resource::Pods, read: 9, wrote: 10 })
        );
        assert_eq!(store.ensure_ready("ns/rs", |_| 12), Ok(()));
        // Once ready, the record is gone: an informer that moves backwards cannot block again.
        assert_eq!(store.ensure_ready("ns/rs", |_| 0), Ok(()));
    }

    #[test]
    fn writes_of_a_recreated_replica_set_replace_the_old_ones() {
        let store = ConsistencyStore::default();
        store.wrote_at("ns/rs", "old", Resource::Pods, "100");
        store.wrote_at("ns/rs", "new", Resource::Pods, "5");
        assert_eq!(store.ensure_ready("ns/rs", |_| 5), Ok(()));
    }

    #[test]
    fn clearing_with_another_uid_keeps_the_record() {
        let store = ConsistencyStore::default();
        store.wrote_at("ns/rs", "u1", Resource::ReplicaSets, "3");
        store.clear("ns/rs", Some("u2"));
        assert!(store.ensure_ready("ns/rs", |_| 0).is_err());
        store.clear("ns/rs", None);
        assert_eq!(store.ensure_ready("ns/rs", |_| 0), Ok(()));
    }

    #[test]
    fn unparsable_versions_are_ignored() {
        let store = ConsistencyStore::default();
        store.wrote_at("ns/rs", "u1", Resource::Pods, "not-a-number");
        assert_eq!(store.ensure_ready("ns/rs", |_| 0), Ok(()));
    }
}
