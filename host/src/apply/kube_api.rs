//! [`ApiCalls`] against the API server, with Events queued on the event recorder.

use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{ObjectReference, Pod},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};

use super::ApiCalls;
use crate::events::{EventRecorder, EventType};

/// Sends every request through `client`; Events go to `events`.
#[derive(Clone)]
pub struct KubeApi {
    client: Client,
    events: EventRecorder,
}

impl KubeApi {
    /// Talks through `client`, reports to `events`.
    pub fn new(client: Client, events: EventRecorder) -> Self {
        Self { client, events }
    }

    fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn replica_sets(&self, namespace: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

impl ApiCalls for KubeApi {
    async fn create_pod(&self, pod: &Pod) -> Result<Pod, kube::Error> {
        self.pods(pod.metadata.namespace.as_deref().unwrap_or_default()).create(&PostParams::default(), pod).await
    }

    async fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        self.pods(namespace).delete(name, &DeleteParams::default()).await.map(|_| ())
    }

    async fn patch_pod(&self, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<Pod, kube::Error> {
        self.pods(namespace).patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await
    }

    async fn get_replica_set(&self, namespace: &str, name: &str) -> Result<ReplicaSet, kube::Error> {
        self.replica_sets(namespace).get(name).await
    }

    async fn pods_version(&self, namespace: &str, selector: &LabelSelector) -> Result<u64, kube::Error> {
        // A selector kube cannot express lists the namespace: more pods, the same answer.
        let params = match kube::core::Selector::try_from(selector.clone()) {
            Ok(selector) => ListParams::default().labels_from(&selector),
            Err(_) => ListParams::default(),
        };
        let list = self.pods(namespace).list_metadata(&params).await?;
        let versions = list.items.iter().filter_map(|p| p.metadata.resource_version.as_deref()?.parse::<u64>().ok());
        Ok(versions.max().unwrap_or(0))
    }

    async fn replace_status(&self, rs: &ReplicaSet) -> Result<ReplicaSet, kube::Error> {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        self.replica_sets(namespace).replace_status(name, &PostParams::default(), rs).await
    }

    fn event(&self, regarding: &ObjectReference, event_type: EventType, reason: &'static str, message: String) {
        self.events.event(regarding, event_type, reason, message);
    }
}
