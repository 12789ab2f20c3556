//! The steady state: a control plane already holding many pods, each controller started on it,
//! measured from start to converged and then idle.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

use super::procfs;
use super::progress;
use super::scenarios::{
    BENCH_CONCURRENCY, CONVERGE_TIMEOUT, Clients, apiserver_requests, group, merge_patch_all, names,
    pod_like_controllers, wait_quiet,
};
use super::subject::{Limits, Running, Subject};
use super::tracker::Tracker;
use crate::controller::replica_set;
use crate::{ControlPlane, ControlPlaneOptions};

/// A control plane holding `rs × per_rs` pods, created directly (owned by ReplicaSets that already
/// want exactly that many), shared by every steady-state run.
pub struct SteadyPlane {
    /// The control plane.
    pub cp: ControlPlane,
    ns: crate::TestNamespace,
    expected: HashMap<String, i32>,
}

/// What one steady-state run measured.
#[derive(Debug, Clone, Default)]
pub struct SteadyMeasurement {
    /// Seconds from starting the controller to every ReplicaSet's status being current.
    pub startup: f64,
    /// CPU seconds from process start to that point (plus trailing writes).
    pub startup_cpu: f64,
    /// RSS after settling, MiB.
    pub rss_mib: f64,
    /// Peak RSS over the process's life, MiB.
    pub peak_rss_mib: f64,
    /// CPU use while idle, percent of one core.
    pub idle_cpu_pct: f64,
    /// Requests on pods/ReplicaSets/events from controller start to quiet (initial lists included).
    pub requests: f64,
    /// kube-apiserver's CPU seconds over the same window: serving the controller (JSON for the
    /// host, protobuf for kube-controller-manager) is most of what it does then.
    pub apiserver_cpu: f64,
}

impl SteadyPlane {
    /// Starts a control plane and fills it.
    pub async fn prepare(rs: usize, per_rs: i32) -> Result<Self> {
        Self::prepare_with(rs, per_rs, ControlPlaneOptions::default()).await
    }

    /// Starts a control plane with `options` and fills it.
    pub async fn prepare_with(rs: usize, per_rs: i32, options: ControlPlaneOptions) -> Result<Self> {
        let cp = ControlPlane::start_with(options).await.context("starting a control plane")?;
        let ns = cp.create_namespace("steady").await?;
        let client = cp.client()?;
        let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), ns.name());
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
        let started = Instant::now();
        let mut uids = Vec::with_capacity(rs);
        let mut created = futures::stream::iter(names(rs))
            .map(|name| {
                let rss = rss.clone();
                async move {
                    let created = rss.create(&PostParams::default(), &replica_set(&name, per_rs)).await?;
                    anyhow::Ok((name, created.metadata.uid.unwrap_or_default()))
                }
            })
            .buffer_unordered(BENCH_CONCURRENCY);
        while let Some(r) = created.next().await {
            uids.push(r.context("creating steady-state ReplicaSets")?);
        }
        let total = rs * per_rs as usize;
        let templates = uids.iter().flat_map(|(name, uid)| (0..per_rs).map(|_| pod_like_controllers(name, uid)));
        let mut done = 0usize;
        let mut stream = futures::stream::iter(templates)
            .map(|pod| {
                let pods = pods.clone();
                async move { pods.create(&PostParams::default(), &pod).await }
            })
            .buffer_unordered(BENCH_CONCURRENCY);
        while let Some(r) = stream.next().await {
            r.context("creating steady-state pods")?;
            done += 1;
            if done.is_multiple_of(2500) || done == total {
                progress(&format!(
                    "steady state: {} of {} pods created ({:.0}/s)",
                    group(done as u64),
                    group(total as u64),
                    done as f64 / started.elapsed().as_secs_f64()
                ));
            }
        }
        drop(stream);
        let expected = uids.into_iter().map(|(name, _)| (name, per_rs)).collect();
        Ok(Self { cp, ns, expected })
    }

    /// The namespace holding the ReplicaSets and pods.
    pub fn namespace(&self) -> &str {
        self.ns.name()
    }

    /// Every ReplicaSet's name and the replicas it wants.
    pub fn expected(&self) -> &HashMap<String, i32> {
        &self.expected
    }

    /// Starts `subject` on the filled control plane, waits until it converged (it only writes
    /// statuses: the bench reset them), lets it settle for `settle` and measures its RSS, then its
    /// CPU over `idle` of idleness.
    pub async fn run(
        &self,
        subject: Subject,
        limits: Limits,
        settle: Duration,
        idle: Duration,
    ) -> Result<SteadyMeasurement> {
        let converged = self.start(subject, limits, settle, idle).await?;
        let measurement = converged.measurement.clone();
        converged.ctrl.stop();
        Ok(measurement)
    }

    /// [`SteadyPlane::run`], leaving the controller running (with the bench's watches and
    /// clients) for a further measurement.
    pub async fn start(&self, subject: Subject, limits: Limits, settle: Duration, idle: Duration) -> Result<Converged> {
        let clients = Clients::new(&self.cp)?;
        let rss: Api<ReplicaSet> = Api::namespaced(clients.client.clone(), self.ns.name());
        // Forget what the previous controller wrote, so every run does the same work.
        let reset = serde_json::json!({"status": {"replicas": 0, "fullyLabeledReplicas": 0, "readyReplicas": 0,
            "availableReplicas": 0, "observedGeneration": 0}});
        merge_patch_all(&rss, self.expected.keys(), &reset, true).await.context("resetting statuses")?;
        let tracker = Tracker::start(&clients.client, self.ns.name()).await?;
        let api_before = apiserver_requests(&clients.metrics).await?;
        let bench_before = clients.stats.snapshot().requests;
        let apiserver_before = procfs::sample(self.cp.apiserver().pid())?.cpu_seconds;
        let t0 = Instant::now();
        let ctrl = Running::start(&self.cp, subject, limits, &[]).await?;
        let measured = async {
            let done = tracker.wait_converged(&self.expected, CONVERGE_TIMEOUT, || ctrl.check_alive()).await?;
            wait_quiet(&clients.metrics).await?;
            let startup_cpu = procfs::sample(ctrl.pid())?.cpu_seconds;
            let apiserver_cpu = procfs::sample(self.cp.apiserver().pid())?.cpu_seconds - apiserver_before;
            let requests = apiserver_requests(&clients.metrics).await?
                - api_before
                - (clients.stats.snapshot().requests - bench_before) as f64;
            tokio::time::sleep(settle).await;
            let settled = procfs::sample(ctrl.pid())?;
            tokio::time::sleep(idle).await;
            let end = procfs::sample(ctrl.pid())?;
            anyhow::Ok(SteadyMeasurement {
                startup: done.duration_since(t0).as_secs_f64(),
                startup_cpu,
                rss_mib: procfs::mib(settled.rss_kib),
                peak_rss_mib: procfs::mib(end.hwm_kib),
                idle_cpu_pct: 100.0 * (end.cpu_seconds - settled.cpu_seconds) / idle.as_secs_f64(),
                requests,
                apiserver_cpu,
            })
        }
        .await;
        match measured {
            Ok(measurement) => Ok(Converged { ctrl, tracker, clients, measurement }),
            Err(e) => {
                ctrl.stop();
                Err(e)
            }
        }
    }
}

/// A controller converged on a [`SteadyPlane`], still running, and what its start measured.
pub struct Converged {
    /// The controller.
    pub ctrl: Running,
    /// The bench's watches of the namespace.
    pub tracker: Tracker,
    /// The bench's clients.
    pub clients: Clients,
    /// What [`SteadyPlane::run`] reports.
    pub measurement: SteadyMeasurement,
}
