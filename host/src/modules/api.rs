//! The few requests the module manager makes, behind a narrow trait: [`KubeModules`] sends them
//! to the API server, and unit tests script and record them instead.

use std::{collections::BTreeMap, future::Future};

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, ObjectReference},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

use super::resource::ReconcileModule;
use crate::events::{EventRecorder, EventType};

/// The raw requests of the module manager, one method per request (a seam for tests).
pub trait ModuleApi: Send + Sync + 'static {
    /// A live `GET` of the `ReconcileModule` `name`.
    fn get_object(&self, name: &str) -> impl Future<Output = Result<ReconcileModule, kube::Error>> + Send;
    /// The `binaryData` of ConfigMap `name` (empty if it has none), or `None` if there is no
    /// such ConfigMap.
    fn config_map_binary_data(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, ByteString>>, kube::Error>> + Send;
    /// A merge `PATCH` of the status of the `ReconcileModule` `name`.
    fn patch_status(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    /// Queues an event about `regarding` (never blocks, never fails: events are best effort).
    fn event(&self, regarding: &ObjectReference, kind: EventType, reason: &str, message: String);
}

/// [`ModuleApi`] on the API server, in one namespace.
pub struct KubeModules {
    objects: Api<ReconcileModule>,
    config_maps: Api<ConfigMap>,
    events: EventRecorder,
}

impl KubeModules {
    /// The objects and ConfigMaps of `namespace`; events go through `events`.
    pub fn new(client: Client, namespace: &str, events: EventRecorder) -> Self {
        Self {
            objects: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            events,
        }
    }

    /// The objects, for the watch.
    pub fn objects(&self) -> &Api<ReconcileModule> {
        &self.objects
    }
}

impl ModuleApi for KubeModules {
    async fn get_object(&self, name: &str) -> Result<ReconcileModule, kube::Error> {
        self.objects.get(name).await
    }

    async fn config_map_binary_data(&self, name: &str) -> Result<Option<BTreeMap<String, ByteString>>, kube::Error> {
        Ok(self.config_maps.get_opt(name).await?.map(|cm| cm.binary_data.unwrap_or_default()))
    }

    async fn patch_status(&self, name: &str, patch: &serde_json::Value) -> Result<(), kube::Error> {
        self.objects.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await.map(drop)
    }

    fn event(&self, regarding: &ObjectReference, kind: EventType, reason: &str, message: String) {
        self.events.event(regarding, kind, reason, message);
    }
}
