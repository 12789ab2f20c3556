//! Writes a ReplicaSet's status as upstream does: skipped when nothing changed, otherwise at
//! most two PUTs to the status subresource and one GET (`updateReplicaSetStatus`).

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus as ApiStatus};

use super::ApiCalls;
use crate::contract::ReplicaSetStatus;

/// Upstream's `statusUpdateRetries`: one GET-and-retry after a failed PUT.
const STATUS_UPDATE_RETRIES: usize = 1;

/// Whether writing `new` would change nothing: the counts and conditions equal the cached status
/// and the cached status already observed the current generation.
pub fn status_unchanged(rs: &ReplicaSet, new: &ReplicaSetStatus) -> bool {
    let cached = ReplicaSetStatus::from(rs.status.as_ref());
    cached.replicas == new.replicas
        && cached.fully_labeled_replicas == new.fully_labeled_replicas
        && cached.ready_replicas == new.ready_replicas
        && cached.available_replicas == new.available_replicas
        && cached.terminating_replicas == new.terminating_replicas
        && rs.metadata.generation.unwrap_or(0) == cached.observed_generation
        && cached.conditions == new.conditions
}

/// Upstream `updateReplicaSetStatus`: returns the ReplicaSet as written (or the cached one when
/// nothing changed). The status carries the cached generation as `observedGeneration`, the
/// generation this sync acted on.
pub(super) async fn update_replica_set_status(
    api: &impl ApiCalls,
    rs: &ReplicaSet,
    new: &ReplicaSetStatus,
) -> Result<ReplicaSet, kube::Error> {
    if status_unchanged(rs, new) {
        return Ok(rs.clone());
    }
    let mut status = ApiStatus::from(new);
    status.observed_generation = rs.metadata.generation;
    let mut target = rs.clone();
    let mut attempt = 0;
    loop {
        target.status = Some(status.clone());
        match api.replace_status(&target).await {
            Ok(updated) => return Ok(updated),
            Err(e) if attempt >= STATUS_UPDATE_RETRIES => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "status update failed, re-reading the ReplicaSet once");
                // If the GET fails we can't trust the status anymore; that error is the more
                // interesting one (upstream's comment).
                let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
                target = api.get_replica_set(ns, rs.metadata.name.as_deref().unwrap_or_default()).await?;
            }
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{apply::recording::RecordingApi, testkit};

    fn rs(generation: i64, observed: i64, replicas: i32) -> ReplicaSet {
        testkit::rs("foobar")
            .uid("123")
            .generation(generation)
            .replicas(10)
            .status(serde_json::json!({"replicas": replicas, "observedGeneration": observed}))
            .build()
    }

    fn status(replicas: i32, observed: i64) -> ReplicaSetStatus {
        ReplicaSetStatus {
            replicas,
            fully_labeled_replicas: 0,
            ready_replicas: 0,
            available_replicas: 0,
            terminating_replicas: None,
            observed_generation: observed,
            conditions: vec![],
        }
    }

    #[tokio::test]
    async fn an_unchanged_status_of_an_observed_generation_is_not_written() {
        let api = RecordingApi::default();
        update_replica_set_status(&api, &rs(2, 2, 3), &status(3, 2)).await.unwrap();
        assert!(api.puts.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_new_generation_is_written_even_with_equal_counts() {
        let api = RecordingApi::default();
        let written = update_replica_set_status(&api, &rs(3, 2, 3), &status(3, 2)).await.unwrap();
        assert_eq!(written.status.unwrap().observed_generation, Some(3));
    }

    #[tokio::test]
    async fn every_failed_put_gives_exactly_one_get_and_two_puts() {
        // TestControllerUpdateStatusWithFailure: every PUT fails → 1 GET + 2 PUTs with replicas=10.
        let api = RecordingApi { fail_puts: Mutex::new(usize::MAX), ..Default::default() };
        *api.live.lock().unwrap() = Some(rs(1, 1, 0));
        let err = update_replica_set_status(&api, &rs(1, 1, 0), &status(10, 1)).await.unwrap_err();
        assert!(err.to_string().contains("conflict"), "{err}");
        let puts = api.puts.lock().unwrap();
        assert_eq!(puts.len(), 2);
        assert!(puts.iter().all(|p| p.status.as_ref().unwrap().replicas == 10));
        assert_eq!(*api.gets.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_conflict_is_retried_on_the_fresh_object() {
        let api = RecordingApi { fail_puts: Mutex::new(1), ..Default::default() };
        let mut fresh = rs(1, 1, 0);
        fresh.metadata.resource_version = Some("99".into());
        *api.live.lock().unwrap() = Some(fresh);
        update_replica_set_status(&api, &rs(1, 1, 0), &status(4, 1)).await.unwrap();
        let puts = api.puts.lock().unwrap();
        assert_eq!(puts[1].metadata.resource_version.as_deref(), Some("99"));
    }
}
