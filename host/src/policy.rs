//! The policy the engine calls: the sandbox and the active module behind an atomic handle.
//!
//! A sync takes the module once, at its start, and uses it for every call of that sync; a swap
//! therefore never splits one sync across two modules, and the old module is freed when its
//! last sync ends.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::sandbox::{PolicyModule, Sandbox};

/// The sandbox plus the module new syncs use.
pub struct ActivePolicy {
    sandbox: Sandbox,
    current: ArcSwap<PolicyModule>,
}

impl ActivePolicy {
    /// Serves `module` from `sandbox`.
    pub fn new(sandbox: Sandbox, module: Arc<PolicyModule>) -> Self {
        Self { sandbox, current: ArcSwap::new(module) }
    }

    /// The sandbox every call runs in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The module for a sync that starts now.
    pub fn current(&self) -> Arc<PolicyModule> {
        self.current.load_full()
    }

    /// Makes `module` serve new syncs; returns the module it replaces.
    pub fn swap(&self, module: Arc<PolicyModule>) -> Arc<PolicyModule> {
        self.current.swap(module)
    }
}
