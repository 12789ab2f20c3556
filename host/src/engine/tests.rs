//! Sync-level tests on recorded API calls (upstream `replica_set_test.go` shapes): the real
//! default policy in the sandbox, the indexes filled by hand, pod and ReplicaSet writes recorded.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;

use super::{Engine, SyncError};
use crate::{
    apply::recording::RecordingApi,
    embedded::DEFAULT_POLICY,
    informers::cached::CachedPod,
    policy::ActivePolicy,
    sandbox::{Sandbox, SandboxLimits},
    testkit,
};

type TestEngine = Arc<Engine<RecordingApi>>;

const KEY: &str = "default/foobar";

fn engine(api: RecordingApi) -> TestEngine {
    engine_with_burst(api, super::BURST_REPLICAS)
}

fn engine_with_burst(api: RecordingApi, burst: u32) -> TestEngine {
    let sandbox = Sandbox::new(SandboxLimits::default()).unwrap();
    let module = Arc::new(sandbox.compile(DEFAULT_POLICY).unwrap());
    Engine::detached(Arc::new(ActivePolicy::new(sandbox, module)), api, burst)
}

/// Upstream's `newReplicaSet(replicas, {foo: bar})`: name foobar, namespace default, uid 123.
fn replica_set(replicas: i32) -> ReplicaSet {
    testkit::rs("foobar")
        .uid("123")
        .replicas(replicas)
        .labels(&testkit::labels(&[("foo", "bar")]))
        .resource_version("1")
        .status(serde_json::json!({"replicas": 0}))
        .build()
}

fn add_replica_set(engine: &TestEngine, rs: ReplicaSet) {
    let old = engine.shared.replica_sets.get("default", "foobar");
    engine.shared.replica_sets.upsert(old.as_deref(), &Arc::new(rs));
}

/// A running pod of foobar with controller UID `owner` (or an orphan with `None`).
fn pod(name: &str, owner: Option<&str>, labels: &[(&str, &str)]) -> Arc<CachedPod> {
    let pod = testkit::pod(name).labels(&testkit::labels(labels)).created("2026-01-01T00:00:00Z").phase("Running");
    match owner {
        Some(uid) => pod.controller("ReplicaSet", "foobar", uid),
        None => pod,
    }
    .cached()
}

fn add_pods(engine: &TestEngine, n: usize) {
    for i in 0..n {
        engine.shared.pods.upsert(None, &pod(&format!("pod-{i}"), Some("123"), &[("foo", "bar")]));
    }
}

fn status_puts(engine: &TestEngine) -> usize {
    engine.writes.api().puts.lock().unwrap().len()
}

#[tokio::test]
async fn after_a_watch_interruption_a_newer_live_replica_set_holds_the_sync_until_the_cache_has_it() {
    // Our own rule (no upstream test): the cache says 3 replicas, the API server already says 1.
    let api = RecordingApi::default();
    let mut live = replica_set(1);
    live.metadata.resource_version = Some("5".into());
    *api.live.lock().unwrap() = Some(live);
    let engine = engine(api);
    add_replica_set(&engine, replica_set(3));
    add_pods(&engine, 1);
    engine.rs_informer.interrupt_at(1);
    let error = engine.sync_replica_set(KEY).await.unwrap_err();
    assert!(matches!(error, SyncError::StaleCache(_)), "{error}");
    assert_eq!(*engine.writes.api().create_calls.lock().unwrap(), 0, "no pods for the old spec");
    assert_eq!(*engine.writes.api().gets.lock().unwrap(), 1);
}

#[tokio::test]
async fn after_a_watch_interruption_a_cache_as_new_as_the_live_replica_set_syncs() {
    let api = RecordingApi::default();
    *api.live.lock().unwrap() = Some(replica_set(3));
    let engine = engine(api);
    add_replica_set(&engine, replica_set(3));
    add_pods(&engine, 1);
    engine.rs_informer.interrupt_at(1);
    engine.sync_replica_set(KEY).await.unwrap();
    assert_eq!(*engine.writes.api().create_calls.lock().unwrap(), 2);
}

#[tokio::test]
async fn after_a_pod_watch_interruption_the_sync_waits_for_the_pods_the_api_server_already_has() {
    // A create whose answer was lost in a partition may have made a pod the cache has not seen.
    let api = RecordingApi::default();
    *api.pods_version.lock().unwrap() = 7;
    let engine = engine(api);
    add_replica_set(&engine, replica_set(2));
    add_pods(&engine, 1);
    engine.pod_informer.interrupt_at(6);
    let error = engine.sync_replica_set(KEY).await.unwrap_err();
    assert!(matches!(error, SyncError::StaleCache(_)), "{error}");
    assert_eq!(*engine.writes.api().create_calls.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_matching_count_does_nothing() {
    // TestSyncReplicaSetDoesNothing.
    let engine = engine(RecordingApi::default());
    add_replica_set(&engine, replica_set(2));
    add_pods(&engine, 2);
    engine.sync_replica_set(KEY).await.unwrap();
    assert_eq!(*engine.writes.api().create_calls.lock().unwrap(), 0);
    assert!(engine.writes.api().deleted.lock().unwrap().is_empty());
    assert!(engine.writes.api().patches.lock().unwrap().is_empty());
}

#[tokio::test]
async fn creations_wait_for_their_expectations_and_skipped_ones_are_not_expected() {
    // TestSyncReplicaSetDormancy.
    let engine = engine(RecordingApi::default());
    add_replica_set(&engine, replica_set(2));
    add_pods(&engine, 1);
    engine.sync_replica_set(KEY).await.unwrap();
    assert_eq!(*engine.writes.api().created.lock().unwrap(), 1);
    assert_eq!(status_puts(&engine), 1);

    // The creation is not observed yet: a re-sync creates nothing but still writes status.
    let mut rs = replica_set(2);
    rs.status.as_mut().unwrap().replicas = 5;
    add_replica_set(&engine, rs);
    engine.sync_replica_set(KEY).await.unwrap();
    assert_eq!(*engine.writes.api().created.lock().unwrap(), 1);
    assert_eq!(status_puts(&engine), 2);

    // Observed, but the next creation fails: it is attempted once and un-expected...
    engine.shared.expectations.creation_observed(KEY);
    *engine.writes.api().fail.lock().unwrap() = true;
    let err = engine.sync_replica_set(KEY).await.unwrap_err();
    assert!(matches!(err, SyncError::Scale(ref e) if e.to_string().contains("exceeded quota")), "{err}");
    assert_eq!(*engine.writes.api().create_calls.lock().unwrap(), 2);
    assert!(engine.shared.expectations.satisfied_expectations(KEY));

    // ...so the next sync tries again.
    *engine.writes.api().fail.lock().unwrap() = false;
    engine.sync_replica_set(KEY).await.unwrap();
    assert_eq!(*engine.writes.api().created.lock().unwrap(), 2);
}

#[tokio::test]
async fn a_quota_limit_stops_slow_start_after_the_first_failing_batch() {
    // TestSyncReplicaSetCreateFailures: 100 wanted, the fake limit is 10 → 10 created, ≤ 15 calls.
    let engine = engine(RecordingApi { create_limit: Some(10), ..Default::default() });
    add_replica_set(&engine, replica_set(100));
    let err = engine.sync_replica_set(KEY).await.unwrap_err();
    assert!(matches!(err, SyncError::Scale(_)), "{err}");
    assert_eq!(*engine.writes.api().created.lock().unwrap(), 10);
    assert!(*engine.writes.api().create_calls.lock().unwrap() <= 15);
    // The ReplicaFailure condition was written with the status.
    let puts = engine.writes.api().puts.lock().unwrap();
    let conditions = puts.last().unwrap().status.as_ref().unwrap().conditions.clone().unwrap();
    assert_eq!(conditions[0].type_.as_deref(), Some("ReplicaFailure"));
    assert_eq!(conditions[0].reason.as_deref(), Some("FailedCreate"));
    // Only the 10 that succeeded are still expected.
    for _ in 0..10 {
        engine.shared.expectations.creation_observed(KEY);
    }
    assert!(engine.shared.expectations.satisfied_expectations(KEY));
}

#[tokio::test]
async fn each_sync_creates_at_most_the_burst_and_waits_until_it_is_observed() {
    // TestControllerBurstReplicas (burst 5, 12 replicas): 5, nothing while pending, 5, then 2.
    let engine = engine_with_burst(RecordingApi::default(), 5);
    add_replica_set(&engine, replica_set(12));
    let created = || *engine.writes.api().created.lock().unwrap();
    engine.sync_replica_set(KEY).await.unwrap();
    assert_eq!(created(), 5);
    engine.sync_replica_set(KEY).await.unwrap();
    assert_eq!(created(), 5, "nothing until the last expected pod is observed");
    for round in [5usize, 2] {
        // The informer sees the new pods: they are in the index and each lowers the expectation.
        let have = engine.shared.pods.len();
        for i in have..created() {
            engine.shared.pods.upsert(None, &pod(&format!("pod-{i}"), Some("123"), &[("foo", "bar")]));
            engine.shared.expectations.creation_observed(KEY);
        }
        let before = created();
        engine.sync_replica_set(KEY).await.unwrap();
        assert_eq!(created() - before, round);
    }
}

#[tokio::test]
async fn deletions_are_expected_by_pod_and_failed_ones_are_un_expected() {
    let engine = engine(RecordingApi::default());
    add_replica_set(&engine, replica_set(1));
    add_pods(&engine, 3);
    engine.sync_replica_set(KEY).await.unwrap();
    let deleted = engine.writes.api().deleted.lock().unwrap().clone();
    assert_eq!(deleted.len(), 2);
    assert!(!engine.shared.expectations.satisfied_expectations(KEY));
    for name in &deleted {
        engine.shared.expectations.deletion_observed(KEY, &format!("default/{name}"));
    }
    assert!(engine.shared.expectations.satisfied_expectations(KEY));

    // A failing deletion is counted as observed at once.
    let engine = self::engine(RecordingApi::default());
    *engine.writes.api().fail.lock().unwrap() = true;
    add_replica_set(&engine, replica_set(1));
    add_pods(&engine, 3);
    let err = engine.sync_replica_set(KEY).await.unwrap_err();
    assert!(matches!(err, SyncError::Scale(ref e) if e.to_string().starts_with("unable to delete pods:")), "{err}");
    assert!(engine.shared.expectations.satisfied_expectations(KEY));
}

#[tokio::test]
async fn a_failed_status_write_fails_the_sync_after_one_get_and_two_puts() {
    // TestControllerUpdateRequeue / TestControllerUpdateStatusWithFailure.
    let engine = engine(RecordingApi::default());
    *engine.writes.api().fail_puts.lock().unwrap() = usize::MAX;
    *engine.writes.api().live.lock().unwrap() = Some(replica_set(2));
    add_replica_set(&engine, replica_set(2));
    add_pods(&engine, 2);
    let err = engine.sync_replica_set(KEY).await.unwrap_err();
    assert!(matches!(err, SyncError::Status(_)), "{err}");
    assert_eq!(status_puts(&engine), 2);
    assert_eq!(*engine.writes.api().gets.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_replica_set_gone_from_the_cache_drops_its_expectations() {
    // TestDeleteControllerAndExpectations.
    let engine = engine(RecordingApi::default());
    engine.shared.expectations.expect_creations(KEY, 3);
    let report = engine.sync_replica_set(KEY).await.unwrap();
    assert!(report.gone);
    assert!(engine.shared.expectations.get_expectations(KEY).is_none());
}

#[tokio::test]
async fn a_failed_adoption_aborts_before_scaling_and_status() {
    // TestPatchPodFails: 2 matching orphans, patches fail → error, 2 patches, no creates.
    let engine = engine(RecordingApi::default());
    *engine.writes.api().fail.lock().unwrap() = true;
    *engine.writes.api().live.lock().unwrap() = Some(replica_set(3));
    add_replica_set(&engine, replica_set(3));
    for name in ["orphan-a", "orphan-b"] {
        engine.shared.pods.upsert(None, &pod(name, None, &[("foo", "bar")]));
    }
    let err = engine.sync_replica_set(KEY).await.unwrap_err();
    assert!(matches!(err, SyncError::Claim(ref e) if e.to_string().contains("fake Error")), "{err}");
    assert_eq!(engine.writes.api().patches.lock().unwrap().len(), 2);
    assert_eq!(*engine.writes.api().create_calls.lock().unwrap(), 0);
    assert_eq!(status_puts(&engine), 0);
}

#[tokio::test]
async fn no_adoption_when_the_live_replica_set_is_being_deleted() {
    // TestDoNotAdoptOrCreateIfBeingDeletedRace: the cache says alive, the live GET says deleting.
    let engine = engine(RecordingApi::default());
    let mut live = replica_set(3);
    live.metadata.deletion_timestamp = Some(crate::time::time(1_767_225_600_000_000_000));
    *engine.writes.api().live.lock().unwrap() = Some(live);
    add_replica_set(&engine, replica_set(3));
    engine.shared.pods.upsert(None, &pod("orphan", None, &[("foo", "bar")]));
    let err = engine.sync_replica_set(KEY).await.unwrap_err();
    assert!(matches!(err, SyncError::Claim(ref e) if e.to_string().contains("has just been deleted")), "{err}");
    assert!(engine.writes.api().patches.lock().unwrap().is_empty());
    assert_eq!(*engine.writes.api().create_calls.lock().unwrap(), 0);
}

#[tokio::test]
async fn adoption_patches_carry_the_uid_precondition_and_a_controller_reference() {
    let engine = engine(RecordingApi::default());
    *engine.writes.api().live.lock().unwrap() = Some(replica_set(1));
    add_replica_set(&engine, replica_set(1));
    engine.shared.pods.upsert(None, &pod("orphan", None, &[("foo", "bar")]));
    engine.sync_replica_set(KEY).await.unwrap();
    let patches = engine.writes.api().patches.lock().unwrap();
    let (name, patch) = &patches[0];
    assert_eq!(name, "orphan");
    assert_eq!(patch["metadata"]["uid"], "uid-orphan");
    let owner = &patch["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["uid"].as_str(), owner["controller"].as_bool(), owner["blockOwnerDeletion"].as_bool()),
        (Some("123"), Some(true), Some(true))
    );
    assert_eq!(*engine.writes.api().create_calls.lock().unwrap(), 0, "the adopted pod fills the only replica");
}

#[tokio::test]
async fn a_pod_whose_labels_no_longer_match_is_released() {
    let engine = engine(RecordingApi::default());
    add_replica_set(&engine, replica_set(1));
    engine.shared.pods.upsert(None, &pod("relabelled", Some("123"), &[("foo", "baz")]));
    engine.sync_replica_set(KEY).await.unwrap();
    let patches = engine.writes.api().patches.lock().unwrap();
    assert_eq!(
        patches[0].1,
        serde_json::json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": "123"}], "uid": "uid-relabelled"}})
    );
    assert_eq!(*engine.writes.api().created.lock().unwrap(), 1, "a replacement is created in the same sync");
}

#[tokio::test]
async fn orphans_the_selector_does_not_match_never_reach_the_policy() {
    // Eight junk pods with 10,000 labels each once made every sync of the namespace run out of
    // fuel; they cannot be adopted, so the policy must not even see them.
    let engine = engine(RecordingApi::default());
    let mut log = engine.shared.sync_log.subscribe();
    add_replica_set(&engine, replica_set(2));
    add_pods(&engine, 1);
    let junk: Vec<(String, String)> = (0..10_000).map(|i| (format!("junk-{i}"), "x".to_string())).collect();
    let junk = junk.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>();
    for i in 0..8 {
        engine.shared.pods.upsert(None, &pod(&format!("junk-{i}"), None, &junk));
    }
    engine.shared.pods.upsert(None, &pod("adoptable", None, &[("foo", "bar")]));
    *engine.writes.api().live.lock().unwrap() = Some(replica_set(2));
    engine.sync_replica_set(KEY).await.unwrap();
    let (snapshot, plan) = log.recv().await.unwrap().planned.expect("a plan");
    assert_eq!(snapshot.pods.len(), 2, "the owned pod and the matching orphan only");
    assert!(snapshot.label_sets.iter().all(|set| set.len() < 10), "no junk label reached the guest");
    assert_eq!(snapshot.pod_names(&plan.adopt), "adoptable");
}

#[tokio::test]
async fn a_sync_times_each_of_its_steps() {
    let engine = engine(RecordingApi::default());
    add_replica_set(&engine, replica_set(3));
    add_pods(&engine, 1);
    engine.sync_replica_set(KEY).await.unwrap();
    let metrics = engine.shared.metrics.encode();
    for phase in ["gate", "snapshot", "guest", "claims", "scale", "status"] {
        let count = format!("wasm_replicaset_sync_phase_seconds_count{{phase=\"{phase}\"}} 1");
        assert!(metrics.contains(&count), "no {count} in\n{metrics}");
    }
}
