//! Applies a plan's releases and adoptions (upstream `claimPods` / `ControllerRefManager`):
//! strategic-merge patches carrying the pod's UID as a precondition, and a live re-check of the
//! ReplicaSet before the first adoption.

use std::{fmt, sync::Arc};

use futures::future::join_all;
use k8s_openapi::{api::apps::v1::ReplicaSet, apimachinery::pkg::apis::meta::v1::Time};
use serde_json::json;
use tokio::sync::OnceCell;

use super::Engine;
use crate::{
    apply::{ApiCalls, WriteError, pods::controller_ref},
    contract::Plan,
    informers::cached::CachedPod,
    snapshot::Projection,
};

/// What the claims did.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Snapshot indices of pods adopted.
    pub adopted: Vec<u32>,
    /// Snapshot indices of pods the plan adopted that turned out to be gone (404).
    pub vanished: Vec<u32>,
}

/// Every claim that failed, shown as upstream's `utilerrors.NewAggregate` shows them.
#[derive(Debug)]
pub struct ClaimError(pub Vec<ClaimFailure>);

impl std::error::Error for ClaimError {}

/// One failed claim.
#[derive(Debug, thiserror::Error)]
pub enum ClaimFailure {
    /// The release patch failed.
    #[error("{0}")]
    Release(WriteError),
    /// The adoption patch failed.
    #[error("{0}")]
    Adopt(WriteError),
    /// The live ReplicaSet may not adopt (gone, deleting, or unreadable); no patch was sent.
    #[error("can't adopt Pod {pod} ({uid}): {refusal}")]
    CannotAdopt {
        /// `namespace/name` of the orphan.
        pod: String,
        /// Its UID.
        uid: String,
        /// Why not (shared by every adoption of the sync: it is checked once).
        refusal: Arc<AdoptionRefused>,
    },
}

/// Why the live ReplicaSet may not adopt (upstream `RecheckDeletionTimestamp`).
#[derive(Debug, thiserror::Error)]
pub enum AdoptionRefused {
    /// The live GET failed.
    #[error("can't recheck DeletionTimestamp: {0}")]
    Recheck(WriteError),
    /// A ReplicaSet of that name exists, but it is another one.
    #[error("can't recheck DeletionTimestamp: original ReplicaSet {key} is gone: got uid {got}, wanted {wanted}")]
    Replaced {
        /// `namespace/name`.
        key: String,
        /// The live UID.
        got: String,
        /// The cached UID.
        wanted: String,
    },
    /// The live ReplicaSet is being deleted.
    #[error("{key} has just been deleted at {}", at.0)]
    Deleting {
        /// `namespace/name`.
        key: String,
        /// Its deletionTimestamp.
        at: Time,
    },
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => write!(f, "[{}]", many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        }
    }
}

impl ClaimError {
    /// The API errors behind the failures.
    pub fn write_errors(&self) -> impl Iterator<Item = &WriteError> {
        self.0.iter().filter_map(|failure| match failure {
            ClaimFailure::Release(e) | ClaimFailure::Adopt(e) => Some(e),
            ClaimFailure::CannotAdopt { refusal, .. } => match refusal.as_ref() {
                AdoptionRefused::Recheck(e) => Some(e),
                AdoptionRefused::Replaced { .. } | AdoptionRefused::Deleting { .. } => None,
            },
        })
    }
}

/// Releases, then adopts; fails with every failure at once.
pub async fn apply<A: ApiCalls>(
    engine: &Engine<A>,
    rs: &ReplicaSet,
    projection: &Projection,
    plan: &Plan,
) -> Result<Claimed, ClaimError> {
    let rs_uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let releases = plan.release.iter().map(|&i| release(engine, rs_uid, &projection.pods[i as usize]));
    let mut failures: Vec<ClaimFailure> = join_all(releases).await.into_iter().flatten().collect();

    // Upstream evaluates CanAdopt at most once per sync, lazily, on the first adoption.
    let can_adopt = OnceCell::new();
    let adoptions = plan.adopt.iter().map(|&i| {
        let can_adopt = &can_adopt;
        async move { (i, adopt(engine, rs, &projection.pods[i as usize], can_adopt).await) }
    });
    let mut claimed = Claimed::default();
    for (index, outcome) in join_all(adoptions).await {
        match outcome {
            Ok(true) => claimed.adopted.push(index),
            Ok(false) => claimed.vanished.push(index),
            Err(failure) => failures.push(failure),
        }
    }
    if failures.is_empty() { Ok(claimed) } else { Err(ClaimError(failures)) }
}

/// Upstream `ReleasePod`: drop our owner reference; a pod that is gone (404) or whose UID
/// precondition fails (422: deleted and re-created, or no longer ours) needs no release.
async fn release<A: ApiCalls>(engine: &Engine<A>, rs_uid: &str, pod: &CachedPod) -> Option<ClaimFailure> {
    let meta = &pod.metadata;
    let patch = json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": rs_uid}], "uid": meta.uid}});
    let name = meta.name.as_deref().unwrap_or_default();
    tracing::info!(pod = name, "releasing pod: its labels no longer match the selector");
    match engine.writes.patch_pod(meta.namespace.as_deref().unwrap_or_default(), name, &patch).await {
        Ok(()) => None,
        Err(e) if e.is_not_found() || e.is_invalid() => None,
        Err(e) => Some(ClaimFailure::Release(e)),
    }
}

/// Upstream `AdoptPod`: add ourselves as the controller, unless the live ReplicaSet is gone or
/// being deleted (the cache may be stale; see kubernetes#42639). `Ok(false)`: the pod is gone.
async fn adopt<A: ApiCalls>(
    engine: &Engine<A>,
    rs: &ReplicaSet,
    pod: &CachedPod,
    can_adopt: &OnceCell<Result<(), Arc<AdoptionRefused>>>,
) -> Result<bool, ClaimFailure> {
    let meta = &pod.metadata;
    let (namespace, name) = (meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default());
    if let Err(refusal) = can_adopt.get_or_init(|| recheck_deletion_timestamp(engine, rs)).await {
        return Err(ClaimFailure::CannotAdopt {
            pod: format!("{namespace}/{name}"),
            uid: meta.uid.clone().unwrap_or_default(),
            refusal: refusal.clone(),
        });
    }
    // Another controller reference with controller=true makes the API server reject this.
    let patch = json!({"metadata": {"ownerReferences": [controller_ref(rs)], "uid": meta.uid}});
    tracing::info!(pod = name, "adopting orphan pod");
    match engine.writes.patch_pod(namespace, name, &patch).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(ClaimFailure::Adopt(e)),
    }
}

/// Upstream `RecheckDeletionTimestamp` over a live GET that must return the same UID.
async fn recheck_deletion_timestamp<A: ApiCalls>(
    engine: &Engine<A>,
    rs: &ReplicaSet,
) -> Result<(), Arc<AdoptionRefused>> {
    let (namespace, name) =
        (rs.metadata.namespace.as_deref().unwrap_or_default(), rs.metadata.name.as_deref().unwrap_or_default());
    let key = format!("{namespace}/{name}");
    let fresh =
        engine.writes.get_replica_set(namespace, name).await.map_err(|e| Arc::new(AdoptionRefused::Recheck(e)))?;
    if fresh.metadata.uid != rs.metadata.uid {
        return Err(Arc::new(AdoptionRefused::Replaced {
            key,
            got: fresh.metadata.uid.unwrap_or_default(),
            wanted: rs.metadata.uid.clone().unwrap_or_default(),
        }));
    }
    match fresh.metadata.deletion_timestamp {
        Some(at) => Err(Arc::new(AdoptionRefused::Deleting { key, at })),
        None => Ok(()),
    }
}
