//! What one guest call may spend: fuel and linear memory, scaled by what its snapshot carries.
//!
//! A budget that grew only with the pod count let a few pods with thousands of labels exhaust
//! every call of their namespace. The budget now counts what the guest must actually read:
//!
//! - fuel = `fuel_base` + `fuel_per_pod` × pods + `fuel_per_label` × labels, where labels are
//!   the entries of every interned label set (a set shared by many pods counts once, as the
//!   guest reads it once). The default policy spends about 550 units per label it reads and
//!   4,000 per pod; the defaults leave 4× and 25× that.
//! - memory = `memory_bytes` + `memory_per_input_byte` × the snapshot's bytes (pod strings,
//!   label keys and values, node names), never above `memory_max_bytes`, the size of an
//!   instance slot. The guest holds its input once, plus what it builds from it.
//!
//! Both are deterministic for a given snapshot, so a snapshot either always fits or always
//! fails, on every node.

use super::SandboxLimits;
use crate::contract::Snapshot;

/// The limits of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudget {
    /// Fuel units.
    pub fuel: u64,
    /// Largest linear memory, in bytes.
    pub memory: usize,
}

impl CallBudget {
    /// The budget of a `reconcile` call on `snapshot`.
    pub fn for_snapshot(limits: &SandboxLimits, snapshot: &Snapshot) -> Self {
        let labels: usize = snapshot.label_sets.iter().map(Vec::len).sum();
        let fuel = limits
            .fuel_base
            .saturating_add(limits.fuel_per_pod.saturating_mul(snapshot.pods.len() as u64))
            .saturating_add(limits.fuel_per_label.saturating_mul(labels as u64));
        Self { fuel, memory: memory_for(limits, input_bytes(snapshot)) }
    }

    /// The budget of a call that carries no snapshot (`status-after-scale-error`).
    pub fn base(limits: &SandboxLimits) -> Self {
        Self { fuel: limits.fuel_base, memory: memory_for(limits, 0) }
    }
}

fn memory_for(limits: &SandboxLimits, input: usize) -> usize {
    let cap = limits.memory_max_bytes.max(limits.memory_bytes);
    limits.memory_bytes.saturating_add(limits.memory_per_input_byte.saturating_mul(input)).min(cap)
}

/// The bytes of text a snapshot carries into the guest.
pub fn input_bytes(snapshot: &Snapshot) -> usize {
    let labels: usize = snapshot.label_sets.iter().flatten().map(|label| label.key.len() + label.value.len()).sum();
    let nodes: usize = snapshot.nodes.iter().map(|node| node.name.len()).sum();
    snapshot.pod_strings.len() + labels + nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{numbered_labels as labels, snapshot_with_label_sets as snapshot};

    #[test]
    fn fuel_grows_with_every_label_the_guest_reads() {
        let limits = SandboxLimits::default();
        let small = CallBudget::for_snapshot(&limits, &snapshot(vec![labels(1)]));
        let large = CallBudget::for_snapshot(&limits, &snapshot(vec![labels(1), labels(10_000)]));
        assert_eq!(large.fuel - small.fuel, 10_000 * limits.fuel_per_label);
    }

    #[test]
    fn memory_grows_with_the_input_up_to_the_slot_size() {
        let limits = SandboxLimits::default();
        let empty = CallBudget::for_snapshot(&limits, &snapshot(vec![]));
        assert_eq!(empty.memory, limits.memory_bytes);
        let big = snapshot(vec![labels(100_000)]);
        let grown = CallBudget::for_snapshot(&limits, &big);
        assert_eq!(grown.memory, limits.memory_bytes + limits.memory_per_input_byte * input_bytes(&big));
        let huge = SandboxLimits { memory_per_input_byte: 1 << 20, ..SandboxLimits::default() };
        assert_eq!(CallBudget::for_snapshot(&huge, &big).memory, huge.memory_max_bytes);
    }
}
