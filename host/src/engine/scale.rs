//! Applies a plan's creations and deletions (upstream `manageReplicas`' I/O half): creations in
//! slow-start batches, deletions all at once, with the expectations raised before and lowered
//! for whatever was never attempted or failed.

use futures::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;

use super::{Engine, status::ReplicaSetControl};
use crate::{
    contract::Plan,
    pod_control::{PodControl, PodError},
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
    pub error: Option<String>,
}

/// Creates `plan.create` pods or deletes `plan.delete`.
pub async fn apply<P: PodControl, R: ReplicaSetControl>(
    engine: &Engine<P, R>,
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

async fn create<P: PodControl, R: ReplicaSetControl>(
    engine: &Engine<P, R>,
    key: &str,
    rs: &ReplicaSet,
    count: usize,
) -> Scaled {
    let expectations = &engine.shared.expectations;
    // Expect before creating: the informer may report the new pods before the calls return.
    // The expectation is raised by the whole count once; a creation observed while we are still
    // creating lowers it, which is harmless (it can go negative, and negative counts as met).
    expectations.expect_creations(key, count);
    tracing::info!(count, "creating pods");
    let (successes, error) = slow_start_batch(count, SLOW_START_INITIAL_BATCH_SIZE, || async {
        match engine.pod_control.create_pod(rs).await {
            Ok(_) => Ok(()),
            // A namespace being deleted refuses every creation; upstream treats it as success
            // so the controller does not spin on it.
            Err(e) if e.is_namespace_terminating() => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await;
    // Any skipped pods that we never attempted to start shouldn't be expected. The skipped pods
    // will be retried later, when the expectations expire or are met.
    let skipped = count - successes;
    if skipped > 0 {
        tracing::debug!(skipped, "slow-start failure: skipping creation of pods, decrementing expectations");
        for _ in 0..skipped {
            expectations.creation_observed(key);
        }
    }
    Scaled { created: successes, deleted: 0, error: error.map(|e: PodError| e.to_string()) }
}

async fn delete<P: PodControl, R: ReplicaSetControl>(
    engine: &Engine<P, R>,
    key: &str,
    rs: &ReplicaSet,
    projection: &Projection,
    victims: &[u32],
) -> Scaled {
    let expectations = &engine.shared.expectations;
    let pods: Vec<_> = victims.iter().map(|&i| &projection.pods[i as usize]).collect();
    let pod_keys: Vec<String> = pods.iter().map(|p| p.key()).collect();
    // Snapshot the UIDs (ns/name) of the pods we're expecting to see deleted, so we know to
    // record their expectations exactly once either when we see them as an update/delete, or if
    // the deletion fails.
    expectations.expect_deletions(key, pod_keys.iter().cloned());
    tracing::info!(count = pods.len(), "deleting pods");
    let deletions = pods.iter().zip(&pod_keys).map(|(pod, pod_key)| async move {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        match engine.pod_control.delete_pod(rs, name).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Decrement the expected number of deletes because the informer won't observe
                // this deletion.
                expectations.deletion_observed(key, pod_key);
                if e.is_not_found() { Ok(()) } else { Err(format!("unable to delete pods: {e}")) }
            }
        }
    });
    let results = join_all(deletions).await;
    let deleted = results.iter().filter(|r| r.is_ok()).count();
    Scaled { created: 0, deleted, error: results.into_iter().find_map(Result::err) }
}
