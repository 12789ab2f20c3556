//! Scenario 4: the pod watch is held open but delivers nothing while creations succeed, for
//! longer than the expectations timeout (kubernetes/kubernetes#129795): the controller's cache
//! never shows the pods it created, and once the expectations expire only the consistency gate
//! stands between it and a second set of pods. The host runs with a 10 s expectations TTL
//! (`--expectations-ttl`); kube-controller-manager, whose timeout is a fixed 5 minutes, goes
//! through the same scenario beside the others ([`crate::beside`]).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tests::host_process::HostProcess;
use tests::invariants::Invariants;
use tests::kcm::{KcmOptions, KubeControllerManager};
use tests::prometheus::metric;
use tests::stall_proxy::StallProxy;
use tests::workdir::WorkDir;
use tests::{ControlPlane, TestNamespace, eventually};

use crate::{SOON, create_rs, host_bin, scale, serial};

const REPLICAS: i32 = 10;
/// How long the ReplicaSet is poked (updated once a second) after the expectations expired.
const POKING: Duration = Duration::from_secs(15);

/// The controller under test, reaching the API server through the stall proxy.
enum Subject {
    Host(HostProcess),
    Kcm(Box<KubeControllerManager>),
}

impl Subject {
    /// The stale-cache skips it counted for pods, from its /metrics.
    async fn stale_skips(&self) -> Result<f64> {
        let text = match self {
            Self::Host(host) => host.metrics().await?,
            Self::Kcm(kcm) => kcm.metrics().await?,
        };
        Ok(metric(&text, "replicaset_controller_stale_sync_skips_total", &[("resource", "pods")]).unwrap_or(0.0))
    }
}

/// What happened, for the report.
pub(crate) struct Outcome {
    pub(crate) created: u64,
    pub(crate) stale_skips: f64,
    pub(crate) converged: Duration,
}

#[tokio::test]
async fn a_stalled_pod_watch_past_the_expectations_ttl_never_makes_the_host_create_a_second_set() -> Result<()> {
    let _serial = serial().await;
    let ttl = Duration::from_secs(10);
    let outcome = stalled_watch(Which::Host, ttl).await?;
    ensure!(outcome.stale_skips >= 1.0, "the host never skipped a sync for a stale cache");
    eprintln!(
        "stalled pod watch, host (TTL {ttl:?}): {} pods created in all, {} stale-cache skips, converged {:.1?} \
         after the release",
        outcome.created, outcome.stale_skips, outcome.converged
    );
    Ok(())
}

/// Which controller goes through the scenario.
#[derive(Clone, Copy)]
pub(crate) enum Which {
    Host,
    Kcm,
}

/// The scenario, for either controller, on a control plane of its own: scale to [`REPLICAS`]
/// with the pod watch stalled, wait out `ttl`, poke the ReplicaSet so it is synced with expired
/// expectations, and count the pods.
pub(crate) async fn stalled_watch(which: Which, ttl: Duration) -> Result<Outcome> {
    let cp = ControlPlane::start().await?;
    let proxy = StallProxy::start(&cp).await?;
    let ns = cp.create_namespace(&tests::shared::current_test_name()).await?;
    let dir = WorkDir::create("stall")?;
    let kubeconfig = dir.path().join("stall.kubeconfig");
    proxy.write_kubeconfig(&kubeconfig, ns.name())?;
    let subject = match which {
        Which::Host => {
            let ttl_flag = format!("--expectations-ttl={}s", ttl.as_secs());
            let flags = ["--namespace", ns.name(), "--leader-elect=false", "--watch-modules=false", &ttl_flag];
            let log = dir.path().join("host-a.log");
            let host = HostProcess::spawn("host-a", host_bin(), &kubeconfig, &flags, &log)?;
            host.wait_serving(tests::faults::HOST_START).await?;
            host.wait_readyz(200, "caches synced", SOON).await?;
            Subject::Host(host)
        }
        Which::Kcm => {
            let extra_args = vec![format!("--kubeconfig={}", kubeconfig.display())];
            Subject::Kcm(Box::new(
                KubeControllerManager::start(&cp, KcmOptions { extra_args, ..KcmOptions::default() }).await?,
            ))
        }
    };
    run(&ns, &proxy, &subject, ttl).await
}

async fn run(ns: &TestNamespace, proxy: &StallProxy, subject: &Subject, ttl: Duration) -> Result<Outcome> {
    let invariants = Invariants::start(ns.client(), ns.name()).await?;
    create_rs(ns, "web", 0).await?;
    invariants.wait_converged(SOON).await?;

    proxy.stall_pod_watches();
    scale(ns, "web", REPLICAS).await?;
    eventually("the controller to create its pods", SOON, || async {
        Ok((invariants.active("web") == REPLICAS as usize).then_some(()))
    })
    .await?;
    let created_at = Instant::now();
    // Wait out the expectations (plus the last creation's own slack), then make the controller
    // sync the ReplicaSet again and again: each sync sees zero pods in its cache.
    tokio::time::sleep(ttl + Duration::from_secs(3)).await;
    let poking = Instant::now();
    let mut i = 0;
    while poking.elapsed() < POKING {
        i += 1;
        let patch = json!({"metadata": {"annotations": {"poke": i.to_string()}}});
        ns.api::<ReplicaSet>().patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let during = invariants.became_active();
    ensure!(
        during == REPLICAS as u64,
        "{during} pods created for a ReplicaSet of {REPLICAS}, {:.0?} after the creations (expectations TTL {ttl:?})",
        created_at.elapsed()
    );
    let stale_skips = subject.stale_skips().await?;

    proxy.release_pod_watches();
    let released = Instant::now();
    invariants.wait_converged(SOON).await?;
    let converged = released.elapsed();
    invariants.check()?;
    Ok(Outcome { created: invariants.became_active(), stale_skips, converged })
}
