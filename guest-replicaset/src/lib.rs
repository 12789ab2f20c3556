//! The upstream ReplicaSet policy as a pure function.
//!
//! Start at [`reconcile`]: it is the pure half of upstream's `syncReplicaSet` (claim, scale,
//! status, requeue) over one [`types::Snapshot`]. [`reconcile_with`] is the same pipeline with
//! the choice of deletion victims left to the caller, for guests that differ from upstream only
//! there; [`status_after_scale_error`] is the status to write when the host's scaling failed.
//!
//! The modules follow the pipeline's data flow; each names the upstream function it mirrors:
//! - [`view`] — validated read access to a snapshot (spans, label sets, nodes).
//! - [`selector`] — `metav1.LabelSelectorAsSelector`, its validation and matching.
//! - [`claims`] — `FilterActivePods` and `ClaimPods` (adopt, release, keep).
//! - [`diff`] — `manageReplicas`' arithmetic (how many to create, how many to delete).
//! - [`rank`] — `getPodsToDelete` and `ActivePodsWithRanks.Less`, the deletion ranking.
//! - [`deletion_cost`] — `GetDeletionCostFromPodAnnotations`.
//! - [`log_scale`] — the log2 age buckets of `logarithmicRankDiff`, exactly as Go computes them.
//! - [`sort`] — the stable merge sort the ranking uses (never panics on an inconsistent order).
//! - [`status`] — `calculateStatus` and the status after a failed scale.
//! - [`condition`] — `GetCondition`, `SetCondition`, `RemoveCondition`.
//! - [`availability`] — `IsPodAvailable` and `FindMinNextPodAvailabilityCheck`.
//! - `alloc` (wasm only) — the bump allocator every call's fresh instance uses.
//!
//! Everything except the `impl Guest` below is plain Rust over the generated types, which compile
//! natively too, so the policy is unit-tested with `cargo test` and callable from the host.
#![deny(missing_docs)]
extern crate self as guest_replicaset;

// The generated code is documented from the WIT where it can be; the rest is wit-bindgen's.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "replicaset-policy",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_policy",
        default_bindings_module: "guest_replicaset::bindings",
        // Plans and statuses are compared whole, in tests and by guests.
        additional_derives: [PartialEq],
    });
}

#[cfg(target_arch = "wasm32")]
pub mod alloc;
pub mod availability;
pub mod claims;
pub mod condition;
pub mod deletion_cost;
pub mod diff;
mod log;
pub mod log_scale;
pub mod rank;
mod reconcile;
pub mod selector;
pub mod sort;
pub mod status;
pub mod view;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use bindings::wasm_replicaset::policy::types;
pub use reconcile::{reconcile, reconcile_with};
pub use status::status_after_scale_error;
pub use view::View;

use bindings::Guest;

/// Every guest built on this crate allocates from a bump arena (see [`alloc`]): each call runs
/// on a fresh instance, so memory is never reused.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: alloc::BumpAllocator = alloc::BumpAllocator;

/// The component's exports: a thin shell over [`reconcile`] and [`status_after_scale_error`].
// Natively (and for guests that export their own policy) nothing constructs it.
#[cfg_attr(not(all(target_arch = "wasm32", feature = "export")), allow(dead_code))]
struct Policy;

impl Guest for Policy {
    fn reconcile(snapshot: types::Snapshot) -> Result<types::Plan, types::ReconcileError> {
        reconcile(&snapshot)
    }

    fn status_after_scale_error(
        rs: types::ReplicaSet,
        plan_status: types::ReplicaSetStatus,
        message: String,
        now: i64,
    ) -> types::ReplicaSetStatus {
        status_after_scale_error(&rs, plan_status, &message, now)
    }
}

#[cfg(all(target_arch = "wasm32", feature = "export"))]
bindings::export_policy!(Policy);
