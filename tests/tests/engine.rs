//! The host's engine on a real API server: upstream's integration cases and the mechanism.
//!
//! Upstream's `test/integration/replicaset/replicaset_test.go` cases (TestAdoption,
//! TestSpecReplicasChange, TestDeletingAndFailedPods, TestPodDeletionCost, TestOverlappingRSs,
//! TestPodOrphaningAndAdoptionWhenLabelsChange, TestGeneralPodAdoption,
//! TestReadyAndAvailableReplicas, TestRSScaleSubresource, TestExtraPodsAdoptionAndDeletion,
//! TestFullyLabeledReplicas, TestReplicaSetsAppsV1DefaultGCPolicy), plus quota failures, events,
//! replacement of deleted pods and a deleted ReplicaSet. Each test has its own namespace and its
//! own controller; no kubelet, scheduler or garbage collector runs (see the harness docs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use host::testkit;
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    autoscaling::v1::Scale,
    core::v1::{Event, Pod, ResourceQuota},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tests::pods::{controller_uid, is_active};
use tests::{
    TestNamespace, consistently,
    controller::{replica_set, replica_set_with, start_controller},
    eventually, ns, pods,
};

/// How long any single convergence may take.
const T: Duration = Duration::from_secs(20);
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

// === Helpers ===

fn app(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), name.to_string())])
}

/// A pause pod with `labels` and `refs`, not created by any controller.
fn pod(name: &str, labels: &BTreeMap<String, String>, refs: &[OwnerReference]) -> Pod {
    testkit::pod(name).unsaved().labels(labels).owner_references(refs).build()
}

/// An owner reference to `rs` with the given `controller` and `blockOwnerDeletion` fields.
fn rs_ref(rs: &ReplicaSet, controller: Option<bool>, block: Option<bool>) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.name_any(),
        uid: rs.uid().expect("a created ReplicaSet has a UID"),
        controller,
        block_owner_deletion: block,
    }
}

fn refs(pod: &Pod) -> Vec<OwnerReference> {
    pod.metadata.owner_references.clone().unwrap_or_default()
}

/// Every pod in the namespace, sorted by name.
async fn all_pods(pods: &Api<Pod>) -> Result<Vec<Pod>> {
    let mut items = pods.list(&ListParams::default()).await?.items;
    items.sort_by_key(kube::ResourceExt::name_any);
    Ok(items)
}

/// Pods labelled `app=<app>`, sorted by name.
async fn app_pods(pods: &Api<Pod>, app: &str) -> Result<Vec<Pod>> {
    let mut items = pods.list(&ListParams::default().labels(&format!("app={app}"))).await?.items;
    items.sort_by_key(kube::ResourceExt::name_any);
    Ok(items)
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(kube::ResourceExt::name_any).collect()
}

/// Waits until ReplicaSet `name` controls exactly `n` active pods and its status says so for the
/// current generation; returns the ReplicaSet and those pods (sorted by name).
async fn converged(rss: &Api<ReplicaSet>, pods: &Api<Pod>, name: &str, n: usize) -> Result<(ReplicaSet, Vec<Pod>)> {
    eventually(&format!("ReplicaSet {name}: {n} active pods and a status that says so"), T, || async move {
        let rs = rss.get(name).await?;
        let uid = rs.uid();
        let owned: Vec<Pod> =
            all_pods(pods).await?.into_iter().filter(|p| is_active(p) && controller_uid(p) == uid.as_deref()).collect();
        let s = rs.status.clone().unwrap_or_default();
        let ok = owned.len() == n && s.replicas == n as i32 && s.observed_generation == rs.metadata.generation;
        Ok(ok.then_some((rs, owned)))
    })
    .await
}

async fn scale(rss: &Api<ReplicaSet>, name: &str, replicas: i32) -> Result<ReplicaSet> {
    let patch = json!({"spec": {"replicas": replicas}});
    Ok(rss.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?)
}

async fn merge_patch_pod(pods: &Api<Pod>, name: &str, patch: serde_json::Value) -> Result<Pod> {
    pods.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("patching pod {name}"))
}

/// core/v1 Events about `rs` with `reason`.
async fn rs_events(ns: &TestNamespace, rs: &ReplicaSet, reason: &str) -> Result<Vec<Event>> {
    let events = ns.api::<Event>().list(&ListParams::default()).await?.items;
    Ok(events
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason) && e.involved_object.uid == rs.uid())
        .collect())
}

/// A Time `seconds_ago` seconds in the past, on a whole second (what the API server keeps).
fn seconds_ago(seconds_ago: i64) -> Result<Time> {
    Ok(Time(Timestamp::from_second(Timestamp::now().as_second() - seconds_ago)?))
}

// === Tests ===

#[tokio::test]
async fn a_replica_set_of_three_gets_three_pods_and_its_status() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let rss = ns.api::<ReplicaSet>();
    rss.create(&PostParams::default(), &replica_set("web", 3)).await?;
    let pods = ns.api::<Pod>();
    eventually("3 pods", Duration::from_secs(30), || async {
        let n = pods.list(&ListParams::default()).await?.items.len();
        Ok((n == 3).then_some(()))
    })
    .await?;
    eventually("status.replicas 3, observedGeneration 1", Duration::from_secs(30), || async {
        let rs = rss.get("web").await?;
        let s = rs.status.unwrap_or_default();
        Ok((s.replicas == 3 && s.observed_generation == Some(1)).then_some(()))
    })
    .await?;
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestAdoption: what adoption does to each kind of owner-reference list.
#[tokio::test]
async fn adoption_upgrades_an_owner_ref_adopts_orphans_and_leaves_other_controllers_alone() -> Result<()> {
    let ns = ns().await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let pp = PostParams::default();
    let mut created = BTreeMap::new();
    for case in ["owner", "none", "controller", "other"] {
        created.insert(case, rss.create(&pp, &replica_set(case, 1)).await?);
    }
    let other_controller = OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "elsewhere".into(),
        uid: "00000000-0000-0000-0000-000000000001".into(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let initial = BTreeMap::from([
        ("owner", vec![rs_ref(&created["owner"], None, None)]),
        ("none", vec![]),
        ("controller", vec![rs_ref(&created["controller"], Some(true), None)]),
        ("other", vec![other_controller, rs_ref(&created["other"], None, None)]),
    ]);
    for (case, refs) in &initial {
        pods.create(&pp, &pod(&format!("{case}-pod"), &app(case), refs)).await?;
    }
    let controller = start_controller(&ns, &[]).await?;

    let expected = BTreeMap::from([
        ("owner", vec![rs_ref(&created["owner"], Some(true), Some(true))]),
        ("none", vec![rs_ref(&created["none"], Some(true), Some(true))]),
        ("controller", initial["controller"].clone()),
        ("other", initial["other"].clone()),
    ]);
    // Every ReplicaSet settles on one pod: the adopted one, or (for "other") a new one.
    for case in expected.keys() {
        converged(&rss, &pods, case, 1).await?;
    }
    for (case, want) in &expected {
        let got = refs(&pods.get(&format!("{case}-pod")).await?);
        assert_eq!(&got, want, "owner references of {case}-pod");
    }
    assert_eq!(app_pods(&pods, "other").await?.len(), 2, "other-pod is not claimed, so one pod is created");
    for case in ["owner", "none", "controller"] {
        assert_eq!(names(&app_pods(&pods, case).await?), [format!("{case}-pod")], "{case}: nothing created");
    }
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestSpecReplicasChange.
#[tokio::test]
async fn scaling_two_three_zero_two_converges_and_a_template_change_is_observed() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    rss.create(&PostParams::default(), &replica_set("web", 2)).await?;
    converged(&rss, &pods, "web", 2).await?;
    for n in [3, 0, 2] {
        scale(&rss, "web", n).await?;
        converged(&rss, &pods, "web", n as usize).await?;
        assert_eq!(all_pods(&pods).await?.len(), n as usize, "no pod left over after scaling to {n}");
    }
    let before = names(&all_pods(&pods).await?);
    let generation = rss.get("web").await?.metadata.generation.unwrap_or_default();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"test": "annotation"}}}}});
    let updated = rss.patch("web", &PatchParams::default(), &Patch::Merge(patch)).await?;
    let new_generation = updated.metadata.generation.unwrap_or_default();
    ensure!(new_generation > generation, "a template change bumps the generation ({generation} → {new_generation})");
    eventually("observedGeneration catches up with the template change", T, || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        Ok((s.observed_generation == Some(new_generation)).then_some(()))
    })
    .await?;
    assert_eq!(names(&all_pods(&pods).await?), before, "a template change does not replace pods");
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestDeletingAndFailedPods (with the terminatingReplicas count of ≥ 1.35).
#[tokio::test]
async fn a_deleting_pod_and_a_failed_pod_are_replaced_and_both_stay() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    rss.create(&PostParams::default(), &replica_set("web", 2)).await?;
    let (_, initial) = converged(&rss, &pods, "web", 2).await?;
    let (deleting, failed) = (initial[0].name_any(), initial[1].name_any());

    merge_patch_pod(&pods, &deleting, json!({"metadata": {"finalizers": ["fake.example.com/blockDeletion"]}})).await?;
    pods.delete(&deleting, &DeleteParams::default()).await?;
    pods::set_pod_phase(ns.client(), ns.name(), &failed, "Failed").await?;

    let (rs, replacements) = converged(&rss, &pods, "web", 2).await?;
    let replacement_names = names(&replacements);
    assert!(!replacement_names.contains(&deleting) && !replacement_names.contains(&failed), "{replacement_names:?}");
    let everything = all_pods(&pods).await?;
    assert_eq!(everything.len(), 4, "2 replacements + the deleting and the failed pod: {:?}", names(&everything));
    let deleting_pod = pods.get(&deleting).await?;
    assert!(deleting_pod.metadata.deletion_timestamp.is_some(), "{deleting} is still being deleted");
    let failed_pod = pods.get(&failed).await?;
    assert_eq!(failed_pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed"));
    assert_eq!(controller_uid(&failed_pod), rs.uid().as_deref(), "the failed pod keeps its controller ref");
    eventually("terminatingReplicas 1", T, || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        Ok((s.terminating_replicas == Some(1)).then_some(()))
    })
    .await?;

    // Let the deleting pod go: the count of terminating replicas drops to 0.
    merge_patch_pod(&pods, &deleting, json!({"metadata": {"finalizers": null}})).await?;
    eventually("terminatingReplicas 0 once the pod is gone", T, || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        Ok((s.terminating_replicas == Some(0) && s.replicas == 2).then_some(()))
    })
    .await?;
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestPodDeletionCost: the deletion-cost annotation outranks restarts; with equal costs
/// the pod with more restarts goes first.
#[tokio::test]
async fn on_scale_down_the_cheaper_pod_goes_and_with_equal_costs_the_one_with_more_restarts() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let since = seconds_ago(60)?;
    // (ReplicaSet, deletion costs of its two pods, restarts of its two pods, index of the survivor)
    let cases = [("cost", [Some("100"), None], [5, 0], 0), ("restarts", [None, None], [5, 0], 1)];
    let mut victims_and_survivors = Vec::new();
    for (name, costs, restarts, survivor) in cases {
        rss.create(&PostParams::default(), &replica_set(name, 2)).await?;
        let (_, owned) = converged(&rss, &pods, name, 2).await?;
        for (i, p) in owned.iter().enumerate() {
            if let Some(cost) = costs[i] {
                merge_patch_pod(&pods, &p.name_any(), json!({"metadata": {"annotations": {DELETION_COST: cost}}}))
                    .await?;
            }
            pods::set_container_restarts(ns.client(), ns.name(), &p.name_any(), restarts[i]).await?;
            // Same Ready time for both, so readiness age does not decide.
            pods::set_pod_running(ns.client(), ns.name(), &p.name_any(), true, since.clone()).await?;
        }
        victims_and_survivors.push((name, owned[1 - survivor].name_any(), owned[survivor].name_any()));
    }
    // Both pods ready in the status: the controller's cache has seen every pod update above.
    for (name, ..) in &victims_and_survivors {
        eventually(&format!("{name}: readyReplicas 2"), T, || async {
            let s = rss.get(name).await?.status.unwrap_or_default();
            Ok((s.ready_replicas == Some(2)).then_some(()))
        })
        .await?;
    }
    for (name, ..) in &victims_and_survivors {
        scale(&rss, name, 1).await?;
    }
    for (name, victim, survivor) in &victims_and_survivors {
        let (_, left) = converged(&rss, &pods, name, 1).await?;
        assert_eq!(
            &names(&left),
            std::slice::from_ref(survivor),
            "{name}: {victim} should have been deleted, {survivor} kept"
        );
        assert!(pods.get_opt(victim).await?.is_none(), "{name}: {victim} is gone");
    }
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestOverlappingRSs: two ReplicaSets with one selector each keep their own pods.
#[tokio::test]
async fn two_replica_sets_with_the_same_selector_each_keep_their_own_pods() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let labels = app("shared");
    rss.create(&PostParams::default(), &replica_set_with("one", 1, &labels)).await?;
    rss.create(&PostParams::default(), &replica_set_with("two", 2, &labels)).await?;
    let (one, _) = converged(&rss, &pods, "one", 1).await?;
    let (two, _) = converged(&rss, &pods, "two", 2).await?;
    consistently("3 pods, 1 controlled by one and 2 by two", Duration::from_secs(2), || async {
        let all = all_pods(&pods).await?;
        let by = |rs: &ReplicaSet| all.iter().filter(|p| controller_uid(p) == rs.uid().as_deref()).count();
        Ok(all.len() == 3 && by(&one) == 1 && by(&two) == 2)
    })
    .await?;
    for (name, replicas) in [("one", 1), ("two", 2)] {
        let s = rss.get(name).await?.status.unwrap_or_default();
        assert_eq!(s.replicas, replicas, "{name}.status.replicas");
        assert_eq!(s.fully_labeled_replicas, Some(replicas), "{name}.status.fullyLabeledReplicas");
    }
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestPodOrphaningAndAdoptionWhenLabelsChange.
#[tokio::test]
async fn a_pod_relabelled_out_is_released_and_replaced_and_relabelled_back_is_readopted() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    rss.create(&PostParams::default(), &replica_set("web", 1)).await?;
    let (rs, owned) = converged(&rss, &pods, "web", 1).await?;
    let original = owned[0].name_any();
    // Running and Ready, so that on the final scale-down the Pending replacement goes, not it.
    pods::set_pod_running(ns.client(), ns.name(), &original, true, seconds_ago(60)?).await?;

    merge_patch_pod(&pods, &original, json!({"metadata": {"labels": {"app": "elsewhere"}}})).await?;
    eventually("the relabelled pod is released", T, || async {
        Ok(refs(&pods.get(&original).await?).is_empty().then_some(()))
    })
    .await?;
    let (_, replacement) = converged(&rss, &pods, "web", 1).await?;
    let replacement = replacement[0].name_any();
    assert_ne!(replacement, original, "a replacement is created");

    merge_patch_pod(&pods, &original, json!({"metadata": {"labels": {"app": "web"}}})).await?;
    // Two matching pods now; once the original is adopted, one of them is deleted as surplus.
    let left = eventually("one pod labelled app=web, controlled by the ReplicaSet", T, || async {
        let left = app_pods(&pods, "web").await?;
        Ok((left.len() == 1 && controller_uid(&left[0]) == rs.uid().as_deref()).then_some(left))
    })
    .await?;
    converged(&rss, &pods, "web", 1).await?;
    assert_eq!(
        names(&left),
        std::slice::from_ref(&original),
        "the re-adopted ready pod stays, the Pending replacement goes"
    );
    assert_eq!(refs(&left[0]), [rs_ref(&rs, Some(true), Some(true))], "re-adopted with a controller ref");
    assert!(pods.get_opt(&replacement).await?.is_none(), "the surplus replacement {replacement} is deleted");
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestGeneralPodAdoption: an owned pod whose owner references are replaced is adopted
/// again, keeping a foreign non-controller reference or upgrading its own.
#[tokio::test]
async fn adoption_keeps_a_foreign_owner_ref_and_upgrades_a_non_controller_ref_to_the_replica_set() -> Result<()> {
    let ns = ns().await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let rs = rss.create(&PostParams::default(), &replica_set("web", 1)).await?;
    pods.create(&PostParams::default(), &pod("adoptee", &app("web"), &[])).await?;
    let controller = start_controller(&ns, &[]).await?;
    let (_, owned) = converged(&rss, &pods, "web", 1).await?;
    assert_eq!(names(&owned), ["adoptee"], "the matching orphan is adopted, nothing created");

    let statefulset = OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: "web".into(),
        uid: "00000000-0000-0000-0000-000000000002".into(),
        controller: Some(false),
        block_owner_deletion: None,
    };
    let cases = [
        (vec![statefulset.clone()], vec![statefulset, rs_ref(&rs, Some(true), Some(true))]),
        (vec![rs_ref(&rs, Some(false), None)], vec![rs_ref(&rs, Some(true), Some(true))]),
    ];
    for (set, want) in cases {
        merge_patch_pod(&pods, "adoptee", json!({"metadata": {"ownerReferences": set}})).await?;
        let got = eventually("the pod is adopted again", T, || async {
            let p = pods.get("adoptee").await?;
            Ok(controller_uid(&p).is_some().then(|| refs(&p)))
        })
        .await?;
        // The adoption patch merges by UID; where the new entry lands is the API server's business.
        let by_uid = |mut r: Vec<OwnerReference>| {
            r.sort_by(|a, b| a.uid.cmp(&b.uid));
            r
        };
        assert_eq!(by_uid(got), by_uid(want.clone()), "owner references after adopting a pod with {set:?}");
        assert_eq!(names(&all_pods(&pods).await?), ["adoptee"], "nothing is created meanwhile");
    }
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestReadyAndAvailableReplicas.
#[tokio::test]
async fn with_min_ready_seconds_an_hour_only_the_pod_ready_for_two_hours_is_available() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let mut rs = replica_set("web", 3);
    rs.spec.min_ready_seconds = Some(3600);
    rss.create(&PostParams::default(), &rs).await?;
    let (_, owned) = converged(&rss, &pods, "web", 3).await?;
    let (c, n) = (ns.client(), ns.name());
    pods::set_pod_running(c, n, &owned[0].name_any(), false, seconds_ago(0)?).await?;
    pods::set_pod_running(c, n, &owned[1].name_any(), true, seconds_ago(0)?).await?;
    pods::set_pod_running(c, n, &owned[2].name_any(), true, seconds_ago(2 * 3600)?).await?;
    eventually("replicas 3, ready 2, available 1", T, || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        Ok((s.replicas == 3 && s.ready_replicas == Some(2) && s.available_replicas == Some(1)).then_some(()))
    })
    .await?;
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestRSScaleSubresource.
#[tokio::test]
async fn the_scale_subresource_sets_spec_replicas_and_the_pods_follow() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    rss.create(&PostParams::default(), &replica_set("web", 1)).await?;
    converged(&rss, &pods, "web", 1).await?;
    assert_eq!(rss.get_scale("web").await?.spec.and_then(|s| s.replicas), Some(1));

    rss.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await?;
    assert_eq!(rss.get("web").await?.spec.replicas, Some(3), "spec.replicas mirrors /scale");
    converged(&rss, &pods, "web", 3).await?;

    let mut scale: Scale = rss.get_scale("web").await?;
    assert_eq!(scale.status.as_ref().map(|s| s.replicas), Some(3), "/scale status.replicas");
    scale.spec.get_or_insert_default().replicas = Some(0);
    rss.replace_scale("web", &PostParams::default(), &scale).await?;
    assert_eq!(rss.get("web").await?.spec.replicas, Some(0), "spec.replicas mirrors /scale");
    converged(&rss, &pods, "web", 0).await?;
    assert!(all_pods(&pods).await?.is_empty());
    assert_eq!(rss.get_scale("web").await?.status.map(|s| s.replicas), Some(0), "/scale status.replicas");
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestExtraPodsAdoptionAndDeletion: every matching orphan is adopted, then the surplus
/// is deleted.
#[tokio::test]
async fn three_matching_orphans_are_all_adopted_and_one_is_deleted() -> Result<()> {
    let ns = ns().await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let orphans = ["extra-0", "extra-1", "extra-2"];
    for name in orphans {
        pods.create(&PostParams::default(), &pod(name, &app("web"), &[])).await?;
    }
    let rs = rss.create(&PostParams::default(), &replica_set("web", 2)).await?;
    let uid = rs.uid().expect("a UID");

    // Record every pod ever seen with a controller ref to the ReplicaSet (deleted ones included:
    // the deletion event carries the last state).
    let adopted = Arc::new(Mutex::new(BTreeSet::new()));
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn({
        let (adopted, pods, uid) = (adopted.clone(), pods.clone(), uid.clone());
        async move {
            let mut synced = Some(synced_tx);
            let mut stream = watcher(pods, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p) | watcher::Event::Delete(p))
                        if controller_uid(&p) == Some(uid.as_str()) =>
                    {
                        adopted.lock().unwrap().insert(p.name_any());
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    synced_rx.await.context("the pod watch ended before its initial list")?;

    let controller = start_controller(&ns, &[]).await?;
    let (_, owned) = converged(&rss, &pods, "web", 2).await?;
    let everything = all_pods(&pods).await?;
    assert_eq!(everything.len(), 2, "one orphan deleted, nothing created: {:?}", names(&everything));
    assert!(owned.iter().all(|p| orphans.contains(&p.name_any().as_str())), "{:?}", names(&owned));
    eventually("all three orphans seen adopted", T, || async {
        Ok((adopted.lock().unwrap().len() == 3).then_some(()))
    })
    .await
    .with_context(|| format!("adopted: {:?}", adopted.lock().unwrap()))?;
    watch.abort();
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestFullyLabeledReplicas.
#[tokio::test]
async fn a_pod_missing_a_template_label_is_not_fully_labelled() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let mut rs = replica_set("web", 2);
    let mut template_labels = app("web");
    template_labels.insert("extra".into(), "label".into());
    rs.spec.template.as_mut().and_then(|t| t.metadata.as_mut()).expect("template metadata").labels =
        Some(template_labels);
    rss.create(&PostParams::default(), &rs).await?;
    let (rs, owned) = converged(&rss, &pods, "web", 2).await?;
    assert_eq!(rs.status.and_then(|s| s.fully_labeled_replicas), Some(2));

    merge_patch_pod(&pods, &owned[0].name_any(), json!({"metadata": {"labels": {"extra": null}}})).await?;
    eventually("replicas 2, fullyLabeledReplicas 1", T, || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        Ok((s.replicas == 2 && s.fully_labeled_replicas == Some(1)).then_some(()))
    })
    .await?;
    assert_eq!(all_pods(&pods).await?.len(), 2, "the relabelled pod still matches: nothing created");
    controller.shutdown().await;
    Ok(())
}

/// Upstream TestReplicaSetsAppsV1DefaultGCPolicy, plus what a ReplicaSet being deleted does: no
/// finalizer is added; its pods are neither replaced nor adopted, but its status is still written.
#[tokio::test]
async fn no_finalizer_is_added_and_a_replica_set_being_deleted_replaces_nothing() -> Result<()> {
    const BLOCK: &str = "fake.example.com/blockDeletion";
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let mut rs = replica_set("web", 2);
    rs.metadata.finalizers = Some(vec![BLOCK.into()]);
    rss.create(&PostParams::default(), &rs).await?;
    let (rs, owned) = converged(&rss, &pods, "web", 2).await?;
    assert_eq!(rs.finalizers(), [BLOCK], "the controller adds no finalizer");

    rss.delete("web", &DeleteParams::default()).await?;
    let rs = rss.get("web").await?;
    assert!(rs.meta().deletion_timestamp.is_some());
    assert_eq!(rs.finalizers(), [BLOCK], "apps/v1 deletes in the background: no orphan/foreground finalizer");

    pods.delete(&owned[0].name_any(), &DeleteParams::default()).await?;
    pods.create(&PostParams::default(), &pod("orphan", &app("web"), &[])).await?;
    eventually("status.replicas 1: a ReplicaSet being deleted still writes its status", T, || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        Ok((s.replicas == 1).then_some(()))
    })
    .await?;
    consistently("no replacement, no adoption", Duration::from_secs(2), || async {
        let all = all_pods(&pods).await?;
        let orphan = all.iter().find(|p| p.name_any() == "orphan").map(refs);
        Ok(names(&all) == ["orphan".to_string(), owned[1].name_any()] && orphan == Some(vec![]))
    })
    .await?;
    assert_eq!(rss.get("web").await?.finalizers(), [BLOCK], "still no finalizer added");

    rss.patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await?;
    eventually("the ReplicaSet is gone", T, || async { Ok(rss.get_opt("web").await?.is_none().then_some(())) }).await?;
    controller.shutdown().await;
    Ok(())
}

/// Quota rejections: FailedCreate events and the ReplicaFailure condition, cleared once the
/// quota allows the rest.
///
/// No quota controller runs, so `status` of a ResourceQuota is empty and the apiserver's quota
/// admission, which enforces `status.hard` only, lets everything through. The test writes the
/// status itself (hard pods 3, used 0); admission then raises `status.used` on each create.
#[tokio::test]
async fn a_quota_of_three_pods_gives_three_pods_failed_create_events_and_a_replica_failure() -> Result<()> {
    let ns = ns().await?;
    let (rss, pods, quotas) = (ns.api::<ReplicaSet>(), ns.api::<Pod>(), ns.api::<ResourceQuota>());
    let quota: ResourceQuota =
        serde_json::from_value(json!({"metadata": {"name": "pods"}, "spec": {"hard": {"pods": "3"}}}))?;
    quotas.create(&PostParams::default(), &quota).await?;
    let status = json!({"status": {"hard": {"pods": "3"}, "used": {"pods": "0"}}});
    quotas.patch_status("pods", &PatchParams::default(), &Patch::Merge(status)).await?;
    let controller = start_controller(&ns, &[]).await?;
    let rs = rss.create(&PostParams::default(), &replica_set("web", 5)).await?;

    let failure = eventually("3 pods and a ReplicaFailure condition", T, || async {
        let rs = rss.get("web").await?;
        let s = rs.status.unwrap_or_default();
        let condition =
            s.conditions.unwrap_or_default().into_iter().find(|c| c.type_.as_deref() == Some("ReplicaFailure"));
        Ok((s.replicas == 3).then_some(condition).flatten())
    })
    .await?;
    assert_eq!(failure.status.as_deref(), Some("True"));
    assert_eq!(failure.reason.as_deref(), Some("FailedCreate"));
    let message = failure.message.unwrap_or_default();
    assert!(message.contains("exceeded quota"), "condition message: {message}");
    let events = eventually("a FailedCreate event", T, || async {
        let events = rs_events(&ns, &rs, "FailedCreate").await?;
        Ok((!events.is_empty()).then_some(events))
    })
    .await?;
    for e in &events {
        let message = e.message.as_deref().unwrap_or_default();
        assert!(message.starts_with("Error creating:") && message.contains("exceeded quota"), "{message}");
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.source.as_ref().and_then(|s| s.component.as_deref()), Some("replicaset-controller"));
    }
    consistently("exactly 3 pods while the quota is full", Duration::from_secs(1), || async {
        Ok(all_pods(&pods).await?.len() == 3)
    })
    .await?;

    let hard = json!({"spec": {"hard": {"pods": "5"}}, "status": {"hard": {"pods": "5"}}});
    quotas.patch("pods", &PatchParams::default(), &Patch::Merge(&hard)).await?;
    quotas.patch_status("pods", &PatchParams::default(), &Patch::Merge(&hard)).await?;
    let (rs, _) = converged(&rss, &pods, "web", 5).await?;
    let conditions = rs.status.and_then(|s| s.conditions).unwrap_or_default();
    // `converged` may see the status written before the condition is removed.
    if conditions.iter().any(|c| c.type_.as_deref() == Some("ReplicaFailure")) {
        eventually("the ReplicaFailure condition is removed", T, || async {
            let s = rss.get("web").await?.status.unwrap_or_default();
            Ok((!s.conditions.unwrap_or_default().iter().any(|c| c.type_.as_deref() == Some("ReplicaFailure")))
                .then_some(()))
        })
        .await?;
    }
    assert_eq!(all_pods(&pods).await?.len(), 5);
    controller.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_pod_deleted_by_hand_is_replaced() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    rss.create(&PostParams::default(), &replica_set("web", 2)).await?;
    let (_, owned) = converged(&rss, &pods, "web", 2).await?;
    let gone = owned[0].name_any();
    pods.delete(&gone, &DeleteParams::default()).await?;
    let now = eventually("a replacement pod", T, || async {
        let all = names(&all_pods(&pods).await?);
        Ok((all.len() == 2 && !all.contains(&gone)).then_some(all))
    })
    .await?;
    assert!(now.contains(&owned[1].name_any()), "the other pod stays: {now:?}");
    converged(&rss, &pods, "web", 2).await?;
    controller.shutdown().await;
    Ok(())
}

/// A deleted ReplicaSet (the default background propagation; no garbage collector runs, so its
/// pods stay, still pointing at it) gets nothing more created, and a new ReplicaSet of the same
/// name (new UID) does not take the old one's pods.
#[tokio::test]
async fn after_a_replica_set_is_deleted_nothing_more_is_created_for_it() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    rss.create(&PostParams::default(), &replica_set("web", 2)).await?;
    let (old, owned) = converged(&rss, &pods, "web", 2).await?;
    rss.delete("web", &DeleteParams::default()).await?;
    eventually("the ReplicaSet is gone", T, || async { Ok(rss.get_opt("web").await?.is_none().then_some(())) }).await?;
    pods.delete(&owned[0].name_any(), &DeleteParams::default()).await?;
    let left = owned[1].clone();
    consistently("only the remaining pod, untouched", Duration::from_secs(3), || async {
        let all = all_pods(&pods).await?;
        Ok(names(&all) == [left.name_any()] && refs(&all[0]) == refs(&left))
    })
    .await?;

    let new = rss.create(&PostParams::default(), &replica_set("web", 2)).await?;
    assert_ne!(new.uid(), old.uid());
    let (_, fresh) = converged(&rss, &pods, "web", 2).await?;
    assert!(!names(&fresh).contains(&left.name_any()), "the old pod is controlled by the old UID");
    assert_eq!(refs(&pods.get(&left.name_any()).await?), refs(&left), "the old pod is left alone");
    controller.shutdown().await;
    Ok(())
}

/// Upstream's event reasons and messages (`SuccessfulCreate` "Created pod: <name>",
/// `SuccessfulDelete` "Deleted pod: <name>"), source component `replicaset-controller`.
#[tokio::test]
async fn scaling_records_successful_create_and_delete_events_naming_the_pods() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    rss.create(&PostParams::default(), &replica_set("web", 3)).await?;
    let (rs, created) = converged(&rss, &pods, "web", 3).await?;
    let want: BTreeSet<String> = created.iter().map(|p| format!("Created pod: {}", p.name_any())).collect();
    let events = eventually("a SuccessfulCreate event per pod", T, || async {
        let events = rs_events(&ns, &rs, "SuccessfulCreate").await?;
        let got: BTreeSet<String> = events.iter().filter_map(|e| e.message.clone()).collect();
        Ok((got == want).then_some(events))
    })
    .await?;
    assert_eq!(events.len(), 3);
    let check = |e: &Event| {
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.source.as_ref().and_then(|s| s.component.as_deref()), Some("replicaset-controller"));
        assert_eq!(e.involved_object.kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(e.involved_object.name.as_deref(), Some("web"));
        assert_eq!(e.involved_object.namespace.as_deref(), Some(ns.name()));
        assert_eq!(e.involved_object.api_version.as_deref(), Some("apps/v1"));
    };
    events.iter().for_each(check);

    scale(&rss, "web", 1).await?;
    let (_, left) = converged(&rss, &pods, "web", 1).await?;
    let want: BTreeSet<String> = names(&created)
        .into_iter()
        .filter(|n| !names(&left).contains(n))
        .map(|n| format!("Deleted pod: {n}"))
        .collect();
    assert_eq!(want.len(), 2);
    let events = eventually("a SuccessfulDelete event per deleted pod", T, || async {
        let events = rs_events(&ns, &rs, "SuccessfulDelete").await?;
        let got: BTreeSet<String> = events.iter().filter_map(|e| e.message.clone()).collect();
        Ok((got == want).then_some(events))
    })
    .await?;
    events.iter().for_each(check);
    controller.shutdown().await;
    Ok(())
}
