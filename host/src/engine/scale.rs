//! Applies a plan's creations and deletions (upstream `manageReplicas`' I/O half): creations in
//! slow-start batches, deletions all at once, with the expectations raised before and lowered
//! for whatever was never attempted or failed.

use futures::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;

use super::Engine;
use crate::{
    apply::{ApiCalls, WriteError},
    contract::Plan,
    slow_start::{SLOW_START_INITIAL_BATCH_SIZE, slow_start_batch},
    snapshot::Projection,
};

/// What scaling did.
#[derive(Debug, Default)]
pub struct Scaled {
    /// Pods created (or counted as created: NamespaceTerminating).
    pub created: usize,
    /// Pods deleted (or already gone).
    pub deleted: usize,
    /// The first error, as upstream's `manageReplicas` returns it.
    pub error: Option<ScaleError>,
}

/// Creating or deleting pods failed (upstream `manageReplicas`' error).
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// A creation failed; the rest of the slow-start batches were skipped.
    #[error("{0}")]
    Create(WriteError),
    /// A deletion failed.
    #[error("unable to delete pods: {0}")]
    Delete(WriteError),
}

impl ScaleError {
    /// The API error behind it.
    pub fn write_error(&self) -> &WriteError {
        match self {
            Self::Create(e) | Self::Delete(e) => e,
        }
    }
}

/// Creates `plan.create` pods or deletes `plan.delete`.
pub async fn apply<A: ApiCalls>(
    engine: &Engine<A>,
    key: &str,
    rs: &ReplicaSet,
    projection: &Projection,
    plan: &Plan,
) -> Scaled {
    if plan.create > 0 {
        create(engine, key, rs, plan.create as usize).await
    } else if !plan.delete.is_empty() {
        delete(engine, key, rs, projection, &plan.delete).await
    } else {
        Scaled::default()
    }
}

async fn create<A: ApiCalls>(engine: &Engine<A>, key: &str, rs: &ReplicaSet, count: usize) -> Scaled {
    let expectations = &engine.shared.expectations;
    // Expect before creating: the informer may report the new pods before the calls return.
    // The expectation is raised by the whole count once; a creation observed while we are still
    // creating lowers it, which is harmless (it can go negative, and negative counts as met).
    expectations.expect_creations(key, count);
    tracing::info!(count, "creating pods");
    let (successes, error) = slow_start_batch(count, SLOW_START_INITIAL_BATCH_SIZE, || async {
        match engine.writes.create_pod(rs).await {
            Ok(_) => Ok(()),
            // A namespace being deleted refuses every creation; upstream treats it as success
            // so the controller does not spin on it.
            Err(e) if e.is_namespace_terminating() => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await;
    // Creations never attempted will never be observed: stop waiting for them now. The next
    // sync after the expectations are met (or expire) tries them again.
    let skipped = count - successes;
    if skipped > 0 {
        tracing::debug!(skipped, "slow-start failure: skipping creation of pods, decrementing expectations");
        for _ in 0..skipped {
            expectations.creation_observed(key);
        }
    }
    Scaled { created: successes, deleted: 0, error: error.map(ScaleError::Create) }
}

async fn delete<A: ApiCalls>(
    engine: &Engine<A>,
    key: &str,
    rs: &ReplicaSet,
    projection: &Projection,
    victims: &[u32],
) -> Scaled {
    let expectations = &engine.shared.expectations;
    let pods: Vec<_> = victims.iter().map(|&i| &projection.pods[i as usize]).collect();
    let pod_keys: Vec<String> = pods.iter().map(|p| p.key()).collect();
    // Expect these pods by key, so each is counted off exactly once: by the informer's update
    // or delete event, or below if its deletion fails.
    expectations.expect_deletions(key, pod_keys.iter().cloned());
    tracing::info!(count = pods.len(), "deleting pods");
    let deletions = pods.iter().zip(&pod_keys).map(|(pod, pod_key)| async move {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match engine.writes.delete_pod(rs, name).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // No event will ever report this deletion: count it off here.
                expectations.deletion_observed(key, pod_key);
                if e.is_not_found() { Ok(()) } else { Err(ScaleError::Delete(e)) }
            }
        }
    });
    let results = join_all(deletions).await;
    let deleted = results.iter().filter(|r| r.is_ok()).count();
    Scaled { created: 0, deleted, error: results.into_iter().find_map(Result::err) }
}
