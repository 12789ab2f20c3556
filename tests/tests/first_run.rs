//! The first run on someone's cluster, as a new user tries it: `wasm-replicaset run --kubeconfig
//! <admin kubeconfig>` against a plain control plane where `deploy/` was never applied (no
//! `wasm-replicaset-system` namespace, no ReconcileModule CRD). Nothing in this test binary
//! installs the CRD, so its shared control plane stays bare.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::{
    api::{apps::v1::ReplicaSet, coordination::v1::Lease},
    jiff::Timestamp,
};
use kube::api::{ObjectMeta, PostParams};
use tests::{
    controller::replica_set, eventually, host_process::HostProcess, ns, scenes::wait_live_pods, shared,
    workdir::WorkDir,
};

/// The binary's own `main`.
const BINARY: &str = env!("CARGO_BIN_EXE_host-process");
/// Starting the process (debug build) includes compiling the embedded policy.
const START: Duration = Duration::from_secs(60);

/// Starts the binary's `run` with the admin kubeconfig and `flags`, logging into `dir`.
async fn run(dir: &WorkDir, name: &str, flags: &[&str]) -> Result<HostProcess> {
    let control_plane = shared().await?;
    let log = dir.path().join(format!("{name}.log"));
    HostProcess::spawn(name, BINARY.as_ref(), control_plane.kubeconfig_path(), flags, &log)
}

fn log_lines(host: &HostProcess) -> Result<Vec<String>> {
    let path = host.process().log_path();
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .map(String::from)
        .collect())
}

#[tokio::test]
async fn the_default_command_stops_within_seconds_naming_the_fix() -> Result<()> {
    let dir = WorkDir::create("first-run")?;
    shared().await?;
    let started = std::time::Instant::now();
    let host = run(&dir, "default-command", &[]).await?;
    let status = eventually("the controller to exit", START, || async { Ok(host.process().exit_status()) }).await?;
    ensure!(status == "exit code 1", "it should fail: {status}");
    // "Within seconds": startup (a debug build compiling the embedded policy) plus one request.
    ensure!(started.elapsed() < Duration::from_secs(20), "it took {:?} to stop", started.elapsed());
    let lines = log_lines(&host)?;
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
    ensure!(errors.len() == 1, "one error line expected, got: {lines:#?}");
    let error = errors[0];
    for fix in [
        "namespace `wasm-replicaset-system`",
        "kubectl apply -k deploy/",
        "--leader-elect=false",
        "--leader-elect-resource-namespace",
    ] {
        ensure!(error.contains(fix), "the error does not name {fix:?}: {error}");
    }
    Ok(())
}

#[tokio::test]
async fn without_leader_election_it_reconciles_and_says_once_that_hot_swap_is_off() -> Result<()> {
    let ns = ns().await?;
    let dir = WorkDir::create("first-run")?;
    let host = run(&dir, "no-election", &["--leader-elect=false"]).await?;
    host.wait_readyz(200, "no leader election", START).await?;
    ns.api::<ReplicaSet>().create(&PostParams::default(), &replica_set("web", 2)).await?;
    wait_live_pods(&ns, 2).await?;
    // Long enough for the module watch to have failed and retried several times (0.8 s, 1.6 s, ...).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let lines = log_lines(&host)?;
    let crd = lines.iter().filter(|l| l.contains("the ReconcileModule CRD is not installed")).count();
    ensure!(crd == 1, "the missing CRD should be reported exactly once, got {crd}: {lines:#?}");
    let crd_line = lines.iter().find(|l| l.contains("CRD is not installed")).unwrap();
    ensure!(
        crd_line.contains("ReplicaSets are reconciled all the same") && crd_line.contains("kubectl apply -k deploy/"),
        "{crd_line}"
    );
    ensure!(lines.iter().any(|l| l.contains("leading: reconciling ReplicaSets in all namespaces")), "{lines:#?}");
    ensure!(!lines.iter().any(|l| l.contains("watching ReconcileModules failed")), "{lines:#?}");
    host.terminate()?;
    Ok(())
}

#[tokio::test]
async fn a_standby_says_why_it_is_not_leading() -> Result<()> {
    let ns = ns().await?;
    // Someone else holds the Lease, renewed just now, for an hour.
    let lease = Lease {
        metadata: ObjectMeta { name: Some("wasm-replicaset-controller".into()), ..Default::default() },
        spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some("someone-else".into()),
            lease_duration_seconds: Some(3600),
            renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now())),
            ..Default::default()
        }),
    };
    ns.api::<Lease>().create(&PostParams::default(), &lease).await?;
    let dir = WorkDir::create("first-run")?;
    let flags = ["--leader-elect-resource-namespace", ns.name(), "--namespace", ns.name()];
    let host = run(&dir, "standby", &flags).await?;
    let body = host.wait_readyz(200, "not leading: standing by (leader: someone-else)", START).await?;
    ensure!(body.starts_with("ok: "), "{body}");
    let lines = log_lines(&host)?;
    ensure!(lines.iter().any(|l| l.contains("this replica reconciles only while it holds the lease")), "{lines:#?}");
    host.terminate()?;
    Ok(())
}
