//! Swapping the policy at runtime: the `ReconcileModule` resource, validation, shadowing and
//! rollback.

pub mod cli;
pub mod conformance;
pub mod manager;
pub mod resource;
pub mod shadow;
