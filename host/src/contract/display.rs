//! How contract values read in logs, shadow differences and dry-run output: pods by name,
//! statuses and conditions on one line.

use std::fmt;

use super::{Condition, ReplicaSetStatus, Snapshot};

impl Snapshot {
    /// The name of pod `index` (or `#index` when there is no such pod).
    pub fn pod_name(&self, index: u32) -> String {
        self.pods
            .get(index as usize)
            .and_then(|p| self.pod_strings.get(p.name.start as usize..(p.name.start + p.name.len) as usize))
            .map_or_else(|| format!("#{index}"), str::to_string)
    }

    /// The names of pods `indices`, comma-separated.
    pub fn pod_names(&self, indices: &[u32]) -> String {
        indices.iter().map(|&i| self.pod_name(i)).collect::<Vec<_>>().join(", ")
    }
}

/// `replicas 3 · fullyLabeled 3 · ready 2 · available 2 · terminating - · observedGeneration 1`.
impl fmt::Display for ReplicaSetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terminating = self.terminating_replicas.map_or_else(|| "-".to_string(), |t| t.to_string());
        write!(
            f,
            "replicas {} · fullyLabeled {} · ready {} · available {} · terminating {terminating} · observedGeneration {}",
            self.replicas,
            self.fully_labeled_replicas,
            self.ready_replicas,
            self.available_replicas,
            self.observed_generation
        )
    }
}

/// A condition list as `[Type=Status Reason "message", ...]`.
pub struct Conditions<'a>(pub &'a [Condition]);

impl fmt::Display for Conditions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.0.iter().map(|c| format!("{}={} {} {:?}", c.condition_type, c.status, c.reason, c.message)).collect();
        write!(f, "[{}]", parts.join(", "))
    }
}
