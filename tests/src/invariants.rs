//! The ReplicaSet controller's invariants, checked on every revision of every pod and ReplicaSet
//! of a namespace that a watch delivers (not by polling, so nothing between two polls is missed):
//! never more active pods than `spec.replicas` once the spec has been stable for a second, no
//! protected pod ever deleted, and, on demand, each ReplicaSet converged with a right status.
//!
//! "Over spec" is judged when a pod *becomes* an active pod of a ReplicaSet (created or adopted):
//! right after a scale-down the old pods are still there until the controller deletes them, which
//! is not a violation; creating one more while at or above the spec is. The pod and ReplicaSet
//! watches are merged into one stream, so events are judged in the order they arrive.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

use crate::eventually;

/// A spec unchanged for this long must never be exceeded by a new active pod.
pub const STABLE_SPEC: Duration = Duration::from_secs(1);

/// What the watch knows of one ReplicaSet.
#[derive(Debug, Clone)]
struct RsFacts {
    name: String,
    spec: i32,
    spec_since: Instant,
    generation: i64,
    status: (i32, i32, i32, i64),
}

/// What the watch knows of one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PodFacts {
    owner: Option<String>,
    active: bool,
    ready: bool,
    /// A deletion timestamp is set.
    terminating: bool,
}

#[derive(Debug, Default)]
struct State {
    rs: HashMap<String, RsFacts>,
    pods: HashMap<String, PodFacts>,
    /// The last controller owner each pod ever had, kept after it is gone.
    last_owner: HashMap<String, String>,
    /// Pods that must never be deleted.
    protected: HashSet<String>,
    /// UIDs of ReplicaSets that were deleted.
    gone_rs: HashSet<String>,
    violations: Vec<String>,
    revisions: u64,
    /// Pods that ever became an active pod of a ReplicaSet of the namespace.
    became_active: u64,
    last_change: Option<Instant>,
    synced: (bool, bool),
    relisting: (Option<HashSet<String>>, Option<HashSet<String>>),
    /// Pods a relist showed newly active (with their owner), checked against the spec once the
    /// relist is done: until then the pods it no longer lists still count as active.
    relisted_active: Vec<(String, String)>,
}

/// A running invariant checker for one namespace.
pub struct Invariants {
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
    /// Read directly, so [`Invariants::wait_converged`] knows what its watch must have seen.
    replica_sets: Api<ReplicaSet>,
}

enum Change {
    Pod(watcher::Event<Pod>),
    Rs(watcher::Event<ReplicaSet>),
}

impl Invariants {
    /// Starts watching the pods and ReplicaSets of `namespace` and waits for both lists.
    pub async fn start(client: &kube::Client, namespace: &str) -> Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let pods = watcher(Api::<Pod>::namespaced(client.clone(), namespace), watcher::Config::default())
            .default_backoff()
            .map(|e| e.map(Change::Pod));
        let sets = watcher(Api::<ReplicaSet>::namespaced(client.clone(), namespace), watcher::Config::default())
            .default_backoff()
            .map(|e| e.map(Change::Rs));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut changes = std::pin::pin!(futures::stream::select(pods, sets));
            while let Some(change) = changes.next().await {
                let Ok(change) = change else { continue };
                lock(&shared).apply(change, Instant::now());
            }
        });
        let replica_sets = Api::namespaced(client.clone(), namespace);
        let invariants = Self { state, task, replica_sets };
        eventually("the invariant watches to list", Duration::from_secs(20), || async {
            Ok((invariants.lock().synced == (true, true)).then_some(()))
        })
        .await?;
        Ok(invariants)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Pod `name` must never be deleted from now on.
    pub fn protect(&self, name: &str) {
        self.lock().protected.insert(name.to_string());
    }

    /// Every violation seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Fails with the violations, if any.
    pub fn check(&self) -> Result<()> {
        let violations = self.violations();
        if !violations.is_empty() {
            bail!("{} invariant violation(s): {}", violations.len(), violations.join("; "));
        }
        Ok(())
    }

    /// Revisions (pod and ReplicaSet events) checked so far.
    pub fn revisions(&self) -> u64 {
        self.lock().revisions
    }

    /// Pods that became active pods of a ReplicaSet of the namespace (each creation or adoption
    /// once; pods controlled by anything else are not counted).
    pub fn became_active(&self) -> u64 {
        self.lock().became_active
    }

    /// When the watch last saw anything change.
    pub fn last_change(&self) -> Option<Instant> {
        self.lock().last_change
    }

    /// Active pods of ReplicaSet `name` now.
    pub fn active(&self, name: &str) -> usize {
        let state = self.lock();
        state.rs.iter().find(|(_, f)| f.name == name).map_or(0, |(uid, _)| state.active_of(uid))
    }

    /// The last controller (UID) pod `name` had, even after it is gone.
    pub fn last_owner(&self, name: &str) -> Option<String> {
        self.lock().last_owner.get(name).cloned()
    }

    /// Pods once controlled by a ReplicaSet that are gone now or being deleted.
    ///
    /// A pod the API server has marked for deletion stays so on a bare cluster if its delete
    /// request was cut off between marking and removal (an unscheduled pod is marked with grace
    /// period 0, then removed in the same request); kube-controller-manager's pod garbage
    /// collector, which would remove it, does not run there.
    pub fn departed(&self) -> Vec<String> {
        self.lock().departed()
    }

    /// Whether `uid` is a ReplicaSet the watch has seen.
    pub fn is_replica_set(&self, uid: &str) -> bool {
        let state = self.lock();
        state.rs.contains_key(uid) || state.gone_rs.contains(uid)
    }

    /// The UID of ReplicaSet `name`, if the watch has seen it.
    pub fn uid_of(&self, name: &str) -> Option<String> {
        self.lock().rs.iter().find(|(_, f)| f.name == name).map(|(uid, _)| uid.clone())
    }

    /// `None` when every ReplicaSet has exactly `spec` active pods and a status that says so
    /// (replicas, ready, available, observed generation); else what is not there yet.
    pub fn unconverged(&self) -> Option<String> {
        self.lock().unconverged()
    }

    /// Waits until [`Invariants::unconverged`] is `None`; returns how long that took.
    ///
    /// Convergence is judged on what the watch has delivered, so it first needs every ReplicaSet
    /// the API server holds now, at its current generation: a set the test just created or
    /// scaled that the watch has not shown yet would otherwise count as converged (an empty
    /// namespace is trivially so).
    pub async fn wait_converged(&self, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let listed: Vec<(String, i64)> = self
            .replica_sets
            .list(&ListParams::default())
            .await
            .context("listing ReplicaSets for the convergence check")?
            .items
            .into_iter()
            .map(|rs| (rs.metadata.uid.unwrap_or_default(), rs.metadata.generation.unwrap_or(0)))
            .collect();
        let mut last = String::new();
        let result = eventually("every ReplicaSet converged with a right status", timeout, || {
            let pending = {
                let state = self.lock();
                match listed.iter().find(|(uid, generation)| !state.has_seen(uid, *generation)) {
                    Some((uid, generation)) => {
                        Some(format!("the watch has not shown ReplicaSet {uid} at generation {generation} yet"))
                    }
                    None => state.unconverged(),
                }
            };
            if let Some(p) = &pending {
                last.clone_from(p);
            }
            async move { Ok(pending.is_none().then_some(())) }
        })
        .await;
        match result {
            Ok(()) => Ok(started.elapsed()),
            Err(e) => Err(e.context(format!("still: {last}"))),
        }
    }
}

impl Drop for Invariants {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn apply(&mut self, change: Change, now: Instant) {
        match change {
            Change::Pod(event) => self.pod_event(event, now),
            Change::Rs(event) => self.rs_event(event, now),
        }
    }

    fn pod_event(&mut self, event: watcher::Event<Pod>, now: Instant) {
        match event {
            watcher::Event::Init => self.relisting.0 = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                self.relisting.0.get_or_insert_default().insert(name_of(&pod.metadata));
                self.pod_seen(&pod, now);
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.0.take().unwrap_or_default();
                let gone: Vec<String> = self.pods.keys().filter(|p| !listed.contains(*p)).cloned().collect();
                for name in gone {
                    self.pod_gone(&name, now);
                }
                for (owner, pod) in std::mem::take(&mut self.relisted_active) {
                    self.check_not_over_spec(&owner, &pod, now);
                }
                self.synced.0 = true;
            }
            watcher::Event::Apply(pod) => self.pod_seen(&pod, now),
            watcher::Event::Delete(pod) => self.pod_gone(&name_of(&pod.metadata), now),
        }
    }

    fn rs_event(&mut self, event: watcher::Event<ReplicaSet>, now: Instant) {
        match event {
            watcher::Event::Init => self.relisting.1 = Some(HashSet::new()),
            watcher::Event::InitApply(rs) => {
                self.relisting.1.get_or_insert_default().insert(rs.metadata.uid.clone().unwrap_or_default());
                self.rs_seen(&rs, now);
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.1.take().unwrap_or_default();
                self.rs.retain(|uid, _| listed.contains(uid));
                self.synced.1 = true;
            }
            watcher::Event::Apply(rs) => self.rs_seen(&rs, now),
            watcher::Event::Delete(rs) => {
                let uid = rs.metadata.uid.clone().unwrap_or_default();
                self.rs.remove(&uid);
                self.gone_rs.insert(uid);
            }
        }
    }

    fn rs_seen(&mut self, rs: &ReplicaSet, now: Instant) {
        self.revisions += 1;
        self.last_change = Some(now);
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let spec = rs.spec.replicas.unwrap_or(1);
        let status = rs.status.as_ref().map_or((0, 0, 0, 0), |s| {
            (
                s.replicas,
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0),
                s.observed_generation.unwrap_or(0),
            )
        });
        let generation = rs.metadata.generation.unwrap_or(0);
        let spec_since = match self.rs.get(&uid) {
            Some(old) if old.spec == spec => old.spec_since,
            _ => now,
        };
        let name = name_of(&rs.metadata);
        self.rs.insert(uid, RsFacts { name, spec, spec_since, generation, status });
    }

    fn pod_seen(&mut self, pod: &Pod, now: Instant) {
        self.revisions += 1;
        self.last_change = Some(now);
        let name = name_of(&pod.metadata);
        let facts = facts_of(pod);
        if let Some(owner) = &facts.owner {
            self.last_owner.insert(name.clone(), owner.clone());
        }
        if self.protected.contains(&name) && pod.metadata.deletion_timestamp.is_some() {
            self.violations.push(format!("protected pod {name} is being deleted"));
        }
        let old = self.pods.insert(name.clone(), facts.clone()).unwrap_or_default();
        let newly_active = facts.active && (!old.active || old.owner != facts.owner);
        match &facts.owner {
            Some(owner) if newly_active && self.rs.contains_key(owner) => {
                self.became_active += 1;
                if self.relisting.0.is_some() {
                    self.relisted_active.push((owner.clone(), name));
                } else {
                    self.check_not_over_spec(owner, &name, now);
                }
            }
            _ => {}
        }
    }

    fn pod_gone(&mut self, name: &str, now: Instant) {
        self.revisions += 1;
        self.last_change = Some(now);
        if self.protected.contains(name) {
            self.violations.push(format!("protected pod {name} was deleted"));
        }
        self.pods.remove(name);
    }

    fn check_not_over_spec(&mut self, owner: &str, pod: &str, now: Instant) {
        let Some(rs) = self.rs.get(owner) else { return };
        let stable = now.duration_since(rs.spec_since);
        let active = self.active_of(owner);
        if stable >= STABLE_SPEC && active > usize::try_from(rs.spec).unwrap_or(0) {
            let message = format!(
                "{}: pod {pod} made {active} active pods, over spec {} (stable for {stable:.1?})",
                rs.name, rs.spec
            );
            self.violations.push(message);
        }
    }

    fn departed(&self) -> Vec<String> {
        let present = |p: &String| self.pods.get(p).is_some_and(|facts| !facts.terminating);
        self.last_owner.keys().filter(|p| !present(p)).cloned().collect()
    }

    fn active_of(&self, owner: &str) -> usize {
        self.pods.values().filter(|p| p.active && p.owner.as_deref() == Some(owner)).count()
    }

    /// Whether the watch has shown ReplicaSet `uid` at `generation` or later, or its deletion.
    fn has_seen(&self, uid: &str, generation: i64) -> bool {
        self.gone_rs.contains(uid) || self.rs.get(uid).is_some_and(|rs| rs.generation >= generation)
    }

    fn unconverged(&self) -> Option<String> {
        let mut pending = Vec::new();
        for (uid, rs) in &self.rs {
            let active = self.active_of(uid);
            let ready = self.pods.values().filter(|p| p.active && p.ready && p.owner.as_deref() == Some(uid)).count();
            let want = usize::try_from(rs.spec).unwrap_or(0);
            let (replicas, ready_status, available, observed) = rs.status;
            let right = active == want
                && usize::try_from(replicas).ok() == Some(active)
                && usize::try_from(ready_status).ok() == Some(ready)
                && usize::try_from(available).ok() == Some(ready)
                && observed == rs.generation;
            if !right {
                pending.push(format!(
                    "{}: spec {want}, {active} active ({ready} ready); status replicas {replicas}, ready \
                     {ready_status}, available {available}, observed generation {observed}/{}",
                    rs.name, rs.generation
                ));
            }
        }
        pending.sort();
        (!pending.is_empty()).then(|| pending.join("; "))
    }
}

fn name_of(meta: &kube::api::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// A pod's owner (a ReplicaSet controller reference's UID), whether it is active (not being
/// deleted, not Succeeded or Failed) and whether it is Ready.
fn facts_of(pod: &Pod) -> PodFacts {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == "ReplicaSet")
        .map(|r| r.uid.clone());
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let active = pod.metadata.deletion_timestamp.is_none() && !matches!(phase, "Succeeded" | "Failed");
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    PodFacts { owner, active, ready, terminating: pod.metadata.deletion_timestamp.is_some() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(uid: &str, spec: i32) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("rs-{uid}"), "uid": uid, "generation": 1},
            "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": 0, "observedGeneration": 1}
        }))
        .unwrap()
    }

    fn pod(name: &str, owner: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x", "uid": owner, "controller": true}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn a_replica_set_counts_as_seen_at_its_generation_or_later_or_once_deleted() {
        let mut s = State::default();
        assert!(!s.has_seen("u", 1), "not shown yet: an empty namespace must not count as converged");
        s.apply(Change::Rs(watcher::Event::Apply(rs("u", 1))), Instant::now());
        let generation = s.rs["u"].generation;
        assert!(s.has_seen("u", generation));
        assert!(!s.has_seen("u", generation + 1), "a scale the watch has not shown yet");
        s.apply(Change::Rs(watcher::Event::Delete(rs("u", 1))), Instant::now());
        assert!(s.has_seen("u", generation + 1));
    }

    #[test]
    fn a_pod_created_over_a_stable_spec_is_a_violation_and_one_during_a_scale_is_not() {
        let t0 = Instant::now();
        let mut s = State::default();
        s.apply(Change::Rs(watcher::Event::Apply(rs("u", 1))), t0);
        // Half a second after the spec changed: the controller may still be catching up.
        s.apply(Change::Pod(watcher::Event::Apply(pod("a", "u"))), t0 + Duration::from_millis(100));
        s.apply(Change::Pod(watcher::Event::Apply(pod("b", "u"))), t0 + Duration::from_millis(500));
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        s.apply(Change::Pod(watcher::Event::Apply(pod("c", "u"))), t0 + Duration::from_secs(2));
        assert_eq!(s.violations.len(), 1, "{:?}", s.violations);
        assert!(s.violations[0].contains("made 3 active pods, over spec 1"), "{:?}", s.violations);
        assert_eq!(s.became_active, 3);
    }

    #[test]
    fn a_relist_counts_pods_against_the_spec_only_once_it_has_dropped_the_ones_gone_meanwhile() {
        let t0 = Instant::now();
        let mut s = State::default();
        s.apply(Change::Rs(watcher::Event::Apply(rs("u", 2))), t0);
        s.apply(Change::Pod(watcher::Event::Apply(pod("a", "u"))), t0);
        s.apply(Change::Pod(watcher::Event::Apply(pod("b", "u"))), t0);
        // The watch missed the replacement of both pods; the relist shows the two new ones.
        let later = t0 + Duration::from_secs(10);
        s.apply(Change::Pod(watcher::Event::Init), later);
        s.apply(Change::Pod(watcher::Event::InitApply(pod("c", "u"))), later);
        s.apply(Change::Pod(watcher::Event::InitApply(pod("d", "u"))), later);
        s.apply(Change::Pod(watcher::Event::InitDone), later);
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        // A relist that shows a third active pod is still a violation.
        s.apply(Change::Pod(watcher::Event::Init), later);
        for name in ["c", "d", "e"] {
            s.apply(Change::Pod(watcher::Event::InitApply(pod(name, "u"))), later);
        }
        s.apply(Change::Pod(watcher::Event::InitDone), later);
        assert_eq!(s.violations.len(), 1, "{:?}", s.violations);
        assert!(s.violations[0].contains("made 3 active pods, over spec 2"), "{:?}", s.violations);
    }

    #[test]
    fn a_pod_departs_when_it_is_gone_or_marked_for_deletion() {
        let t0 = Instant::now();
        let mut s = State::default();
        s.apply(Change::Rs(watcher::Event::Apply(rs("u", 2))), t0);
        for name in ["a", "b", "c"] {
            s.apply(Change::Pod(watcher::Event::Apply(pod(name, "u"))), t0);
        }
        s.apply(Change::Pod(watcher::Event::Delete(pod("a", "u"))), t0);
        let mut marked = pod("b", "u");
        marked.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        s.apply(Change::Pod(watcher::Event::Apply(marked)), t0);
        let mut departed = s.departed();
        departed.sort();
        assert_eq!(departed, ["a", "b"]);
    }

    #[test]
    fn deleting_a_protected_pod_is_a_violation_and_owners_are_remembered() {
        let t0 = Instant::now();
        let mut s = State::default();
        s.protected.insert("decoy".into());
        s.apply(Change::Pod(watcher::Event::Apply(pod("decoy", "other"))), t0);
        s.apply(Change::Pod(watcher::Event::Delete(pod("decoy", "other"))), t0);
        assert_eq!(s.violations, ["protected pod decoy was deleted"]);
        assert_eq!(s.last_owner.get("decoy").map(String::as_str), Some("other"));
    }

    #[test]
    fn convergence_needs_the_count_and_the_status_to_agree_with_the_spec() {
        let t0 = Instant::now();
        let mut s = State::default();
        s.apply(Change::Rs(watcher::Event::Apply(rs("u", 1))), t0);
        assert!(s.unconverged().unwrap().contains("spec 1, 0 active"));
        s.apply(Change::Pod(watcher::Event::Apply(pod("a", "u"))), t0);
        assert!(s.unconverged().unwrap().contains("status replicas 0"), "{:?}", s.unconverged());
        let mut done = rs("u", 1);
        done.status.as_mut().unwrap().replicas = 1;
        s.apply(Change::Rs(watcher::Event::Apply(done)), t0);
        assert_eq!(s.unconverged(), None);
    }
}
