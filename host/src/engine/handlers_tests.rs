//! The event handlers on hand-made events (upstream's TestWatchPods, TestUpdatePods,
//! TestDeletionTimestamp, TestOverlappingRSs, TestExpectationsOnRecreate shapes).

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::apps::v1::ReplicaSet;

use super::{
    Shared,
    handlers::{PodEvents, ReplicaSetEvents},
};
use crate::{
    consistency::ConsistencyStore,
    expectations::ControllerExpectations,
    informers::Handler,
    informers::index::{PodIndex, ReplicaSetIndex},
    policy::ActivePolicy,
    queue::WorkQueue,
    sandbox::Sandbox,
    testkit::{self, PodBuilder},
};

fn shared() -> Arc<Shared> {
    let sandbox = Sandbox::new(crate::sandbox::SandboxLimits::default()).unwrap();
    let module = Arc::new(sandbox.compile(crate::embedded::DEFAULT_POLICY).unwrap());
    Arc::new(Shared {
        replica_sets: ReplicaSetIndex::default(),
        pods: PodIndex::default(),
        queue: WorkQueue::new(),
        expectations: ControllerExpectations::new(),
        consistency: ConsistencyStore::default(),
        policy: Arc::new(ActivePolicy::new(sandbox, module)),
        burst_replicas: super::BURST_REPLICAS,
        sync_log: tokio::sync::broadcast::channel(4).0,
        metrics: Arc::default(),
        access_denied: std::sync::Mutex::default(),
        replica_set_watch: Arc::default(),
        pod_watch: Arc::default(),
    })
}

fn rs(name: &str, uid: &str, selector: serde_json::Value, min_ready: i32) -> Arc<ReplicaSet> {
    testkit::rs(name).uid(uid).selector(selector).min_ready_seconds(min_ready).arc()
}

/// Pod `name` labelled `labels` at resourceVersion `rv`, controlled by the ReplicaSet `owner`
/// (name, UID) if any.
fn pod(name: &str, owner: Option<(&str, &str)>, labels: &[(&str, &str)], rv: &str) -> PodBuilder {
    let pod = testkit::pod(name).labels(&testkit::labels(labels)).resource_version(rv);
    match owner {
        Some((rs, uid)) => pod.controller("ReplicaSet", rs, uid),
        None => pod,
    }
}

/// Takes every queued key, sorted.
async fn drain(queue: &WorkQueue) -> Vec<String> {
    let mut keys = Vec::new();
    while !queue.is_empty() {
        let (key, _) = queue.get().await.unwrap();
        queue.done(&key);
        keys.push(key);
    }
    keys.sort();
    keys
}

fn foo_bar() -> serde_json::Value {
    serde_json::json!({"matchLabels": {"foo": "bar"}})
}

#[tokio::test]
async fn an_owned_pod_added_is_a_creation_observed_and_syncs_only_its_owner() {
    // TestWatchPods / TestOverlappingRSs: with a controller reference, only that owner hears.
    let s = shared();
    let rss = ReplicaSetEvents(s.clone());
    for (name, uid) in [("rs1", "u1"), ("rs2", "u2")] {
        rss.on_add(&rs(name, uid, foo_bar(), 0));
    }
    drain(&s.queue).await;
    s.expectations.expect_creations("default/rs2", 1);
    PodEvents(s.clone()).on_add(&pod("p", Some(("rs2", "u2")), &[("foo", "bar")], "1").cached());
    assert_eq!(drain(&s.queue).await, ["default/rs2"]);
    assert!(s.expectations.satisfied_expectations("default/rs2"));
}

#[tokio::test]
async fn a_reference_to_a_replica_set_with_another_uid_is_ignored() {
    let s = shared();
    ReplicaSetEvents(s.clone()).on_add(&rs("rs1", "u1", foo_bar(), 0));
    drain(&s.queue).await;
    PodEvents(s.clone()).on_add(&pod("p", Some(("rs1", "stale")), &[("foo", "bar")], "1").cached());
    assert!(drain(&s.queue).await.is_empty());
}

#[tokio::test]
async fn an_orphan_wakes_every_matching_replica_set_and_an_empty_selector_matches_none() {
    let s = shared();
    let rss = ReplicaSetEvents(s.clone());
    rss.on_add(&rs("match-a", "a", foo_bar(), 0));
    rss.on_add(&rs("match-b", "b", serde_json::json!({"matchExpressions": [{"key": "foo", "operator": "Exists"}]}), 0));
    rss.on_add(&rs("other", "c", serde_json::json!({"matchLabels": {"foo": "baz"}}), 0));
    rss.on_add(&rs("empty", "d", serde_json::json!({}), 0));
    drain(&s.queue).await;
    PodEvents(s.clone()).on_add(&pod("orphan", None, &[("foo", "bar")], "1").cached());
    assert_eq!(drain(&s.queue).await, ["default/match-a", "default/match-b"]);
    // A pod without labels matches no ReplicaSet at all.
    PodEvents(s.clone()).on_add(&pod("bare", None, &[], "1").cached());
    assert!(drain(&s.queue).await.is_empty());
}

#[tokio::test]
async fn relabelling_an_owned_pod_syncs_only_its_owner_and_losing_the_reference_syncs_both() {
    // TestUpdatePods (a) and (c).
    let s = shared();
    let rss = ReplicaSetEvents(s.clone());
    rss.on_add(&rs("rs1", "u1", foo_bar(), 0));
    rss.on_add(&rs("rs2", "u2", serde_json::json!({"matchLabels": {"app": "two"}}), 0));
    drain(&s.queue).await;
    let pods = PodEvents(s.clone());
    let old = pod("p", Some(("rs1", "u1")), &[("foo", "bar")], "1").cached();
    let relabelled = pod("p", Some(("rs1", "u1")), &[("foo", "bar"), ("x", "y")], "2").cached();
    pods.on_update(&old, &relabelled);
    assert_eq!(drain(&s.queue).await, ["default/rs1"]);
    let orphaned = pod("p", None, &[("app", "two")], "3").cached();
    pods.on_update(&relabelled, &orphaned);
    assert_eq!(drain(&s.queue).await, ["default/rs1", "default/rs2"]);
}

#[tokio::test]
async fn a_resync_with_the_same_resource_version_does_nothing() {
    let s = shared();
    ReplicaSetEvents(s.clone()).on_add(&rs("rs1", "u1", foo_bar(), 0));
    drain(&s.queue).await;
    let p = pod("p", Some(("rs1", "u1")), &[("foo", "bar")], "5").cached();
    PodEvents(s.clone()).on_update(&p, &p);
    assert!(drain(&s.queue).await.is_empty());
}

#[tokio::test]
async fn a_deletion_timestamp_counts_the_deletion_once() {
    // TestDeletionTimestamp: the update carrying the deletionTimestamp observes the deletion;
    // the later delete event does not count it again.
    let s = shared();
    ReplicaSetEvents(s.clone()).on_add(&rs("rs1", "u1", foo_bar(), 0));
    s.expectations.expect_deletions("default/rs1", ["default/a", "default/b"]);
    let pods = PodEvents(s.clone());
    let a = pod("a", Some(("rs1", "u1")), &[("foo", "bar")], "1");
    let deleting = a.clone().deleting("2026-01-01T00:00:00Z").resource_version("2").cached();
    pods.on_update(&a.cached(), &deleting);
    pods.on_delete(&deleting);
    assert_eq!(s.expectations.get_expectations("default/rs1").unwrap().del, 1);
    pods.on_delete(&pod("b", Some(("rs1", "u1")), &[("foo", "bar")], "3").cached());
    assert!(s.expectations.satisfied_expectations("default/rs1"));
}

#[tokio::test]
async fn a_pod_added_already_deleting_is_no_creation() {
    let s = shared();
    ReplicaSetEvents(s.clone()).on_add(&rs("rs1", "u1", foo_bar(), 0));
    s.expectations.expect_creations("default/rs1", 1);
    let p = pod("p", Some(("rs1", "u1")), &[("foo", "bar")], "1").deleting("2026-01-01T00:00:00Z");
    PodEvents(s.clone()).on_add(&p.cached());
    assert!(!s.expectations.satisfied_expectations("default/rs1"), "still waiting for the creation");
}

#[tokio::test]
async fn a_deleted_or_recreated_replica_set_drops_its_expectations() {
    // TestDeleteControllerAndExpectations / TestExpectationsOnRecreate.
    let s = shared();
    let rss = ReplicaSetEvents(s.clone());
    let first = rs("rs1", "u1", foo_bar(), 0);
    rss.on_add(&first);
    s.expectations.expect_creations("default/rs1", 3);
    // Delete and re-create collapsed into one update (a new UID).
    let second = rs("rs1", "u2", foo_bar(), 0);
    rss.on_update(&first, &second);
    assert!(s.expectations.get_expectations("default/rs1").is_none());
    s.expectations.expect_creations("default/rs1", 1);
    rss.on_delete(&second);
    assert!(s.expectations.get_expectations("default/rs1").is_none());
    assert_eq!(drain(&s.queue).await, ["default/rs1"]);
}

#[tokio::test(start_paused = true)]
async fn a_pod_turning_ready_looks_again_after_min_ready_seconds() {
    let s = shared();
    ReplicaSetEvents(s.clone()).on_add(&rs("rs1", "u1", foo_bar(), 30));
    drain(&s.queue).await;
    let not_ready = pod("p", Some(("rs1", "u1")), &[("foo", "bar")], "1");
    let ready = not_ready.clone().resource_version("2").ready_since("2026-01-01T00:00:00Z");
    PodEvents(s.clone()).on_update(&not_ready.cached(), &ready.cached());
    assert_eq!(drain(&s.queue).await, ["default/rs1"]);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(s.queue.is_empty());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(drain(&s.queue).await, ["default/rs1"]);
}
