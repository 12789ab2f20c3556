//! One run of one scenario under one subject, each on a fresh control plane: the ReplicaSets are
//! created (and scaled down) by the bench, the controller converges them, and the bench records
//! wall time, the controller's CPU, peak RSS and API requests, and the host's guest metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use super::procfs::{self, ProcSample};
use super::progress;
use super::subject::{Limits, Running, Subject};
use super::tracker::Tracker;
use crate::ControlPlane;
use crate::controller::replica_set;
use crate::prometheus::metric_sum;

/// How many requests the bench (and the raw-limit client) keeps in flight.
pub const BENCH_CONCURRENCY: usize = 64;
/// How long a controller may take to converge one phase.
pub(super) const CONVERGE_TIMEOUT: Duration = Duration::from_secs(900);
/// Idle time between the controller becoming ready and the measured window.
pub(super) const SETTLE: Duration = Duration::from_millis(1000);

/// A creation scenario: `rs` ReplicaSets of `replicas` pods from 0, optionally then scaled down to
/// `scale_to` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// How many ReplicaSets.
    pub rs: usize,
    /// Replicas each.
    pub replicas: i32,
    /// Scale every ReplicaSet down to this afterwards (the deletion ranking runs).
    pub scale_to: Option<i32>,
}

impl Scenario {
    /// `100×20`.
    pub fn label(&self) -> String {
        format!("{}×{}", group(self.rs as u64), self.replicas)
    }

    /// Pods created.
    pub fn pods(&self) -> usize {
        self.rs * self.replicas as usize
    }
}

/// `10000` → `10,000`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Which half of a scenario a measurement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Creating the ReplicaSets and their pods from 0.
    Create,
    /// Scaling every ReplicaSet down.
    ScaleDown,
}

/// The host's own metrics over a measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostStats {
    /// Seconds spent in guest calls.
    pub guest_seconds: f64,
    /// Guest calls.
    pub guest_calls: f64,
    /// Seconds spent in syncs (guest calls included).
    pub sync_seconds: f64,
    /// Syncs.
    pub syncs: f64,
    /// Fuel the guest consumed.
    pub fuel: f64,
}

/// What one run of one phase measured.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// Seconds from the bench's first request to convergence.
    pub wall: f64,
    /// Controller CPU seconds (utime + stime) over the window (convergence plus trailing writes).
    pub cpu: f64,
    /// Controller peak RSS in the window, MiB.
    pub peak_rss_mib: f64,
    /// Requests on pods, ReplicaSets and events (watches excluded) the apiserver served in the
    /// window, minus the bench's own.
    pub requests: f64,
    /// The controller's own request counter over the window.
    pub own_requests: f64,
    /// Pods created (or deleted) in the phase.
    pub pods: usize,
    /// Pods created (deleted) per second: pods / (last pod seen − start).
    pub pod_rate: f64,
    /// The host's guest and sync metrics.
    pub host: Option<HostStats>,
    /// Trailing requests had not stopped 30 s after convergence.
    pub quiet_timeout: bool,
    /// Live pods over the phase: `(seconds since its first write, count)` at each change.
    pub timeline: Vec<(f64, usize)>,
}

/// A point in time of everything the window is measured by.
struct Snapshot {
    proc: ProcSample,
    apiserver: f64,
    bench_requests: u64,
    own_requests: f64,
    host: Option<HostStats>,
}

/// The bench's client (unthrottled, `TCP_NODELAY`, counting its own non-watch requests) and a
/// separate client for scraping the apiserver's `/metrics`.
pub struct Clients {
    /// For objects.
    pub client: kube::Client,
    /// Its request counters.
    pub stats: host::client::RequestStats,
    /// For `/metrics` only.
    pub metrics: kube::Client,
}

impl Clients {
    /// Both clients for `cp`.
    pub fn new(cp: &ControlPlane) -> Result<Self> {
        let (client, stats) = super::client::fast_client(cp.config())?;
        Ok(Self { client, stats, metrics: cp.client()? })
    }
}

/// Requests the apiserver served on pods, ReplicaSets (and their status) and events, watches
/// excluded (`apiserver_request_total`).
pub async fn apiserver_requests(metrics: &kube::Client) -> Result<f64> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = metrics.request_text(request).await.context("scraping the apiserver's /metrics")?;
    let label = |labels: &[(String, String)], key: &str| {
        labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    Ok(metric_sum(&text, "apiserver_request_total", |labels| {
        matches!(label(labels, "resource").as_str(), "pods" | "replicasets" | "events")
            && label(labels, "verb") != "WATCH"
    }))
}

/// Waits until the apiserver's count of controller-relevant requests stays unchanged for 1 s
/// (trailing status and event writes), at most 30 s. Returns whether it timed out.
pub(super) async fn wait_quiet(metrics: &kube::Client) -> Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = apiserver_requests(metrics).await?;
    let mut stable = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = apiserver_requests(metrics).await?;
        if now == last {
            stable += 1;
            if stable >= 2 {
                return Ok(false);
            }
        } else {
            stable = 0;
            last = now;
        }
        if Instant::now() > deadline {
            return Ok(true);
        }
    }
}

/// The sum of every sample of `name`.
pub fn total(text: &str, name: &str) -> f64 {
    metric_sum(text, name, |_| true)
}

fn host_stats(text: &str) -> HostStats {
    HostStats {
        guest_seconds: total(text, "wasm_replicaset_guest_call_duration_seconds_sum"),
        guest_calls: total(text, "wasm_replicaset_guest_call_duration_seconds_count"),
        sync_seconds: total(text, "wasm_replicaset_sync_duration_seconds_sum"),
        syncs: total(text, "wasm_replicaset_sync_duration_seconds_count"),
        fuel: total(text, "wasm_replicaset_guest_fuel_per_call_sum"),
    }
}

impl Snapshot {
    async fn take(ctrl: &Running, clients: &Clients) -> Result<Self> {
        let metrics = ctrl.metrics().await?;
        let host = matches!(ctrl, Running::Host { .. }).then(|| host_stats(&metrics));
        Ok(Self {
            proc: procfs::sample(ctrl.pid())?,
            apiserver: apiserver_requests(&clients.metrics).await?,
            bench_requests: clients.stats.snapshot().requests,
            own_requests: ctrl.own_requests(&metrics),
            host,
        })
    }

    fn measurement(&self, after: &Snapshot) -> Measurement {
        Measurement {
            cpu: after.proc.cpu_seconds - self.proc.cpu_seconds,
            peak_rss_mib: procfs::mib(after.proc.hwm_kib),
            requests: after.apiserver - self.apiserver - (after.bench_requests - self.bench_requests) as f64,
            own_requests: after.own_requests - self.own_requests,
            host: match (self.host, after.host) {
                (Some(a), Some(b)) => Some(HostStats {
                    guest_seconds: b.guest_seconds - a.guest_seconds,
                    guest_calls: b.guest_calls - a.guest_calls,
                    sync_seconds: b.sync_seconds - a.sync_seconds,
                    syncs: b.syncs - a.syncs,
                    fuel: b.fuel - a.fuel,
                }),
                _ => None,
            },
            ..Measurement::default()
        }
    }
}

pub(super) fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("rs-{i:04}")).collect()
}

/// Runs `scenario` under `subject` on a fresh control plane; one measurement per phase.
pub async fn run(subject: Subject, limits: Limits, scenario: Scenario) -> Result<Vec<(Phase, Measurement)>> {
    let t = Instant::now();
    let cp = ControlPlane::start().await.context("starting a control plane")?;
    verbose(&format!("control plane started in {:.2} s", t.elapsed().as_secs_f64()));
    let result = match subject {
        Subject::Limit => super::raw::run_raw(&cp, scenario).await,
        _ => run_controller(&cp, subject, limits, scenario).await,
    };
    let t = Instant::now();
    cp.stop();
    verbose(&format!("control plane stopped in {:.2} s", t.elapsed().as_secs_f64()));
    result
}

async fn run_controller(
    cp: &ControlPlane,
    subject: Subject,
    limits: Limits,
    scenario: Scenario,
) -> Result<Vec<(Phase, Measurement)>> {
    let ns = cp.create_namespace("bench").await?;
    let clients = Clients::new(cp)?;
    warm_up(cp, &clients.client).await?;
    let t = Instant::now();
    let ctrl = Running::start(cp, subject, limits, &[]).await?;
    verbose(&format!("{} started in {:.2} s", subject.name(), t.elapsed().as_secs_f64()));
    let outcome = async {
        let tracker = Tracker::start(&clients.client, ns.name()).await?;
        tokio::time::sleep(SETTLE).await;
        let rss: Api<ReplicaSet> = Api::namespaced(clients.client.clone(), ns.name());
        let names = names(scenario.rs);
        let mut out = Vec::new();

        // Phase 1: create from 0.
        let expected: HashMap<String, i32> = names.iter().map(|n| (n.clone(), scenario.replicas)).collect();
        procfs::reset_peak(ctrl.pid());
        let before = Snapshot::take(&ctrl, &clients).await?;
        let t0 = Instant::now();
        futures::stream::iter(names.iter())
            .map(|n| {
                let rss = rss.clone();
                async move { rss.create(&PostParams::default(), &replica_set(n, scenario.replicas)).await }
            })
            .buffer_unordered(BENCH_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
            .context("creating the ReplicaSets")?;
        let done = tracker.wait_converged(&expected, CONVERGE_TIMEOUT, || ctrl.check_alive()).await?;
        let (last_pod, added) = tracker.pods_added();
        if scenario.rs == 1 {
            let bursts = tracker.bursts(t0);
            verbose(&format!(
                "pod bursts (start ms +count in ms): {}",
                bursts.iter().map(|(s, n, d)| format!("{s:.0}+{n}/{d:.0}")).collect::<Vec<_>>().join(" ")
            ));
        }
        let t = Instant::now();
        let quiet_timeout = wait_quiet(&clients.metrics).await?;
        verbose(&format!(
            "quiet after {:.2} s; the controller has {} sockets open",
            t.elapsed().as_secs_f64(),
            procfs::sockets(ctrl.pid())
        ));
        let after = Snapshot::take(&ctrl, &clients).await?;
        let span = last_pod.map_or(f64::NAN, |t| t.duration_since(t0).as_secs_f64());
        out.push((
            Phase::Create,
            Measurement {
                wall: done.duration_since(t0).as_secs_f64(),
                pods: added,
                pod_rate: added as f64 / span,
                quiet_timeout,
                timeline: tracker.live_pods_since(t0),
                ..before.measurement(&after)
            },
        ));

        // Phase 2: scale down.
        if let Some(to) = scenario.scale_to {
            let expected: HashMap<String, i32> = names.iter().map(|n| (n.clone(), to)).collect();
            procfs::reset_peak(ctrl.pid());
            let before = Snapshot::take(&ctrl, &clients).await?;
            let t0 = Instant::now();
            let patch = serde_json::json!({"spec": {"replicas": to}});
            merge_patch_all(&rss, &names, &patch, false).await.context("scaling the ReplicaSets down")?;
            let done = tracker.wait_converged(&expected, CONVERGE_TIMEOUT, || ctrl.check_alive()).await?;
            let last_gone = tracker.last_pod_gone();
            let quiet_timeout = wait_quiet(&clients.metrics).await?;
            let after = Snapshot::take(&ctrl, &clients).await?;
            let deleted = scenario.rs * (scenario.replicas - to) as usize;
            let span = last_gone.map_or(f64::NAN, |t| t.duration_since(t0).as_secs_f64());
            out.push((
                Phase::ScaleDown,
                Measurement {
                    wall: done.duration_since(t0).as_secs_f64(),
                    pods: deleted,
                    pod_rate: deleted as f64 / span,
                    quiet_timeout,
                    timeline: tracker.live_pods_since(t0),
                    ..before.measurement(&after)
                },
            ));
        }
        anyhow::Ok(out)
    }
    .await;
    let t = Instant::now();
    ctrl.stop();
    verbose(&format!("{} stopped in {:.2} s", subject.name(), t.elapsed().as_secs_f64()));
    outcome
}

/// Merge-patches every ReplicaSet in `names` (their status when `status`), [`BENCH_CONCURRENCY`]
/// in flight.
pub(super) async fn merge_patch_all<'a>(
    rss: &Api<ReplicaSet>,
    names: impl IntoIterator<Item = &'a String>,
    patch: &serde_json::Value,
    status: bool,
) -> kube::Result<()> {
    futures::stream::iter(names)
        .map(|name| async move {
            let (params, patch) = (PatchParams::default(), Patch::Merge(patch));
            if status { rss.patch_status(name, &params, &patch).await } else { rss.patch(name, &params, &patch).await }
        })
        .buffer_unordered(BENCH_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Creates and deletes [`BENCH_CONCURRENCY`] pods at once with `client` in a namespace of their
/// own before anything is measured: the first writes to a fresh apiserver are slower (etcd
/// connections, admission and storage paths), and the client's pool gets its connections (and TLS
/// handshakes) outside the window.
pub(super) async fn warm_up(cp: &ControlPlane, client: &kube::Client) -> Result<()> {
    let ns = cp.create_namespace("warmup").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let created: Vec<Pod> = futures::stream::iter(0..BENCH_CONCURRENCY)
        .map(|_| {
            let pods = pods.clone();
            async move {
                pods.create(
                    &PostParams::default(),
                    &pod_like_controllers("warmup", "00000000-0000-0000-0000-000000000000"),
                )
                .await
            }
        })
        .buffer_unordered(BENCH_CONCURRENCY)
        .try_collect()
        .await
        .context("warm-up pods")?;
    futures::stream::iter(created)
        .map(|pod| {
            let pods = pods.clone();
            async move { pods.delete(&pod.name_any(), &DeleteParams::default()).await }
        })
        .buffer_unordered(BENCH_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Prints `message` as progress when `BENCH_VERBOSE` is set.
pub fn verbose(message: &str) {
    if std::env::var_os("BENCH_VERBOSE").is_some_and(|v| !v.is_empty()) {
        progress(&format!("  · {message}"));
    }
}

/// The pod a ReplicaSet named `owner` (UID `uid`) made by [`replica_set`] would create: the
/// controller's own `pod_from_template`.
pub fn pod_like_controllers(owner: &str, uid: &str) -> Pod {
    let mut rs = replica_set(owner, 1);
    rs.metadata.uid = Some(uid.to_string());
    let mut pod = host::apply::pods::pod_from_template(&rs).expect("the template has labels");
    pod.metadata.namespace = None;
    pod
}
