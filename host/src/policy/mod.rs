//! The policy the engine calls: the sandbox, the serving module behind an atomic handle, an
//! optional shadow candidate, and the failure count that triggers an automatic rollback.
//!
//! The engine's one entry point is [`ActivePolicy::for_sync`]: a sync takes the serving module
//! once, at its start, and every call of that sync ([`SyncPolicy::plan`],
//! [`SyncPolicy::status_after_scale_error`]) runs on it. A swap therefore never splits one sync
//! across two modules, and the old module is freed when its last sync ends. Each call also
//! feeds the shadow comparison, the guest metrics and the failure streak, so the engine knows
//! nothing of shadows or rollbacks.
//!
//! A failed call is blamed on the module only if the last good module handles the same
//! snapshot: when it fails too, the snapshot is the problem (a pod with thousands of labels, say)
//! and switching modules would not help, so the failure never counts towards a rollback.

pub mod shadow;

pub use shadow::ShadowDifference;

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{broadcast, mpsc};

use crate::{
    contract::{ReplicaSet, ReplicaSetStatus, Snapshot},
    metrics::Metrics,
    sandbox::{GuestError, PolicyModule, ReconcileOutcome, Sandbox},
};

/// Where a module came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The policy built into this binary.
    Embedded,
    /// A file given with `--module`.
    File(String),
    /// A `ReconcileModule` object.
    Object {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its UID (a re-created object is another source).
        uid: String,
        /// The generation that was validated.
        generation: i64,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded => write!(f, "embedded default"),
            Self::File(path) => write!(f, "file {path}"),
            Self::Object { namespace, name, generation, .. } => {
                write!(f, "ReconcileModule {namespace}/{name} (generation {generation})")
            }
        }
    }
}

/// A module and where it came from.
#[derive(Debug)]
pub struct Serving {
    /// The compiled module.
    pub module: Arc<PolicyModule>,
    /// Its origin.
    pub source: Source,
    /// Set once a rollback of this module has been requested, so it is requested only once.
    rollback_requested: AtomicBool,
}

impl Serving {
    /// `module` from `source`.
    pub fn new(module: Arc<PolicyModule>, source: Source) -> Arc<Self> {
        Arc::new(Self { module, source, rollback_requested: AtomicBool::new(false) })
    }
}

/// A candidate running beside the serving module, and what it found so far.
#[derive(Debug)]
pub struct Shadow {
    /// The candidate.
    pub candidate: Arc<Serving>,
    /// Syncs where both plans were the same.
    pub agreements: AtomicU64,
    /// Syncs where they differed.
    pub differences: AtomicU64,
    /// Syncs where the candidate failed.
    pub errors: AtomicU64,
    /// The last difference seen: the key and one line describing it.
    pub example: Mutex<Option<(String, String)>>,
}

impl Shadow {
    /// A shadow with zero counts.
    pub fn new(candidate: Arc<Serving>) -> Arc<Self> {
        Arc::new(Self {
            candidate,
            agreements: AtomicU64::new(0),
            differences: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            example: Mutex::new(None),
        })
    }
}

/// The serving module failed `rollback_after` syncs in a row.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    /// The module that failed.
    pub failed: Arc<Serving>,
    /// The key whose sync failed last.
    pub key: String,
    /// The last failure, one line.
    pub reason: String,
}

/// The sandbox, the serving module and the shadow candidate.
#[derive(Debug)]
pub struct ActivePolicy {
    sandbox: Sandbox,
    serving: ArcSwap<Serving>,
    shadow: ArcSwapOption<Shadow>,
    /// The module that served before the current one, if it was healthy when replaced.
    last_good: ArcSwapOption<Serving>,
    consecutive_failures: AtomicU32,
    rollback_after: u32,
    rollbacks: Option<mpsc::UnboundedSender<RollbackRequest>>,
    /// Shadow comparisons that differed, for whoever subscribes (filled only while someone does).
    shadow_log: broadcast::Sender<ShadowDifference>,
}

impl ActivePolicy {
    /// Serves `module` from `sandbox`, with no automatic rollback.
    pub fn new(sandbox: Sandbox, module: Arc<PolicyModule>) -> Self {
        Self::with_source(sandbox, Serving::new(module, Source::Embedded), 0, None)
    }

    /// Serves `serving`; after `rollback_after` consecutive failed syncs (0: never) a
    /// [`RollbackRequest`] goes to `rollbacks`.
    pub fn with_source(
        sandbox: Sandbox,
        serving: Arc<Serving>,
        rollback_after: u32,
        rollbacks: Option<mpsc::UnboundedSender<RollbackRequest>>,
    ) -> Self {
        Self {
            sandbox,
            serving: ArcSwap::new(serving),
            shadow: ArcSwapOption::empty(),
            last_good: ArcSwapOption::empty(),
            consecutive_failures: AtomicU32::new(0),
            rollback_after,
            rollbacks,
            shadow_log: broadcast::channel(256).0,
        }
    }

    /// Every shadow comparison that differs from now on (or whose candidate fails), with both
    /// outcomes and the snapshot; a slow reader misses the oldest ones, never delays a sync.
    pub fn shadow_differences(&self) -> broadcast::Receiver<ShadowDifference> {
        self.shadow_log.subscribe()
    }

    /// The serving module for one sync of `key`: every guest call of that sync goes through it.
    pub fn for_sync<'a>(&'a self, key: &str, metrics: &'a Metrics) -> SyncPolicy<'a> {
        SyncPolicy { policy: self, serving: self.serving(), key: Arc::from(key), metrics, planned: false }
    }

    /// The sandbox every call runs in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The module for a sync that starts now.
    pub fn current(&self) -> Arc<PolicyModule> {
        self.serving.load().module.clone()
    }

    /// The serving module with its source.
    pub fn serving(&self) -> Arc<Serving> {
        self.serving.load_full()
    }

    /// Makes `serving` serve new syncs; returns what it replaces. The failure count restarts.
    pub fn swap(&self, serving: Arc<Serving>) -> Arc<Serving> {
        let streak = self.consecutive_failures.swap(0, Ordering::AcqRel);
        let previous = self.serving.swap(serving);
        // A module being rolled back, or failing when replaced, is no reference for blame.
        if streak == 0 && !previous.rollback_requested.load(Ordering::Acquire) {
            self.last_good.store(Some(previous.clone()));
        }
        previous
    }

    /// Whether `error`, which `serving` met on `snapshot`, is the snapshot's fault: the last good
    /// module is the same code, or fails on it too. With no last good module there is nothing
    /// to compare with, and the module is blamed, as before.
    async fn input_is_to_blame(&self, serving: &Serving, key: &Arc<str>, snapshot: &Arc<Snapshot>) -> bool {
        let Some(good) = self.last_good.load_full() else { return false };
        if good.module.digest == serving.module.digest {
            return true;
        }
        self.sandbox.reconcile(&good.module, key, snapshot).await.is_err()
    }

    /// The shadow candidate, if any.
    pub fn shadow(&self) -> Option<Arc<Shadow>> {
        self.shadow.load_full()
    }

    /// Starts (or, with `None`, stops) shadowing; returns the previous shadow.
    pub fn set_shadow(&self, shadow: Option<Arc<Shadow>>) -> Option<Arc<Shadow>> {
        self.shadow.swap(shadow)
    }

    /// A call on `serving` succeeded: the failure streak ends.
    pub fn record_success(&self, serving: &Arc<Serving>) {
        if Arc::ptr_eq(&self.serving.load(), serving) {
            self.consecutive_failures.store(0, Ordering::Release);
        }
    }

    /// A call on `serving` failed because of the module; after `rollback_after` in a row, asks
    /// for a rollback (once per module).
    pub fn record_failure(&self, serving: &Arc<Serving>, key: &str, error: &GuestError) {
        if !Arc::ptr_eq(&self.serving.load(), serving) {
            // The module was swapped out while this sync ran; its failures no longer matter.
            return;
        }
        let streak = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if self.rollback_after == 0 || streak < self.rollback_after || serving.source == Source::Embedded {
            return;
        }
        if serving.rollback_requested.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::error!(module = %serving.module.digest.short(), source = %serving.source, streak, key, error = %error, "the active module keeps failing; rolling back");
        if let Some(tx) = &self.rollbacks {
            let _ = tx.send(RollbackRequest {
                failed: serving.clone(),
                key: key.to_string(),
                reason: error.failure.to_string(),
            });
        }
    }

    /// After how many failed syncs in a row the serving module is rolled back (0: never).
    pub fn rollback_after(&self) -> u32 {
        self.rollback_after
    }

    /// Failed syncs in a row on the serving module.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Acquire)
    }
}

/// Why `reconcile` gave no outcome.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The module failed; the failure counts towards a rollback.
    #[error(transparent)]
    Module(GuestError),
    /// The snapshot is what fails (the last good module fails on it too); no rollback.
    #[error("the policy cannot handle this ReplicaSet's input (the last good module fails on it too): {0}")]
    Input(GuestError),
}

/// The serving module as one sync sees it; see the module doc.
pub struct SyncPolicy<'a> {
    policy: &'a ActivePolicy,
    serving: Arc<Serving>,
    key: Arc<str>,
    metrics: &'a Metrics,
    planned: bool,
}

impl SyncPolicy<'_> {
    /// The module this sync runs on.
    pub fn module(&self) -> &Arc<PolicyModule> {
        &self.serving.module
    }

    /// Runs `reconcile` on the serving module; the plan comes back only if it passed the guard
    /// rails. The first plan of a sync is also compared with the shadow candidate's, if any.
    pub async fn plan(&mut self, snapshot: &Arc<Snapshot>) -> Result<ReconcileOutcome, PlanError> {
        let sandbox = self.policy.sandbox();
        let outcome = match sandbox.reconcile(&self.serving.module, &self.key, snapshot).await {
            Ok((outcome, stats)) => {
                self.metrics.observe_guest_call(&self.serving.module.digest.short(), "reconcile", &stats);
                self.policy.record_success(&self.serving);
                outcome
            }
            Err(error) if self.policy.input_is_to_blame(&self.serving, &self.key, snapshot).await => {
                self.metrics.guest_input_failure(&error);
                return Err(PlanError::Input(error));
            }
            Err(error) => {
                self.module_failed(&error);
                return Err(PlanError::Module(error));
            }
        };
        if !std::mem::replace(&mut self.planned, true) {
            shadow::compare_later(self.policy, self.serving.module.digest, &self.key, snapshot, &outcome);
        }
        Ok(outcome)
    }

    /// Runs `status-after-scale-error`: the status to write after creating or deleting pods
    /// failed with `message`.
    pub async fn status_after_scale_error(
        &self,
        replica_set: ReplicaSet,
        plan_status: ReplicaSetStatus,
        message: String,
        now: i64,
    ) -> Result<ReplicaSetStatus, GuestError> {
        let sandbox = self.policy.sandbox();
        self.account(
            sandbox
                .status_after_scale_error(&self.serving.module, &self.key, replica_set, plan_status, message, now)
                .await,
        )
    }

    /// Counts the call towards the failure streak (and the failure metric).
    fn account<T>(&self, result: Result<T, GuestError>) -> Result<T, GuestError> {
        match &result {
            Ok(_) => self.policy.record_success(&self.serving),
            Err(error) => self.module_failed(error),
        }
        result
    }

    /// A failure blamed on the module: counted, and one step closer to a rollback.
    fn module_failed(&self, error: &GuestError) {
        self.metrics.guest_failure(error);
        self.policy.record_failure(&self.serving, &self.key, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{embedded::DEFAULT_POLICY, sandbox::SandboxLimits, testkit};

    /// A policy serving `serving` after `previous` served without failing.
    fn policy(sandbox: &Sandbox, previous: &[u8], serving: &[u8]) -> (ActivePolicy, Arc<Serving>) {
        let module = |bytes: &[u8]| Arc::new(sandbox.compile(bytes).unwrap());
        let policy =
            ActivePolicy::with_source(sandbox.clone(), Serving::new(module(previous), Source::Embedded), 1, None);
        let object = Source::Object { namespace: "ns".into(), name: "m".into(), uid: "u".into(), generation: 1 };
        let serving = Serving::new(module(serving), object);
        policy.swap(serving.clone());
        (policy, serving)
    }

    /// A ReplicaSet of one whose template carries `labels` labels (the guest reads them all).
    fn snapshot(labels: usize) -> Arc<Snapshot> {
        Arc::new(testkit::snapshot_with_label_sets(vec![testkit::numbered_labels(labels)]))
    }

    #[tokio::test]
    async fn a_failure_the_last_good_module_does_not_share_counts_towards_a_rollback() {
        let sandbox = Sandbox::new(SandboxLimits::default()).unwrap();
        let (policy, serving) = policy(&sandbox, DEFAULT_POLICY, test_guests::PANIC);
        let metrics = Arc::new(Metrics::default());
        let mut sync = policy.for_sync("default/web", &metrics);
        assert!(matches!(sync.plan(&snapshot(1)).await, Err(PlanError::Module(_))));
        assert_eq!(policy.consecutive_failures(), 1);
        assert!(serving.rollback_requested.load(Ordering::Acquire), "rollback_after is 1");
    }

    #[tokio::test]
    async fn a_failure_the_last_good_module_shares_is_blamed_on_the_input() {
        // So little fuel that a snapshot of many labels is too much for any module.
        let limits = SandboxLimits { fuel_base: 2_000_000, fuel_per_label: 0, ..SandboxLimits::default() };
        let sandbox = Sandbox::new(limits).unwrap();
        let (policy, serving) = policy(&sandbox, DEFAULT_POLICY, test_guests::NEWEST_FIRST);
        let metrics = Arc::new(Metrics::default());
        let mut sync = policy.for_sync("default/web", &metrics);
        assert!(sync.plan(&snapshot(1)).await.unwrap().is_ok(), "a small snapshot fits");
        let failed = sync.plan(&snapshot(20_000)).await;
        assert!(matches!(failed, Err(PlanError::Input(ref e)) if e.failure.label() == "out_of_fuel"), "{failed:?}");
        assert_eq!(policy.consecutive_failures(), 0);
        assert!(!serving.rollback_requested.load(Ordering::Acquire));
        assert!(metrics.encode().contains("wasm_replicaset_guest_input_failures_total{"));
    }
}
