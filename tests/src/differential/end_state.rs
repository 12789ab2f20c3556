//! What a scenario leaves behind, in terms both controllers must agree on, and a readable diff.
//!
//! Pods are named by their stable `diff.test/id` (pods a controller created after the last
//! [`super::Step::Identify`] show as `new`). Events are compared as the *set* of `type/reason` per
//! ReplicaSet: both sides filter spam the same way (client-go's correlator), but how many events a
//! burst produces depends on timing.

use std::collections::BTreeSet;
use std::fmt;

/// Facts about one pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodFacts {
    /// Its `diff.test/id`, if it has one.
    pub id: Option<u32>,
    /// Its `app` label.
    pub app: String,
    /// `status.phase` (`Pending` if unset).
    pub phase: String,
    /// Has a `deletionTimestamp` (a bound pod deleted gracefully stays, as no kubelet runs).
    pub terminating: bool,
    /// Has a controller owner reference.
    pub owned: bool,
}

impl PodFacts {
    fn label(&self) -> String {
        self.id.map_or_else(|| "new".to_string(), |id| id.to_string())
    }

    fn is_finished(&self) -> bool {
        self.phase == "Succeeded" || self.phase == "Failed"
    }
}

/// The ReplicaSet status fields compared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusFields {
    /// `replicas`.
    pub replicas: i32,
    /// `fullyLabeledReplicas`.
    pub fully_labeled: i32,
    /// `readyReplicas`.
    pub ready: i32,
    /// `availableReplicas`.
    pub available: i32,
    /// `terminatingReplicas` (unset when the feature is off).
    pub terminating: Option<i32>,
    /// `observedGeneration`.
    pub observed_generation: i64,
    /// `type=status/reason` of each condition, sorted.
    pub conditions: Vec<String>,
}

/// One ReplicaSet's end state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSetState {
    /// Name.
    pub name: String,
    /// `spec.replicas`.
    pub spec_replicas: i32,
    /// `metadata.generation`.
    pub generation: i64,
    /// The pods it owns (controller reference), sorted.
    pub pods: Vec<PodFacts>,
    /// Status.
    pub status: StatusFields,
    /// `type/reason` of the Events about it.
    pub events: BTreeSet<String>,
}

/// A scenario's end state: each ReplicaSet it created, and the pods no such ReplicaSet owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndState {
    /// Fields recorded by [`super::Step::Snapshot`] along the way, in order.
    pub snapshots: Vec<(String, String)>,
    /// Per ReplicaSet, in creation order.
    pub replica_sets: Vec<ReplicaSetState>,
    /// Pods without an owner among the scenario's ReplicaSets, sorted.
    pub unowned: Vec<PodFacts>,
}

impl EndState {
    /// Builds an end state, sorting pods so that equal states compare equal.
    pub fn new(
        snapshots: Vec<(String, String)>,
        mut replica_sets: Vec<ReplicaSetState>,
        mut unowned: Vec<PodFacts>,
    ) -> Self {
        for rs in &mut replica_sets {
            rs.pods.sort();
        }
        unowned.sort();
        Self { snapshots, replica_sets, unowned }
    }

    /// The end state as ordered `(field, value)` pairs: what is compared and shown.
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut out = self.snapshots.clone();
        for rs in &self.replica_sets {
            let n = &rs.name;
            let pods = |keep: &dyn Fn(&PodFacts) -> bool| -> String {
                let mut chosen: Vec<&PodFacts> = rs.pods.iter().filter(|p| keep(p)).collect();
                chosen.sort_by_key(|p| (p.id.is_none(), p.id)); // ids, then the pods without one
                let chosen: Vec<String> = chosen.into_iter().map(PodFacts::label).collect();
                if chosen.is_empty() { "-".to_string() } else { format!("{} [{}]", chosen.len(), chosen.join(" ")) }
            };
            out.push((format!("{n}.spec"), format!("replicas={} generation={}", rs.spec_replicas, rs.generation)));
            out.push((format!("{n}.pods.active"), pods(&|p| !p.terminating && !p.is_finished())));
            out.push((format!("{n}.pods.terminating"), pods(&|p| p.terminating)));
            out.push((format!("{n}.pods.finished"), pods(&|p| !p.terminating && p.is_finished())));
            let s = &rs.status;
            out.push((format!("{n}.status.replicas"), s.replicas.to_string()));
            out.push((format!("{n}.status.fullyLabeledReplicas"), s.fully_labeled.to_string()));
            out.push((format!("{n}.status.readyReplicas"), s.ready.to_string()));
            out.push((format!("{n}.status.availableReplicas"), s.available.to_string()));
            out.push((
                format!("{n}.status.terminatingReplicas"),
                s.terminating.map_or_else(|| "unset".to_string(), |t| t.to_string()),
            ));
            out.push((format!("{n}.status.observedGeneration"), s.observed_generation.to_string()));
            out.push((format!("{n}.status.conditions"), list(s.conditions.iter())));
            out.push((format!("{n}.events"), list(rs.events.iter())));
        }
        let unowned: Vec<String> = self
            .unowned
            .iter()
            .map(|p| {
                let mut s = format!("{}(app={} {}", p.label(), p.app, p.phase);
                if p.terminating {
                    s.push_str(" terminating");
                }
                if p.owned {
                    s.push_str(" owned-elsewhere");
                }
                s.push(')');
                s
            })
            .collect();
        out.push(("unowned pods".to_string(), list(unowned.iter())));
        out
    }
}

fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let items: Vec<&str> = items.map(String::as_str).collect();
    if items.is_empty() { "-".to_string() } else { items.join(" ") }
}

impl fmt::Display for EndState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in self.fields() {
            writeln!(f, "{key}: {value}")?;
        }
        Ok(())
    }
}

/// One field on which two end states differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    /// The field.
    pub field: String,
    /// Upstream's value (`absent` if the field is not there).
    pub upstream: String,
    /// The host's value.
    pub host: String,
}

/// The fields on which `upstream` and `host` differ, in field order.
pub fn diff(upstream: &EndState, host: &EndState) -> Vec<FieldDiff> {
    let a = upstream.fields();
    let b = host.fields();
    let mut keys: Vec<&String> = a.iter().map(|(k, _)| k).collect();
    for (k, _) in &b {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let get = |fields: &[(String, String)], key: &str| {
        fields.iter().find(|(k, _)| k == key).map_or_else(|| "absent".to_string(), |(_, v)| v.clone())
    };
    keys.into_iter()
        .filter_map(|k| {
            let (u, h) = (get(&a, k), get(&b, k));
            (u != h).then(|| FieldDiff { field: k.clone(), upstream: u, host: h })
        })
        .collect()
}
