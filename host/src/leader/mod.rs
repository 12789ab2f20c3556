//! Leader election on a `coordination.k8s.io/v1` Lease, ported from client-go's `tools/leaderelection`.
//!
//! The non-coordinated election with a `LeaseLock`, in four parts: `config` (the settings and the
//! checks `NewLeaderElector` makes), `record` (the pure core: the Lease record, when we saw it
//! change, and the decision to wait, renew or take), `lease` (one `tryAcquireOrRenew` round of
//! reads and writes, and the release) and `elector` (the acquire/renew loop). This file holds the
//! [`LeaderHandle`] they report through.
//!
//! As in client-go, a candidate never trusts the timestamps written in the Lease: it only notes,
//! on its own monotonic clock, *when it last saw the record change* (`observedTime`), and treats a
//! foreign holder's lease as expired once `leaseDurationSeconds` have passed since then without a
//! change. Clock skew between nodes therefore does not matter, only clock *rate* skew does, which
//! `lease_duration > renew_deadline` absorbs. Like client-go this is not fencing: it makes two
//! leaders unlikely, not impossible (a paused process may act on a lease it has lost).
//!
//! Use: build a [`LeaderElector`] from a [`LeaderElectionConfig`], keep a [`LeaderHandle`] for
//! status reporting, and spawn [`LeaderElector::run`]; sync only while its `leading` channel says
//! `true`.

mod config;
mod elector;
mod lease;
mod preflight;
mod record;

use std::sync::{Arc, Mutex};

pub use self::{
    config::{ConfigError, JITTER_FACTOR, LeaderElectionConfig},
    elector::LeaderElector,
    preflight::PreflightError,
};

/// A cheap, cloneable view of an elector's state for health and readiness reporting.
#[derive(Clone, Debug)]
pub struct LeaderHandle {
    identity: Arc<str>,
    state: Arc<Mutex<HandleState>>,
}

#[derive(Debug, Default)]
struct HandleState {
    leading: bool,
    holder: Option<String>,
    /// Why the last attempt to acquire or renew failed, until one succeeds.
    last_error: Option<String>,
}

impl LeaderHandle {
    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether the run loop last reported `true` on its `leading` channel. Stays as it was if the
    /// run task is aborted rather than stopped.
    pub fn is_leader(&self) -> bool {
        self.lock().leading
    }

    /// The holder identity in the last Lease record this elector read or wrote (client-go's
    /// `GetLeader`); `None` before the first read, or when the lease was released.
    pub fn holder(&self) -> Option<String> {
        self.lock().holder.clone()
    }

    /// Why the last attempt to acquire or renew the lease failed (one line), until an attempt
    /// gets an answer again; what `/readyz` reports as the reason this replica is not leading.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HandleState> {
        // The state is two plain fields, always consistent: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
