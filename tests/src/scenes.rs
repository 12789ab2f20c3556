//! Scenes several test files stage: the live pods of a namespace, scaling a ReplicaSet, and three
//! ready pods where the oldest became ready last (where upstream's ranking and the newest-first
//! example guest pick different victims).

use std::time::Duration;

use anyhow::Result;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{apps::v1::ReplicaSet, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::api::{ListParams, Patch, PatchParams, PostParams};

use crate::{TestNamespace, eventually, pods};

/// Names of the pods of `ns` that are not being deleted.
pub async fn live_pods(ns: &TestNamespace) -> Result<Vec<String>> {
    let pods = ns.api::<Pod>().list(&ListParams::default()).await?.items;
    Ok(pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).filter_map(|p| p.metadata.name).collect())
}

/// Waits until `ns` has exactly `count` live pods; returns their names.
pub async fn wait_live_pods(ns: &TestNamespace, count: usize) -> Result<Vec<String>> {
    eventually(&format!("{count} live pods"), Duration::from_secs(30), || async {
        let live = live_pods(ns).await?;
        Ok((live.len() == count).then_some(live))
    })
    .await
}

/// Sets `spec.replicas` of ReplicaSet `name`.
pub async fn scale(ns: &TestNamespace, name: &str, replicas: i32) -> Result<()> {
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    ns.api::<ReplicaSet>().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Creates `rs` (of any size) in `ns` and brings it to 3 running, bound, ready pods where the
/// OLDEST pod became ready last: upstream's ranking deletes it first (most recently ready),
/// newest-first keeps it. Needs a controller running. Returns the oldest pod's name.
pub async fn three_pods_oldest_ready_last(ns: &TestNamespace, mut rs: ReplicaSet) -> Result<String> {
    let name = rs.metadata.name.clone().unwrap_or_default();
    rs.spec.replicas = Some(1);
    ns.api::<ReplicaSet>().create(&PostParams::default(), &rs).await?;
    let oldest = wait_live_pods(ns, 1).await?.remove(0);
    // creationTimestamp has one-second resolution: make the others visibly younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    scale(ns, &name, 3).await?;
    let all = wait_live_pods(ns, 3).await?;
    let client = ns.client();
    let node = format!("{}-node", ns.name());
    pods::create_node(client, &node).await?;
    for pod in &all {
        pods::bind_pod(client, ns.name(), pod, &node).await?;
        let since = if *pod == oldest { Timestamp::now() } else { Timestamp::now() - SignedDuration::from_hours(2) };
        pods::set_pod_running(client, ns.name(), pod, true, Time(since)).await?;
    }
    eventually("3 ready replicas", Duration::from_secs(30), || async {
        let status = ns.api::<ReplicaSet>().get(&name).await?.status.unwrap_or_default();
        Ok((status.ready_replicas == Some(3)).then_some(()))
    })
    .await?;
    Ok(oldest)
}
