//! The README's main command: a live cluster (kube-scheduler places the pods on kwok's fake nodes,
//! which start them, turn them Ready, crash-loop one and complete evictions), the controller
//! (`wasm-replicaset run`, in process) with its embedded policy, and a ReplicaSet scaled up, down and drained, narrated in the terminal.
//! Nothing is faked by patching status. Everything it starts, it stops.
//!
//! Run it with `./demo.sh` (which builds the control plane first) or
//! `cargo run -p tests --bin demo` once `tests/controlplane/build.sh` has run.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    sync::{Arc, LazyLock},
    time::Duration,
};

use anyhow::{Context, Result};
use host::{
    engine::SyncRecord,
    run::{Controller, RunArgs},
};
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{Event, Node, Pod},
};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use tests::{
    LiveCluster, LiveOptions, TestNamespace,
    controller::replica_set,
    eventually, live,
    stages::{Behaviour, Lifecycle},
};
use tokio::sync::broadcast;

/// ANSI styles, only when printing to a terminal.
static STYLE: LazyLock<(&str, &str, &str)> =
    LazyLock::new(|| if std::io::stdout().is_terminal() { ("\x1b[1m", "\x1b[2m", "\x1b[0m") } else { ("", "", "") });

fn step(text: &str) {
    let (bold, _, reset) = *STYLE;
    println!("\n{bold}▸ {text}{reset}");
}

/// kwok's behaviour for the crash-looping pod of the scale-down step.
const CRASH_LOOP: &str = "crash-loop";

#[tokio::main]
async fn main() -> Result<()> {
    let (bold, _, reset) = *STYLE;
    println!("{bold}wasm-replicaset demo{reset}: the ReplicaSet controller with its policy in a wasm sandbox");

    let cluster = start_live_cluster().await?;
    let ns = cluster.control_plane().create_namespace("demo").await?;
    let client = ns.client().clone();
    let (controller, mut log) = start_controller(&cluster, &ns).await?;
    let rss: Api<ReplicaSet> = ns.api();
    let pods_api: Api<Pod> = ns.api();

    step("creating ReplicaSet web (3 replicas, minReadySeconds 3), owned by a Deployment as in real clusters");
    let mut rs = replica_set("web", 3);
    rs.spec.min_ready_seconds = Some(3);
    rss.create(&PostParams::default(), &live::owned_by_deployment(&ns, rs).await?).await?;
    converge(&rss, &pods_api, "web", 3, &mut log).await?;
    println!("  kube-scheduler places each pod on a node; kwok starts it and turns it Ready 1-2 s later:");
    watch_availability(&rss, 3).await?;
    drain(&mut log).await;
    show_pods(&pods_api).await?;

    step("scaling up to 5: two nodes now hold two pods each");
    scale(&rss, "web", 5).await?;
    converge(&rss, &pods_api, "web", 5, &mut log).await?;
    wait_status(&rss, "web", |s| s.available_replicas == Some(5)).await?;
    drain(&mut log).await;
    show_pods(&pods_api).await?;

    let crasher = alone_on_its_node(&pods_api).await?;
    step(&format!("{crasher} starts crash-looping (kwok raises its restart count; Ready flaps)"));
    live::switch_behaviour(&pods_api, &crasher, CRASH_LOOP).await?;
    wait_restarts(&pods_api, &crasher, 2).await?;
    show_pods(&pods_api).await?;

    step("scaling down to 3: the crash-looping pod goes first, then one of a pair sharing a node");
    scale(&rss, "web", 3).await?;
    converge(&rss, &pods_api, "web", 3, &mut log).await?;
    show_pods(&pods_api).await?;
    show_status(&rss).await?;

    let node = busiest_node(&pods_api).await?;
    step(&format!("draining {node}: cordoned, its pods evicted; replacements are scheduled elsewhere"));
    drain_node(&client, &pods_api, &node).await?;
    converge(&rss, &pods_api, "web", 3, &mut log).await?;
    wait_status(&rss, "web", |s| s.available_replicas == Some(3)).await?;
    drain(&mut log).await;
    show_pods(&pods_api).await?;
    show_status(&rss).await?;

    step("events on the ReplicaSet (what `kubectl describe rs web` shows)");
    show_events(&Api::<Event>::namespaced(client.clone(), ns.name())).await?;

    step("stopping the controller and the live cluster");
    controller.shutdown().await;
    cluster.stop();
    println!("  everything the demo started is stopped\n");
    Ok(())
}

/// etcd + kube-apiserver, kube-scheduler, kwok with three fake nodes whose pods turn Ready 1-2 s
/// after they start, and kube-controller-manager with only node lifecycle and pod GC.
async fn start_live_cluster() -> Result<LiveCluster> {
    step("starting a live cluster: etcd, kube-apiserver, kube-scheduler, kwok with 3 fake nodes");
    let ms = Duration::from_millis;
    let options = LiveOptions {
        default_behaviour: Behaviour::new(Lifecycle::Ready { delay: ms(1000), jitter: ms(2000) }),
        ..LiveOptions::default()
    }
    .with_behaviour(CRASH_LOOP, Behaviour::new(Lifecycle::CrashLoop { ready_for: ms(1000), crashed_for: ms(1500) }));
    let cluster = LiveCluster::start(options)
        .await
        .context("starting the live cluster (did tests/controlplane/build.sh run?)")?;
    println!(
        "  ready in {:.1} s at {}; nodes {}; kube-controller-manager runs only node lifecycle and pod GC",
        cluster.startup_duration().as_secs_f64(),
        cluster.control_plane().server_url(),
        cluster.nodes().join(", ")
    );
    Ok(cluster)
}

/// The controller with its embedded policy, watching `ns`, and its sync log.
async fn start_controller(
    cluster: &LiveCluster,
    ns: &TestNamespace,
) -> Result<(Controller, broadcast::Receiver<SyncRecord>)> {
    step("starting the controller with the embedded default policy");
    let kubeconfig = cluster.control_plane().kubeconfig_path().display().to_string();
    let flags = [
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        ns.name(),
        "--leader-elect=false",
        "--watch-modules=false",
        "--http-addr=127.0.0.1:0",
    ];
    println!("  as `wasm-replicaset run {}`", flags.join(" "));
    let args = RunArgs::from_flags(flags)?;
    let controller = Controller::start(&args, Arc::new(policy_kit::conformance::check)).await?;
    let log = controller.engine.shared.sync_log.subscribe();
    controller.engine.wait_synced().await;
    let module = controller.engine.shared.policy.current();
    println!(
        "  policy {} ({} KB, contract {}), caches synced, 5 workers",
        module.digest.short(),
        module.size / 1024,
        module.contract_version
    );
    Ok((controller, log))
}

/// Prints each change of ready and available replicas until `replicas` are available: the last
/// step needs no pod event, only the controller's requeue after `minReadySeconds`.
async fn watch_availability(rss: &Api<ReplicaSet>, replicas: i32) -> Result<()> {
    let started = std::time::Instant::now();
    let last = std::cell::Cell::new(None);
    eventually("all replicas available", Duration::from_secs(60), || async {
        let status = rss.get("web").await?.status.unwrap_or_default();
        let now = (status.ready_replicas.unwrap_or(0), status.available_replicas.unwrap_or(0));
        if last.replace(Some(now)) != Some(now) {
            println!("  {:>5.1} s  ready {} · available {}", started.elapsed().as_secs_f64(), now.0, now.1);
        }
        Ok((now.1 == replicas).then_some(()))
    })
    .await
}

/// A pod that has its node to itself.
async fn alone_on_its_node(pods: &Api<Pod>) -> Result<String> {
    let per_node = pods_per_node(pods).await?;
    per_node.values().find(|names| names.len() == 1).map(|names| names[0].clone()).context("no pod alone on its node")
}

/// The node holding the most pods.
async fn busiest_node(pods: &Api<Pod>) -> Result<String> {
    let per_node = pods_per_node(pods).await?;
    per_node.into_iter().max_by_key(|(_, names)| names.len()).map(|(node, _)| node).context("no pod on any node")
}

async fn pods_per_node(pods: &Api<Pod>) -> Result<BTreeMap<String, Vec<String>>> {
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pod in pods.list(&ListParams::default()).await?.items {
        if let (Some(node), None) = (pod.spec.and_then(|s| s.node_name), &pod.metadata.deletion_timestamp) {
            per_node.entry(node).or_default().push(pod.metadata.name.unwrap_or_default());
        }
    }
    Ok(per_node)
}

async fn wait_restarts(pods: &Api<Pod>, name: &str, restarts: i32) -> Result<()> {
    eventually(&format!("{name} to restart {restarts} times"), Duration::from_secs(30), || async {
        let pod = pods.get(name).await?;
        let count =
            pod.status.and_then(|s| s.container_statuses).map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
        Ok((count >= restarts).then_some(()))
    })
    .await
}

/// `kubectl drain`: marks the node unschedulable, then evicts its pods (kwok completes their
/// graceful deletion).
async fn drain_node(client: &kube::Client, pods: &Api<Pod>, node: &str) -> Result<()> {
    let cordon = serde_json::json!({"spec": {"unschedulable": true}});
    Api::<Node>::all(client.clone()).patch(node, &PatchParams::default(), &Patch::Merge(&cordon)).await?;
    let (_, victims) = pods_per_node(pods).await?.remove_entry(node).context("the node has no pods")?;
    for victim in &victims {
        pods.evict(victim, &EvictParams::default()).await?;
    }
    println!("  {node} cordoned; evicted {}", victims.join(", "));
    Ok(())
}

/// Waits until `name` has `replicas` pods and an up-to-date status, printing each sync's plan.
async fn converge(
    rss: &Api<ReplicaSet>,
    pods: &Api<Pod>,
    name: &str,
    replicas: usize,
    log: &mut broadcast::Receiver<SyncRecord>,
) -> Result<()> {
    let what = format!("{name}: {replicas} pods and status.replicas {replicas}");
    let converged = eventually(&what, Duration::from_secs(60), || async {
        let n = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        let rs = rss.get(name).await?;
        let status = rs.status.unwrap_or_default();
        let ok =
            n == replicas && status.replicas == replicas as i32 && status.observed_generation == rs.metadata.generation;
        Ok(ok.then_some(()))
    });
    tokio::pin!(converged);
    loop {
        tokio::select! {
            done = &mut converged => return done,
            Ok(record) = log.recv() => print_record(&record),
        }
    }
}

/// Prints the syncs that happened while we were not looking.
async fn drain(log: &mut broadcast::Receiver<SyncRecord>) {
    while let Ok(Ok(record)) = tokio::time::timeout(Duration::from_millis(300), log.recv()).await {
        print_record(&record);
    }
}

fn print_record(record: &SyncRecord) {
    let did = match &record.outcome {
        Ok(summary) if summary.contains("status unchanged") && !summary.contains("created 0, deleted 0") => {
            summary.clone()
        }
        Ok(summary) if summary.contains("status unchanged") => return,
        Ok(summary) => summary.clone(),
        Err(e) if e.contains("is not as new as written version") => {
            format!("waits: the cache has not seen our own last write yet ({e})")
        }
        Err(e) => format!("failed, will retry: {e}"),
    };
    let (_, dim, reset) = *STYLE;
    println!("  {dim}sync {} (module {}){reset}", record.key, record.module);
    if let Some((snapshot, plan)) = &record.planned {
        for line in policy_kit::render::plan_text(snapshot, plan).lines() {
            println!("    {dim}{line}{reset}");
        }
    }
    println!("    → {did}");
}

async fn scale(rss: &Api<ReplicaSet>, name: &str, replicas: i32) -> Result<()> {
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    rss.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn wait_status(
    rss: &Api<ReplicaSet>,
    name: &str,
    ok: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> bool,
) -> Result<()> {
    eventually("the status to catch up", Duration::from_secs(30), || async {
        let status = rss.get(name).await?.status.unwrap_or_default();
        Ok(ok(&status).then_some(()))
    })
    .await
}

async fn show_pods(pods: &Api<Pod>) -> Result<()> {
    let mut list = pods.list(&ListParams::default()).await?.items;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    println!("  {:<14} {:<9} {:<6} {:<8} DELETION-COST", "POD", "PHASE", "READY", "NODE");
    for pod in list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let status = pod.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let cost = annotations.get("controller.kubernetes.io/pod-deletion-cost").cloned().unwrap_or_default();
        println!(
            "  {:<14} {:<9} {:<6} {:<8} {}",
            pod.metadata.name.clone().unwrap_or_default(),
            status.phase.unwrap_or_default(),
            if ready { "yes" } else { "no" },
            pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "-".into()),
            cost
        );
    }
    Ok(())
}

async fn show_status(rss: &Api<ReplicaSet>) -> Result<()> {
    let rs = rss.get("web").await?;
    let s = rs.status.unwrap_or_default();
    println!(
        "  status: replicas {} · fullyLabeled {} · ready {} · available {} · terminating {} · observedGeneration {} (generation {})",
        s.replicas,
        s.fully_labeled_replicas.unwrap_or(0),
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
        s.terminating_replicas.unwrap_or(0),
        s.observed_generation.unwrap_or(0),
        rs.metadata.generation.unwrap_or(0)
    );
    Ok(())
}

async fn show_events(events: &Api<Event>) -> Result<()> {
    // Events are written asynchronously; give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut list = events.list(&ListParams::default().fields("involvedObject.kind=ReplicaSet")).await?.items;
    list.sort_by(|a, b| a.first_timestamp.cmp(&b.first_timestamp).then(a.metadata.name.cmp(&b.metadata.name)));
    println!("  {:<8} {:<18} {:<6} {:<22} MESSAGE", "TYPE", "REASON", "COUNT", "FROM");
    for e in &list {
        println!(
            "  {:<8} {:<18} {:<6} {:<22} {}",
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
            e.count.unwrap_or(1),
            e.source.as_ref().and_then(|s| s.component.clone()).unwrap_or_default(),
            e.message.clone().unwrap_or_default()
        );
    }
    Ok(())
}
