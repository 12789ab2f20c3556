//! The reconcile engine: informers feed indexes and the work queue; workers sync one key at a
//! time through the policy and apply its plan.
//!
//! Data flows one way: watch → cache/index ([`handlers`]) → queue → snapshot → guest → plan →
//! guard rails → apply ([`claims`], [`scale`]) → status; [`sync`] strings it together, and every
//! write goes through [`crate::apply`].

pub mod claims;
pub mod handlers;
#[cfg(test)]
mod handlers_tests;
pub mod scale;
pub mod sync;
#[cfg(test)]
mod tests;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::{Api, Client, runtime::watcher};
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

pub use sync::{SyncError, SyncReport};

use crate::{
    apply::{ApiCalls, Writes},
    consistency::ConsistencyStore,
    contract::{Plan, Snapshot},
    expectations::{ControllerExpectations, EXPECTATIONS_TIMEOUT},
    informers::{
        Informer, WatchStats,
        cached::{CachedPod, trim_replica_set},
        index::{PodIndex, ReplicaSetIndex},
    },
    metrics::Metrics,
    policy::ActivePolicy,
    queue::WorkQueue,
};

/// Upstream's `BurstReplicas`: at most this many creations or deletions per sync.
pub const BURST_REPLICAS: u32 = 500;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Watch one namespace instead of all.
    pub namespace: Option<String>,
    /// The burst cap handed to the policy.
    pub burst_replicas: u32,
    /// How long unmet expectations hold back a ReplicaSet's scaling (upstream: 5 minutes).
    pub expectations_ttl: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { namespace: None, burst_replicas: BURST_REPLICAS, expectations_ttl: EXPECTATIONS_TIMEOUT }
    }
}

/// State the informer handlers and the workers share.
pub struct Shared {
    /// ReplicaSets by namespace and by controller.
    pub replica_sets: ReplicaSetIndex,
    /// Pods by controller and orphans by namespace.
    pub pods: PodIndex,
    /// The ReplicaSet keys to sync.
    pub queue: WorkQueue,
    /// Creations and deletions each key still awaits.
    pub expectations: ControllerExpectations,
    /// Our own writes the informers have yet to see.
    pub consistency: ConsistencyStore,
    /// The policy module and its sandbox.
    pub policy: Arc<ActivePolicy>,
    /// The burst cap.
    pub burst_replicas: u32,
    /// Every sync's outcome, for whoever subscribes (the demo, tests); built only when someone
    /// listens.
    pub sync_log: broadcast::Sender<SyncRecord>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The last "access denied" a sync met (RBAC), until a sync succeeds; readiness reports it.
    pub access_denied: Mutex<Option<String>>,
    /// The ReplicaSet informer's relists and failures.
    pub replica_set_watch: Arc<WatchStats>,
    /// The Pod informer's relists and failures.
    pub pod_watch: Arc<WatchStats>,
}

/// What the engine works with besides its informers.
pub struct Collaborators<A> {
    /// The policy module and its sandbox.
    pub policy: Arc<ActivePolicy>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The API requests behind every write.
    pub api: A,
}

/// What one sync did, as the sync log reports it.
#[derive(Debug, Clone)]
pub struct SyncRecord {
    /// The ReplicaSet key.
    pub key: String,
    /// The short digest of the module that planned it.
    pub module: String,
    /// The last snapshot planned on and its plan (absent when no plan was made).
    pub planned: Option<(Arc<Snapshot>, Plan)>,
    /// The snapshot the policy failed on, when the sync failed in the guest and made no plan
    /// (so a recorder can still turn it into a fixture).
    pub failed_on: Option<Arc<Snapshot>>,
    /// The outcome: what was done, or why the sync failed.
    pub outcome: Result<String, String>,
}

/// The running engine: informers, indexes, queue, and what the workers need to sync.
pub struct Engine<A: ApiCalls> {
    /// State shared with the informer handlers.
    pub shared: Arc<Shared>,
    writes: Writes<A>,
    rs_informer: Informer<ReplicaSet>,
    pod_informer: Informer<CachedPod>,
}

impl<A: ApiCalls> Engine<A> {
    /// Starts the ReplicaSet and Pod informers on `client`; they run until `stop` turns true.
    /// Workers are started separately ([`Engine::run_workers`]), so a standby replica can keep
    /// its caches warm without syncing.
    pub fn start(
        client: Client,
        config: &EngineConfig,
        with: Collaborators<A>,
        stop: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let Collaborators { policy, metrics, api } = with;
        let consistency = ConsistencyStore::default();
        let writes = Writes::new(api, consistency.clone());
        let shared = Arc::new(Shared {
            replica_sets: ReplicaSetIndex::default(),
            pods: PodIndex::default(),
            queue: WorkQueue::new(),
            expectations: ControllerExpectations::with_ttl(config.expectations_ttl),
            consistency,
            policy,
            burst_replicas: config.burst_replicas,
            sync_log: broadcast::channel(1024).0,
            metrics,
            access_denied: Mutex::new(None),
            replica_set_watch: Arc::default(),
            pod_watch: Arc::default(),
        });
        let (rs_api, pod_api): (Api<ReplicaSet>, Api<CachedPod>) = match &config.namespace {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
            None => (Api::all(client.clone()), Api::all(client)),
        };
        // Streaming initial lists (WatchList), as kube-controller-manager 1.37's informers do:
        // one watch request instead of pages of lists. Informers fall back to paged lists when
        // the API server refuses them.
        let watch_config = watcher::Config::default().streaming_lists();
        let rs_informer = Informer::spawn(
            rs_api,
            watch_config.clone(),
            trim_replica_set,
            (Arc::new(handlers::ReplicaSetEvents(shared.clone())), shared.replica_set_watch.clone()),
            stopped(stop.clone()),
        );
        let pod_informer = Informer::spawn(
            pod_api,
            watch_config,
            |_| {},
            (Arc::new(handlers::PodEvents(shared.clone())), shared.pod_watch.clone()),
            stopped(stop),
        );
        Arc::new(Self { shared, writes, rs_informer, pod_informer })
    }

    /// An engine without informers, for unit tests that fill the indexes themselves.
    #[cfg(test)]
    pub(crate) fn detached(policy: Arc<ActivePolicy>, api: A, burst_replicas: u32) -> Arc<Self> {
        let consistency = ConsistencyStore::default();
        let writes = Writes::new(api, consistency.clone());
        let shared = Arc::new(Shared {
            replica_sets: ReplicaSetIndex::default(),
            pods: PodIndex::default(),
            queue: WorkQueue::new(),
            expectations: ControllerExpectations::new(),
            consistency,
            policy,
            burst_replicas,
            sync_log: broadcast::channel(64).0,
            metrics: Arc::default(),
            access_denied: Mutex::new(None),
            replica_set_watch: Arc::default(),
            pod_watch: Arc::default(),
        });
        Arc::new(Self { shared, writes, rs_informer: Informer::detached(), pod_informer: Informer::detached() })
    }

    /// Resolves once both caches hold their first full list (`WaitForCacheSync`).
    pub async fn wait_synced(&self) {
        self.rs_informer.wait_synced().await;
        self.pod_informer.wait_synced().await;
    }

    /// Whether both caches are synced.
    pub fn has_synced(&self) -> bool {
        self.rs_informer.has_synced() && self.pod_informer.has_synced()
    }

    /// Runs `workers` workers until `stop` becomes true: each takes a key, syncs it, and either
    /// forgets its failures or re-queues it with backoff. When stopped, workers take no new key
    /// and this returns once the syncs in flight have finished.
    pub async fn run_workers(self: &Arc<Self>, workers: usize, stop: watch::Receiver<bool>) {
        self.wait_synced().await;
        if !self.has_synced() {
            // Stopped before the caches ever synced.
            return;
        }
        tracing::info!(workers, "caches synced, starting workers");
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let (engine, mut stop) = (self.clone(), stop.clone());
                tokio::spawn(async move {
                    loop {
                        let next = tokio::select! {
                            biased;
                            _ = stop.wait_for(|s| *s) => break,
                            next = engine.shared.queue.get() => next,
                        };
                        let Some((key, queued_for)) = next else { break };
                        engine.shared.metrics.observe_queue_wait(queued_for.as_secs_f64());
                        engine.process(&key).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "worker ended abnormally");
            }
        }
    }

    /// `processNextWorkItem` for one key.
    async fn process(&self, key: &str) {
        let started = Instant::now();
        let queue = &self.shared.queue;
        let serving = self.shared.policy.serving();
        let span = tracing::info_span!("sync", key, module = %serving.module.digest.short());
        let result = self.sync_replica_set(key).instrument(span.clone()).await;
        let _entered = span.enter();
        let metrics = &self.shared.metrics;
        match &result {
            Ok(report) => {
                queue.forget(key);
                self.shared.access_denied.lock().expect("access lock").take();
                metrics.observe_sync("success", started.elapsed().as_secs_f64());
                tracing::debug!(elapsed = ?started.elapsed(), "{}", report.summary());
            }
            Err(error) => {
                metrics.observe_sync(error.label(), started.elapsed().as_secs_f64());
                if let SyncError::StaleCache(stale) = error {
                    metrics.stale_sync_skip(stale.resource.group_resource());
                }
                if error.is_access_denied() {
                    *self.shared.access_denied.lock().expect("access lock") = Some(format!("sync {key}: {error}"));
                }
                // Upstream's HandleError line: "sync %q failed with %v".
                tracing::warn!(%error, "sync failed, retrying with backoff");
                queue.add_rate_limited(key);
            }
        }
        if let Some(worked) = queue.done(key) {
            metrics.observe_work(worked.as_secs_f64());
        }
    }

    /// Whether the engine is ready: caches synced and no access denied; the text says why not.
    pub fn readiness(&self) -> Result<String, String> {
        if let Some(error) = self.rs_informer.last_error().or_else(|| self.pod_informer.last_error()) {
            return Err(format!("watch failing: {error}"));
        }
        if !self.has_synced() {
            return Err("caches not synced yet".into());
        }
        if let Some(denied) = self.shared.access_denied.lock().expect("access lock").clone() {
            return Err(format!("access denied: {denied}"));
        }
        Ok(format!("caches synced ({} ReplicaSets, {} pods)", self.rs_informer.store.len(), self.shared.pods.len()))
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
