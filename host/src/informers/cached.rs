//! What the informers cache: pods trimmed to the fields the controller reads, and ReplicaSets
//! without managedFields.
//!
//! A Pod's JSON is mostly managedFields and container specs, which the controller never reads.
//! [`CachedPod`] decodes only what it needs and skips the rest without allocating, which cuts
//! both the decoding CPU and the cache's memory by an order of magnitude.

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::{
    NamespaceResourceScope,
    api::apps::v1::ReplicaSet,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
};
use serde::Deserialize;

/// The annotation upstream reads to rank pods for deletion.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// `status.phase` of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// `Pending`.
    Pending,
    /// `Running`.
    Running,
    /// `Succeeded`.
    Succeeded,
    /// `Failed`.
    Failed,
    /// `Unknown`.
    Unknown,
    /// Empty or unrecognised.
    #[default]
    Other,
}

/// A Pod as the controller sees it.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "wire::Pod")]
pub struct CachedPod {
    /// Name, namespace, uid, resourceVersion, labels, ownerReferences, creation and deletion
    /// timestamps; annotations keep only the pod-deletion-cost.
    pub metadata: ObjectMeta,
    /// `spec.nodeName`, `None` when unscheduled.
    pub node_name: Option<String>,
    /// `status.phase`.
    pub phase: Phase,
    /// The Ready condition is True.
    pub ready: bool,
    /// The Ready condition's lastTransitionTime (Unix nanoseconds).
    pub ready_transition: Option<i64>,
    /// The highest restartCount among regular containers.
    pub max_container_restarts: u32,
    /// The highest restartCount among restartable init containers (sidecars).
    pub max_sidecar_restarts: u32,
}

impl CachedPod {
    /// Not Succeeded, not Failed, and not being deleted (upstream `IsPodActive`).
    pub fn is_active(&self) -> bool {
        !matches!(self.phase, Phase::Succeeded | Phase::Failed) && self.metadata.deletion_timestamp.is_none()
    }

    /// The owner reference with `controller: true`, if any.
    pub fn controller_ref(&self) -> Option<&OwnerReference> {
        controller_of(&self.metadata)
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

/// The owner reference with `controller: true` (upstream `metav1.GetControllerOf`).
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

impl kube::Resource for CachedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind((): &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group((): &()) -> Cow<'_, str> {
        "".into()
    }
    fn version((): &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural((): &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Drops what the controller never reads from a cached ReplicaSet.
pub fn trim_replica_set(rs: &mut ReplicaSet) {
    rs.metadata.managed_fields = None;
    if let Some(annotations) = rs.metadata.annotations.as_mut() {
        // kubectl's last-applied copy can be as large as the object itself.
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// The wire shape: only the fields we keep; serde skips everything else.
mod wire {
    use super::{BTreeMap, CachedPod, Deserialize, ObjectMeta, OwnerReference, POD_DELETION_COST, Phase, Time};

    #[derive(Deserialize)]
    pub struct Pod {
        #[serde(default)]
        metadata: Meta,
        #[serde(default)]
        spec: Spec,
        #[serde(default)]
        status: Status,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        annotations: Option<BTreeMap<String, String>>,
        owner_references: Option<Vec<OwnerReference>>,
        creation_timestamp: Option<Time>,
        deletion_timestamp: Option<Time>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Spec {
        node_name: Option<String>,
        #[serde(default)]
        init_containers: Vec<InitContainer>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct InitContainer {
        name: String,
        restart_policy: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Status {
        phase: Option<String>,
        #[serde(default)]
        conditions: Vec<Condition>,
        #[serde(default)]
        container_statuses: Vec<ContainerStatus>,
        #[serde(default)]
        init_container_statuses: Vec<ContainerStatus>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Condition {
        #[serde(rename = "type")]
        type_: String,
        status: String,
        last_transition_time: Option<Time>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ContainerStatus {
        #[serde(default)]
        name: String,
        #[serde(default)]
        restart_count: i32,
    }

    impl From<Pod> for CachedPod {
        fn from(p: Pod) -> Self {
            let m = p.metadata;
            let cost = m.annotations.and_then(|mut a| a.remove(POD_DELETION_COST));
            let ready = p.status.conditions.iter().find(|c| c.type_ == "Ready");
            let sidecars: Vec<&str> = p
                .spec
                .init_containers
                .iter()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"))
                .map(|c| c.name.as_str())
                .collect();
            let restarts = |statuses: &[ContainerStatus], only: Option<&[&str]>| {
                statuses
                    .iter()
                    .filter(|s| only.is_none_or(|names| names.contains(&s.name.as_str())))
                    .map(|s| s.restart_count.max(0) as u32)
                    .max()
                    .unwrap_or(0)
            };
            CachedPod {
                node_name: p.spec.node_name.filter(|n| !n.is_empty()),
                phase: match p.status.phase.as_deref() {
                    Some("Pending") => Phase::Pending,
                    Some("Running") => Phase::Running,
                    Some("Succeeded") => Phase::Succeeded,
                    Some("Failed") => Phase::Failed,
                    Some("Unknown") => Phase::Unknown,
                    _ => Phase::Other,
                },
                ready: ready.is_some_and(|c| c.status == "True"),
                ready_transition: ready.and_then(|c| c.last_transition_time.as_ref()).map(crate::time::nanos),
                max_container_restarts: restarts(&p.status.container_statuses, None),
                max_sidecar_restarts: restarts(&p.status.init_container_statuses, Some(&sidecars)),
                metadata: ObjectMeta {
                    name: m.name,
                    namespace: m.namespace,
                    uid: m.uid,
                    resource_version: m.resource_version,
                    labels: m.labels,
                    annotations: cost.map(|c| BTreeMap::from([(POD_DELETION_COST.to_string(), c)])),
                    owner_references: m.owner_references,
                    creation_timestamp: m.creation_timestamp,
                    deletion_timestamp: m.deletion_timestamp,
                    ..ObjectMeta::default()
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {
        "name": "web-1", "namespace": "default", "uid": "u1", "resourceVersion": "42",
        "labels": {"app": "web"},
        "annotations": {"controller.kubernetes.io/pod-deletion-cost": "7", "big": "x"},
        "ownerReferences": [
          {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs1", "controller": true}
        ],
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:metadata": {}}}]
      },
      "spec": {
        "nodeName": "node-1",
        "containers": [{"name": "app", "image": "nginx"}],
        "initContainers": [
          {"name": "setup", "image": "busybox"},
          {"name": "proxy", "image": "envoy", "restartPolicy": "Always"}
        ]
      },
      "status": {
        "phase": "Running",
        "conditions": [
          {"type": "PodScheduled", "status": "True"},
          {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"}
        ],
        "containerStatuses": [{"name": "app", "restartCount": 3}],
        "initContainerStatuses": [{"name": "setup", "restartCount": 9}, {"name": "proxy", "restartCount": 2}]
      }
    }"#;

    #[test]
    fn a_pod_keeps_what_the_controller_reads_and_nothing_else() {
        let pod: CachedPod = serde_json::from_str(POD).unwrap();
        assert_eq!(pod.key(), "default/web-1");
        assert_eq!(pod.node_name.as_deref(), Some("node-1"));
        assert_eq!(pod.phase, Phase::Running);
        assert!(pod.ready);
        assert_eq!(pod.ready_transition, Some(1_767_225_610_000_000_000));
        assert_eq!(pod.max_container_restarts, 3);
        // Only the restartable init container counts as a sidecar.
        assert_eq!(pod.max_sidecar_restarts, 2);
        assert_eq!(pod.controller_ref().map(|r| r.uid.as_str()), Some("rs1"));
        assert_eq!(pod.metadata.annotations, Some(BTreeMap::from([(POD_DELETION_COST.to_string(), "7".to_string())])));
        assert!(pod.metadata.managed_fields.is_none());
        assert!(pod.is_active());
    }

    #[test]
    fn a_minimal_pod_decodes_as_pending_unscheduled_and_not_ready() {
        let pod: CachedPod = serde_json::from_str(r#"{"metadata": {"name": "p", "namespace": "ns"}}"#).unwrap();
        assert_eq!(pod.phase, Phase::Other);
        assert!(!pod.ready && pod.node_name.is_none() && pod.controller_ref().is_none());
    }

    #[test]
    fn terminating_and_finished_pods_are_not_active() {
        let mut pod: CachedPod = serde_json::from_str(POD).unwrap();
        pod.phase = Phase::Succeeded;
        assert!(!pod.is_active());
        pod.phase = Phase::Running;
        pod.metadata.deletion_timestamp = pod.metadata.creation_timestamp.clone();
        assert!(!pod.is_active());
    }
}
