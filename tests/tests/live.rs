//! The host on a live cluster: kube-scheduler places the pods on kwok's fake nodes, kwok runs them
//! through the behaviours below, and kube-controller-manager runs only node lifecycle and pod
//! garbage collection. First the harness itself (scheduling, each behaviour, stopping by PID),
//! then what only a live cluster shows: availability after `minReadySeconds` with no pod event
//! left to trigger it, upstream's scale-down ranking on real placements, crash-looping pods, a
//! deleted node, and a pod that takes 10 s to terminate.
//!
//! One live cluster for the whole binary, a namespace per test; tests that change nodes make
//! their own in a pool. Everything is bounded by `eventually`/`consistently` timeouts.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use host::run::Controller;
use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tests::controller::{replica_set, start_controller_on};
use tests::kwok::FakeNode;
use tests::live::{self, LiveCluster, LiveOptions, in_pool, owned_by_deployment, switch_behaviour, with_behaviour};
use tests::stages::{BEHAVIOUR_ANNOTATION, Behaviour, Lifecycle, Termination};
use tests::{TestNamespace, consistently, eventually, pid_is_running};

/// How long a convergence that involves only the host, the scheduler and kwok may take.
const T: Duration = Duration::from_secs(30);

const READY_AFTER_1S: &str = "ready-after-1s";
const READY: &str = "ready";
const NEVER_READY: &str = "never-ready";
const CRASH_LOOP: &str = "crash-loop";
const FAIL: &str = "fail";
const SLOW_STOP: &str = "slow-stop";

/// The shared live cluster's options: three nodes, pods without an annotation turn Ready at once,
/// and the behaviours the tests pick by name.
fn options() -> LiveOptions {
    let ms = Duration::from_millis;
    LiveOptions::default()
        .with_behaviour(READY_AFTER_1S, Behaviour::new(Lifecycle::Ready { delay: ms(1000), jitter: ms(500) }))
        .with_behaviour(READY, Behaviour::ready_after(Duration::ZERO))
        .with_behaviour(NEVER_READY, Behaviour::new(Lifecycle::NeverReady))
        .with_behaviour(CRASH_LOOP, Behaviour::new(Lifecycle::CrashLoop { ready_for: ms(1000), crashed_for: ms(1000) }))
        .with_behaviour(FAIL, Behaviour::new(Lifecycle::Fail { after: ms(500) }))
        .with_behaviour(SLOW_STOP, Behaviour::ready_after(Duration::ZERO).terminating(Termination::FullGracePeriod))
}

async fn cluster() -> Result<&'static LiveCluster> {
    live::shared(&options()).await
}

async fn ns() -> Result<TestNamespace> {
    live::ns(&options()).await
}

async fn start_host(ns: &TestNamespace) -> Result<Controller> {
    start_controller_on(cluster().await?.control_plane(), ns, &[]).await
}

// === Helpers ===

/// A pause pod following `behaviour` (the default one if `None`).
fn pod(name: &str, behaviour: Option<&str>) -> Pod {
    let annotations: BTreeMap<&str, &str> = behaviour.map(|b| (BEHAVIOUR_ANNOTATION, b)).into_iter().collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}
    }))
    .expect("a valid Pod")
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
}

/// Upstream's `IsPodActive`: not Succeeded/Failed and not being deleted.
fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase(pod), Some("Succeeded" | "Failed"))
}

fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.owner_references().iter().find(|r| r.controller == Some(true)).map(|r| r.uid.as_str())
}

fn names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().map(kube::ResourceExt::name_any).collect()
}

/// Active pods controlled by ReplicaSet `rs`, sorted by name.
async fn owned_pods(pods: &Api<Pod>, rs: &ReplicaSet) -> Result<Vec<Pod>> {
    let uid = rs.uid();
    let mut owned: Vec<Pod> = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| is_active(p) && controller_uid(p) == uid.as_deref())
        .collect();
    owned.sort_by_key(kube::ResourceExt::name_any);
    Ok(owned)
}

/// Waits until ReplicaSet `name` has exactly `n` active pods, all Ready, no other pod of it is
/// left terminating, and its status says so for the current generation; returns the pods.
async fn ready(rss: &Api<ReplicaSet>, pods: &Api<Pod>, name: &str, n: usize) -> Result<Vec<Pod>> {
    eventually(&format!("ReplicaSet {name}: {n} Ready pods and a status that says so"), T, || async move {
        let rs = rss.get(name).await?;
        let owned = owned_pods(pods, &rs).await?;
        let everything = pods.list(&ListParams::default()).await?.items;
        let lingering = everything.iter().any(|p| p.metadata.deletion_timestamp.is_some());
        let s = rs.status.clone().unwrap_or_default();
        let ok = owned.len() == n
            && owned.iter().all(is_ready)
            && !lingering
            && s.replicas == n as i32
            && s.ready_replicas.unwrap_or(0) == n as i32
            && s.observed_generation == rs.metadata.generation;
        Ok(ok.then_some(owned))
    })
    .await
}

async fn scale(rss: &Api<ReplicaSet>, name: &str, replicas: i32) -> Result<ReplicaSet> {
    let patch = json!({"spec": {"replicas": replicas}});
    Ok(rss.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?)
}

/// Scales `name` to `replicas` and returns the names of the pods that survive, once the others
/// are gone.
async fn scale_and_survivors(
    rss: &Api<ReplicaSet>,
    pods: &Api<Pod>,
    name: &str,
    replicas: i32,
) -> Result<BTreeSet<String>> {
    scale(rss, name, replicas).await?;
    let survivors = ready(rss, pods, name, replicas as usize).await?;
    Ok(names(&survivors))
}

// === The harness ===

#[tokio::test]
async fn a_replica_set_pod_is_scheduled_onto_a_kwok_node_and_turns_ready_after_the_configured_delay() -> Result<()> {
    let cluster = cluster().await?;
    let ns = ns().await?;
    let host = start_host(&ns).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    rss.create(&PostParams::default(), &with_behaviour(replica_set("web", 1), READY_AFTER_1S)).await?;

    // Poll fast and note when the pod is first seen Running and first seen Ready.
    let running_at = eventually("the pod Running on a node", T, || async {
        let items = pods.list(&ListParams::default()).await?.items;
        Ok(items.first().filter(|p| phase(p) == Some("Running")).map(|p| (p.clone(), Instant::now())))
    })
    .await?;
    let (pod, running_at) = running_at;
    let node = node_name(&pod).context("a Running pod is bound")?;
    ensure!(cluster.nodes().iter().any(|n| n == node), "bound to {node}, not one of {:?}", cluster.nodes());
    ensure!(!is_ready(&pod), "not Ready on starting: the delay has not passed");
    let ready_at =
        eventually("the pod Ready", T, || async { Ok(is_ready(&pods.get(&pod.name_any()).await?).then(Instant::now)) })
            .await?;
    let took = ready_at - running_at;
    // The delay is 1-1.5 s; each observation is up to one 50 ms poll (plus a request) late.
    ensure!(took >= Duration::from_millis(850), "Ready {took:?} after Running, sooner than the 1 s delay");
    ensure!(took <= Duration::from_secs(4), "Ready {took:?} after Running, far beyond the 1.5 s bound");
    ready(&rss, &pods, "web", 1).await?;
    host.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_crash_looping_pod_raises_its_restart_count_and_flaps_ready() -> Result<()> {
    let ns = ns().await?;
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod("crasher", Some(CRASH_LOOP))).await?;
    // Record every phase seen, and every Ready transition with the restart count at it.
    let phases = RefCell::new(BTreeSet::new());
    let transitions: RefCell<Vec<(bool, i32)>> = RefCell::new(Vec::new());
    eventually("3 restarts", T, || async {
        let p = pods.get("crasher").await?;
        phases.borrow_mut().insert(phase(&p).unwrap_or("none").to_string());
        let state = (is_ready(&p), restart_count(&p));
        let mut transitions = transitions.borrow_mut();
        if phase(&p) == Some("Running") && transitions.last().map(|t| t.0) != Some(state.0) {
            transitions.push(state);
        }
        Ok((state.1 >= 3).then_some(()))
    })
    .await?;
    let (phases, transitions) = (phases.into_inner(), transitions.into_inner());
    assert!(
        phases.iter().all(|p| p == "Pending" || p == "Running"),
        "restartPolicy Always keeps it Running: {phases:?}"
    );
    let p = pods.get("crasher").await?;
    let ups = transitions.iter().filter(|t| t.0).count();
    let downs = transitions.iter().filter(|t| !t.0).count();
    assert!(ups >= 2 && downs >= 2, "Ready flapped: {transitions:?}");
    let counts: Vec<i32> = transitions.iter().map(|t| t.1).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "restart counts never go down: {counts:?}");
    let status = p.status.unwrap_or_default().container_statuses.unwrap_or_default();
    let last = status[0].last_state.as_ref().and_then(|s| s.terminated.as_ref()).context("a last terminated state")?;
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    Ok(())
}

#[tokio::test]
async fn a_failing_pod_reaches_phase_failed_and_stays() -> Result<()> {
    let ns = ns().await?;
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod("doomed", Some(FAIL))).await?;
    let failed = eventually("phase Failed", T, || async {
        let p = pods.get("doomed").await?;
        Ok((phase(&p) == Some("Failed")).then_some(p))
    })
    .await?;
    let status = failed.status.unwrap_or_default();
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    let container = &status.container_statuses.unwrap_or_default()[0];
    let terminated = container.state.as_ref().and_then(|s| s.terminated.as_ref()).context("terminated")?;
    assert_eq!(terminated.exit_code, 137);
    assert!(!container.ready);
    consistently("the Failed pod stays, Failed", Duration::from_secs(1), || async {
        Ok(phase(&pods.get("doomed").await?) == Some("Failed"))
    })
    .await
}

#[tokio::test]
async fn graceful_deletion_holds_a_slow_pod_for_its_grace_period_and_a_default_pod_not_at_all() -> Result<()> {
    let ns = ns().await?;
    let pods = ns.api::<Pod>();
    let mut slow = pod("slow", Some(SLOW_STOP));
    slow.spec.as_mut().expect("a spec").termination_grace_period_seconds = Some(3);
    pods.create(&PostParams::default(), &slow).await?;
    pods.create(&PostParams::default(), &pod("quick", None)).await?;
    for name in ["slow", "quick"] {
        eventually(&format!("{name} Ready"), T, || async { Ok(is_ready(&pods.get(name).await?).then_some(())) })
            .await?;
    }

    // The default pod's containers "exit on SIGTERM": gone at once despite its 30 s grace period.
    let deleted = Instant::now();
    pods.delete("quick", &DeleteParams::default()).await?;
    eventually("quick gone", Duration::from_secs(5), || async {
        Ok(pods.get_opt("quick").await?.is_none().then_some(()))
    })
    .await?;
    ensure!(deleted.elapsed() < Duration::from_secs(3), "quick took {:?} to go", deleted.elapsed());

    let deleted = Instant::now();
    pods.delete("slow", &DeleteParams::default()).await?;
    consistently("slow Terminating", Duration::from_millis(2500), || async {
        Ok(pods.get_opt("slow").await?.is_some_and(|p| p.metadata.deletion_timestamp.is_some()))
    })
    .await?;
    eventually("slow gone after its 3 s", Duration::from_secs(10), || async {
        Ok(pods.get_opt("slow").await?.is_none().then_some(()))
    })
    .await?;
    let took = deleted.elapsed();
    ensure!(took >= Duration::from_millis(2500), "slow went after {took:?}, before its grace period");
    ensure!(took <= Duration::from_secs(6), "slow went after {took:?}, long after its grace period");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_live_cluster_runs_only_node_lifecycle_and_pod_gc_and_stops_every_process_by_pid() -> Result<()> {
    let cluster = LiveCluster::start(LiveOptions { nodes: 1, ..LiveOptions::default() }).await?;
    eprintln!("private live cluster ready in {:?}", cluster.startup_duration());
    let pids = cluster.pids();
    assert_eq!(pids.len(), 5, "etcd, kube-apiserver, kwok, kube-controller-manager, kube-scheduler");
    assert!(pids.iter().all(|&p| pid_is_running(p)), "all running: {pids:?}");

    let healthz = cluster.kube_controller_manager().get("/healthz?verbose").await?;
    let checks: BTreeSet<&str> = healthz.lines().filter_map(|l| l.strip_prefix("[+]")).collect();
    assert_eq!(
        checks,
        BTreeSet::from(["node-lifecycle-controller ok", "pod-garbage-collector-controller ok"]),
        "{healthz}"
    );
    assert!(cluster.scheduler().get("/readyz?verbose").await?.contains("[+]sched-handler-sync ok"));
    assert_eq!(cluster.nodes(), ["node-0"]);

    cluster.stop();
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| pid_is_running(p)).collect();
    assert!(alive.is_empty(), "still running after stop: {alive:?}");
    Ok(())
}

#[tokio::test]
async fn a_live_cluster_without_its_binaries_fails_naming_the_build_script() -> Result<()> {
    let empty = tests::workdir::WorkDir::create("no-binaries")?;
    let options = LiveOptions { bin_dir: Some(empty.path().to_path_buf()), ..LiveOptions::default() };
    let error = LiveCluster::start(options).await.expect_err("no binaries, no cluster");
    let message = format!("{error:#}");
    assert!(message.contains("`tests/controlplane/build.sh`"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    Ok(())
}

// === The host on a live cluster ===

/// minReadySeconds end to end: once the pods are Ready nothing touches them again, so only the
/// host's own requeue (upstream's `AddAfter`) can make `availableReplicas` reach spec.
#[tokio::test]
async fn available_replicas_reach_spec_after_min_ready_seconds_with_no_further_pod_event() -> Result<()> {
    let ns = ns().await?;
    let host = start_host(&ns).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let mut rs = replica_set("web", 2);
    rs.spec.min_ready_seconds = Some(3);
    rss.create(&PostParams::default(), &rs).await?;

    let (ready_pods, available_then) = eventually("readyReplicas 2", T, || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        let owned = owned_pods(&pods, &rss.get("web").await?).await?;
        let ok = s.ready_replicas == Some(2) && owned.len() == 2 && owned.iter().all(is_ready);
        Ok(ok.then_some((owned, s.available_replicas.unwrap_or(0))))
    })
    .await?;
    let all_ready = Instant::now();
    ensure!(available_then < 2, "available ({available_then}) before minReadySeconds passed");
    let versions: BTreeMap<String, Option<String>> =
        ready_pods.iter().map(|p| (p.name_any(), p.resource_version())).collect();

    eventually("availableReplicas 2", T, || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        Ok((s.available_replicas == Some(2)).then_some(()))
    })
    .await?;
    let waited = all_ready.elapsed();
    // The Ready time the host counts from is truncated to the second by the API.
    ensure!(waited >= Duration::from_millis(1500), "available after only {waited:?} of minReadySeconds 3");
    let now: BTreeMap<String, Option<String>> =
        owned_pods(&pods, &rss.get("web").await?).await?.iter().map(|p| (p.name_any(), p.resource_version())).collect();
    assert_eq!(now, versions, "no pod changed after it was Ready: the requeue alone did it");
    host.shutdown().await;
    Ok(())
}

/// Upstream's ranking on real placements: of six pods (of a Deployment's ReplicaSet) on three
/// pool nodes with room for 3, 1 and 1, one stays unscheduled; the one on the second node never
/// turns Ready; three are colocated on the first.
#[tokio::test]
async fn scale_down_deletes_unscheduled_then_not_ready_then_colocated_pods() -> Result<()> {
    let cluster = cluster().await?;
    let ns = ns().await?;
    let pool = ns.name();
    let (big, small, other) = (format!("{pool}-big"), format!("{pool}-small"), format!("{pool}-other"));
    for (node, room) in [(&big, 3), (&small, 1), (&other, 1)] {
        cluster.add_node(FakeNode::new(node.clone()).in_pool(pool).with_pod_capacity(room)).await?;
    }
    let host = start_host(&ns).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let rs = owned_by_deployment(&ns, in_pool(with_behaviour(replica_set("web", 6), NEVER_READY), pool)).await?;
    rss.create(&PostParams::default(), &rs).await?;

    let placed = eventually("5 pods Running on the pool's nodes, 1 unscheduled", T, || async {
        let owned = owned_pods(&pods, &rss.get("web").await?).await?;
        let running = owned.iter().filter(|p| phase(p) == Some("Running")).count();
        let unscheduled = owned.iter().filter(|p| node_name(p).is_none()).count();
        Ok((owned.len() == 6 && running == 5 && unscheduled == 1).then_some(owned))
    })
    .await?;
    let on = |node: &str| -> BTreeSet<String> {
        placed.iter().filter(|p| node_name(p) == Some(node)).map(kube::ResourceExt::name_any).collect()
    };
    let (on_big, on_small, on_other) = (on(&big), on(&small), on(&other));
    assert_eq!((on_big.len(), on_small.len(), on_other.len()), (3, 1, 1), "placement follows the capacity");
    let unscheduled: BTreeSet<String> =
        placed.iter().filter(|p| node_name(p).is_none()).map(kube::ResourceExt::name_any).collect();

    // All but the small node's pod turn Ready.
    for name in on_big.iter().chain(&on_other) {
        switch_behaviour(&pods, name, READY).await?;
    }
    eventually("readyReplicas 4", T, || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        Ok((s.ready_replicas == Some(4)).then_some(()))
    })
    .await?;

    let scheduled: BTreeSet<String> = on_big.iter().chain(&on_small).chain(&on_other).cloned().collect();
    scale(&rss, "web", 5).await?;
    let left = eventually("5 pods left", T, || async {
        let left = names(&owned_pods(&pods, &rss.get("web").await?).await?);
        Ok((left.len() == 5).then_some(left))
    })
    .await?;
    assert_eq!(left, scheduled, "first the unscheduled pod {unscheduled:?}");

    scale(&rss, "web", 4).await?;
    let left = ready(&rss, &pods, "web", 4).await?;
    let want: BTreeSet<String> = on_big.iter().chain(&on_other).cloned().collect();
    assert_eq!(names(&left), want, "then the not-Ready pod {on_small:?}");

    let left = scale_and_survivors(&rss, &pods, "web", 2).await?;
    assert!(on_other.is_subset(&left), "the pod alone on its node stays: {left:?}");
    assert_eq!(left.intersection(&on_big).count(), 1, "two of the three colocated pods go: {left:?}");
    host.shutdown().await;
    for node in [big, small, other] {
        cluster.delete_node(&node).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_crash_looping_pod_goes_first_on_scale_down() -> Result<()> {
    let ns = ns().await?;
    let host = start_host(&ns).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    // A ReplicaSet of its own: no colocation ranks (see owned_by_deployment), wherever its pods are.
    rss.create(&PostParams::default(), &replica_set("web", 3)).await?;
    let initial = ready(&rss, &pods, "web", 3).await?;
    let crasher = initial[1].name_any();
    switch_behaviour(&pods, &crasher, CRASH_LOOP).await?;
    // Three restarts take ~6 s: by then the others have been Ready for longer than any Ready spell
    // of the crasher, so it goes first whether it is Ready at the moment or not.
    eventually("3 restarts", T, || async { Ok((restart_count(&pods.get(&crasher).await?) >= 3).then_some(())) })
        .await?;
    scale(&rss, "web", 2).await?;
    let left = eventually("2 pods left", T, || async {
        let left = names(&owned_pods(&pods, &rss.get("web").await?).await?);
        Ok((left.len() == 2).then_some(left))
    })
    .await?;
    let want: BTreeSet<String> = names(&initial).into_iter().filter(|n| *n != crasher).collect();
    assert_eq!(left, want, "the crash-looping {crasher} was deleted");
    host.shutdown().await;
    Ok(())
}

/// kube-controller-manager's pod garbage collector deletes the pods of a deleted node as orphans
/// (after its fixed 40 s quarantine, on its 20 s cycle); the host replaces them and the scheduler
/// puts the replacements on the node that is left.
#[tokio::test]
async fn a_deleted_nodes_pods_are_removed_and_replaced_on_another_node() -> Result<()> {
    let cluster = cluster().await?;
    let ns = ns().await?;
    let pool = ns.name();
    let (doomed, spare) = (format!("{pool}-doomed"), format!("{pool}-spare"));
    cluster.add_node(FakeNode::new(doomed.clone()).in_pool(pool)).await?;
    let host = start_host(&ns).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    rss.create(&PostParams::default(), &in_pool(replica_set("web", 2), pool)).await?;
    let originals = ready(&rss, &pods, "web", 2).await?;
    assert!(originals.iter().all(|p| node_name(p) == Some(doomed.as_str())), "both on {doomed}");

    cluster.add_node(FakeNode::new(spare.clone()).in_pool(pool)).await?;
    let deleted = Instant::now();
    cluster.delete_node(&doomed).await?;
    let replaced = eventually("2 Ready replacements on the spare node", Duration::from_secs(120), || async {
        let all = pods.list(&ListParams::default()).await?.items;
        let gone = originals.iter().all(|o| all.iter().all(|p| p.uid() != o.uid()));
        let on_spare = all.iter().filter(|p| node_name(p) == Some(spare.as_str()) && is_ready(p)).count();
        Ok((gone && on_spare == 2 && all.len() == 2).then_some(()))
    })
    .await;
    eprintln!("pods of the deleted node replaced after {:?}", deleted.elapsed());
    replaced?;
    ready(&rss, &pods, "web", 2).await?;
    host.shutdown().await;
    cluster.delete_node(&spare).await?;
    Ok(())
}

/// `status.terminatingReplicas` (upstream's DeploymentReplicaSetTerminatingReplicas, on by
/// default since v1.35) counts the pod for as long as kwok keeps it Terminating: its whole 10 s
/// grace period.
#[tokio::test]
async fn a_pod_terminating_for_10s_is_counted_in_terminating_replicas_until_it_is_gone() -> Result<()> {
    let ns = ns().await?;
    let host = start_host(&ns).await?;
    let (rss, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let mut rs = with_behaviour(replica_set("web", 2), SLOW_STOP);
    let template = rs.spec.template.as_mut().and_then(|t| t.spec.as_mut());
    template.expect("a pod template").termination_grace_period_seconds = Some(10);
    rss.create(&PostParams::default(), &rs).await?;
    ready(&rss, &pods, "web", 2).await?;
    ensure!(rss.get("web").await?.status.unwrap_or_default().terminating_replicas == Some(0));

    scale(&rss, "web", 1).await?;
    let victim = eventually("a pod Terminating and counted", T, || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        let all = pods.list(&ListParams::default()).await?.items;
        let terminating = all.into_iter().find(|p| p.metadata.deletion_timestamp.is_some());
        Ok(terminating.filter(|_| s.terminating_replicas == Some(1) && s.replicas == 1))
    })
    .await?;
    let seen = Instant::now();
    let victim = victim.name_any();
    // Read the status before the pod: if the pod is still there, the status read before it must
    // count it. Every count seen while it was there is kept.
    let counts = RefCell::new(Vec::new());
    eventually(&format!("{victim} gone"), Duration::from_secs(20), || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        if pods.get_opt(&victim).await?.is_none() {
            return Ok(Some(()));
        }
        counts.borrow_mut().push(s.terminating_replicas);
        Ok(None)
    })
    .await?;
    let held = seen.elapsed();
    let counts = counts.into_inner();
    ensure!(held >= Duration::from_secs(8), "{victim} was gone {held:?} after we saw it Terminating, not ~10 s");
    ensure!(counts.len() > 20, "polled {} times while it was Terminating", counts.len());
    ensure!(counts.iter().all(|c| *c == Some(1)), "terminatingReplicas while {victim} was Terminating: {counts:?}");
    eventually("terminatingReplicas 0 once it is gone", T, || async {
        let s = rss.get("web").await?.status.unwrap_or_default();
        Ok((s.terminating_replicas == Some(0) && s.replicas == 1).then_some(()))
    })
    .await?;
    host.shutdown().await;
    Ok(())
}
