//! The module manager: the I/O shell around the rollout. It reads the `ReconcileModule` watch,
//! the policy's rollback requests and a shadow-report tick, feeds them to the pure
//! [`Rollout`](super::rollout) one at a time, and carries out its effects: fetching and
//! compiling modules (off the async threads), swapping the serving module and the shadow,
//! writing statuses and events.

use std::{collections::VecDeque, future::Future, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use tokio::sync::{mpsc, watch};

pub use super::rollout::ROLLBACK_ANNOTATION;
use super::{
    ModuleCheck,
    api::{KubeModules, ModuleApi},
    report::{ObjectRef, Report, Target, reference_to, status_of},
    resource::{ReconcileModule, ShadowSummary},
    rollout::{Effect, Input, Rollout},
};
use crate::{
    events::EventRecorder,
    metrics::Metrics,
    policy::{ActivePolicy, RollbackRequest, Serving, Shadow, Source},
    sandbox::PolicyModule,
    telemetry::Throttle,
};

/// Says what a failing ReconcileModule watch means, without repeating itself: a missing CRD once
/// (hot swap is simply off until it is installed), other failures once per backoff step.
#[derive(Debug, Default)]
struct WatchHealth {
    failures: Throttle,
    crd_missing: bool,
}

impl WatchHealth {
    fn failed(&mut self, error: &watcher::Error, serving: &Source) {
        let missing_crd =
            matches!(error, watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.code == 404);
        if missing_crd {
            if !std::mem::replace(&mut self.crd_missing, true) {
                tracing::warn!(policy = %serving, "the ReconcileModule CRD is not installed: hot swap is off and this policy keeps serving; ReplicaSets are reconciled all the same. Install it with `kubectl apply -k deploy/` (or `wasm-replicaset crd | kubectl apply -f -`), or pass --watch-modules=false");
            }
            return;
        }
        if let Some(left_out) = self.failures.allow() {
            tracing::warn!(%error, left_out, "watching ReconcileModules failed, retrying; ReplicaSets are reconciled all the same");
        }
    }

    fn recovered(&mut self) {
        if std::mem::take(&mut self.crd_missing) {
            tracing::info!("the ReconcileModule CRD is installed now: following ReconcileModules (hot swap on)");
        }
        if self.failures.clear() {
            tracing::info!("watching ReconcileModules again");
        }
    }
}

/// How often shadow counters are written to the shadow object's status.
const SHADOW_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Turns `ReconcileModule` objects of one namespace into the host's serving and shadow modules.
pub struct ModuleManager<A = KubeModules> {
    api: A,
    policy: Arc<ActivePolicy>,
    checks: Arc<dyn ModuleCheck>,
    /// Every decision: what serves, what shadows, the history, each object's phase.
    rollout: Rollout<Arc<Serving>>,
    rollbacks: mpsc::UnboundedReceiver<RollbackRequest>,
    metrics: Arc<Metrics>,
    /// Statuses and events are written only while this is true (the leader writes; standbys
    /// follow the objects so they serve the same module after a failover).
    writes: watch::Receiver<bool>,
}

impl ModuleManager<KubeModules> {
    /// Manages the objects of `namespace`; a module serves only once it passes `checks`;
    /// `rollbacks` receives the policy's rollback requests.
    pub fn new(
        client: Client,
        namespace: &str,
        policy: Arc<ActivePolicy>,
        checks: Arc<dyn ModuleCheck>,
        events: EventRecorder,
        rollbacks: mpsc::UnboundedReceiver<RollbackRequest>,
    ) -> Self {
        Self::with_api(KubeModules::new(client, namespace, events), policy, checks, rollbacks)
    }

    /// Runs until `stop` resolves.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let events = watcher(self.api.objects().clone(), watcher::Config::default()).default_backoff();
        self.run_on(events, stop).await;
    }
}

impl<A: ModuleApi> ModuleManager<A> {
    /// Like [`ModuleManager::new`], with the requests going to `api`. The module serving in
    /// `policy` now is the baseline: where deleting the serving object returns to.
    pub fn with_api(
        api: A,
        policy: Arc<ActivePolicy>,
        checks: Arc<dyn ModuleCheck>,
        rollbacks: mpsc::UnboundedReceiver<RollbackRequest>,
    ) -> Self {
        Self {
            api,
            rollout: Rollout::new(policy.serving()),
            policy,
            checks,
            rollbacks,
            metrics: Arc::default(),
            writes: watch::channel(true).1,
        }
    }

    /// Counts activations, rejections and rollbacks in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Writes statuses and events only while `leading` is true.
    pub fn writing_when(mut self, leading: watch::Receiver<bool>) -> Self {
        self.writes = leading;
        self
    }

    /// Runs on `events` (a watch of the objects) until `stop` resolves or the watch ends. Each
    /// input is carried through completely, validation included, before the next is read.
    pub async fn run_on(
        mut self,
        events: impl Stream<Item = Result<watcher::Event<ReconcileModule>, watcher::Error>>,
        stop: impl Future<Output = ()>,
    ) {
        futures::pin_mut!(events);
        tokio::pin!(stop);
        let mut listing = Vec::new();
        let mut watch_health = WatchHealth::default();
        let mut ticker = tokio::time::interval(SHADOW_REPORT_INTERVAL);
        loop {
            let input = tokio::select! {
                () = &mut stop => break,
                Some(request) = self.rollbacks.recv() => Input::FailureStreak {
                    failed: request.failed,
                    key: request.key,
                    reason: request.reason,
                    streak: self.policy.rollback_after(),
                },
                _ = ticker.tick() => match self.shadow_counts() {
                    Some(summary) => Input::ShadowCounts(summary),
                    None => continue,
                },
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        // `Init` comes before the list is even tried: only what follows it shows
                        // the watch works.
                        if !matches!(event, watcher::Event::Init) {
                            watch_health.recovered();
                        }
                        match watched(event, &mut listing) {
                            Some(input) => input,
                            None => continue,
                        }
                    }
                    Some(Err(error)) => {
                        watch_health.failed(&error, &self.policy.serving().source);
                        continue;
                    }
                    None => break,
                },
            };
            self.feed(input).await;
        }
    }

    /// Steps the rollout with `input` and carries out the effects, feeding back the inputs they
    /// produce (a finished validation, a written shadow report) until none is left.
    async fn feed(&mut self, input: Input<Arc<Serving>>) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            // Read before every step, so that each write follows the leadership of its moment,
            // even when leadership changed during a long validation.
            let none = self.rollout.step(Input::Leading(*self.writes.borrow()));
            debug_assert!(none.is_empty(), "leadership alone has no effect");
            for effect in self.rollout.step(input) {
                inputs.extend(self.carry_out(effect).await);
            }
        }
    }

    async fn carry_out(&self, effect: Effect<Arc<Serving>>) -> Option<Input<Arc<Serving>>> {
        match effect {
            Effect::Validate(obj) => return Some(self.validate(*obj).await),
            Effect::Serve(module) => drop(self.policy.swap(module)),
            Effect::Shadow(module) => drop(self.policy.set_shadow(module.map(Shadow::new))),
            Effect::Report(report) => self.report(report).await,
            Effect::ReportShadow { name, summary } => return self.report_shadow(&name, summary).await,
            Effect::Count(outcome) => self.metrics.module_swap(outcome),
        }
        None
    }

    /// Validates `object` and says how it went, as the rollout's input.
    async fn validate(&self, object: ReconcileModule) -> Input<Arc<Serving>> {
        let started = std::time::Instant::now();
        let outcome = match self.load(&object).await {
            Ok(module) => Ok(Serving::new(module, source_of(&object))),
            Err(e) => Err(format!("{e:#}")),
        };
        Input::Validated { object, outcome, took: started.elapsed(), at: jiff::Timestamp::now() }
    }

    /// Fetches the bytes, compiles them off the runtime, checks the world and the conformance
    /// cases.
    async fn load(&self, obj: &ReconcileModule) -> Result<Arc<PolicyModule>> {
        let bytes = self.bytes(obj).await?;
        let sandbox = self.policy.sandbox().clone();
        let module = sandbox.load(bytes).await?;
        let (checked, checks) = (module.clone(), self.checks.clone());
        // The cases run the guest synchronously: keep them off the async threads.
        tokio::task::spawn_blocking(move || checks.check(&sandbox, &checked)).await.context("conformance task")??;
        Ok(module)
    }

    async fn bytes(&self, obj: &ReconcileModule) -> Result<Vec<u8>> {
        match (&obj.spec.module.inline, &obj.spec.module.config_map) {
            (Some(bytes), None) => Ok(bytes.0.clone()),
            (None, Some(reference)) => {
                let data = self
                    .api
                    .config_map_binary_data(&reference.name)
                    .await?
                    .ok_or_else(|| anyhow!("ConfigMap {} not found", reference.name))?;
                let bytes = data
                    .get(&reference.key)
                    .ok_or_else(|| anyhow!("ConfigMap {} has no binaryData key {:?}", reference.name, reference.key))?;
                Ok(bytes.0.clone())
            }
            _ => bail!("spec.module needs exactly one of inline or configMap"),
        }
    }

    /// Emits the event and writes the status of one report.
    async fn report(&self, report: Report) {
        let target = match report.to {
            Target::Seen(target) => target,
            Target::Named(name) => match self.api.get_object(&name).await {
                Ok(obj) => ObjectRef::of(&obj),
                // Deleted since (or unreachable): nobody is left to tell.
                Err(_) => return,
            },
        };
        if let Some(note) = report.event {
            self.api.event(&reference_to(&target), note.kind, note.reason, note.message);
        }
        let status = status_of(&target, report.status, &Time(jiff::Timestamp::now()));
        if let Err(error) = self.api.patch_status(&target.name, &json!({"status": status})).await {
            tracing::warn!(object = %target.name, %error, "writing the module status failed");
        }
    }

    /// Writes the shadow counters; only once written do they count as reported, so a failed
    /// write is retried at the next tick.
    async fn report_shadow(&self, name: &str, summary: ShadowSummary) -> Option<Input<Arc<Serving>>> {
        match self.api.patch_status(name, &json!({"status": {"shadow": summary}})).await {
            Ok(()) => Some(Input::ShadowReported(summary)),
            Err(error) => {
                tracing::warn!(object = %name, %error, "writing the shadow summary failed");
                None
            }
        }
    }

    /// The shadow's counters now, if there is a shadow.
    fn shadow_counts(&self) -> Option<ShadowSummary> {
        use std::sync::atomic::Ordering::Relaxed;
        let shadow = self.policy.shadow()?;
        let example = shadow.example.lock().expect("shadow example lock").clone();
        Some(ShadowSummary {
            agreements: shadow.agreements.load(Relaxed),
            differences: shadow.differences.load(Relaxed),
            errors: shadow.errors.load(Relaxed),
            example_key: example.as_ref().map(|(k, _)| k.clone()),
            example_difference: example.map(|(_, d)| d),
        })
    }
}

/// The rollout's input for one watch event; the initial (re)list is gathered into `listing` and
/// handed over whole once it is done, so that objects missing from it can be told apart.
fn watched<M>(event: watcher::Event<ReconcileModule>, listing: &mut Vec<ReconcileModule>) -> Option<Input<M>> {
    match event {
        watcher::Event::Apply(obj) => Some(Input::Applied(obj)),
        watcher::Event::Delete(obj) => Some(Input::Deleted(obj)),
        watcher::Event::Init => {
            listing.clear();
            None
        }
        watcher::Event::InitApply(obj) => {
            listing.push(obj);
            None
        }
        watcher::Event::InitDone => Some(Input::Relisted(std::mem::take(listing))),
    }
}

/// Where a module validated from `obj` comes from.
fn source_of(obj: &ReconcileModule) -> Source {
    Source::Object {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        generation: obj.metadata.generation.unwrap_or(0),
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
