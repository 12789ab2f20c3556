//! Expectations: the pod creations and deletions each ReplicaSet key still awaits (UID-tracked).
//!
//! Mirrors upstream `UIDTrackingControllerExpectations` (`pkg/controller/controller_utils.go`).
//!
//! A sync that creates or deletes pods writes down how many creations and which deletions it
//! now waits for, per ReplicaSet key; informer events count them off. Until the count reaches
//! zero, or the record is older than the TTL (5 minutes), the policy is told the expectations
//! are unsatisfied and plans no scaling, so a cache that has not yet seen our own writes can
//! never make us create or delete twice. For example:
//!
//! ```text
//! default/web:  2 creations to observe, created 30 s ago   → no scaling yet
//! default/api:  deletions of {api-x, api-y} to observe     → no scaling yet
//! default/db:   -1 creations (an extra one was observed)   → satisfied
//! ```
//!
//! Rules kept from upstream: once raised, a record only goes down until it is satisfied or
//! expires; a key with no record is always satisfied.
//!
//! Deletions are tracked by pod key rather than counted because of graceful deletion: a pod is
//! counted as deleted when its deletionTimestamp appears, and its final delete event must not
//! count it a second time. Creations stay plain counts (upstream #22599): knowing the new pods'
//! UIDs would mean holding a lock across the create calls.
//!
//! Time comes from [`tokio::time::Instant`], so tests drive the TTL with paused time
//! (`tokio::time::advance`); outside a paused runtime it is the system's monotonic clock.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error};

/// How long a record may stay unfulfilled before the key is synced anyway (upstream
/// `ExpectationsTimeout`).
///
/// When a controller doesn't see the expected watch events for longer than this, the expectations
/// expire: it wakes up, creates/deletes controllees, and sets expectations again.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// A snapshot of one key's counters (upstream `ControlleeExpectations`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlleeExpectations {
    /// Creations still expected; `<= 0` means none.
    pub add: i64,
    /// Deletions still expected; `<= 0` means none.
    pub del: i64,
    /// When the record was last set by `expect_creations`/`expect_deletions`/`set_expectations`.
    pub timestamp: Instant,
}

impl ControlleeExpectations {
    /// True when neither creations nor deletions are outstanding (upstream `Fulfilled`).
    pub fn fulfilled(&self) -> bool {
        self.add <= 0 && self.del <= 0
    }
}

#[derive(Debug)]
struct Record {
    add: i64,
    del: i64,
    timestamp: Instant,
    /// Keys (`ns/name`) of the pods whose deletion is expected; each is counted at most once.
    deleting: HashSet<String>,
}

/// Thread-safe, UID-tracking expectations for all ReplicaSet keys.
///
/// Every method takes one short lock on a map, so it is cheap to call from informer event handlers.
/// Raised only by `manage_replicas`; lowered by pod adds, pod deletes (or updates setting a
/// DeletionTimestamp), skipped creates and failed deletes.
#[derive(Debug)]
pub struct ControllerExpectations {
    records: Mutex<HashMap<String, Record>>,
    ttl: Duration,
}

impl Default for ControllerExpectations {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerExpectations {
    /// Empty expectations with the upstream 5-minute TTL.
    pub fn new() -> Self {
        Self::with_ttl(EXPECTATIONS_TIMEOUT)
    }

    /// Empty expectations whose records expire after `ttl` instead of [`EXPECTATIONS_TIMEOUT`].
    pub fn with_ttl(ttl: Duration) -> Self {
        Self { records: Mutex::new(HashMap::new()), ttl }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        // A panic elsewhere never leaves a record half-written, so a poisoned map is still
        // consistent.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The counters recorded for `key`, if any (upstream `GetExpectations`).
    pub fn get_expectations(&self, key: &str) -> Option<ControlleeExpectations> {
        self.lock().get(key).map(|r| ControlleeExpectations { add: r.add, del: r.del, timestamp: r.timestamp })
    }

    /// The pod keys whose deletion `key` still expects, if it has a record (upstream `GetUIDs`).
    pub fn get_uids(&self, key: &str) -> Option<HashSet<String>> {
        self.lock().get(key).map(|r| r.deleting.clone())
    }

    /// Whether `key` needs a sync: true if it never recorded expectations, if they are fulfilled
    /// (`add <= 0 && del <= 0`), or if they are older than the TTL (upstream
    /// `SatisfiedExpectations`).
    pub fn satisfied_expectations(&self, key: &str) -> bool {
        let Some(exp) = self.get_expectations(key) else {
            // When a new controller is created, it doesn't have expectations. When it has satisfied
            // expectations and no controllees need to be created/destroyed, it continues without
            // setting expectations.
            debug!(controller = key, "Controller either never recorded expectations, or the ttl expired");
            return true;
        };
        if exp.fulfilled() {
            debug!(controller = key, add = exp.add, del = exp.del, "Controller expectations fulfilled");
            true
        } else if exp.timestamp.elapsed() > self.ttl {
            debug!(controller = key, add = exp.add, del = exp.del, "Controller expectations expired");
            true
        } else {
            debug!(controller = key, add = exp.add, del = exp.del, "Controller still waiting on expectations");
            false
        }
    }

    /// Replaces the counters of `key` with `add` creations and `del` deletions, timestamped now
    /// (upstream `SetExpectations`). The expected-deletion set is left as it is.
    pub fn set_expectations(&self, key: &str, add: i64, del: i64) {
        let now = Instant::now();
        let mut records = self.lock();
        let record = records.entry(key.to_owned()).or_insert_with(|| Record {
            add: 0,
            del: 0,
            timestamp: now,
            deleting: HashSet::new(),
        });
        (record.add, record.del, record.timestamp) = (add, del, now);
    }

    /// Expects `adds` pod creations for `key`, replacing earlier counters (upstream
    /// `ExpectCreations`).
    ///
    /// Only the count is tracked, so every observed creation of a pod owned by `key` lowers it.
    pub fn expect_creations(&self, key: &str, adds: usize) {
        debug!(controller = key, adds, "Setting expectations");
        self.set_expectations(key, count(adds), 0);
    }

    /// Expects the deletion of exactly the pods `pod_keys` (`ns/name`) for `key`, replacing earlier
    /// counters and the earlier expected-deletion set (upstream
    /// `UIDTrackingControllerExpectations.ExpectDeletions`).
    ///
    /// The caller snapshots the keys of the pods it is about to delete, so each is counted exactly
    /// once, either when seen as an update setting the DeletionTimestamp or as a delete. Note that
    /// if the labels on a pod/rs change in a way that the pod gets orphaned, the rs will only wake
    /// up after the expectations have expired even if other pods are deleted.
    pub fn expect_deletions<I, S>(&self, key: &str, pod_keys: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let expected: HashSet<String> = pod_keys.into_iter().map(Into::into).collect();
        let del = count(expected.len());
        debug!(controller = key, keys = ?expected, "Controller waiting on deletions");
        let now = Instant::now();
        let clobbered = self.lock().insert(key.to_owned(), Record { add: 0, del, timestamp: now, deleting: expected });
        if let Some(old) = clobbered.filter(|old| !old.deleting.is_empty()) {
            error!(controller = key, keys = ?old.deleting, "Clobbering existing delete keys");
        }
    }

    /// Lowers the counters of `key` by `add` and `del`; a no-op without a record (upstream
    /// `LowerExpectations`).
    pub fn lower_expectations(&self, key: &str, add: i64, del: i64) {
        self.adjust(key, -add, -del);
    }

    /// Raises the counters of `key` by `add` and `del`; a no-op without a record (upstream
    /// `RaiseExpectations`).
    pub fn raise_expectations(&self, key: &str, add: i64, del: i64) {
        self.adjust(key, add, del);
    }

    fn adjust(&self, key: &str, add: i64, del: i64) {
        if let Some(r) = self.lock().get_mut(key) {
            r.add += add;
            r.del += del;
        }
    }

    /// Records one creation observed for `key`: lowers `add` by one; a no-op without a record
    /// (upstream `CreationObserved`).
    ///
    /// Besides the pod informer's add handler, `manage_replicas` calls this once per pod that slow
    /// start never attempted: any skipped pods that we never attempted to start shouldn't be
    /// expected, because the informer won't observe them. The skipped pods will be retried later;
    /// the next resync will retry the slow start process.
    pub fn creation_observed(&self, key: &str) {
        self.lower_expectations(key, 1, 0);
    }

    /// Records that the pod `pod_key` (`ns/name`) was seen deleted (or gained a DeletionTimestamp)
    /// for `key`.
    ///
    /// Lowers `del` only if `pod_key` is in the expected-deletion set, then removes it, so each pod
    /// is counted once however many updates, tombstones or deletes report it (upstream
    /// `UIDTrackingControllerExpectations.DeletionObserved`).
    pub fn deletion_observed(&self, key: &str, pod_key: &str) {
        let counted = self.lock().get_mut(key).is_some_and(|r| {
            let expected = r.deleting.remove(pod_key);
            if expected {
                r.del -= 1;
            }
            expected
        });
        if counted {
            debug!(controller = key, key = pod_key, "Controller received delete for pod");
        }
    }

    /// Drops both the counters and the expected-deletion set of `key` (upstream
    /// `DeleteExpectations`), e.g. when the ReplicaSet is deleted, so that a recreated ReplicaSet
    /// of the same name starts fresh.
    pub fn delete_expectations(&self, key: &str) {
        self.lock().remove(key);
    }

    /// How many keys have unmet expectations: those still waiting, and those past the TTL (a
    /// creation or deletion that was never observed: the key scales again anyway). For `/metrics`.
    pub fn unmet(&self) -> Unmet {
        let mut unmet = Unmet::default();
        for record in self.lock().values().filter(|r| r.add > 0 || r.del > 0) {
            if record.timestamp.elapsed() > self.ttl {
                unmet.expired += 1;
            } else {
                unmet.waiting += 1;
            }
        }
        unmet
    }
}

/// Keys with unmet expectations ([`ControllerExpectations::unmet`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unmet {
    /// Within the TTL: their scaling waits.
    pub waiting: usize,
    /// Past the TTL.
    pub expired: usize,
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// === tests ===

#[cfg(test)]
mod tests {
    use tokio::time::advance;

    use super::*;

    const RS: &str = "default/foobar";

    fn counters(e: &ControllerExpectations) -> (i64, i64) {
        let exp = e.get_expectations(RS).expect("a record");
        (exp.add, exp.del)
    }

    #[tokio::test(start_paused = true)]
    async fn unmet_expectations_are_counted_as_waiting_then_expired() {
        let e = ControllerExpectations::with_ttl(Duration::from_secs(10));
        e.expect_creations("ns/a", 2);
        e.expect_deletions("ns/b", ["ns/b-1"]);
        e.expect_creations("ns/c", 1);
        e.creation_observed("ns/c");
        assert_eq!(e.unmet(), Unmet { waiting: 2, expired: 0 }, "c is fulfilled");
        advance(Duration::from_secs(11)).await;
        e.deletion_observed("ns/b", "ns/b-1");
        assert_eq!(e.unmet(), Unmet { waiting: 0, expired: 1 }, "a was never observed");
    }

    #[test]
    fn a_key_without_a_record_should_be_satisfied_and_observations_should_not_create_one() {
        let e = ControllerExpectations::new();
        assert!(e.satisfied_expectations(RS));
        e.creation_observed(RS);
        e.deletion_observed(RS, "default/pod-0");
        e.lower_expectations(RS, 3, 3);
        e.raise_expectations(RS, 3, 3);
        assert_eq!(e.get_expectations(RS), None);
        assert!(e.satisfied_expectations(RS));
    }

    // The expectations half of upstream TestControllerBurstReplicas: with burst 5 and 12 replicas,
    // each sync expects min(burst, remaining) and the key stays unsynced until the last expected
    // pod is observed.
    #[test]
    fn creations_should_block_the_sync_until_the_last_expected_pod_is_observed() {
        let e = ControllerExpectations::new();
        for burst in [5, 5, 2] {
            e.expect_creations(RS, burst);
            for _ in 0..burst - 1 {
                e.creation_observed(RS);
                assert!(!e.satisfied_expectations(RS));
            }
            e.creation_observed(RS);
            assert!(e.satisfied_expectations(RS));
        }
    }

    #[test]
    fn deletions_should_be_counted_once_each_and_only_for_expected_pods() {
        let e = ControllerExpectations::new();
        e.expect_deletions(RS, ["default/pod-0", "default/pod-1", "default/pod-2"]);
        assert_eq!(counters(&e), (0, 3));
        e.deletion_observed(RS, "default/pod-0");
        e.deletion_observed(RS, "default/pod-0");
        e.deletion_observed(RS, "default/not-expected");
        assert_eq!(counters(&e), (0, 2));
        assert!(!e.satisfied_expectations(RS));
        e.deletion_observed(RS, "default/pod-1");
        e.deletion_observed(RS, "default/pod-2");
        assert!(e.satisfied_expectations(RS));
        assert_eq!(e.get_uids(RS), Some(HashSet::new()));
    }

    // Mirrors upstream TestDeletionTimestamp: an added pod with a DeletionTimestamp is routed to
    // deletePod, which lowers del (not add); the update setting it counts once; later
    // updates/deletes of the same pod don't count; deleting the other expected pod fulfils the
    // expectations.
    #[test]
    fn a_pod_gaining_a_deletion_timestamp_should_lower_deletions_once_and_never_creations() {
        let e = ControllerExpectations::new();
        e.expect_deletions(RS, ["default/pod-a", "default/pod-b"]);
        e.deletion_observed(RS, "default/pod-a"); // addPod with DeletionTimestamp → deletePod
        assert_eq!(counters(&e), (0, 1));
        e.deletion_observed(RS, "default/pod-a"); // update of the same pod
        e.deletion_observed(RS, "default/pod-a"); // its final delete
        e.deletion_observed(RS, "default/unrelated");
        assert_eq!(counters(&e), (0, 1));
        assert!(!e.satisfied_expectations(RS));
        e.deletion_observed(RS, "default/pod-b");
        assert!(e.satisfied_expectations(RS));
    }

    // Mirrors the expectations part of upstream TestExpectationsOnRecreate.
    #[test]
    fn deleting_expectations_should_let_a_recreated_replica_set_start_fresh() {
        let e = ControllerExpectations::new();
        e.expect_creations(RS, 1);
        assert!(!e.satisfied_expectations(RS));
        e.delete_expectations(RS); // deleteRS
        assert_eq!(e.get_expectations(RS), None);
        assert_eq!(e.get_uids(RS), None);
        assert!(e.satisfied_expectations(RS));
        e.expect_creations(RS, 1); // the recreated RS syncs again
        assert_eq!(counters(&e), (1, 0));
        assert!(!e.satisfied_expectations(RS));
    }

    #[tokio::test(start_paused = true)]
    async fn unfulfilled_expectations_should_expire_strictly_after_five_minutes() {
        let e = ControllerExpectations::new();
        e.expect_creations(RS, 2);
        advance(EXPECTATIONS_TIMEOUT).await;
        assert!(!e.satisfied_expectations(RS), "exactly the TTL is not yet expired (upstream uses `>`)");
        advance(Duration::from_nanos(1)).await;
        assert!(e.satisfied_expectations(RS));
        // An expired record is not dropped, and setting expectations again restarts the clock.
        assert_eq!(counters(&e), (2, 0));
        e.expect_creations(RS, 2);
        assert!(!e.satisfied_expectations(RS));
    }

    #[tokio::test(start_paused = true)]
    async fn setting_expectations_should_replace_the_record_and_reset_its_timestamp() {
        let e = ControllerExpectations::new();
        e.expect_creations(RS, 5);
        let first = e.get_expectations(RS).unwrap().timestamp;
        advance(Duration::from_secs(60)).await;
        e.expect_creations(RS, 3);
        let exp = e.get_expectations(RS).unwrap();
        assert_eq!((exp.add, exp.del), (3, 0));
        assert_eq!(exp.timestamp - first, Duration::from_secs(60));
        e.expect_deletions(RS, ["default/pod-0"]);
        assert_eq!(counters(&e), (0, 1));
    }

    #[test]
    fn expecting_deletions_should_clobber_the_previous_delete_keys() {
        let e = ControllerExpectations::new();
        e.expect_deletions(RS, ["default/old-0", "default/old-1"]);
        e.expect_deletions(RS, ["default/new-0", "default/new-0"]);
        assert_eq!(counters(&e), (0, 1), "duplicate keys are expected once");
        assert_eq!(e.get_uids(RS), Some(HashSet::from(["default/new-0".to_owned()])));
        e.deletion_observed(RS, "default/old-0");
        assert_eq!(counters(&e), (0, 1), "clobbered keys no longer count");
    }

    #[test]
    fn expecting_creations_should_keep_the_delete_keys_as_upstream_does() {
        let e = ControllerExpectations::new();
        e.expect_deletions(RS, ["default/pod-0"]);
        e.expect_creations(RS, 1);
        assert_eq!(e.get_uids(RS).map(|u| u.len()), Some(1));
        e.deletion_observed(RS, "default/pod-0");
        assert_eq!(counters(&e), (1, -1));
    }

    #[test]
    fn lowering_and_raising_should_adjust_only_an_existing_record() {
        let e = ControllerExpectations::new();
        e.set_expectations(RS, 2, 2);
        e.lower_expectations(RS, 2, 1);
        assert_eq!(counters(&e), (0, 1));
        e.raise_expectations(RS, 1, 0);
        assert_eq!(counters(&e), (1, 1));
        assert!(!e.satisfied_expectations(RS));
        e.lower_expectations(RS, 3, 3);
        assert_eq!(counters(&e), (-2, -2));
        assert!(e.satisfied_expectations(RS), "negative counts are fulfilled");
    }

    #[test]
    fn records_of_different_keys_should_be_independent() {
        let e = ControllerExpectations::new();
        e.expect_creations(RS, 1);
        e.expect_creations("default/other", 1);
        e.creation_observed("default/other");
        assert!(!e.satisfied_expectations(RS));
        assert!(e.satisfied_expectations("default/other"));
    }

    #[test]
    fn expectations_should_be_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ControllerExpectations>();
        let e = std::sync::Arc::new(ControllerExpectations::new());
        e.expect_creations(RS, 400);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let e = e.clone();
                std::thread::spawn(move || (0..100).for_each(|_| e.creation_observed(RS)))
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(counters(&e), (0, 0));
    }
}
