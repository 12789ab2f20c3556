//! The lifecycle tier, on a live cluster (kube-scheduler, kwok fake nodes): where a controller
//! lives on pod *updates*. Two scenarios, each run per subject on a fresh cluster:
//!
//! - **ramp**: ReplicaSets from 0 until every pod is scheduled, started and Ready (kwok turns
//!   each Ready 1–3 s after it starts), with the controller's requests split by verb and
//!   resource;
//! - **churn**: a steady state of Running pods in which a share of the pods restarts (restart
//!   count up, Ready false; kwok makes them Ready again half a second later) every second, with
//!   the controller's CPU per 1,000 pod updates, its status writes, and how long a pod update
//!   takes to show in its ReplicaSet's status.
//!
//! The controller's requests are the API server's `apiserver_request_total` for what a
//! ReplicaSet controller does — pods create/delete/patch, ReplicaSet gets and status updates,
//! core/v1 events — which kube-scheduler (bindings, `events.k8s.io` events), kwok (pod status,
//! nodes, leases) and the node lifecycle controller never touch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::procfs;
use super::scenarios::{BENCH_CONCURRENCY, names, pod_like_controllers};
use super::subject::{Limits, Running, Subject};
use crate::controller::replica_set;
use crate::live::{LiveCluster, LiveOptions};
use crate::prometheus::metric_samples;
use crate::stages::{Behaviour, Lifecycle};
use crate::{TestNamespace, eventually};

/// Pods per fake node, so the scheduler never runs out of room.
const PODS_PER_NODE: usize = 110;
/// How long any one phase may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// The sizes of the tier.
#[derive(Debug, Clone, Copy)]
pub struct LifecyclePlan {
    /// Ramp: ReplicaSets × pods each.
    pub ramp: (usize, i32),
    /// Churn: ReplicaSets × pods each.
    pub churn: (usize, i32),
    /// Churn: share of the pods restarted each second.
    pub churn_share: f64,
    /// Churn: how long the restarts go on.
    pub churn_for: Duration,
}

/// What one ramp run measured.
#[derive(Debug, Clone, Default)]
pub struct RampMeasurement {
    /// Seconds from the first ReplicaSet written to every pod available.
    pub wall: f64,
    /// Controller CPU seconds over the window (until its writes stop).
    pub cpu: f64,
    /// Controller peak RSS over the window, MiB.
    pub peak_rss_mib: f64,
    /// The controller's requests by `verb resource[/subresource]`.
    pub requests: BTreeMap<String, f64>,
}

/// What one churn run measured.
#[derive(Debug, Clone, Default)]
pub struct ChurnMeasurement {
    /// Pod updates the controller's informer had to handle (watch events seen by the bench).
    pub pod_updates: f64,
    /// Controller CPU seconds over the window.
    pub cpu: f64,
    /// ReplicaSet status writes (`PUT replicasets/status`).
    pub status_writes: f64,
    /// Seconds from a pod's readiness change to the next status write of its ReplicaSet: median.
    pub latency_p50: f64,
    /// The same, 99th percentile.
    pub latency_p99: f64,
    /// Controller peak RSS over the window, MiB.
    pub peak_rss_mib: f64,
}

impl ChurnMeasurement {
    /// Controller CPU milliseconds per 1,000 pod updates.
    pub fn cpu_ms_per_1000_updates(&self) -> f64 {
        if self.pod_updates > 0.0 { self.cpu * 1e6 / self.pod_updates } else { f64::NAN }
    }
}

/// A live cluster sized for `pods`, pods turning Ready `ready` after they start.
async fn cluster_for(pods: usize, ready: Behaviour) -> Result<LiveCluster> {
    let options = LiveOptions {
        nodes: pods.div_ceil(PODS_PER_NODE).max(1) + 1,
        default_behaviour: ready,
        ..LiveOptions::default()
    };
    LiveCluster::start(options).await.context("starting a live cluster")
}

/// The controller's requests in the API server's metrics, by `verb resource[/subresource]`.
async fn controller_requests(metrics: &kube::Client) -> Result<BTreeMap<String, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = metrics.request_text(request).await.context("scraping the apiserver's /metrics")?;
    let mut by = BTreeMap::new();
    for (labels, value) in metric_samples(&text, "apiserver_request_total") {
        let label = |key: &str| labels.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str());
        let (verb, group, resource, sub) = (label("verb"), label("group"), label("resource"), label("subresource"));
        let controllers = match (group, resource, sub) {
            ("", "pods", "") => matches!(verb, "POST" | "DELETE" | "PATCH"),
            ("apps", "replicasets", "") => verb == "GET",
            ("apps", "replicasets", "status") => verb == "PUT",
            ("", "events", "") => matches!(verb, "POST" | "PATCH"),
            _ => false,
        };
        if controllers {
            let what = if sub.is_empty() { format!("{verb} {resource}") } else { format!("{verb} {resource}/{sub}") };
            *by.entry(what).or_insert(0.0) += value;
        }
    }
    Ok(by)
}

fn minus(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Waits until the controller's request counts stay unchanged for a second (trailing status and
/// event writes), at most 30 s.
async fn wait_quiet(metrics: &kube::Client) -> Result<BTreeMap<String, f64>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = controller_requests(metrics).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let now = controller_requests(metrics).await?;
        if now == last || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// One ramp run of `subject`: `rs` ReplicaSets of `per` pods each, from 0 to all available.
pub async fn ramp(subject: Subject, limits: Limits, rs: usize, per: i32) -> Result<RampMeasurement> {
    let ms = Duration::from_millis;
    let cluster =
        cluster_for(rs * per as usize, Behaviour::new(Lifecycle::Ready { delay: ms(1000), jitter: ms(3000) })).await?;
    let cp = cluster.control_plane();
    let ns = cp.create_namespace("ramp").await?;
    let ctrl = Running::start(cp, subject, limits, &[]).await?;
    let metrics = cp.client()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (pid, before) = (ctrl.pid(), controller_requests(&metrics).await?);
    procfs::reset_peak(pid);
    let cpu_before = procfs::sample(pid)?.cpu_seconds;
    let started = Instant::now();
    let rss: Api<ReplicaSet> = ns.api();
    futures::stream::iter(names(rs))
        .map(|name| {
            let rss = rss.clone();
            async move { rss.create(&PostParams::default(), &replica_set(&name, per)).await }
        })
        .buffer_unordered(BENCH_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let want = rs as i32 * per;
    eventually(&format!("{want} pods available"), PHASE_TIMEOUT, || async {
        ctrl.check_alive()?;
        let available: i32 = rss
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|r| r.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0))
            .sum();
        Ok((available == want).then_some(()))
    })
    .await?;
    let wall = started.elapsed().as_secs_f64();
    let after = wait_quiet(&metrics).await?;
    let sample = procfs::sample(pid)?;
    ctrl.stop();
    cluster.stop();
    Ok(RampMeasurement {
        wall,
        cpu: sample.cpu_seconds - cpu_before,
        peak_rss_mib: procfs::mib(sample.hwm_kib),
        requests: minus(&after, &before),
    })
}

/// Restart bookkeeping of a churn run, fed by watches: when each pod last changed readiness,
/// and how long its ReplicaSet then took to write its status.
#[derive(Default)]
struct ChurnWatch {
    /// Pod updates seen.
    updates: u64,
    /// Pod name → (ReplicaSet, Ready).
    ready: HashMap<String, (String, bool)>,
    /// ReplicaSet → instants of readiness changes not yet reflected in a status write.
    pending: HashMap<String, Vec<Instant>>,
    /// Seconds from a readiness change to the next status write of its ReplicaSet.
    latencies: Vec<f64>,
}

impl ChurnWatch {
    fn pod(&mut self, pod: &Pod, now: Instant) {
        self.updates += 1;
        let owner = pod.metadata.owner_references.iter().flatten().next().map(|r| r.name.clone()).unwrap_or_default();
        let ready = crate::pods::is_ready(pod);
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Some((_, was)) = self.ready.insert(name, (owner.clone(), ready))
            && was != ready
        {
            self.pending.entry(owner).or_default().push(now);
        }
    }

    fn status_written(&mut self, rs: &str, now: Instant) {
        for changed in self.pending.remove(rs).unwrap_or_default() {
            self.latencies.push(now.duration_since(changed).as_secs_f64());
        }
    }
}

/// Watches pods and ReplicaSets of `ns` into `state` until dropped.
fn watch_churn(ns: &TestNamespace, state: Arc<Mutex<ChurnWatch>>) -> tokio::task::JoinHandle<()> {
    let pods = watcher(ns.api::<Pod>(), watcher::Config::default()).applied_objects();
    let rss = watcher(ns.api::<ReplicaSet>(), watcher::Config::default()).applied_objects();
    tokio::spawn(async move {
        let mut pods = std::pin::pin!(pods);
        let mut rss = std::pin::pin!(rss);
        loop {
            tokio::select! {
                Some(Ok(pod)) = pods.next() => state.lock().expect("churn lock").pod(&pod, Instant::now()),
                Some(Ok(rs)) = rss.next() => {
                    let name = rs.metadata.name.clone().unwrap_or_default();
                    state.lock().expect("churn lock").status_written(&name, Instant::now());
                }
                else => return,
            }
        }
    })
}

/// Fills `ns` with `rs` ReplicaSets of `per` pods each, created directly on the fake nodes
/// (bypassing the scheduler, which a steady state does not exercise), and waits until kwok has
/// them all Ready.
async fn fill(cluster: &LiveCluster, ns: &TestNamespace, rs: usize, per: i32) -> Result<()> {
    let (rss, pods): (Api<ReplicaSet>, Api<Pod>) = (ns.api(), ns.api());
    let nodes = cluster.nodes().to_vec();
    let mut templates = Vec::new();
    for name in names(rs) {
        let created = rss.create(&PostParams::default(), &replica_set(&name, per)).await?;
        let uid = created.metadata.uid.unwrap_or_default();
        for i in 0..per as usize {
            let mut pod = pod_like_controllers(&name, &uid);
            pod.spec.get_or_insert_default().node_name = Some(nodes[(templates.len() + i) % nodes.len()].clone());
            templates.push(pod);
        }
    }
    let total = templates.len();
    futures::stream::iter(templates)
        .map(|pod| {
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &pod).await }
        })
        .buffer_unordered(BENCH_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    eventually(&format!("kwok to make {total} pods Ready"), PHASE_TIMEOUT, || async {
        let ready = pods.list(&ListParams::default()).await?.items.iter().filter(|p| crate::pods::is_ready(p)).count();
        Ok((ready == total).then_some(()))
    })
    .await
}

/// Restarts `share` of the pods of `ns` every second for `duration`, as a kubelet reports a
/// container that crashed: restart count up, Ready false (kwok turns it Ready again).
async fn restart_pods(ns: &TestNamespace, share: f64, duration: Duration) -> Result<()> {
    let pods: Api<Pod> = ns.api();
    let names: Vec<String> =
        pods.list(&ListParams::default()).await?.items.into_iter().filter_map(|p| p.metadata.name).collect();
    let per_second = ((names.len() as f64 * share).round() as usize).max(1);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let until = Instant::now() + duration;
    while Instant::now() < until {
        tick.tick().await;
        let victims: Vec<&String> = (0..per_second).map(|_| &names[fastrand::usize(..names.len())]).collect();
        futures::stream::iter(victims)
            .map(|name| {
                let pods = pods.clone();
                async move {
                    let pod = pods.get_status(name).await?;
                    let restarts = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map_or(0, |c| c[0].restart_count);
                    let patch = serde_json::json!({"status": {
                        "conditions": [{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "False"}],
                        "containerStatuses": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "imageID": "",
                            "ready": false, "restartCount": restarts + 1, "started": true,
                            "state": {"running": {"startedAt": jiff::Timestamp::now().to_string()}}}]
                    }});
                    pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch)).await
                }
            })
            .buffer_unordered(BENCH_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
    }
    Ok(())
}

/// One churn run of `subject`: `rs × per` Ready pods, `share` of them restarted every second for
/// `duration`.
pub async fn churn(
    subject: Subject,
    limits: Limits,
    (rs, per): (usize, i32),
    share: f64,
    duration: Duration,
) -> Result<ChurnMeasurement> {
    let cluster = cluster_for(rs * per as usize, Behaviour::ready_after(Duration::from_millis(500))).await?;
    let cp = cluster.control_plane();
    let ns = cp.create_namespace("churn").await?;
    fill(&cluster, &ns, rs, per).await?;
    let ctrl = Running::start(cp, subject, limits, &[]).await?;
    let rss: Api<ReplicaSet> = ns.api();
    eventually("every status current", PHASE_TIMEOUT, || async {
        let all = rss.list(&ListParams::default()).await?.items;
        Ok(all.iter().all(|r| r.status.as_ref().is_some_and(|s| s.ready_replicas == Some(per))).then_some(()))
    })
    .await?;
    let metrics = cp.client()?;
    wait_quiet(&metrics).await?;
    let state = Arc::new(Mutex::new(ChurnWatch::default()));
    let watch = watch_churn(&ns, state.clone());
    tokio::time::sleep(Duration::from_secs(2)).await; // both watches listed
    let pid = ctrl.pid();
    let (before, cpu_before) = (controller_requests(&metrics).await?, procfs::sample(pid)?.cpu_seconds);
    procfs::reset_peak(pid);
    let updates_before = state.lock().expect("churn lock").updates;
    restart_pods(&ns, share, duration).await?;
    let after = wait_quiet(&metrics).await?;
    let sample = procfs::sample(pid)?;
    watch.abort();
    ctrl.check_alive()?;
    ctrl.stop();
    cluster.stop();
    let mut state = std::mem::take(&mut *state.lock().expect("churn lock"));
    ensure!(!state.latencies.is_empty(), "no readiness change was reflected in a status write");
    state.latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| state.latencies[((state.latencies.len() - 1) as f64 * q).round() as usize];
    Ok(ChurnMeasurement {
        pod_updates: (state.updates - updates_before) as f64,
        cpu: sample.cpu_seconds - cpu_before,
        status_writes: minus(&after, &before).get("PUT replicasets/status").copied().unwrap_or(0.0),
        latency_p50: quantile(0.5),
        latency_p99: quantile(0.99),
        peak_rss_mib: procfs::mib(sample.hwm_kib),
    })
}
