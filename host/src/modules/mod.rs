//! Swapping the policy at runtime: the `ReconcileModule` resource, and the manager that
//! validates, shadows, activates and rolls back modules.
//!
//! The decisions are a pure state machine (`rollout`: which module serves, which shadows, what
//! a rollback returns to); [`manager`] is the I/O around it, and [`api`] the few requests it makes.

pub mod api;
mod handle;
pub mod manager;
mod report;
pub mod resource;
mod rollout;
#[cfg(test)]
mod scripted;

use crate::sandbox::{PolicyModule, Sandbox};

/// What a module must pass before it may serve, beyond compiling against the world. The
/// runtime does not know the cases: the binary hands it `policy_kit::conformance::check`, and
/// tests hand it what they need.
pub trait ModuleCheck: Send + Sync + 'static {
    /// Runs the checks on `module` (blocking); the error names the first case it failed.
    fn check(&self, sandbox: &Sandbox, module: &PolicyModule) -> anyhow::Result<usize>;
}

impl<F> ModuleCheck for F
where
    F: Fn(&Sandbox, &PolicyModule) -> anyhow::Result<usize> + Send + Sync + 'static,
{
    fn check(&self, sandbox: &Sandbox, module: &PolicyModule) -> anyhow::Result<usize> {
        self(sandbox, module)
    }
}
