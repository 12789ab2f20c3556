//! Standing in for the kubelet and the scheduler, which do not run: pod status patches (phase, Ready condition, restart counts) through the status subresource, and binding pods to nodes through pods/binding.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{
    Binding, ContainerState, ContainerStateRunning, ContainerStatus, Node, ObjectReference, Pod, PodCondition,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

/// Strategic-merge-patches `status` into the pod's status through the status subresource.
/// Conditions merge by `type` and container statuses by `name`; unset fields are left alone.
pub async fn patch_pod_status(client: &kube::Client, namespace: &str, pod: &str, status: &PodStatus) -> Result<Pod> {
    let patch = serde_json::json!({ "status": status });
    Api::<Pod>::namespaced(client.clone(), namespace)
        .patch_status(pod, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .with_context(|| format!("patching the status of pod {namespace}/{pod}"))
}

/// Marks a pod as a kubelet would once its containers run: phase `Running`; conditions
/// `Initialized`, `ContainersReady` and `Ready` (status `ready`, `lastTransitionTime` =
/// `since`); a running container status per spec container, ready = `ready`, keeping restart
/// counts. `since` is what `minReadySeconds` is measured from.
pub async fn set_pod_running(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    ready: bool,
    since: Time,
) -> Result<Pod> {
    let current = get_pod(client, namespace, pod).await?;
    let mut containers = container_statuses(&current);
    for c in &mut containers {
        c.ready = ready;
        c.started = Some(true);
        c.state = Some(ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(since.clone()) }),
            ..Default::default()
        });
    }
    let condition = |type_: &str, ok: bool| PodCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        last_transition_time: Some(since.clone()),
        ..Default::default()
    };
    let status = PodStatus {
        phase: Some("Running".to_string()),
        start_time: current.status.as_ref().and_then(|s| s.start_time.clone()).or_else(|| Some(since.clone())),
        conditions: Some(vec![
            condition("Initialized", true),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ]),
        container_statuses: Some(containers),
        ..Default::default()
    };
    patch_pod_status(client, namespace, pod, &status).await
}

/// Sets the pod's `status.phase` (e.g. `Failed` or `Succeeded`, which the ReplicaSet controller
/// treats as inactive pods).
pub async fn set_pod_phase(client: &kube::Client, namespace: &str, pod: &str, phase: &str) -> Result<Pod> {
    let status = PodStatus { phase: Some(phase.to_string()), ..Default::default() };
    patch_pod_status(client, namespace, pod, &status).await
}

/// Sets `restartCount` of every container of the pod to `restart_count` (creating container
/// statuses from the spec if the pod has none yet).
pub async fn set_container_restarts(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    restart_count: i32,
) -> Result<Pod> {
    let current = get_pod(client, namespace, pod).await?;
    let mut containers = container_statuses(&current);
    for c in &mut containers {
        c.restart_count = restart_count;
    }
    let status = PodStatus { container_statuses: Some(containers), ..Default::default() };
    patch_pod_status(client, namespace, pod, &status).await
}

/// Binds the pod to `node` through the `pods/binding` subresource, as the scheduler does (sets
/// `spec.nodeName`; the node need not exist).
pub async fn bind_pod(client: &kube::Client, namespace: &str, pod: &str, node: &str) -> Result<()> {
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    // The answer is a `Status` object; only success matters.
    let _: serde_json::Value = Api::<Pod>::namespaced(client.clone(), namespace)
        .create_subresource("binding", pod, &PostParams::default(), &binding)
        .await
        .with_context(|| format!("binding pod {namespace}/{pod} to node {node}"))?;
    Ok(())
}

/// Creates a Node object named `name` (no kubelet backs it).
pub async fn create_node(client: &kube::Client, name: &str) -> Result<Node> {
    let node =
        Node { metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() }, ..Default::default() };
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .with_context(|| format!("creating node {name}"))
}

async fn get_pod(client: &kube::Client, namespace: &str, pod: &str) -> Result<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .get(pod)
        .await
        .with_context(|| format!("reading pod {namespace}/{pod}"))
}

/// The pod's container statuses, one per spec container: the existing one if any, else a
/// skeleton (not ready, no restarts) with the spec's name and image.
fn container_statuses(pod: &Pod) -> Vec<ContainerStatus> {
    let existing = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    pod.spec
        .as_ref()
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            existing.iter().find(|s| s.name == c.name).cloned().unwrap_or_else(|| ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id: String::new(),
                ready: false,
                restart_count: 0,
                ..Default::default()
            })
        })
        .collect()
}

/// The UID of the pod's controller (the owner reference with `controller: true`), if any.
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true)).map(|r| r.uid.as_str())
}

/// Upstream's `IsPodActive`: not Succeeded, not Failed, not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase != Some("Succeeded") && phase != Some("Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// The Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
