//! Every write a sync makes — pod creates, deletes and patches, the status update, upstream's
//! events — behind one seam, with the consistency gate's record of our own writes kept here, once.
//!
//! [`ApiCalls`] is the narrow trait of raw requests: [`KubeApi`] sends them to the API server,
//! `RecordingApi` (unit tests) records them and fails on request. [`Writes`] is what the engine
//! calls: it builds pods from the template, emits the events upstream's `RealPodControl` emits,
//! writes the status as `updateReplicaSetStatus` does, and notes the resourceVersion every
//! successful write returned, so the next sync of that ReplicaSet waits until the informers have
//! caught up with it (upstream `pkg/controller/util/consistency`).

mod error;
mod kube_api;
pub mod pods;
#[cfg(test)]
pub(crate) mod recording;
mod status;

use std::future::Future;

use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{ObjectReference, Pod},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub use error::{WriteError, api_message};
pub use kube_api::KubeApi;
pub use status::status_unchanged;

use crate::{
    consistency::{ConsistencyStore, Resource},
    contract::ReplicaSetStatus,
    events::EventType,
    informers::{cached::controller_of, key_of},
};

/// Event reasons, as upstream names them (`controller_utils.go`): a pod was created.
pub const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
/// A pod creation failed.
pub const FAILED_CREATE: &str = "FailedCreate";
/// A pod was deleted.
pub const SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
/// A pod deletion failed.
pub const FAILED_DELETE: &str = "FailedDelete";

/// The raw requests behind [`Writes`], one method per request (a seam for tests).
pub trait ApiCalls: Send + Sync + 'static {
    /// `POST` a pod into its `metadata.namespace`; returns the created pod.
    fn create_pod(&self, pod: &Pod) -> impl Future<Output = Result<Pod, kube::Error>> + Send;
    /// `DELETE` pod `namespace/name` with default options.
    fn delete_pod(&self, namespace: &str, name: &str) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// A strategic-merge `PATCH` of pod `namespace/name`; returns the patched pod.
    fn patch_pod(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> impl Future<Output = Result<Pod, kube::Error>> + Send;
    /// A live `GET` of a ReplicaSet (never the cache).
    fn get_replica_set(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<ReplicaSet, kube::Error>> + Send;
    /// The newest resourceVersion among the pods `selector` matches in `namespace` (a live,
    /// consistent `LIST` of their metadata; 0 when none): a cache that has reached it has seen
    /// every one of them as it is now.
    fn pods_version(
        &self,
        namespace: &str,
        selector: &LabelSelector,
    ) -> impl Future<Output = Result<u64, kube::Error>> + Send;
    /// `PUT` to the status subresource.
    fn replace_status(&self, rs: &ReplicaSet) -> impl Future<Output = Result<ReplicaSet, kube::Error>> + Send;
    /// Queues an Event about `regarding`; never blocks and never fails the caller.
    fn event(&self, regarding: &ObjectReference, event_type: EventType, reason: &'static str, message: String);
}

/// The writes of a sync, with upstream's events and the consistency record.
pub struct Writes<A> {
    api: A,
    consistency: ConsistencyStore,
}

impl<A: ApiCalls> Writes<A> {
    /// Writes through `api`, recording every write's resourceVersion in `consistency`.
    pub fn new(api: A, consistency: ConsistencyStore) -> Self {
        Self { api, consistency }
    }

    /// The raw calls (tests read what a recording API saw).
    pub fn api(&self) -> &A {
        &self.api
    }

    /// Creates one pod from `rs`'s template (upstream `CreatePods`); returns its generated name.
    pub async fn create_pod(&self, rs: &ReplicaSet) -> Result<String, WriteError> {
        let pod = pods::pod_from_template(rs)?;
        match self.api.create_pod(&pod).await {
            Ok(created) => {
                self.record(rs, Resource::Pods, created.metadata.resource_version.as_deref());
                let name = created.metadata.name.unwrap_or_default();
                self.event(rs, EventType::Normal, SUCCESSFUL_CREATE, format!("Created pod: {name}"));
                Ok(name)
            }
            Err(e) => {
                let e = WriteError::Api(e);
                // A namespace being deleted refuses every pod; upstream sends no event for that.
                if !e.is_namespace_terminating() {
                    self.event(rs, EventType::Warning, FAILED_CREATE, format!("Error creating: {e}"));
                }
                Err(e)
            }
        }
    }

    /// Deletes pod `name` of `rs`'s namespace (upstream `DeletePod`).
    pub async fn delete_pod(&self, rs: &ReplicaSet, name: &str) -> Result<(), WriteError> {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        match self.api.delete_pod(namespace, name).await {
            Ok(()) => {
                self.event(rs, EventType::Normal, SUCCESSFUL_DELETE, format!("Deleted pod: {name}"));
                Ok(())
            }
            Err(e) => {
                let e = WriteError::Api(e);
                // A pod that is already gone is no failure worth an event.
                if !e.is_not_found() {
                    self.event(rs, EventType::Warning, FAILED_DELETE, format!("Error deleting: {e}"));
                }
                Err(e)
            }
        }
    }

    /// Patches pod `namespace/name` (adopt or release, upstream `PatchPod`); the write is recorded
    /// for the controller the patched pod names, as upstream's `OnWrite` does.
    pub async fn patch_pod(&self, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<(), WriteError> {
        let patched = self.api.patch_pod(namespace, name, patch).await?;
        if let (Some(owner), Some(rv)) =
            (controller_of(&patched.metadata), patched.metadata.resource_version.as_deref())
        {
            self.consistency.wrote_at(&format!("{namespace}/{}", owner.name), &owner.uid, Resource::Pods, rv);
        }
        Ok(())
    }

    /// Reads the live ReplicaSet (before adopting, upstream `RecheckDeletionTimestamp`).
    pub async fn get_replica_set(&self, namespace: &str, name: &str) -> Result<ReplicaSet, WriteError> {
        Ok(self.api.get_replica_set(namespace, name).await?)
    }

    /// The newest resourceVersion among the pods `selector` matches in `namespace`.
    pub async fn pods_version(&self, namespace: &str, selector: &LabelSelector) -> Result<u64, WriteError> {
        Ok(self.api.pods_version(namespace, selector).await?)
    }

    /// Writes `new` as `rs`'s status (upstream `updateReplicaSetStatus`): skipped when unchanged,
    /// otherwise at most two PUTs and one GET. Returns the ReplicaSet as written.
    pub async fn update_status(&self, rs: &ReplicaSet, new: &ReplicaSetStatus) -> Result<ReplicaSet, WriteError> {
        let updated = status::update_replica_set_status(&self.api, rs, new).await?;
        // Unchanged, this is the cached version, which the informer has already seen.
        self.record(rs, Resource::ReplicaSets, updated.metadata.resource_version.as_deref());
        Ok(updated)
    }

    /// A Warning Event about `rs` that is not about a pod write.
    pub fn warn(&self, rs: &ReplicaSet, reason: &'static str, message: String) {
        self.event(rs, EventType::Warning, reason, message);
    }

    fn record(&self, rs: &ReplicaSet, resource: Resource, resource_version: Option<&str>) {
        if let Some(rv) = resource_version {
            self.consistency.wrote_at(&key_of(rs), rs.metadata.uid.as_deref().unwrap_or_default(), resource, rv);
        }
    }

    fn event(&self, rs: &ReplicaSet, event_type: EventType, reason: &'static str, message: String) {
        self.api.event(&pods::reference(rs), event_type, reason, message);
    }
}
