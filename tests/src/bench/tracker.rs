//! Convergence from watches: the bench follows pods (metadata only) and ReplicaSets of one
//! namespace and knows when every ReplicaSet has its pods and an up-to-date status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

/// What the watches saw of one ReplicaSet.
#[derive(Debug, Clone, Default)]
struct RsFacts {
    uid: String,
    spec: i32,
    generation: i64,
    status_replicas: i32,
    observed_generation: i64,
}

#[derive(Debug, Default)]
struct State {
    /// Live (not terminating) pods: name → controller owner UID.
    pods: HashMap<String, String>,
    live_by_owner: HashMap<String, usize>,
    rs: HashMap<String, RsFacts>,
    /// When a pod appeared last.
    last_pod_added: Option<Instant>,
    pods_added: usize,
    /// When each pod appeared.
    added_at: Vec<Instant>,
    /// When a live pod went away last.
    last_pod_gone: Option<Instant>,
    /// When anything changed last.
    last_change: Option<Instant>,
    /// Live pods after each change of their number.
    live_log: Vec<(Instant, usize)>,
    pods_synced: bool,
    rs_synced: bool,
    error: Option<String>,
}

impl State {
    fn pod_live(&mut self, name: String, owner: String) {
        let now = Instant::now();
        if !self.pods.contains_key(&name) {
            *self.live_by_owner.entry(owner.clone()).or_default() += 1;
            self.pods.insert(name, owner);
            self.pods_added += 1;
            self.last_pod_added = Some(now);
            self.added_at.push(now);
            self.live_log.push((now, self.pods.len()));
        }
        self.last_change = Some(now);
    }

    fn pod_gone(&mut self, name: &str) {
        let now = Instant::now();
        if let Some(owner) = self.pods.remove(name) {
            if let Some(n) = self.live_by_owner.get_mut(&owner) {
                *n -= 1;
            }
            self.last_pod_gone = Some(now);
            self.live_log.push((now, self.pods.len()));
        }
        self.last_change = Some(now);
    }

    fn converged(&self, expected: &HashMap<String, i32>) -> bool {
        let total: i32 = expected.values().sum();
        self.pods.len() == total as usize
            && expected.iter().all(|(name, &want)| {
                self.rs.get(name).is_some_and(|rs| {
                    rs.spec == want
                        && rs.status_replicas == want
                        && rs.observed_generation == rs.generation
                        && self.live_by_owner.get(&rs.uid).copied().unwrap_or(0) == want as usize
                })
            })
    }
}

/// Follows pods and ReplicaSets of one namespace until dropped.
pub struct Tracker {
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Tracker {
    /// Starts both watches with `client` in `namespace` and waits until their initial lists are in.
    pub async fn start(client: &kube::Client, namespace: &str) -> Result<Self> {
        let state = Arc::new(Mutex::new(State::default()));
        let pods: Api<PartialObjectMeta<Pod>> = Api::namespaced(client.clone(), namespace);
        let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
        let s = state.clone();
        let pod_task = tokio::spawn(async move {
            let stream = watcher(pods, watcher::Config::default().any_semantic());
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let mut st = lock(&s);
                match event {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        if p.metadata.deletion_timestamp.is_some() {
                            st.pod_gone(&name);
                        } else {
                            let owner = p
                                .metadata
                                .owner_references
                                .as_ref()
                                .and_then(|o| o.iter().find(|r| r.controller == Some(true)))
                                .map(|r| r.uid.clone())
                                .unwrap_or_default();
                            st.pod_live(name, owner);
                        }
                    }
                    Ok(watcher::Event::Delete(p)) => st.pod_gone(&p.metadata.name.clone().unwrap_or_default()),
                    Ok(watcher::Event::Init) => {}
                    Ok(watcher::Event::InitDone) => st.pods_synced = true,
                    Err(e) => st.error = Some(format!("pod watch: {e}")),
                }
            }
        });
        let s = state.clone();
        let rs_task = tokio::spawn(async move {
            let stream = watcher(rss, watcher::Config::default().any_semantic());
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let mut st = lock(&s);
                match event {
                    Ok(watcher::Event::Apply(rs) | watcher::Event::InitApply(rs)) => {
                        let status = rs.status.clone().unwrap_or_default();
                        let facts = RsFacts {
                            uid: rs.metadata.uid.clone().unwrap_or_default(),
                            spec: rs.spec.replicas.unwrap_or(1),
                            generation: rs.metadata.generation.unwrap_or(0),
                            status_replicas: status.replicas,
                            observed_generation: status.observed_generation.unwrap_or(0),
                        };
                        st.rs.insert(rs.metadata.name.clone().unwrap_or_default(), facts);
                        st.last_change = Some(Instant::now());
                    }
                    Ok(watcher::Event::Delete(rs)) => {
                        st.rs.remove(&rs.metadata.name.clone().unwrap_or_default());
                    }
                    Ok(watcher::Event::Init) => {}
                    Ok(watcher::Event::InitDone) => st.rs_synced = true,
                    Err(e) => st.error = Some(format!("ReplicaSet watch: {e}")),
                }
            }
        });
        let tracker = Self { state, tasks: vec![pod_task, rs_task] };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            {
                let st = lock(&tracker.state);
                if st.pods_synced && st.rs_synced {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("the bench's watches did not sync in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(tracker)
    }

    /// Waits until every ReplicaSet in `expected` (name → replicas) has that many live pods,
    /// `spec.replicas`, `status.replicas` equal to it and `observedGeneration` current, and no
    /// other pods exist. Returns when that state was reached (the last change seen). `alive` is
    /// polled to fail fast if the controller dies.
    pub async fn wait_converged(
        &self,
        expected: &HashMap<String, i32>,
        timeout: Duration,
        mut alive: impl FnMut() -> Result<()>,
    ) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        let mut polls = 0u64;
        loop {
            {
                let st = lock(&self.state);
                if st.converged(expected) {
                    return Ok(st.last_change.unwrap_or_else(Instant::now));
                }
                if Instant::now() > deadline {
                    let live = st.pods.len();
                    let ok = expected
                        .iter()
                        .filter(|(n, w)| {
                            st.rs
                                .get(*n)
                                .is_some_and(|r| r.status_replicas == **w && r.observed_generation == r.generation)
                        })
                        .count();
                    bail!(
                        "not converged in {timeout:?}: {live} live pods (want {}), {ok}/{} ReplicaSets with a current status{}",
                        expected.values().sum::<i32>(),
                        expected.len(),
                        st.error.as_ref().map(|e| format!("; last watch error: {e}")).unwrap_or_default()
                    );
                }
            }
            polls += 1;
            if polls.is_multiple_of(50) {
                alive()?;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// When the last pod appeared, and how many appeared since the tracker started.
    pub fn pods_added(&self) -> (Option<Instant>, usize) {
        let st = lock(&self.state);
        (st.last_pod_added, st.pods_added)
    }

    /// Pod arrivals grouped into bursts (gaps over 10 ms split them), relative to `t0`:
    /// `(start ms, count, duration ms)`; shows slow start's batches.
    pub fn bursts(&self, t0: Instant) -> Vec<(f64, usize, f64)> {
        let st = lock(&self.state);
        let mut out: Vec<(f64, usize, f64)> = Vec::new();
        let mut prev: Option<Instant> = None;
        for &t in &st.added_at {
            let ms = t.saturating_duration_since(t0).as_secs_f64() * 1000.0;
            match (prev, out.last_mut()) {
                (Some(p), Some(last)) if t.duration_since(p) < Duration::from_millis(10) => {
                    last.1 += 1;
                    last.2 = ms - last.0;
                }
                _ => out.push((ms, 1, 0.0)),
            }
            prev = Some(t);
        }
        out
    }

    /// Live pods from `t0` on: `(seconds since t0, count)`, starting with the count at `t0`.
    pub fn live_pods_since(&self, t0: Instant) -> Vec<(f64, usize)> {
        let st = lock(&self.state);
        let at_start = st.live_log.iter().take_while(|(t, _)| *t < t0).last().map_or(0, |(_, n)| *n);
        let mut out = vec![(0.0, at_start)];
        out.extend(st.live_log.iter().filter(|(t, _)| *t >= t0).map(|(t, n)| (t.duration_since(t0).as_secs_f64(), *n)));
        out
    }

    /// When the last live pod went away.
    pub fn last_pod_gone(&self) -> Option<Instant> {
        lock(&self.state).last_pod_gone
    }
}
