//! Reads what a scenario left behind off the API server (pods, statuses, events) and waits for
//! it to settle.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Result, bail};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::ListParams;

use super::end_state::{EndState, PodFacts, ReplicaSetState, StatusFields};
use super::runner::{SETTLE_FOR, SETTLE_TIMEOUT};
use super::scenario::ID_ANNOTATION;
use crate::TestNamespace;
use crate::pods::controller_uid;

/// Captures the end state until two captures [`SETTLE_FOR`] apart agree.
pub async fn settled(ns: &TestNamespace, replica_sets: &[&str], snapshots: &[(String, String)]) -> Result<EndState> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last = end_state(ns, replica_sets, snapshots).await?;
    loop {
        tokio::time::sleep(SETTLE_FOR).await;
        let current = end_state(ns, replica_sets, snapshots).await?;
        if current == last {
            return Ok(current);
        }
        if Instant::now() >= deadline {
            bail!("the end state still changes after {SETTLE_TIMEOUT:?}; last two:\n{last}\n---\n{current}");
        }
        last = current;
    }
}

/// The end state as it stands: each ReplicaSet's pods, status and event reasons, and the pods
/// no scenario ReplicaSet owns.
pub async fn end_state(ns: &TestNamespace, names: &[&str], snapshots: &[(String, String)]) -> Result<EndState> {
    let pods = ns.api::<Pod>().list(&ListParams::default()).await?.items;
    let events = ns.api::<Event>().list(&ListParams::default()).await?.items;
    let mut owned_by: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    let mut unowned = Vec::new();
    for pod in &pods {
        match controller_uid(pod) {
            Some(uid) => owned_by.entry(uid.to_string()).or_default().push(pod),
            None => unowned.push(facts(pod)),
        }
    }
    let mut replica_sets = Vec::new();
    for &name in names {
        let rs = ns.api::<ReplicaSet>().get(name).await?;
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let owned = owned_by.remove(&uid).unwrap_or_default();
        let status = rs.status.clone().unwrap_or_default();
        let mut conditions: Vec<String> = status
            .conditions
            .iter()
            .flatten()
            .map(|c| {
                let field = |f: &Option<String>| f.clone().unwrap_or_default();
                format!("{}={}/{}", field(&c.type_), field(&c.status), field(&c.reason))
            })
            .collect();
        conditions.sort();
        let events: BTreeSet<String> = events
            .iter()
            .filter(|e| {
                e.involved_object.kind.as_deref() == Some("ReplicaSet")
                    && e.involved_object.name.as_deref() == Some(name)
            })
            .map(|e| format!("{}/{}", e.type_.as_deref().unwrap_or("?"), e.reason.as_deref().unwrap_or("?")))
            .collect();
        replica_sets.push(ReplicaSetState {
            name: name.to_string(),
            spec_replicas: rs.spec.replicas.unwrap_or(1),
            generation: rs.metadata.generation.unwrap_or(0),
            pods: owned.iter().map(|p| facts(p)).collect(),
            status: StatusFields {
                replicas: status.replicas,
                fully_labeled: status.fully_labeled_replicas.unwrap_or(0),
                ready: status.ready_replicas.unwrap_or(0),
                available: status.available_replicas.unwrap_or(0),
                terminating: status.terminating_replicas,
                observed_generation: status.observed_generation.unwrap_or(0),
                conditions,
            },
            events,
        });
    }
    // Pods owned by something else than the scenario's ReplicaSets count as unowned here.
    unowned.extend(owned_by.values().flatten().map(|p| facts(p)));
    Ok(EndState::new(snapshots.to_vec(), replica_sets, unowned))
}

fn facts(pod: &Pod) -> PodFacts {
    let status = pod.status.as_ref();
    PodFacts {
        id: pod_id(pod),
        app: pod.metadata.labels.as_ref().and_then(|l| l.get("app")).cloned().unwrap_or_default(),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".to_string()),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        owned: controller_uid(pod).is_some(),
    }
}

/// The pod's `diff.test/id`.
pub fn pod_id(pod: &Pod) -> Option<u32> {
    pod.metadata.annotations.as_ref()?.get(ID_ANNOTATION)?.parse().ok()
}
