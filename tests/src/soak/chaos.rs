//! What a soak does to the cluster: random scales, pod deletions, readiness flaps and node
//! drains, and the network fault of the moment between the host and the API server.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::TestNamespace;
use crate::live::switch_behaviour;
use crate::toxiproxy::{PeriodicResets, Proxy, Toxic, Toxiproxy};

/// The pod behaviour whose readiness flaps (defined by the soak's live cluster).
pub const FLAP: &str = "flap";
/// The behaviour pods return to: Ready at once.
pub const STEADY: &str = "steady";

/// A small seeded generator (splitmix64), so a soak's choices can be replayed with its seed.
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The network fault between the host and the API server during one 30 s slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 200 ms ± 100 ms each way.
    Latency,
    /// Every connection with traffic reset every 5 s.
    Resets,
    /// A blackhole for the first 10 s of the slot, then nothing.
    Partition,
    /// No fault.
    Clear,
}

impl Fault {
    /// The order slots go through; a 2-minute soak sees each once.
    pub const CYCLE: [Self; 4] = [Self::Latency, Self::Resets, Self::Partition, Self::Clear];

    /// How long the partition of a [`Fault::Partition`] slot lasts.
    pub const PARTITION: Duration = Duration::from_secs(10);

    /// Puts this fault on `proxy`; the resets of [`Fault::Resets`] go on until they are stopped.
    pub async fn apply(self, toxiproxy: &Toxiproxy, proxy: &Proxy) -> Result<Option<PeriodicResets>> {
        match self {
            Self::Latency => {
                let latency =
                    Toxic::Latency { latency: Duration::from_millis(200), jitter: Duration::from_millis(100) };
                toxiproxy.add_both_ways(proxy, "soak", latency).await?;
            }
            Self::Resets => return Ok(Some(toxiproxy.periodic_resets(proxy, Duration::from_secs(5)))),
            Self::Partition => toxiproxy.add_both_ways(proxy, "soak", Toxic::Timeout { after: Duration::ZERO }).await?,
            Self::Clear => {}
        }
        Ok(None)
    }

    /// Removes whatever fault `proxy` has.
    pub async fn clear(toxiproxy: &Toxiproxy, proxy: &Proxy) -> Result<()> {
        for name in toxiproxy.toxics(proxy).await? {
            toxiproxy.remove(proxy, &name).await?;
        }
        Ok(())
    }
}

/// The names of the pods of `ns` that are not being deleted, excluding `except`.
pub async fn live_pods(ns: &TestNamespace, except: &[String]) -> Result<Vec<Pod>> {
    let pods = ns.api::<Pod>().list(&ListParams::default()).await?.items;
    Ok(pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !except.iter().any(|e| Some(e) == p.metadata.name.as_ref()))
        .collect())
}

/// Deletes one random pod of `ns` (not in `except`); returns its name.
pub async fn delete_random_pod(ns: &TestNamespace, dice: &mut Dice, except: &[String]) -> Result<Option<String>> {
    let pods = live_pods(ns, except).await?;
    if pods.is_empty() {
        return Ok(None);
    }
    let name = pods[dice.below(pods.len())].metadata.name.clone().unwrap_or_default();
    ns.api::<Pod>().delete(&name, &DeleteParams::default()).await?;
    Ok(Some(name))
}

/// Switches one random pod to the flapping behaviour, or back to steady if it flaps already.
pub async fn flap_random_pod(ns: &TestNamespace, dice: &mut Dice, except: &[String]) -> Result<Option<String>> {
    let pods = live_pods(ns, except).await?;
    if pods.is_empty() {
        return Ok(None);
    }
    let pod = &pods[dice.below(pods.len())];
    let flapping = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.get(crate::stages::BEHAVIOUR_ANNOTATION).map(String::as_str) == Some(FLAP));
    let name = pod.metadata.name.clone().unwrap_or_default();
    switch_behaviour(&ns.api(), &name, if flapping { STEADY } else { FLAP }).await?;
    Ok(Some(name))
}

/// Drains `node` of `ns`'s pods: cordons it and evicts them, as `kubectl drain` does.
pub async fn drain(ns: &TestNamespace, node: &str) -> Result<usize> {
    cordon(ns.client(), node, true).await?;
    let pods = ns.api::<Pod>();
    let on_node = pods.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await?.items;
    let mut evicted = 0;
    // Only pods of ReplicaSets: the others are the decoys, protected to prove the host never
    // deletes a pod it does not own, so the chaos must not delete them either.
    let of_replica_sets = on_node.into_iter().filter(|pod| {
        pod.metadata.owner_references.iter().flatten().any(|o| o.controller == Some(true) && o.kind == "ReplicaSet")
    });
    for pod in of_replica_sets {
        let name = pod.metadata.name.unwrap_or_default();
        if pods.evict(&name, &EvictParams::default()).await.is_ok() {
            evicted += 1;
        }
    }
    Ok(evicted)
}

/// Marks `node` unschedulable (or schedulable again).
pub async fn cordon(client: &kube::Client, node: &str, unschedulable: bool) -> Result<()> {
    let patch = json!({"spec": {"unschedulable": unschedulable}});
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("cordoning {node}: {unschedulable}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dice_replay_from_a_seed_and_stay_in_range() {
        let (mut a, mut b) = (Dice::new(7), Dice::new(7));
        let rolls: Vec<usize> = (0..100).map(|_| a.below(6)).collect();
        assert_eq!(rolls, (0..100).map(|_| b.below(6)).collect::<Vec<_>>());
        assert!(rolls.iter().all(|&r| r < 6));
        assert!((0..6).all(|face| rolls.contains(&face)), "{rolls:?}");
    }
}
