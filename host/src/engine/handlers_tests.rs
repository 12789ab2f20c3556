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
    informers::cached::CachedPod,
    informers::index::{PodIndex, ReplicaSetIndex},
    policy::ActivePolicy,
    queue::WorkQueue,
    sandbox::Sandbox,
};

fn shared() -> Arc<Shared> {
    let sandbox = Sandbox::new(Default::default()).unwrap();
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
        access_denied: Default::default(),
    })
}

fn rs(name: &str, uid: &str, selector: serde_json::Value, min_ready: i32) -> Arc<ReplicaSet> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"selector": selector, "minReadySeconds": min_ready}
        }))
        .unwrap(),
    )
}

fn pod(name: &str, owner: Option<(&str, &str)>, labels: serde_json::Value, rv: &str) -> serde_json::Value {
    let owners = owner.map(|(rs, uid)| serde_json::json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": uid, "controller": true}]));
    serde_json::json!({"metadata": {"name": name, "namespace": "default", "resourceVersion": rv, "labels": labels, "ownerReferences": owners}})
}

fn cached(v: serde_json::Value) -> Arc<CachedPod> {
    Arc::new(serde_json::from_value(v).unwrap())
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
    PodEvents(s.clone()).on_add(&cached(pod("p", Some(("rs2", "u2")), serde_json::json!({"foo": "bar"}), "1")));
    assert_eq!(drain(&s.queue).await, ["default/rs2"]);
    assert!(s.expectations.satisfied_expectations("default/rs2"));
}

#[tokio::test]
async fn a_reference_to_a_replica_set_with_another_uid_is_ignored() {
    let s = shared();
    ReplicaSetEvents(s.clone()).on_add(&rs("rs1", "u1", foo_bar(), 0));
    drain(&s.queue).await;
    PodEvents(s.clone()).on_add(&cached(pod("p", Some(("rs1", "stale")), serde_json::json!({"foo": "bar"}), "1")));
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
    PodEvents(s.clone()).on_add(&cached(pod("orphan", None, serde_json::json!({"foo": "bar"}), "1")));
    assert_eq!(drain(&s.queue).await, ["default/match-a", "default/match-b"]);
    // A pod without labels matches no ReplicaSet at all.
    PodEvents(s.clone()).on_add(&cached(pod("bare", None, serde_json::json!({}), "1")));
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
    let old = cached(pod("p", Some(("rs1", "u1")), serde_json::json!({"foo": "bar"}), "1"));
    let relabelled = cached(pod("p", Some(("rs1", "u1")), serde_json::json!({"foo": "bar", "x": "y"}), "2"));
    pods.on_update(&old, &relabelled);
    assert_eq!(drain(&s.queue).await, ["default/rs1"]);
    let orphaned = cached(pod("p", None, serde_json::json!({"app": "two"}), "3"));
    pods.on_update(&relabelled, &orphaned);
    assert_eq!(drain(&s.queue).await, ["default/rs1", "default/rs2"]);
}

#[tokio::test]
async fn a_resync_with_the_same_resource_version_does_nothing() {
    let s = shared();
    ReplicaSetEvents(s.clone()).on_add(&rs("rs1", "u1", foo_bar(), 0));
    drain(&s.queue).await;
    let p = cached(pod("p", Some(("rs1", "u1")), serde_json::json!({"foo": "bar"}), "5"));
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
    let a = pod("a", Some(("rs1", "u1")), serde_json::json!({"foo": "bar"}), "1");
    let mut deleting = a.clone();
    deleting["metadata"]["deletionTimestamp"] = serde_json::json!("2026-01-01T00:00:00Z");
    deleting["metadata"]["resourceVersion"] = serde_json::json!("2");
    pods.on_update(&cached(a), &cached(deleting.clone()));
    pods.on_delete(&cached(deleting));
    assert_eq!(s.expectations.get_expectations("default/rs1").unwrap().del, 1);
    pods.on_delete(&cached(pod("b", Some(("rs1", "u1")), serde_json::json!({"foo": "bar"}), "3")));
    assert!(s.expectations.satisfied_expectations("default/rs1"));
}

#[tokio::test]
async fn a_pod_added_already_deleting_is_no_creation() {
    let s = shared();
    ReplicaSetEvents(s.clone()).on_add(&rs("rs1", "u1", foo_bar(), 0));
    s.expectations.expect_creations("default/rs1", 1);
    let mut p = pod("p", Some(("rs1", "u1")), serde_json::json!({"foo": "bar"}), "1");
    p["metadata"]["deletionTimestamp"] = serde_json::json!("2026-01-01T00:00:00Z");
    PodEvents(s.clone()).on_add(&cached(p));
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
    let not_ready = pod("p", Some(("rs1", "u1")), serde_json::json!({"foo": "bar"}), "1");
    let mut ready = not_ready.clone();
    ready["metadata"]["resourceVersion"] = serde_json::json!("2");
    ready["status"] = serde_json::json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
    PodEvents(s.clone()).on_update(&cached(not_ready), &cached(ready));
    assert_eq!(drain(&s.queue).await, ["default/rs1"]);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(s.queue.is_empty());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(drain(&s.queue).await, ["default/rs1"]);
}
