//! Watches `ReconcileModule` objects and turns them into the serving module or the shadow:
//! fetch, compile off the hot path, check the world and the conformance cases, swap atomically,
//! and report on the object (status, events, log lines). Also performs rollbacks.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::{ConfigMap, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::{
    ModuleCheck,
    resource::{Mode, Phase, ReconcileModule, ReconcileModuleStatus, ShadowSummary},
};
use crate::{
    events::{EventRecorder, EventType},
    metrics::Metrics,
    policy::{ActivePolicy, RollbackRequest, Serving, Shadow, Source},
    sandbox::PolicyModule,
};

/// Annotation that asks the host to roll back from this (serving) module; its value is any
/// changing token, e.g. a timestamp (`module rollback` sets it).
pub const ROLLBACK_ANNOTATION: &str = "policy.wasm-replicaset.dev/rollback";
/// How many good modules the host remembers to roll back to.
const HISTORY: usize = 8;
/// How often shadow counters are written to the shadow object's status.
const SHADOW_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Turns `ReconcileModule` objects of one namespace into the host's serving and shadow modules.
pub struct ModuleManager {
    objects: Api<ReconcileModule>,
    config_maps: Api<ConfigMap>,
    policy: Arc<ActivePolicy>,
    checks: Arc<dyn ModuleCheck>,
    events: EventRecorder,
    /// The module the host started with (embedded or `--module`): where deleting the serving
    /// object returns to.
    baseline: Arc<Serving>,
    /// Modules that served well before the current one, newest last.
    history: Vec<Arc<Serving>>,
    /// What was decided per object UID: (generation, rollback token).
    evaluated: HashMap<String, (i64, Option<String>)>,
    rollbacks: mpsc::UnboundedReceiver<RollbackRequest>,
    shadow_reported: Option<ShadowSummary>,
    metrics: Arc<Metrics>,
    /// Statuses and events are written only while this is true (the leader writes; standbys
    /// follow the objects so they serve the same module after a failover).
    writes: watch::Receiver<bool>,
}

impl ModuleManager {
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
        let baseline = policy.serving();
        Self {
            objects: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            policy,
            checks,
            events,
            baseline,
            history: Vec::new(),
            evaluated: HashMap::new(),
            rollbacks,
            shadow_reported: None,
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

    /// Runs until `stop` resolves.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let events = watcher(self.objects.clone(), watcher::Config::default()).default_backoff();
        futures::pin_mut!(events);
        tokio::pin!(stop);
        let mut listing: Vec<ReconcileModule> = Vec::new();
        let mut known: HashMap<String, ReconcileModule> = HashMap::new();
        let mut ticker = tokio::time::interval(SHADOW_REPORT_INTERVAL);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(request) = self.rollbacks.recv() => self.roll_back(&request.failed, &request.reason, Some(&request.key)).await,
                _ = ticker.tick() => self.report_shadow().await,
                event = events.next() => match event {
                    Some(Ok(watcher::Event::Apply(obj))) => {
                        known.insert(obj.uid().unwrap_or_default(), obj.clone());
                        self.evaluate(&obj).await;
                    }
                    Some(Ok(watcher::Event::Delete(obj))) => {
                        known.remove(&obj.uid().unwrap_or_default());
                        self.removed(&obj).await;
                    }
                    Some(Ok(watcher::Event::Init)) => listing.clear(),
                    Some(Ok(watcher::Event::InitApply(obj))) => listing.push(obj),
                    Some(Ok(watcher::Event::InitDone)) => {
                        // Objects that vanished while the watch was down.
                        let listed: Vec<String> = listing.iter().filter_map(|o| o.uid()).collect();
                        let gone: Vec<ReconcileModule> = known.values().filter(|o| !listed.contains(&o.uid().unwrap_or_default())).cloned().collect();
                        for obj in gone {
                            known.remove(&obj.uid().unwrap_or_default());
                            self.removed(&obj).await;
                        }
                        // Oldest first, so that with several Active objects the newest wins.
                        listing.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));
                        for obj in std::mem::take(&mut listing) {
                            known.insert(obj.uid().unwrap_or_default(), obj.clone());
                            self.evaluate(&obj).await;
                        }
                    }
                    Some(Err(error)) => tracing::warn!(%error, "watching ReconcileModules failed, retrying (is the CRD installed? `host crd | kubectl apply -f -`)"),
                    None => break,
                },
            }
        }
    }

    /// Validates and applies one object, unless this generation was already decided.
    async fn evaluate(&mut self, obj: &ReconcileModule) {
        let uid = obj.uid().unwrap_or_default();
        let generation = obj.metadata.generation.unwrap_or(0);
        let token = obj.annotations().get(ROLLBACK_ANNOTATION).cloned();
        if obj.metadata.deletion_timestamp.is_some() {
            return;
        }
        match self.evaluated.get(&uid) {
            Some((g, t)) if *g == generation && *t == token => return,
            Some((g, _)) if *g == generation => {
                // Only the rollback token changed: a rollback request.
                self.evaluated.insert(uid.clone(), (generation, token));
                let serving = self.policy.serving();
                if is_source(&serving.source, obj) {
                    self.roll_back(&serving, "rollback requested (host module rollback)", None).await;
                }
                return;
            }
            _ => {}
        }
        self.evaluated.insert(uid, (generation, token));
        let status = obj.status.clone().unwrap_or_default();
        if status.phase == Some(Phase::RolledBack) && status.observed_generation == Some(generation) {
            // Rolled back (by the leader, or an earlier host): stays so until a new generation.
            // A standby serving it follows, so a failover does not bring it back.
            let serving = self.policy.serving();
            if is_source(&serving.source, obj) {
                self.roll_back(&serving, status.message.as_deref().unwrap_or("rolled back by the leader"), None).await;
            }
            return;
        }
        let name = obj.name_any();
        let started = std::time::Instant::now();
        let module = match self.validate(obj).await {
            Ok(module) => module,
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(object = %name, %reason, "module rejected; the serving module is unchanged");
                self.metrics.module_swap("rejected");
                self.event(obj, EventType::Warning, "Rejected", &reason);
                self.write_status(obj, Phase::Rejected, None, &reason, None).await;
                return;
            }
        };
        let source = Source::Object {
            namespace: obj.namespace().unwrap_or_default(),
            name: name.clone(),
            uid: obj.uid().unwrap_or_default(),
            generation,
        };
        let serving = Serving::new(module.clone(), source);
        match obj.spec.mode {
            Mode::Active => {
                let previous = self.policy.swap(serving);
                if let Some(shadow) = self.policy.shadow().filter(|s| is_source(&s.candidate.source, obj)) {
                    // Promoted from shadow to active.
                    drop(shadow);
                    self.policy.set_shadow(None);
                }
                let message = format!(
                    "serving since {} (validated in {:?}, contract {})",
                    jiff::Timestamp::now(),
                    started.elapsed(),
                    module.contract_version
                );
                tracing::info!(object = %name, module = %module.digest, from = %previous.module.digest.short(), "policy module activated");
                self.metrics.module_swap("activated");
                self.event(
                    obj,
                    EventType::Normal,
                    "Activated",
                    &format!("Module {} now serves every sync", module.digest),
                );
                self.write_status(obj, Phase::Active, Some(&module), &message, Some(Time(jiff::Timestamp::now())))
                    .await;
                self.supersede(&previous, &name).await;
                self.remember(previous);
            }
            Mode::Shadow => {
                let previous = self.policy.set_shadow(Some(Shadow::new(serving)));
                self.shadow_reported = None;
                tracing::info!(object = %name, module = %module.digest, "shadow module started: its plans are compared, never applied");
                self.metrics.module_swap("shadowed");
                self.event(
                    obj,
                    EventType::Normal,
                    "Shadowing",
                    &format!("Module {} runs beside the active module; its plans are never applied", module.digest),
                );
                self.write_status(
                    obj,
                    Phase::Shadow,
                    Some(&module),
                    "shadowing: comparing plans with the active module",
                    Some(Time(jiff::Timestamp::now())),
                )
                .await;
                if let Some(previous) = previous.filter(|p| !is_source(&p.candidate.source, obj)) {
                    self.supersede(&previous.candidate, &name).await;
                }
            }
        }
    }

    /// Fetches the bytes, compiles them off the runtime, checks the world and the conformance
    /// cases.
    async fn validate(&self, obj: &ReconcileModule) -> Result<Arc<PolicyModule>> {
        let bytes = self.bytes(obj).await?;
        let sandbox = self.policy.sandbox().clone();
        let module = sandbox.load(bytes).await?;
        let (checked, checks) = (module.clone(), self.checks.clone());
        tokio::task::spawn_blocking(move || checks.check(&sandbox, &checked)).await.context("conformance task")??;
        Ok(module)
    }

    async fn bytes(&self, obj: &ReconcileModule) -> Result<Vec<u8>> {
        match (&obj.spec.module.inline, &obj.spec.module.config_map) {
            (Some(bytes), None) => Ok(bytes.0.clone()),
            (None, Some(reference)) => {
                let cm = self
                    .config_maps
                    .get_opt(&reference.name)
                    .await?
                    .ok_or_else(|| anyhow!("ConfigMap {} not found", reference.name))?;
                let data = cm.binary_data.unwrap_or_default();
                let bytes = data
                    .get(&reference.key)
                    .ok_or_else(|| anyhow!("ConfigMap {} has no binaryData key {:?}", reference.name, reference.key))?;
                Ok(bytes.0.clone())
            }
            _ => bail!("spec.module needs exactly one of inline or configMap"),
        }
    }

    /// A serving or shadow object was deleted: fall back to the baseline or stop shadowing.
    async fn removed(&mut self, obj: &ReconcileModule) {
        self.evaluated.remove(&obj.uid().unwrap_or_default());
        self.history.retain(|s| !is_source(&s.source, obj));
        if self.policy.shadow().is_some_and(|s| is_source(&s.candidate.source, obj)) {
            self.policy.set_shadow(None);
            tracing::info!(object = %obj.name_any(), "shadow module removed");
        }
        let serving = self.policy.serving();
        if is_source(&serving.source, obj) {
            self.policy.swap(self.baseline.clone());
            self.history.clear();
            tracing::info!(object = %obj.name_any(), module = %self.baseline.module.digest, source = %self.baseline.source, "serving module's object deleted; back to the baseline module");
        }
    }

    /// Returns to the last good module (or the baseline) and marks the failed object RolledBack.
    async fn roll_back(&mut self, failed: &Arc<Serving>, reason: &str, failing_key: Option<&str>) {
        let serving = self.policy.serving();
        if !Arc::ptr_eq(&serving, failed) {
            return;
        }
        let good = loop {
            match self.history.pop() {
                Some(candidate) if candidate.module.digest == failed.module.digest => continue,
                Some(candidate) => break candidate,
                None => break self.baseline.clone(),
            }
        };
        self.policy.swap(good.clone());
        let message = match failing_key {
            Some(key) => format!(
                "rolled back to {} ({}): failed {} syncs in a row, the last on {key}: {reason}",
                good.module.digest.short(),
                good.source,
                self.policy.rollback_after()
            ),
            None => format!("rolled back to {} ({}): {reason}", good.module.digest.short(), good.source),
        };
        tracing::warn!(module = %failed.module.digest, to = %good.module.digest, "{message}");
        self.metrics.module_swap("rolled_back");
        if let Source::Object { name, .. } = &failed.source
            && let Ok(obj) = self.objects.get(name).await
        {
            self.event(&obj, EventType::Warning, "RolledBack", &message);
            self.write_status_with(
                &obj,
                Phase::RolledBack,
                Some(&failed.module),
                &message,
                None,
                failing_key.map(str::to_string),
            )
            .await;
        }
    }

    /// Tells the object that served before `by` that it no longer serves.
    async fn supersede(&self, previous: &Arc<Serving>, by: &str) {
        if let Source::Object { name, .. } = &previous.source
            && name != by
            && let Ok(obj) = self.objects.get(name).await
        {
            let message = format!("superseded by ReconcileModule {by}; push it again to serve it");
            self.write_status(&obj, Phase::Pending, Some(&previous.module), &message, None).await;
        }
    }

    fn remember(&mut self, previous: Arc<Serving>) {
        self.history.push(previous);
        if self.history.len() > HISTORY {
            self.history.remove(0);
        }
    }

    /// Writes the shadow counters to the shadow object when they changed.
    async fn report_shadow(&mut self) {
        if !*self.writes.borrow() {
            return;
        }
        let Some(shadow) = self.policy.shadow() else { return };
        let Source::Object { name, .. } = &shadow.candidate.source else { return };
        let example = shadow.example.lock().expect("shadow example lock").clone();
        let summary = ShadowSummary {
            agreements: shadow.agreements.load(std::sync::atomic::Ordering::Relaxed),
            differences: shadow.differences.load(std::sync::atomic::Ordering::Relaxed),
            errors: shadow.errors.load(std::sync::atomic::Ordering::Relaxed),
            example_key: example.as_ref().map(|(k, _)| k.clone()),
            example_difference: example.map(|(_, d)| d),
        };
        if self.shadow_reported.as_ref() == Some(&summary) {
            return;
        }
        let patch = json!({"status": {"shadow": summary}});
        match self.objects.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => self.shadow_reported = Some(summary),
            Err(error) => tracing::warn!(object = %name, %error, "writing the shadow summary failed"),
        }
    }

    fn event(&self, obj: &ReconcileModule, kind: EventType, reason: &str, message: &str) {
        if !*self.writes.borrow() {
            return;
        }
        let reference = ObjectReference {
            api_version: Some(ReconcileModule::api_version(&()).into_owned()),
            kind: Some("ReconcileModule".into()),
            namespace: obj.namespace(),
            name: Some(obj.name_any()),
            uid: obj.uid(),
            resource_version: obj.resource_version(),
            field_path: None,
        };
        self.events.event(&reference, kind, reason, message.to_string());
    }

    async fn write_status(
        &self,
        obj: &ReconcileModule,
        phase: Phase,
        module: Option<&PolicyModule>,
        message: &str,
        since: Option<Time>,
    ) {
        self.write_status_with(obj, phase, module, message, since, None).await;
    }

    async fn write_status_with(
        &self,
        obj: &ReconcileModule,
        phase: Phase,
        module: Option<&PolicyModule>,
        message: &str,
        since: Option<Time>,
        failing_key: Option<String>,
    ) {
        if !*self.writes.borrow() {
            return;
        }
        let now = Time(jiff::Timestamp::now());
        let generation = obj.metadata.generation;
        let condition = |type_: &str, ok: bool, reason: &str| Condition {
            type_: type_.to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: now.clone(),
            observed_generation: generation,
        };
        let validated = !matches!(phase, Phase::Rejected);
        let serving = matches!(phase, Phase::Active);
        let status = ReconcileModuleStatus {
            phase: Some(phase),
            digest: module.map(|m| m.digest.to_string()),
            short_digest: module.map(|m| m.digest.short()),
            world_version: module.map(|m| m.contract_version.clone()),
            message: Some(message.to_string()),
            observed_generation: generation,
            active_since: since,
            conditions: vec![
                condition("Validated", validated, if validated { "Passed" } else { "Failed" }),
                condition("Serving", serving, &format!("{phase:?}")),
            ],
            shadow: None,
            failing_key,
        };
        let patch = json!({"status": status});
        if let Err(error) =
            self.objects.patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await
        {
            tracing::warn!(object = %obj.name_any(), %error, "writing the module status failed");
        }
    }
}

/// Whether `source` is the object `obj` (same UID: a re-created object is another source).
fn is_source(source: &Source, obj: &ReconcileModule) -> bool {
    matches!(source, Source::Object { uid, .. } if Some(uid.as_str()) == obj.metadata.uid.as_deref())
}
