//! Scenario 1: every connection between the only replica and the API server slowed by 200 ±
//! 100 ms each way during a 100×20 scale-up, then also reset every 5 s (each connection that
//! carries data in that moment) during the scale-down to 5.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use tests::faults::{FaultCluster, FaultOptions, check_host_deletes, create_decoys, host_pod_requests};
use tests::invariants::Invariants;
use tests::toxiproxy::Toxic;

use crate::{SOON, create_rs, host_bin, host_metric, scale, serial};

const SETS: usize = 100;
const UP: i32 = 20;
const DOWN: i32 = 5;
/// Well inside the host's 5-minute expectations TTL: converging within it shows no key waited
/// for an expectation to expire (a create or delete the API server accepted and the host lost).
const CONVERGE: Duration = Duration::from_secs(180);

#[tokio::test]
async fn latency_then_connection_resets_during_a_scale_up_and_down_converge_with_every_write_accounted_for()
-> Result<()> {
    let _serial = serial().await;
    let cluster = FaultCluster::start(FaultOptions { audit: true, ..FaultOptions::default() }).await?;
    let ns = cluster.ns();
    // At the default 20 QPS the 3,500 pod writes alone would take three minutes: the limit is
    // raised so the run measures the network, not the client's rate limit.
    let flags = ["--leader-elect=false", "--kube-api-qps=100", "--kube-api-burst=200"];
    let replica = cluster.start_replica(host_bin(), "host-a", &flags).await?;
    let host = &replica.host;
    host.wait_readyz(200, "no leader election", SOON).await?;
    let invariants = Invariants::start(ns.client(), ns.name()).await?;
    create_decoys(ns, &invariants, "set-0").await?;
    let names: Vec<String> = (0..SETS).map(|i| format!("set-{i}")).collect();
    for name in &names {
        create_rs(ns, name, 0).await?;
    }
    invariants.wait_converged(SOON).await?;

    let toxiproxy = cluster.toxiproxy();
    let latency = Toxic::Latency { latency: Duration::from_millis(200), jitter: Duration::from_millis(100) };
    toxiproxy.add_both_ways(&replica.proxy, "latency", latency).await?;
    let started = Instant::now();
    for name in &names {
        scale(ns, name, UP).await?;
    }
    let up = invariants.wait_converged(CONVERGE).await?;
    eprintln!("latency: {SETS}×{UP} converged {up:.1?} after the last scale ({:.1?} in all)", started.elapsed());

    let resets = toxiproxy.periodic_resets(&replica.proxy, Duration::from_secs(5));
    let started = Instant::now();
    for name in &names {
        scale(ns, name, DOWN).await?;
    }
    let down = invariants.wait_converged(CONVERGE).await?;
    resets.stop().await?;
    eprintln!(
        "latency and resets: scaled to {DOWN} in {down:.1?} after the last scale ({:.1?} in all)",
        started.elapsed()
    );

    invariants.check()?;
    // A request whose connection is reset may still have been carried out, its answer lost (the
    // audit log then records an error): pods are counted from the watch, requests from the log.
    let (wanted_created, wanted_deleted) = (SETS * UP as usize, SETS * (UP - DOWN) as usize);
    let became_active = invariants.became_active() as usize;
    ensure!(became_active == wanted_created, "{became_active} pods were created, not {wanted_created}");
    let departed = invariants.departed();
    ensure!(departed.len() == wanted_deleted, "{} pods went, not {wanted_deleted}", departed.len());
    let deletes = host_pod_requests(&cluster, "host-a", "delete")?;
    let asked: HashSet<&str> = deletes.iter().filter_map(|e| e.name.as_deref()).collect();
    if let Some(pod) = departed.iter().find(|p| !asked.contains(p.as_str())) {
        bail!("pod {pod} went without a delete request from the host");
    }
    let deleted = check_host_deletes(&cluster, &invariants, "host-a")?;
    let creates = host_pod_requests(&cluster, "host-a", "create")?;
    let created = creates.iter().filter(|e| e.succeeded()).count();
    ensure!(created <= wanted_created, "the API server accepted {created} creates of the host");
    let waiting = host_metric(host, "wasm_replicaset_unmet_expectations", &[("state", "waiting")]).await?;
    let expired = host_metric(host, "wasm_replicaset_unmet_expectations", &[("state", "expired")]).await?;
    ensure!(
        waiting == 0.0 && expired == 0.0,
        "unmet expectations after convergence: {waiting} waiting, {expired} expired"
    );
    eprintln!(
        "latency and resets: {became_active} pods created and {} went, exactly as the specs asked, each gone pod \
         deleted by the host; audit: {} creates ({created} answered 2xx), {} deletes ({deleted} answered 2xx); \
         {} revisions, 0 violations",
        departed.len(),
        creates.len(),
        deletes.len(),
        invariants.revisions()
    );
    Ok(())
}
