//! The values `/metrics` reads at scrape time from the parts that keep them: the queue, the API
//! clients, the informers, the expectations, events, the serving module and leadership.

use std::sync::{Arc, atomic::Ordering};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};
use tokio::sync::watch;

use crate::{
    client::{Reachability, RequestStats},
    engine::Shared,
    events::EventRecorder,
    policy::ActivePolicy,
    queue::WorkQueue,
};

/// Values read at scrape time.
pub struct Live {
    /// The work queue.
    pub queue: WorkQueue,
    /// The controller client's request counters.
    pub requests: RequestStats,
    /// The event recorder's counters.
    pub events: EventRecorder,
    /// The serving and shadow modules.
    pub policy: Arc<ActivePolicy>,
    /// Whether this replica leads.
    pub leading: watch::Receiver<bool>,
    /// The engine's informers and expectations.
    pub engine: Arc<Shared>,
    /// Whether the API server answers.
    pub reachability: Reachability,
}

// The engine's shared state has no Debug; the rest says enough.
impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("queue", &self.queue)
            .field("requests", &self.requests)
            .field("reachability", &self.reachability)
            .finish_non_exhaustive()
    }
}

fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Vec<(&str, String)>, M)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        let labels: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_queue(&mut encoder)?;
        self.encode_client(&mut encoder)?;
        self.encode_events(&mut encoder)?;
        self.encode_policy(&mut encoder)?;
        self.encode_resilience(&mut encoder)?;
        family(
            &mut encoder,
            "wasm_replicaset_leader",
            "1 when this replica holds the leader lease",
            MetricType::Gauge,
            &[(vec![], ConstGauge::new(i64::from(*self.leading.borrow())))],
        )
    }
}

// The gauges and counters read at scrape time, one source at a time.
impl Live {
    /// client-go's workqueue gauges and counters.
    fn encode_queue(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let q = self.queue.stats();
        let name = || vec![("name", "replicaset".to_string())];
        family(
            encoder,
            "workqueue_depth",
            "Current depth of workqueue",
            MetricType::Gauge,
            &[(name(), ConstGauge::new(q.depth as i64))],
        )?;
        family(
            encoder,
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            MetricType::Counter,
            &[(name(), ConstCounter::new(q.adds_total))],
        )?;
        family(
            encoder,
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            MetricType::Counter,
            &[(name(), ConstCounter::new(q.retries_total))],
        )?;
        family(
            encoder,
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been observed by work_duration",
            MetricType::Gauge,
            &[(name(), ConstGauge::new(q.unfinished_work.as_secs_f64()))],
        )?;
        family(
            encoder,
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running",
            MetricType::Gauge,
            &[(name(), ConstGauge::new(q.longest_running_processor.as_secs_f64()))],
        )?;
        Ok(())
    }

    /// The API client's requests and throttling.
    fn encode_client(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = self.requests.snapshot();
        family(
            encoder,
            "wasm_replicaset_api_requests",
            "Requests the controller sent to the API server (watches excluded)",
            MetricType::Counter,
            &[(vec![], ConstCounter::new(r.requests))],
        )?;
        family(
            encoder,
            "wasm_replicaset_api_throttled_requests",
            "Requests that waited for the client-side QPS limiter",
            MetricType::Counter,
            &[(vec![], ConstCounter::new(r.throttled))],
        )?;
        family(
            encoder,
            "wasm_replicaset_api_throttle_wait_seconds",
            "Time requests spent waiting for the client-side QPS limiter",
            MetricType::Counter,
            &[(vec![], ConstCounter::new(r.wait.as_secs_f64()))],
        )?;
        Ok(())
    }

    /// Events by outcome.
    fn encode_events(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = self.events.counts();
        let rows = [
            ("created", e.created),
            ("patched", e.patched),
            ("skipped", e.skipped),
            ("dropped", e.dropped),
            ("failed", e.failed),
        ]
        .map(|(outcome, n)| (vec![("outcome", outcome.to_string())], ConstCounter::new(n)));
        family(
            encoder,
            "wasm_replicaset_events",
            "Kubernetes Events recorded, by outcome (skipped: client-go's spam filter)",
            MetricType::Counter,
            &rows,
        )
    }

    /// The serving module, its failure streak and the shadow comparison.
    fn encode_policy(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let serving = self.policy.serving();
        let module = &serving.module;
        let info = vec![
            ("digest", module.digest.to_string()),
            ("short_digest", module.digest.short()),
            ("source", serving.source.to_string()),
            ("contract", module.contract_version.clone()),
        ];
        family(
            encoder,
            "wasm_replicaset_active_module_info",
            "The policy module serving syncs",
            MetricType::Gauge,
            &[(info, ConstGauge::new(1i64))],
        )?;
        family(
            encoder,
            "wasm_replicaset_active_module_consecutive_failures",
            "Failed syncs in a row on the serving module",
            MetricType::Gauge,
            &[(vec![], ConstGauge::new(i64::from(self.policy.consecutive_failures())))],
        )?;
        if let Some(shadow) = self.policy.shadow() {
            let m = shadow.candidate.module.digest.short();
            let rows = [("agree", &shadow.agreements), ("differ", &shadow.differences), ("error", &shadow.errors)].map(
                |(result, n)| {
                    (
                        vec![("module", m.clone()), ("result", result.to_string())],
                        ConstCounter::new(n.load(Ordering::Relaxed)),
                    )
                },
            );
            family(
                encoder,
                "wasm_replicaset_shadow_plans",
                "Shadow module plans compared with the serving module's",
                MetricType::Counter,
                &rows,
            )?;
        }
        Ok(())
    }

    /// Relists, unmet expectations and the API server's reachability: what faults leave behind.
    fn encode_resilience(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut relists = Vec::new();
        let mut failures = Vec::new();
        for (resource, stats) in [("replicasets", &self.engine.replica_set_watch), ("pods", &self.engine.pod_watch)] {
            let (expired, other, failed) = stats.counts();
            let labels = |reason: &str| vec![("resource", resource.to_string()), ("reason", reason.to_string())];
            relists.push((labels("expired"), ConstCounter::new(expired)));
            relists.push((labels("other"), ConstCounter::new(other)));
            failures.push((vec![("resource", resource.to_string())], ConstCounter::new(failed)));
        }
        family(
            encoder,
            "wasm_replicaset_informer_relists",
            "Full relists after the first list, by resource and reason (expired: the watch got 410 Gone)",
            MetricType::Counter,
            &relists,
        )?;
        family(
            encoder,
            "wasm_replicaset_informer_watch_failures",
            "Watch or list attempts that failed, by resource",
            MetricType::Counter,
            &failures,
        )?;
        let unmet = self.engine.expectations.unmet();
        let rows = [("waiting", unmet.waiting), ("expired", unmet.expired)]
            .map(|(state, n)| (vec![("state", state.to_string())], ConstGauge::new(n as i64)));
        family(
            encoder,
            "wasm_replicaset_unmet_expectations",
            "ReplicaSets with creations or deletions not yet observed (expired: past the expectations TTL)",
            MetricType::Gauge,
            &rows,
        )?;
        family(
            encoder,
            "wasm_replicaset_api_reachable",
            "1 while the API server answered the newest request, 0 while requests fail without an answer",
            MetricType::Gauge,
            &[(vec![], ConstGauge::new(i64::from(self.reachability.check().is_ok())))],
        )?;
        family(
            encoder,
            "wasm_replicaset_api_transport_failures",
            "Requests and response streams that failed without an answer from the API server",
            MetricType::Counter,
            &[(vec![], ConstCounter::new(self.reachability.failures()))],
        )
    }
}
