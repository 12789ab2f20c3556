//! Applies a plan's releases and adoptions (upstream `claimPods` / `ControllerRefManager`):
//! strategic-merge patches carrying the pod's UID as a precondition, and a live re-check of the
//! ReplicaSet before the first adoption.

use futures::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::json;
use tokio::sync::OnceCell;

use super::{Engine, status::ReplicaSetControl};
use crate::{contract::Plan, informers::cached::CachedPod, pod_control::PodControl, snapshot::Projection};

/// What the claims did.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Snapshot indices of pods adopted.
    pub adopted: Vec<u32>,
    /// Snapshot indices of pods the plan adopted that turned out to be gone (404).
    pub vanished: Vec<u32>,
}

/// Releases, then adopts; returns the aggregated error message of every failure, like
/// upstream's `utilerrors.NewAggregate`.
pub async fn apply<P: PodControl, R: ReplicaSetControl>(
    engine: &Engine<P, R>,
    rs: &ReplicaSet,
    projection: &Projection,
    plan: &Plan,
) -> Result<Claimed, String> {
    let rs_uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let releases = plan.release.iter().map(|&i| release(engine, rs_uid, &projection.pods[i as usize]));
    let mut errors: Vec<String> = join_all(releases).await.into_iter().flatten().collect();

    // Upstream evaluates CanAdopt at most once per sync, lazily, on the first adoption.
    let can_adopt = OnceCell::new();
    let adoptions = plan.adopt.iter().map(|&i| {
        let can_adopt = &can_adopt;
        async move { (i, adopt(engine, rs, &projection.pods[i as usize], can_adopt).await) }
    });
    let mut claimed = Claimed::default();
    for (index, outcome) in join_all(adoptions).await {
        match outcome {
            Adoption::Adopted => claimed.adopted.push(index),
            Adoption::Vanished => claimed.vanished.push(index),
            Adoption::Failed(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(claimed),
        1 => Err(errors.remove(0)),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

/// Upstream `ReleasePod`: drop our owner reference; a pod that is gone (404) or whose UID
/// precondition fails (422: deleted and re-created, or no longer ours) needs no release.
async fn release<P: PodControl, R: ReplicaSetControl>(
    engine: &Engine<P, R>,
    rs_uid: &str,
    pod: &CachedPod,
) -> Option<String> {
    let meta = &pod.metadata;
    let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": rs_uid}], "uid": meta.uid}});
    let name = meta.name.as_deref().unwrap_or_default();
    tracing::info!(pod = name, "releasing pod: its labels no longer match the selector");
    match engine.pod_control.patch_pod(meta.namespace.as_deref().unwrap_or_default(), name, &patch).await {
        Ok(()) => None,
        Err(e) if e.is_not_found() || e.is_invalid() => None,
        Err(e) => Some(e.to_string()),
    }
}

enum Adoption {
    Adopted,
    Vanished,
    Failed(String),
}

/// Upstream `AdoptPod`: add ourselves as the controller, unless the live ReplicaSet is gone or
/// being deleted (the cache may be stale; see kubernetes#42639).
async fn adopt<P: PodControl, R: ReplicaSetControl>(
    engine: &Engine<P, R>,
    rs: &ReplicaSet,
    pod: &CachedPod,
    can_adopt: &OnceCell<Result<(), String>>,
) -> Adoption {
    let meta = &pod.metadata;
    let (namespace, name) = (meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default());
    if let Err(e) = can_adopt.get_or_init(|| recheck_deletion_timestamp(&engine.rs_control, rs)).await {
        return Adoption::Failed(format!(
            "can't adopt Pod {namespace}/{name} ({}): {e}",
            meta.uid.as_deref().unwrap_or_default()
        ));
    }
    let owner = crate::pod_control::controller_ref(rs);
    // Another controller reference with controller=true makes the API server reject this.
    let patch = json!({"metadata": {"ownerReferences": [owner], "uid": meta.uid}});
    tracing::info!(pod = name, "adopting orphan pod");
    match engine.pod_control.patch_pod(namespace, name, &patch).await {
        Ok(()) => Adoption::Adopted,
        Err(e) if e.is_not_found() => Adoption::Vanished,
        Err(e) => Adoption::Failed(e.to_string()),
    }
}

/// Upstream `RecheckDeletionTimestamp` over a live GET that must return the same UID.
async fn recheck_deletion_timestamp(api: &impl ReplicaSetControl, rs: &ReplicaSet) -> Result<(), String> {
    let (namespace, name) =
        (rs.metadata.namespace.as_deref().unwrap_or_default(), rs.metadata.name.as_deref().unwrap_or_default());
    let fresh = api
        .get(namespace, name)
        .await
        .map_err(|e| format!("can't recheck DeletionTimestamp: {}", crate::pod_control::api_message(&e)))?;
    if fresh.metadata.uid != rs.metadata.uid {
        return Err(format!(
            "can't recheck DeletionTimestamp: original ReplicaSet {namespace}/{name} is gone: got uid {}, wanted {}",
            fresh.metadata.uid.unwrap_or_default(),
            rs.metadata.uid.as_deref().unwrap_or_default()
        ));
    }
    if let Some(at) = fresh.metadata.deletion_timestamp {
        return Err(format!("{namespace}/{name} has just been deleted at {}", at.0));
    }
    Ok(())
}
