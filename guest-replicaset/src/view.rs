//! Validated read access to a snapshot: span text, interned label sets, the node table.
//!
//! The snapshot's layout (see `wit/replicaset.wit`) points into itself: pods carry `span`s into
//! `pod-strings` and indices into `label-sets` and `nodes`. [`View::new`] checks every one of
//! those once, so the rest of the policy reads them without re-checking and can never panic on
//! a malformed snapshot; a bad index is reported as [`ReconcileError::InvalidSnapshot`] naming
//! the field and the pod.

use crate::types::{Label, Node, Pod, PodPhase, ReconcileError, ReplicaSet, Snapshot, Span};

/// A snapshot whose every span and index is known to be in range.
#[derive(Clone, Copy)]
pub struct View<'a> {
    snapshot: &'a Snapshot,
}

impl<'a> View<'a> {
    /// Checks every span and index of `snapshot` against the tables they point into.
    ///
    /// The error names the first bad field, e.g. `pods[3].node: index 7 is out of range (2 nodes)`.
    pub fn new(snapshot: &'a Snapshot) -> Result<Self, ReconcileError> {
        // The plan refers to pods by u32 index, so more pods could not be addressed.
        if u32::try_from(snapshot.pods.len()).is_err() {
            return Err(invalid(format!("pods: {} pods do not fit u32 indices", snapshot.pods.len())));
        }
        let template = snapshot.replica_set.template_labels;
        if template as usize >= snapshot.label_sets.len() {
            return Err(invalid(format!(
                "replica-set.template-labels: index {template} is out of range ({} label sets)",
                snapshot.label_sets.len()
            )));
        }
        for (i, pod) in snapshot.pods.iter().enumerate() {
            check_span(snapshot, i, "name", pod.name)?;
            check_span(snapshot, i, "namespace", pod.namespace)?;
            check_span(snapshot, i, "uid", pod.uid)?;
            if let Some(cost) = pod.deletion_cost {
                check_span(snapshot, i, "deletion-cost", cost)?;
            }
            if pod.labels as usize >= snapshot.label_sets.len() {
                return Err(invalid(format!(
                    "pods[{i}].labels: index {} is out of range ({} label sets)",
                    pod.labels,
                    snapshot.label_sets.len()
                )));
            }
            if pod.node as usize >= snapshot.nodes.len() {
                return Err(invalid(format!(
                    "pods[{i}].node: index {} is out of range ({} nodes)",
                    pod.node,
                    snapshot.nodes.len()
                )));
            }
        }
        Ok(View { snapshot })
    }

    /// The whole snapshot.
    pub fn snapshot(&self) -> &'a Snapshot {
        self.snapshot
    }

    /// The ReplicaSet being synced.
    pub fn replica_set(&self) -> &'a ReplicaSet {
        &self.snapshot.replica_set
    }

    /// The instant of this sync (nanoseconds since the epoch).
    pub fn now(&self) -> i64 {
        self.snapshot.now
    }

    /// All candidate pods, indexed as the plan refers to them.
    pub fn pods(&self) -> &'a [Pod] {
        &self.snapshot.pods
    }

    /// The pod at `index` (an index into `snapshot.pods`).
    pub fn pod(&self, index: u32) -> &'a Pod {
        &self.snapshot.pods[index as usize]
    }

    /// The text a span of this snapshot points at.
    pub fn text(&self, span: Span) -> &'a str {
        let start = span.start as usize;
        // In range and on character boundaries: `View::new` checked every span of the snapshot.
        &self.snapshot.pod_strings[start..start + span.len as usize]
    }

    /// The interned label set at `index` (`pod.labels`, `replica-set.template-labels`).
    pub fn label_set(&self, index: u32) -> &'a [Label] {
        &self.snapshot.label_sets[index as usize]
    }

    /// The node at `index` (`pod.node`).
    pub fn node(&self, index: u32) -> &'a Node {
        &self.snapshot.nodes[index as usize]
    }

    /// `metadata.name` of a pod.
    pub fn pod_name(&self, pod: &Pod) -> &'a str {
        self.text(pod.name)
    }

    /// `metadata.namespace` of a pod.
    pub fn pod_namespace(&self, pod: &Pod) -> &'a str {
        self.text(pod.namespace)
    }

    /// `metadata.uid` of a pod.
    pub fn pod_uid(&self, pod: &Pod) -> &'a str {
        self.text(pod.uid)
    }

    /// The raw `controller.kubernetes.io/pod-deletion-cost` annotation of a pod, if set.
    pub fn pod_deletion_cost(&self, pod: &Pod) -> Option<&'a str> {
        pod.deletion_cost.map(|span| self.text(span))
    }
}

/// Mirrors `IsPodActive`: not terminating and not terminated.
pub fn is_pod_active(pod: &Pod) -> bool {
    pod.deletion_timestamp.is_none() && !is_pod_terminal(pod)
}

/// Mirrors `IsPodTerminating`: deletion requested, containers not yet finished.
pub fn is_pod_terminating(pod: &Pod) -> bool {
    pod.deletion_timestamp.is_some() && !is_pod_terminal(pod)
}

fn is_pod_terminal(pod: &Pod) -> bool {
    matches!(pod.phase, PodPhase::Succeeded | PodPhase::Failed)
}

/// Finds `key` in a label set; label sets are small, so a scan beats building a map.
pub fn label_value<'l>(labels: &'l [Label], key: &str) -> Option<&'l str> {
    labels.iter().find(|label| label.key == key).map(|label| label.value.as_str())
}

fn check_span(snapshot: &Snapshot, pod: usize, field: &str, span: Span) -> Result<(), ReconcileError> {
    let start = span.start as usize;
    let end = start.checked_add(span.len as usize);
    // `str::get` is None both past the end and inside a multi-byte character.
    if end.and_then(|end| snapshot.pod_strings.get(start..end)).is_none() {
        return Err(invalid(format!(
            "pods[{pod}].{field}: span {}+{} is not a character range of pod-strings ({} bytes)",
            span.start,
            span.len,
            snapshot.pod_strings.len()
        )));
    }
    Ok(())
}

fn invalid(message: String) -> ReconcileError {
    ReconcileError::InvalidSnapshot(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    fn error(snapshot: &Snapshot) -> String {
        match View::new(snapshot) {
            Err(ReconcileError::InvalidSnapshot(message)) => message,
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("snapshot unexpectedly valid"),
        }
    }

    #[test]
    fn a_built_snapshot_is_valid_and_reads_back() {
        let snap = snapshot(rs("foobar")).pod(pod("a").on("node-1").cost("5")).build();
        let view = View::new(&snap).unwrap();
        let a = view.pod(0);
        assert_eq!(view.pod_name(a), "a");
        assert_eq!(view.pod_namespace(a), "default");
        assert_eq!(view.pod_uid(a), "uid-a");
        assert_eq!(view.pod_deletion_cost(a), Some("5"));
        assert_eq!(view.node(a.node).name, "node-1");
        assert_eq!(label_value(view.label_set(a.labels), "foo"), Some("bar"));
    }

    #[test]
    fn a_pod_label_index_out_of_range_is_an_invalid_snapshot() {
        let mut snap = snapshot(rs("foobar")).pod(pod("a")).pod(pod("b")).build();
        snap.pods[1].labels = 9;
        let sets = snap.label_sets.len();
        assert_eq!(error(&snap), format!("pods[1].labels: index 9 is out of range ({sets} label sets)"));
    }

    #[test]
    fn a_node_index_out_of_range_is_an_invalid_snapshot() {
        let mut snap = snapshot(rs("foobar")).pod(pod("a")).build();
        snap.pods[0].node = 7;
        assert_eq!(error(&snap), "pods[0].node: index 7 is out of range (1 nodes)");
    }

    #[test]
    fn a_template_label_index_out_of_range_is_an_invalid_snapshot() {
        let mut snap = snapshot(rs("foobar")).build();
        snap.replica_set.template_labels = 5;
        let sets = snap.label_sets.len();
        assert_eq!(error(&snap), format!("replica-set.template-labels: index 5 is out of range ({sets} label sets)"));
    }

    #[test]
    fn a_span_past_the_end_of_pod_strings_is_an_invalid_snapshot() {
        let mut snap = snapshot(rs("foobar")).pod(pod("a")).build();
        let len = snap.pod_strings.len() as u32;
        snap.pods[0].uid = Span { start: len - 1, len: 2 };
        assert_eq!(
            error(&snap),
            format!("pods[0].uid: span {}+2 is not a character range of pod-strings ({len} bytes)", len - 1)
        );
    }

    #[test]
    fn a_span_whose_end_overflows_is_an_invalid_snapshot() {
        let mut snap = snapshot(rs("foobar")).pod(pod("a")).build();
        snap.pods[0].name = Span { start: u32::MAX, len: u32::MAX };
        assert!(error(&snap).starts_with("pods[0].name: span 4294967295+4294967295 is not"));
    }

    #[test]
    fn a_span_splitting_a_character_is_an_invalid_snapshot() {
        let mut snap = snapshot(rs("foobar")).pod(pod("a")).build();
        let start = snap.pod_strings.len() as u32;
        snap.pod_strings.push('é');
        snap.pods[0].deletion_cost = Some(Span { start, len: 1 });
        assert!(error(&snap).starts_with("pods[0].deletion-cost: span"));
    }

    #[test]
    fn activity_and_termination_follow_deletion_timestamp_and_phase() {
        let snap = snapshot(rs("foobar"))
            .pod(pod("running").running())
            .pod(pod("succeeded").phase(PodPhase::Succeeded))
            .pod(pod("failed").phase(PodPhase::Failed))
            .pod(pod("deleting").running().deleting(T0))
            .pod(pod("deleted-failed").phase(PodPhase::Failed).deleting(T0))
            .build();
        let active: Vec<bool> = snap.pods.iter().map(is_pod_active).collect();
        let terminating: Vec<bool> = snap.pods.iter().map(is_pod_terminating).collect();
        assert_eq!(active, [true, false, false, false, false]);
        assert_eq!(terminating, [false, false, false, true, false]);
    }
}
