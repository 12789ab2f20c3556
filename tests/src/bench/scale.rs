//! The scale tier: a control plane holding 100,000 pods in 5,000 ReplicaSets (or whatever size
//! is asked for), each controller started on it, then 1 % of the pods scaled away.
//!
//! The start is the steady-state measurement ([`SteadyPlane::start`]) at a larger size; the
//! scale-down then takes one replica from every `rs / (pods / 100)`-th ReplicaSet, so the
//! deletions are spread over the whole namespace, and the bench scales them back up (unmeasured)
//! so that every controller starts from the same state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::Api;

use super::procfs;
use super::scenarios::{CONVERGE_TIMEOUT, apiserver_requests, merge_patch_all, wait_quiet};
use super::steady::{SteadyMeasurement, SteadyPlane};
use super::subject::{Limits, Subject};
use crate::ControlPlaneOptions;

/// kube-apiserver flags for the scale tier: its default in-flight limits (400 reads, 200
/// writes) are sized for a busy production server's share of a machine; here two clients (the
/// controller's initial lists and status writes, the bench's watches) are all there is, and a
/// 5,000-object status burst must not queue behind them.
pub const APISERVER_FLAGS: [&str; 2] = ["--max-requests-inflight=1000", "--max-mutating-requests-inflight=500"];

/// etcd flags for the scale tier: a backend quota of 8 GiB (default 2 GiB), since 100,000 pods
/// plus every status revision between compactions come close to the default.
pub const ETCD_FLAGS: [&str; 1] = ["--quota-backend-bytes=8589934592"];

/// The share of the pods the scale-down removes.
pub const SCALE_DOWN_SHARE: f64 = 0.01;

/// What one controller did at scale.
#[derive(Debug, Clone, Default)]
pub struct ScaleMeasurement {
    /// Start → synced and statuses current, CPU, RSS, idle CPU, requests.
    pub start: SteadyMeasurement,
    /// Seconds from the first scale-down patch to every ReplicaSet converged.
    pub scale_down: f64,
    /// The controller's CPU seconds over that window plus its trailing writes.
    pub scale_down_cpu: f64,
    /// API requests over that window, the bench's own excluded.
    pub scale_down_requests: f64,
}

/// The filled control plane.
pub struct ScalePlane {
    steady: SteadyPlane,
    per_rs: i32,
}

impl ScalePlane {
    /// Starts a control plane sized by [`APISERVER_FLAGS`] and [`ETCD_FLAGS`] and fills it with
    /// `rs × per_rs` pods.
    pub async fn prepare(rs: usize, per_rs: i32) -> Result<Self> {
        ensure!(rs >= 1, "the scale tier needs at least 1 ReplicaSet, got {rs}");
        ensure!(per_rs >= 2, "the scale tier needs at least 2 pods per ReplicaSet (it scales one away), got {per_rs}");
        let options = ControlPlaneOptions {
            extra_apiserver_args: APISERVER_FLAGS.map(String::from).to_vec(),
            extra_etcd_args: ETCD_FLAGS.map(String::from).to_vec(),
            startup_timeout: Duration::from_secs(180),
            ..ControlPlaneOptions::default()
        };
        Ok(Self { steady: SteadyPlane::prepare_with(rs, per_rs, options).await?, per_rs })
    }

    /// The ReplicaSets the scale-down shrinks by one: every n-th by name, 1 % of the pods.
    fn shrinking(&self) -> Vec<String> {
        let mut names: Vec<&String> = self.steady.expected().keys().collect();
        names.sort();
        let pods = names.len() * self.per_rs as usize;
        let count = ((pods as f64 * SCALE_DOWN_SHARE).round() as usize).clamp(1, names.len());
        let step = names.len() / count;
        names.into_iter().step_by(step).take(count).cloned().collect()
    }

    /// Starts `subject`, measures its start, then the scale-down; scales back and stops it.
    pub async fn run(
        &self,
        subject: Subject,
        limits: Limits,
        settle: Duration,
        idle: Duration,
    ) -> Result<ScaleMeasurement> {
        let converged = self.steady.start(subject, limits, settle, idle).await?;
        let outcome = async {
            let clients = &converged.clients;
            let rss: Api<ReplicaSet> = Api::namespaced(clients.client.clone(), self.steady.namespace());
            let shrinking = self.shrinking();
            let mut smaller: HashMap<String, i32> = self.steady.expected().clone();
            for name in &shrinking {
                smaller.insert(name.clone(), self.per_rs - 1);
            }
            let alive = || converged.ctrl.check_alive();
            let api_before = apiserver_requests(&clients.metrics).await?;
            let bench_before = clients.stats.snapshot().requests;
            let cpu_before = procfs::sample(converged.ctrl.pid())?.cpu_seconds;
            let t0 = Instant::now();
            set_replicas(&rss, &shrinking, self.per_rs - 1).await?;
            let done = converged.tracker.wait_converged(&smaller, CONVERGE_TIMEOUT, alive).await?;
            wait_quiet(&clients.metrics).await?;
            let scale_down_cpu = procfs::sample(converged.ctrl.pid())?.cpu_seconds - cpu_before;
            let scale_down_requests = apiserver_requests(&clients.metrics).await?
                - api_before
                - (clients.stats.snapshot().requests - bench_before) as f64;
            // Back to the plane's size, so the next controller starts where this one did.
            set_replicas(&rss, &shrinking, self.per_rs).await?;
            converged.tracker.wait_converged(self.steady.expected(), CONVERGE_TIMEOUT, alive).await?;
            anyhow::Ok(ScaleMeasurement {
                start: converged.measurement.clone(),
                scale_down: done.duration_since(t0).as_secs_f64(),
                scale_down_cpu,
                scale_down_requests,
            })
        }
        .await;
        converged.ctrl.stop();
        outcome
    }

    /// Stops the control plane.
    pub fn stop(&self) {
        self.steady.cp.stop();
    }

    /// How many pods the scale-down removes.
    pub fn scaled_away(&self) -> usize {
        self.shrinking().len()
    }
}

/// Sets `spec.replicas` of `names` to `replicas`.
async fn set_replicas(rss: &Api<ReplicaSet>, names: &[String], replicas: i32) -> Result<()> {
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    merge_patch_all(rss, names, &patch, false)
        .await
        .with_context(|| format!("scaling {} ReplicaSets to {replicas}", names.len()))
}
