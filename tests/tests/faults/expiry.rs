//! Scenario 3: the host's watches are cut for longer than the API server's compaction window
//! while pods are deleted, so the watch it resumes gets 410 Gone.
//!
//! The API server compacts etcd every 5 s here (`--etcd-compaction-interval`, default 5 min) and
//! serves watches from etcd (`--watch-cache=false`): its watch cache would otherwise replay
//! events from its own window (at least 75 s of them), and a short cut would never expire.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use tests::faults::{FaultCluster, FaultOptions};
use tests::invariants::Invariants;

use crate::{SOON, create_rs, host_bin, host_metric, serial};

const REPLICAS: i32 = 10;
const DELETED: usize = 5;
/// Four compaction intervals: the revisions the host last saw are long compacted away.
const CUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_watch_cut_past_the_compaction_window_gets_410_relists_and_replaces_every_deleted_pod() -> Result<()> {
    let _serial = serial().await;
    let apiserver_args = ["--etcd-compaction-interval=5s", "--watch-cache=false"].map(String::from).to_vec();
    // The audit log says who wrote which pod when, should the count below ever be wrong.
    let cluster = FaultCluster::start(FaultOptions { apiserver_args, audit: true }).await?;
    let ns = cluster.ns();
    let replica = cluster.start_replica(host_bin(), "host-a", &["--leader-elect=false"]).await?;
    let host = &replica.host;
    host.wait_readyz(200, "no leader election", SOON).await?;
    let invariants = Invariants::start(ns.client(), ns.name()).await?;
    create_rs(ns, "web", REPLICAS).await?;
    invariants.wait_converged(SOON).await?;
    let relists = async || {
        host_metric(host, "wasm_replicaset_informer_relists_total", &[("resource", "pods"), ("reason", "expired")])
            .await
    };
    ensure!(relists().await? == 0.0, "a relist before any fault");
    let created_before = invariants.became_active();

    cluster.partition(&replica.proxy).await?;
    let cut = Instant::now();
    let pods = ns.api::<Pod>();
    let names: Vec<String> =
        pods.list(&ListParams::default()).await?.items.into_iter().filter_map(|p| p.metadata.name).collect();
    for name in names.iter().take(DELETED) {
        pods.delete(name, &DeleteParams::default()).await?;
    }
    tokio::time::sleep(CUT.saturating_sub(cut.elapsed())).await;
    cluster.heal(&replica.proxy).await?;
    let healed = Instant::now();

    invariants.wait_converged(Duration::from_secs(90)).await?;
    let converged = healed.elapsed();
    let expired = relists().await?;
    ensure!(expired >= 1.0, "the host's pod watch never relisted after 410 Gone (relists: {expired})");
    let replaced = invariants.became_active() - created_before;
    if replaced != DELETED as u64 {
        let writes: Vec<String> = cluster
            .audit()?
            .into_iter()
            .filter(|e| e.is_write() && e.resource.as_deref() == Some("pods"))
            .map(|e| format!("{} {} {} by {} → {:?}", e.received, e.verb, e.uri, e.user_agent, e.code))
            .collect();
        bail!(
            "{replaced} pods created after the relist, {DELETED} were deleted; invariants: {:?}; pod writes:\n{}",
            invariants.violations(),
            writes.join("\n")
        );
    }
    invariants.check()?;
    let failures = host_metric(host, "wasm_replicaset_informer_watch_failures_total", &[("resource", "pods")]).await?;
    eprintln!(
        "watch expiry: cut {CUT:?}; after the heal the pod watch got 410 and relisted ({expired} expired relists, \
         {failures} failed watch attempts); the {DELETED} deleted pods were replaced ({replaced} created) and the \
         ReplicaSet converged {converged:.1?} after the heal"
    );
    Ok(())
}
