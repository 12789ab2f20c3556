//! The raw limit: the same pods created and deleted by a plain client with no controller, the
//! ceiling a controller's creation rate is compared with.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};

use super::scenarios::{BENCH_CONCURRENCY, Measurement, Phase, SETTLE, Scenario, names, pod_like_controllers, warm_up};
use crate::ControlPlane;
use crate::controller::replica_set;

/// The raw limit: no controller; a plain unthrottled client (`TCP_NODELAY`, warmed pool) creates
/// the scenario's pods (owned by ReplicaSets of 0 replicas created beforehand),
/// [`BENCH_CONCURRENCY`] in flight, then deletes as many as the scale-down would.
pub(super) async fn run_raw(cp: &ControlPlane, scenario: Scenario) -> Result<Vec<(Phase, Measurement)>> {
    let ns = cp.create_namespace("bench").await?;
    let client = super::client::fast_client(cp.config())?.0;
    warm_up(cp, &client).await?;
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let mut owners = Vec::new();
    for name in names(scenario.rs) {
        let rs = rss.create(&PostParams::default(), &replica_set(&name, 0)).await?;
        owners.push((name, rs.metadata.uid.unwrap_or_default()));
    }
    tokio::time::sleep(SETTLE).await;
    let templates: Vec<Pod> = owners
        .iter()
        .flat_map(|(name, uid)| (0..scenario.replicas).map(move |_| pod_like_controllers(name, uid)))
        .collect();
    let t0 = Instant::now();
    let created: Vec<Pod> = futures::stream::iter(templates)
        .map(|pod| {
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &pod).await }
        })
        .buffer_unordered(BENCH_CONCURRENCY)
        .try_collect()
        .await
        .context("creating pods")?;
    let wall = t0.elapsed().as_secs_f64();
    let mut out = vec![(
        Phase::Create,
        Measurement { wall, pods: created.len(), pod_rate: created.len() as f64 / wall, ..Measurement::default() },
    )];
    if let Some(to) = scenario.scale_to {
        let mut per_owner: HashMap<String, Vec<String>> = HashMap::new();
        for pod in &created {
            let owner = pod.labels().get("app").cloned().unwrap_or_default();
            per_owner.entry(owner).or_default().push(pod.metadata.name.clone().unwrap_or_default());
        }
        let doomed: Vec<String> =
            per_owner.into_values().flat_map(|names| names.into_iter().skip(to as usize)).collect();
        tokio::time::sleep(SETTLE).await;
        let t0 = Instant::now();
        let n = doomed.len();
        futures::stream::iter(doomed)
            .map(|name| {
                let pods = pods.clone();
                async move { pods.delete(&name, &DeleteParams::default()).await }
            })
            .buffer_unordered(BENCH_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
            .context("deleting pods")?;
        let wall = t0.elapsed().as_secs_f64();
        out.push((
            Phase::ScaleDown,
            Measurement { wall, pods: n, pod_rate: n as f64 / wall, ..Measurement::default() },
        ));
    }
    Ok(out)
}

use kube::ResourceExt;
