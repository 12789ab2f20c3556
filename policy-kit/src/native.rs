//! Runs the default policy as native Rust (the `guest-replicaset` library): for the fixture
//! parity test, the native-vs-sandbox benchmark and `dry-run --native`.

use guest_replicaset::types as g;
use host::contract::{Plan, ReconcileError, ReplicaSet, ReplicaSetStatus, Snapshot, native::Cross};

/// A snapshot carried over once, so benchmarks time only the policy.
pub struct NativeSnapshot(g::Snapshot);

impl NativeSnapshot {
    /// Carries a contract snapshot over to the library's types.
    pub fn new(s: &Snapshot) -> Self {
        Self(s.cross())
    }

    /// The library's own snapshot.
    pub fn get(&self) -> &g::Snapshot {
        &self.0
    }
}

/// `reconcile` of the default policy, natively.
pub fn reconcile(snapshot: &NativeSnapshot) -> Result<Plan, ReconcileError> {
    guest_replicaset::reconcile(&snapshot.0).map(|plan| plan.cross()).map_err(|e| e.cross())
}

/// `status-after-scale-error` of the default policy, natively.
pub fn status_after_scale_error(
    rs: &ReplicaSet,
    plan_status: &ReplicaSetStatus,
    message: &str,
    now: i64,
) -> ReplicaSetStatus {
    guest_replicaset::status_after_scale_error(&rs.cross(), plan_status.cross(), message, now).cross()
}
