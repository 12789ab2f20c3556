//! Prometheus metrics: client-go's workqueue names under `name="replicaset"`, upstream's stale
//! sync skips, and the host's own sync, guest, shadow and module metrics.
//!
//! Histograms are observed as things happen; values other parts already keep (queue depth and
//! totals, API requests, events, the serving module, leadership) are read at scrape time by
//! [`Live`], so nothing is counted twice.

mod live;

use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

pub use self::live::Live;
use crate::sandbox::{CallStats, GuestError};

/// `name="replicaset"`, the label client-go's workqueue metrics carry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueName {
    name: &'static str,
}

const QUEUE: QueueName = QueueName { name: "replicaset" };

/// A module and the export called.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    module: String,
    export: &'static str,
}

/// A module.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    module: String,
}

/// A module and why its call failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    module: String,
    cause: &'static str,
}

/// How a sync ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    result: &'static str,
}

/// Upstream's labels for stale sync skips.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupResource {
    group: &'static str,
    resource: &'static str,
}

/// What module swaps did.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SwapLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// Every metric the host records.
#[derive(Debug)]
pub struct Metrics {
    queue_duration: Family<QueueName, Histogram>,
    work_duration: Family<QueueName, Histogram>,
    syncs: Family<SyncLabels, Counter>,
    sync_duration: Histogram,
    sync_phases: Family<PhaseLabels, Histogram>,
    stale_sync_skips: Family<GroupResource, Counter>,
    guest_call_duration: Family<CallLabels, Histogram>,
    guest_fuel: Family<ModuleLabels, Counter>,
    guest_fuel_per_call: Family<ModuleLabels, Histogram>,
    guest_memory_high_water: Family<ModuleLabels, Gauge>,
    guest_failures: Family<FailureLabels, Counter>,
    guest_input_failures: Family<FailureLabels, Counter>,
    module_swaps: Family<SwapLabels, Counter>,
    live: Mutex<Option<Arc<Live>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let queue_buckets = || Histogram::new(exponential_buckets(1e-8, 10.0, 12));
        Self {
            // client-go's buckets: 10ns to 1000s, by powers of ten.
            queue_duration: Family::new_with_constructor(queue_buckets),
            work_duration: Family::new_with_constructor(queue_buckets),
            syncs: Family::default(),
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            // 1 µs to ~16 s: one step of a sync is anything from a lookup to a throttled write.
            sync_phases: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1e-6, 2.0, 25))),
            stale_sync_skips: Family::default(),
            guest_call_duration: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1e-5, 2.0, 18))),
            guest_fuel: Family::default(),
            guest_fuel_per_call: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1e4, 4.0, 12))),
            guest_memory_high_water: Family::default(),
            guest_failures: Family::default(),
            guest_input_failures: Family::default(),
            module_swaps: Family::default(),
            live: Mutex::new(None),
        }
    }
}

impl Metrics {
    /// A key waited `seconds` in the queue before a worker took it.
    pub fn observe_queue_wait(&self, seconds: f64) {
        self.queue_duration.get_or_create(&QUEUE).observe(seconds);
    }

    /// A worker spent `seconds` on a key.
    pub fn observe_work(&self, seconds: f64) {
        self.work_duration.get_or_create(&QUEUE).observe(seconds);
    }

    /// One step of a sync (`gate`, `snapshot`, `guest`, `claims`, `scale`, `status`) took
    /// `seconds`; `guest` includes the hop to the thread that runs the call.
    pub fn observe_phase(&self, phase: &'static str, seconds: f64) {
        self.sync_phases.get_or_create(&PhaseLabels { phase }).observe(seconds);
    }

    /// A sync ended with `result` (`success` or an error label) after `seconds`.
    pub fn observe_sync(&self, result: &'static str, seconds: f64) {
        self.syncs.get_or_create(&SyncLabels { result }).inc();
        self.sync_duration.observe(seconds);
    }

    /// Upstream's `replicaset_controller_stale_sync_skips_total`.
    pub fn stale_sync_skip(&self, (group, resource): (&'static str, &'static str)) {
        self.stale_sync_skips.get_or_create(&GroupResource { group, resource }).inc();
    }

    /// A guest call of `export` on module `digest` (short) succeeded with `stats`.
    pub fn observe_guest_call(&self, digest: &str, export: &'static str, stats: &CallStats) {
        let module = ModuleLabels { module: digest.to_string() };
        self.guest_call_duration
            .get_or_create(&CallLabels { module: digest.to_string(), export })
            .observe(stats.duration.as_secs_f64());
        self.guest_fuel.get_or_create(&module).inc_by(stats.fuel);
        self.guest_fuel_per_call.get_or_create(&module).observe(stats.fuel as f64);
        let high_water = self.guest_memory_high_water.get_or_create(&module);
        high_water.set(high_water.get().max(stats.memory_high_water as i64));
    }

    /// A guest call failed.
    pub fn guest_failure(&self, error: &GuestError) {
        self.guest_failures
            .get_or_create(&FailureLabels { module: error.digest.short(), cause: error.failure.label() })
            .inc();
    }

    /// A guest call failed on input that the last good module fails on too (never blamed on
    /// the module).
    pub fn guest_input_failure(&self, error: &GuestError) {
        self.guest_input_failures
            .get_or_create(&FailureLabels { module: error.digest.short(), cause: error.failure.label() })
            .inc();
    }

    /// A module was activated, rejected, shadowed or rolled back.
    pub fn module_swap(&self, outcome: &'static str) {
        self.module_swaps.get_or_create(&SwapLabels { outcome }).inc();
    }

    /// Reads the live values (queue, requests, events, module, leadership) from these at scrape
    /// time.
    pub fn attach(&self, live: Live) {
        *self.live.lock().expect("metrics lock") = Some(Arc::new(live));
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        self.register_syncs(&mut registry);
        self.register_guests(&mut registry);
        if let Some(live) = self.live.lock().expect("metrics lock").clone() {
            registry.register_collector(Box::new(live));
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// The queue's latencies and the syncs' outcomes.
    fn register_syncs(&self, registry: &mut Registry) {
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            self.queue_duration.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            self.work_duration.clone(),
        );
        registry.register(
            "replicaset_controller_stale_sync_skips",
            "Number of syncs skipped because the informer cache was older than the controller's own writes",
            self.stale_sync_skips.clone(),
        );
        registry.register("wasm_replicaset_syncs", "ReplicaSet syncs, by result", self.syncs.clone());
        registry.register(
            "wasm_replicaset_sync_duration_seconds",
            "How long one ReplicaSet sync takes",
            self.sync_duration.clone(),
        );
        registry.register(
            "wasm_replicaset_sync_phase_seconds",
            "How long each step of a sync takes (gate, snapshot, guest, claims, scale, status)",
            self.sync_phases.clone(),
        );
    }

    /// Guest calls, their cost and failures, and module changes.
    fn register_guests(&self, registry: &mut Registry) {
        registry.register(
            "wasm_replicaset_guest_call_duration_seconds",
            "Wall time of one guest call (fresh instance, call, guard rails)",
            self.guest_call_duration.clone(),
        );
        registry.register("wasm_replicaset_guest_fuel", "Fuel consumed by guest calls", self.guest_fuel.clone());
        registry.register(
            "wasm_replicaset_guest_fuel_per_call",
            "Fuel consumed by one guest call",
            self.guest_fuel_per_call.clone(),
        );
        registry.register(
            "wasm_replicaset_guest_memory_high_water_bytes",
            "Largest linear memory a guest call asked for",
            self.guest_memory_high_water.clone(),
        );
        registry.register(
            "wasm_replicaset_guest_failures",
            "Guest calls that failed, by cause",
            self.guest_failures.clone(),
        );
        registry.register(
            "wasm_replicaset_guest_input_failures",
            "Guest calls that failed on a snapshot the last good module fails on too, by cause",
            self.guest_input_failures.clone(),
        );
        registry.register(
            "wasm_replicaset_module_swaps",
            "Policy module changes, by outcome",
            self.module_swaps.clone(),
        );
    }
}
