//! The README's main command: a local control plane, the controller (`wasm-replicaset run`, in
//! process) with its embedded policy, and a ReplicaSet scaled up and down, narrated in the
//! terminal. Everything it starts, it stops.
//!
//! Run it with `./demo.sh` (which builds the control plane first) or
//! `cargo run -p tests --bin demo` once `tests/controlplane/build.sh` has run.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, Result};
use host::{
    engine::SyncRecord,
    run::{Controller, RunArgs},
};
use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::ReplicaSet,
        core::v1::{Event, Pod},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use tests::{ControlPlane, controller::replica_set, eventually, pods};
use tokio::sync::broadcast;

use std::{io::IsTerminal, sync::LazyLock};

/// ANSI styles, only when printing to a terminal.
static STYLE: LazyLock<(&str, &str, &str)> =
    LazyLock::new(|| if std::io::stdout().is_terminal() { ("\x1b[1m", "\x1b[2m", "\x1b[0m") } else { ("", "", "") });

fn step(text: &str) {
    let (bold, _, reset) = *STYLE;
    println!("\n{bold}▸ {text}{reset}");
}

#[tokio::main]
async fn main() -> Result<()> {
    let (bold, _, reset) = *STYLE;
    println!("{bold}wasm-replicaset demo{reset}: the ReplicaSet controller with its policy in a wasm sandbox");

    step("starting a local control plane (etcd + kube-apiserver, built from Go modules)");
    let cp =
        ControlPlane::start().await.context("starting the control plane (did tests/controlplane/build.sh run?)")?;
    println!("  ready in {:.1} s at {}", cp.startup_duration().as_secs_f64(), cp.server_url());
    let ns = cp.create_namespace("demo").await?;
    let client = ns.client().clone();

    step("starting the controller with the embedded default policy");
    let kubeconfig = cp.kubeconfig_path().display().to_string();
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
    let controller = Controller::start(&args, std::sync::Arc::new(policy_kit::conformance::check)).await?;
    let mut log = controller.engine.shared.sync_log.subscribe();
    controller.engine.wait_synced().await;
    let module = controller.engine.shared.policy.current();
    println!(
        "  policy {} ({} KB, contract {}), caches synced, 5 workers",
        module.digest.short(),
        module.size / 1024,
        module.contract_version
    );

    let rss: Api<ReplicaSet> = ns.api();
    let pods_api: Api<Pod> = ns.api();

    step("creating ReplicaSet web with 3 replicas");
    rss.create(&PostParams::default(), &replica_set("web", 3)).await?;
    converge(&rss, &pods_api, "web", 3, &mut log).await?;
    show_pods(&pods_api).await?;
    show_status(&rss).await?;

    step("the pods come up (the demo plays kubelet and scheduler: bound to nodes, Running, Ready)");
    for node in ["node-a", "node-b"] {
        pods::create_node(&client, node).await?;
    }
    let names = pod_names(&pods_api).await?;
    for (i, name) in names.iter().enumerate() {
        pods::bind_pod(&client, ns.name(), name, if i == 0 { "node-a" } else { "node-b" }).await?;
        let hours_ago = Timestamp::now() - jiff::SignedDuration::from_hours(i as i64 + 1);
        pods::set_pod_running(&client, ns.name(), name, true, Time(hours_ago)).await?;
    }
    wait_status(&rss, "web", |s| s.ready_replicas == Some(3)).await?;
    drain(&mut log).await;
    show_pods(&pods_api).await?;
    show_status(&rss).await?;

    step("scaling up to 5");
    scale(&rss, "web", 5).await?;
    converge(&rss, &pods_api, "web", 5, &mut log).await?;
    show_pods(&pods_api).await?;

    let keep = &names[2];
    step(&format!("scaling down to 2 ({keep} gets pod-deletion-cost 100, so it must survive)"));
    let cost = serde_json::json!({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "100"}}});
    pods_api.patch(keep, &PatchParams::default(), &Patch::Merge(&cost)).await?;
    scale(&rss, "web", 2).await?;
    converge(&rss, &pods_api, "web", 2, &mut log).await?;
    show_pods(&pods_api).await?;
    show_status(&rss).await?;
    println!("  the two new, unscheduled, not-ready pods went first, then the most recently ready; {keep} survived");

    step("events on the ReplicaSet (what `kubectl describe rs web` shows)");
    show_events(&Api::<Event>::namespaced(client.clone(), ns.name())).await?;

    step("stopping the controller and the control plane");
    controller.shutdown().await;
    cp.stop();
    println!("  everything the demo started is stopped\n");
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

async fn pod_names(pods: &Api<Pod>) -> Result<Vec<String>> {
    let mut list = pods.list(&ListParams::default()).await?.items;
    list.sort_by(|a, b| {
        a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp).then(a.metadata.name.cmp(&b.metadata.name))
    });
    Ok(list.into_iter().filter_map(|p| p.metadata.name).collect())
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
    let mut list = events.list(&ListParams::default()).await?.items;
    list.sort_by(|a, b| a.first_timestamp.cmp(&b.first_timestamp).then(a.metadata.name.cmp(&b.metadata.name)));
    println!("  {:<8} {:<18} {:<6} {:<22} MESSAGE", "TYPE", "REASON", "COUNT", "FROM");
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for e in &list {
        *by_reason.entry(e.reason.clone().unwrap_or_default()).or_default() += 1;
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
