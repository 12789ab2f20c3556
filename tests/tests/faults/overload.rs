//! Scenario 6: the API server sheds load during a 1,000-pod scale-up: one mutating request in
//! flight at a time, priority and fairness off, so every other write is answered 429 with
//! `Retry-After: 1`.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use tests::audit::AuditEvent;
use tests::faults::{FaultCluster, FaultOptions, host_pod_requests};
use tests::invariants::Invariants;

use crate::{SOON, create_rs, host_bin, scale, serial};

const SETS: usize = 10;
const REPLICAS: i32 = 100;
/// The host's client limits (kube-controller-manager's defaults, passed explicitly).
const QPS: f64 = 20.0;
const BURST: f64 = 30.0;
/// Timestamps are the API server's: a request held up on the way (a busy 2-core machine) lands
/// in the same window as later ones sent on time; this much delay is allowed for.
const SKEW: f64 = 0.25;
const CONVERGE: Duration = Duration::from_secs(240);

#[tokio::test]
async fn an_api_server_shedding_load_with_429_is_retried_after_retry_after_within_the_qps_limit_and_converges()
-> Result<()> {
    let _serial = serial().await;
    let apiserver_args = ["--max-mutating-requests-inflight=1", "--enable-priority-and-fairness=false"];
    let cluster =
        FaultCluster::start(FaultOptions { apiserver_args: apiserver_args.map(String::from).to_vec(), audit: true })
            .await?;
    let ns = cluster.ns();
    let limits = [format!("--kube-api-qps={QPS}"), format!("--kube-api-burst={BURST}")];
    let flags = ["--leader-elect=false", &limits[0], &limits[1]];
    let replica = cluster.start_replica(host_bin(), "host-a", &flags).await?;
    replica.host.wait_readyz(200, "no leader election", SOON).await?;
    let invariants = Invariants::start(ns.client(), ns.name()).await?;
    let names: Vec<String> = (0..SETS).map(|i| format!("set-{i}")).collect();
    for name in &names {
        create_rs(ns, name, 0).await?;
    }
    invariants.wait_converged(SOON).await?;

    let started = Instant::now();
    for name in &names {
        scale(ns, name, REPLICAS).await?;
    }
    let converged = invariants.wait_converged(CONVERGE).await?;
    invariants.check()?;
    let created = host_pod_requests(&cluster, "host-a", "create")?.iter().filter(|e| e.succeeded()).count();
    let wanted = SETS * REPLICAS as usize;
    ensure!(created == wanted, "the host created {created} pods, not {wanted}");

    let tries: Vec<AuditEvent> = cluster
        .audit()?
        .into_iter()
        .filter(|e| e.user_agent.contains(" host-a_") && e.user_agent.ends_with("/writes") && e.verb != "watch")
        .collect();
    let rejected = tries.iter().filter(|e| e.code == Some(429)).count();
    ensure!(rejected > 0, "the API server never answered the host 429: the scenario shed no load");
    let worst = busiest_window(&tries, Duration::from_secs(1));
    let limit = BURST + QPS * (1.0 + SKEW);
    ensure!(worst as f64 <= limit, "the host sent {worst} requests within 1 s (its limit allows {limit:.0})");
    let worst_10 = busiest_window(&tries, Duration::from_secs(10));
    let limit_10 = BURST + QPS * (10.0 + SKEW);
    ensure!(
        worst_10 as f64 <= limit_10,
        "the host sent {worst_10} requests within 10 s (its limit allows {limit_10:.0})"
    );
    eprintln!(
        "overload: {wanted} pods converged {converged:.1?} after the last scale ({:.1?} in all); {} tries by the \
         write client, {rejected} answered 429; busiest 1 s: {worst} (limit {limit:.0}), busiest 10 s: {worst_10} \
         (limit {limit_10:.0}); {} revisions, 0 violations",
        started.elapsed(),
        tries.len(),
        invariants.revisions()
    );
    Ok(())
}

/// The most requests the API server received within any `window`.
fn busiest_window(requests: &[AuditEvent], window: Duration) -> usize {
    let mut received: Vec<jiff::Timestamp> = requests.iter().map(|e| e.received).collect();
    received.sort_unstable();
    let mut worst = 0;
    let mut first = 0;
    for (last, at) in received.iter().enumerate() {
        while received[first].duration_until(*at).unsigned_abs() > window {
            first += 1;
        }
        worst = worst.max(last + 1 - first);
    }
    worst
}
