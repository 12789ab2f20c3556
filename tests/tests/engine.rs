//! The host's engine on a real API server: upstream's integration cases and the mechanism.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use kube::api::{ListParams, PostParams};
use tests::{
    controller::{replica_set, start_controller},
    eventually, ns,
};

#[tokio::test]
async fn a_replica_set_of_three_gets_three_pods_and_its_status() -> Result<()> {
    let ns = ns().await?;
    let controller = start_controller(&ns, &[]).await?;
    let rss = ns.api::<ReplicaSet>();
    rss.create(&PostParams::default(), &replica_set("web", 3)).await?;
    let pods = ns.api::<Pod>();
    eventually("3 pods", Duration::from_secs(30), || async {
        let n = pods.list(&ListParams::default()).await?.items.len();
        Ok((n == 3).then_some(()))
    })
    .await?;
    eventually("status.replicas 3, observedGeneration 1", Duration::from_secs(30), || async {
        let rs = rss.get("web").await?;
        let s = rs.status.unwrap_or_default();
        Ok((s.replicas == 3 && s.observed_generation == Some(1)).then_some(()))
    })
    .await?;
    controller.shutdown().await;
    Ok(())
}
