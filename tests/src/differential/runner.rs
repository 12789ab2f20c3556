//! Runs a [`Scenario`] against one controller on a fresh private control plane and captures its
//! [`EndState`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use host::testkit;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod, ResourceQuota};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};

use super::capture::{self, pod_id};
use super::end_state::EndState;
use super::scenario::{DELETION_COST_ANNOTATION, FakeOwner, ID_ANNOTATION, Scenario, Since, Step};
use crate::pods::{controller_uid, is_active, is_ready};
use crate::stages::{Behaviour, Lifecycle};
use crate::{
    ControlPlane, KcmOptions, KubeControllerManager, LiveCluster, LiveOptions, TestNamespace, consistently, eventually,
    live, pods,
};

/// The UID of the made-up ReplicaSet owning [`Step::CreateForeignPod`]'s pods.
const FOREIGN_OWNER_UID: &str = "6d1f5c2e-0000-4000-8000-0000000f0e19";

/// How long a converged ReplicaSet must stay converged for [`Step::WaitConverged`].
pub const STABLE_FOR: Duration = Duration::from_secs(1);
/// How long [`Step::WaitConverged`] may take.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long two captures of the end state must agree (they are taken this far apart).
pub const SETTLE_FOR: Duration = Duration::from_secs(1);
/// How long the end state may take to settle.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Which ReplicaSet controller a scenario runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Controller {
    /// kube-controller-manager with only `replicaset-controller`.
    Upstream,
    /// Our controller (`host::run::Controller`, embedded policy), in-process.
    Host,
}

impl std::fmt::Display for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Controller::Upstream => "upstream",
            Controller::Host => "host",
        })
    }
}

/// A finished run: the end state or what went wrong, and how long it took.
#[derive(Debug)]
pub struct RunResult {
    /// The end state, or the error (with the controller's log tail for upstream).
    pub end_state: std::result::Result<EndState, String>,
    /// Wall time, control plane start to stop.
    pub elapsed: Duration,
    /// Of which starting the control plane and the controller took.
    pub setup: Option<Duration>,
}

/// Starts a fresh control plane and `controller` on it, runs `scenario`, captures the end state
/// and stops everything. Call inside a multi-threaded tokio runtime.
pub async fn run(scenario: &Scenario, controller: Controller) -> RunResult {
    let started = Instant::now();
    let mut setup = None;
    let end_state = run_inner(scenario, controller, &mut setup).await.map_err(|e| format!("{e:#}"));
    RunResult { end_state, elapsed: started.elapsed(), setup }
}

/// kwok behaviour: Ready at once.
pub const READY: &str = "ready";
/// kwok behaviour: Running, never Ready.
pub const NEVER_READY: &str = "never-ready";
/// kwok behaviour: Ready for 1 s, crashed for 1 s (restart count rising), again and again.
pub const CRASH_LOOP: &str = "crash-loop";

/// The live cluster of the live scenarios: three nodes, pods Ready at once unless they follow
/// one of the named behaviours.
pub fn live_options() -> LiveOptions {
    let second = Duration::from_secs(1);
    LiveOptions::default()
        .with_behaviour(READY, Behaviour::ready_after(Duration::ZERO))
        .with_behaviour(NEVER_READY, Behaviour::new(Lifecycle::NeverReady))
        .with_behaviour(CRASH_LOOP, Behaviour::new(Lifecycle::CrashLoop { ready_for: second, crashed_for: second }))
}

/// The cluster a scenario runs on.
enum Plane {
    Bare(Box<ControlPlane>),
    Live(Box<LiveCluster>),
}

impl Plane {
    async fn start(live: bool) -> Result<Self> {
        Ok(if live {
            Plane::Live(Box::new(LiveCluster::start(live_options()).await.context("starting a private live cluster")?))
        } else {
            Plane::Bare(Box::new(ControlPlane::start().await.context("starting a private control plane")?))
        })
    }

    fn control_plane(&self) -> &ControlPlane {
        match self {
            Plane::Bare(cp) => cp,
            Plane::Live(cluster) => cluster.control_plane(),
        }
    }
}

async fn run_inner(scenario: &Scenario, controller: Controller, setup: &mut Option<Duration>) -> Result<EndState> {
    let started = Instant::now();
    let plane = Plane::start(scenario.live).await?;
    let cp = plane.control_plane();
    let running = Running::start(cp, controller).await?;
    *setup = Some(started.elapsed());
    let outcome = async {
        let ns = cp.create_namespace(scenario.name).await?;
        let mut runner = Runner::new(ns);
        for (i, step) in scenario.steps.iter().enumerate() {
            runner.step(step).await.with_context(|| format!("step {} {step:?}", i + 1))?;
        }
        capture::settled(&runner.ns, &runner.replica_sets, &runner.snapshots).await
    }
    .await;
    let outcome = match outcome {
        Err(e) => Err(running.annotate(e)),
        ok => ok,
    };
    running.stop().await;
    drop(plane);
    outcome.with_context(|| format!("{controller} run"))
}

#[derive(Parser)]
struct HostFlags {
    #[command(flatten)]
    run: host::run::RunArgs,
}

/// A controller started on a private control plane.
enum Running {
    Upstream(Box<KubeControllerManager>),
    Host(host::run::Controller),
}

impl Running {
    async fn start(cp: &ControlPlane, controller: Controller) -> Result<Self> {
        match controller {
            Controller::Upstream => Ok(Running::Upstream(Box::new(
                cp.start_kube_controller_manager(KcmOptions { secure_port: true, ..KcmOptions::default() })
                    .await
                    .context("starting kube-controller-manager")?,
            ))),
            Controller::Host => {
                let kubeconfig = cp.kubeconfig_path().display().to_string();
                // No --namespace: like kube-controller-manager, watch every namespace.
                // One replica: no leader election; no module watch (no CRD here); ephemeral HTTP port.
                let flags = HostFlags::try_parse_from([
                    "host",
                    "--kubeconfig",
                    &kubeconfig,
                    "--shutdown-grace-seconds",
                    "5",
                    "--leader-elect=false",
                    "--watch-modules=false",
                    "--http-addr=127.0.0.1:0",
                ])?;
                let started =
                    host::run::Controller::start(&flags.run, std::sync::Arc::new(policy_kit::conformance::check))
                        .await
                        .context("starting the host controller")?;
                // kube-controller-manager is started only once its informers synced; same here.
                tokio::time::timeout(Duration::from_secs(60), started.engine.wait_synced())
                    .await
                    .context("the host controller's informers did not sync in 60 s")?;
                Ok(Running::Host(started))
            }
        }
    }

    /// Appends what the controller logged to an error (only upstream's log is a file).
    fn annotate(&self, error: anyhow::Error) -> anyhow::Error {
        match self {
            Running::Upstream(kcm) => anyhow::anyhow!(
                "{error:#}\n--- kube-controller-manager log tail ---\n{}",
                kcm.process().log_tail(40).trim_end()
            ),
            Running::Host(_) => error,
        }
    }

    async fn stop(self) {
        match self {
            Running::Upstream(kcm) => kcm.stop(),
            Running::Host(controller) => controller.shutdown().await,
        }
    }
}

/// Executes steps against one namespace.
struct Runner {
    ns: TestNamespace,
    /// Pod id → pod name.
    ids: BTreeMap<u32, String>,
    /// The ReplicaSets created, in order.
    replica_sets: Vec<&'static str>,
    /// Fields recorded by [`Step::Snapshot`].
    snapshots: Vec<(String, String)>,
    /// The run's reference instant for [`Since::Ago`], whole seconds.
    anchor: Timestamp,
}

impl Runner {
    fn new(ns: TestNamespace) -> Self {
        let now = Timestamp::now();
        let anchor = Timestamp::from_second(now.as_second()).expect("a whole second of a valid time");
        Self { ns, ids: BTreeMap::new(), replica_sets: Vec::new(), snapshots: Vec::new(), anchor }
    }

    /// `kubectl drain` of the node pod `id` runs on: cordon it, then evict every pod on it.
    async fn drain_node_of(&self, id: u32) -> Result<()> {
        let pods = self.ns.api::<Pod>();
        let node =
            pods.get(self.pod_name(id)?).await?.spec.and_then(|s| s.node_name).context("the pod is not scheduled")?;
        let cordon = serde_json::json!({"spec": {"unschedulable": true}});
        kube::Api::<Node>::all(self.client().clone())
            .patch(&node, &PatchParams::default(), &Patch::Merge(&cordon))
            .await?;
        for pod in pods.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await?.items {
            pods.evict(&pod.metadata.name.unwrap_or_default(), &EvictParams::default()).await?;
        }
        Ok(())
    }

    fn client(&self) -> &kube::Client {
        self.ns.client()
    }

    fn pod_name(&self, id: u32) -> Result<&str> {
        self.ids.get(&id).map(String::as_str).with_context(|| format!("no pod has id {id} (Identify it first)"))
    }

    fn time(&self, since: Since) -> Result<Time> {
        Ok(Time(match since {
            Since::Now | Since::Unset => Timestamp::now(),
            Since::Ago(d) => self.anchor.checked_sub(SignedDuration::try_from(d)?)?,
        }))
    }

    async fn step(&mut self, step: &Step) -> Result<()> {
        let pods = self.ns.api::<Pod>();
        let rss = self.ns.api::<ReplicaSet>();
        match step {
            Step::CreateReplicaSet { name, replicas, min_ready_seconds, owner, tier, behaviour } => {
                let mut rs = replica_set(name, *replicas, *min_ready_seconds, owner.as_ref(), *tier);
                if let Some(behaviour) = behaviour {
                    rs = live::with_behaviour(rs, behaviour);
                }
                rss.create(&PostParams::default(), &rs).await?;
                self.replica_sets.push(name);
            }
            Step::Scale { rs, replicas } => {
                let patch = serde_json::json!({"spec": {"replicas": replicas}});
                rss.patch(rs, &PatchParams::default(), &Patch::Merge(patch)).await?;
            }
            Step::WaitConverged { rs } => self.wait_converged(rs).await?,
            Step::Identify { rs, expect } => self.identify(rs, *expect).await?,
            Step::SetRunning { id, ready, since } => {
                let name = self.pod_name(*id)?;
                pods::set_pod_running(self.client(), self.ns.name(), name, *ready, self.time(*since)?).await?;
                if *since == Since::Unset {
                    // Conditions merge by type; null removes the field.
                    let unset = |t: &str| serde_json::json!({"type": t, "lastTransitionTime": null});
                    let patch = serde_json::json!({"status": {"conditions": [
                        unset("Initialized"), unset("ContainersReady"), unset("Ready")
                    ]}});
                    let pod = pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch)).await?;
                    let conditions = pod.status.and_then(|s| s.conditions).unwrap_or_default();
                    if conditions.iter().any(|c| c.last_transition_time.is_some()) {
                        bail!("the API server kept a lastTransitionTime: {conditions:?}");
                    }
                }
            }
            Step::SetPhase { id, phase } => {
                pods::set_pod_phase(self.client(), self.ns.name(), self.pod_name(*id)?, phase).await?;
            }
            Step::SetRestarts { id, restarts } => {
                pods::set_container_restarts(self.client(), self.ns.name(), self.pod_name(*id)?, *restarts).await?;
            }
            Step::Bind { id, node } => pods::bind_pod(self.client(), self.ns.name(), self.pod_name(*id)?, node).await?,
            Step::SetDeletionCost { id, cost } => {
                let patch =
                    serde_json::json!({"metadata": {"annotations": {DELETION_COST_ANNOTATION: cost.to_string()}}});
                pods.patch(self.pod_name(*id)?, &PatchParams::default(), &Patch::Merge(patch)).await?;
            }
            Step::CreateOrphan { id, app } | Step::CreateForeignPod { id, app } => {
                if self.ids.contains_key(id) {
                    bail!("id {id} is taken");
                }
                let name = format!("pod-{id}");
                let mut pod = orphan_pod(&name, *id, app);
                if matches!(step, Step::CreateForeignPod { .. }) {
                    pod.metadata.owner_references = Some(vec![OwnerReference {
                        api_version: "apps/v1".to_string(),
                        kind: "ReplicaSet".to_string(),
                        name: "someone-else".to_string(),
                        uid: FOREIGN_OWNER_UID.to_string(),
                        controller: Some(true),
                        block_owner_deletion: None,
                    }]);
                }
                pods.create(&PostParams::default(), &pod).await?;
                self.ids.insert(*id, name);
            }
            Step::DeletePod { id } => {
                pods.delete(self.pod_name(*id)?, &DeleteParams::default()).await?;
            }
            Step::DeleteReplicaSetForeground { rs } => {
                rss.delete(rs, &DeleteParams::foreground()).await?;
            }
            Step::Relabel { id, app } => {
                let patch = serde_json::json!({"metadata": {"labels": {"app": app}}});
                pods.patch(self.pod_name(*id)?, &PatchParams::default(), &Patch::Merge(patch)).await?;
            }
            Step::Sleep(d) => tokio::time::sleep(*d).await,
            Step::SwitchBehaviour { id, behaviour } => {
                live::switch_behaviour(&pods, self.pod_name(*id)?, behaviour).await?;
            }
            Step::DrainNodeOf { id } => self.drain_node_of(*id).await?,
            Step::WaitReady { rs, ready } => {
                eventually(&format!("{rs} readyReplicas {ready}"), CONVERGE_TIMEOUT, || async {
                    let status = rss.get(rs).await?.status.unwrap_or_default();
                    Ok((status.ready_replicas.unwrap_or(0) == *ready).then_some(()))
                })
                .await?;
            }
            Step::Snapshot { label } => {
                let now = capture::settled(&self.ns, &self.replica_sets, &self.snapshots).await?;
                self.snapshots.extend(
                    now.fields()
                        .into_iter()
                        .filter(|(k, _)| !k.ends_with(".events") && k != "unowned pods")
                        .map(|(k, v)| (format!("{label}: {k}"), v)),
                );
            }
            Step::SetPodQuota { pods } => {
                let quotas = self.ns.api::<ResourceQuota>();
                let hard = serde_json::json!({"pods": pods.to_string()});
                if quotas.get_opt("pods").await?.is_none() {
                    let quota = serde_json::json!({"metadata": {"name": "pods"}, "spec": {"hard": hard}});
                    quotas.create(&PostParams::default(), &serde_json::from_value(quota)?).await?;
                    let status = serde_json::json!({"status": {"hard": hard, "used": {"pods": "0"}}});
                    quotas.patch_status("pods", &PatchParams::default(), &Patch::Merge(status)).await?;
                } else {
                    let patch = serde_json::json!({"spec": {"hard": hard}, "status": {"hard": hard}});
                    quotas.patch("pods", &PatchParams::default(), &Patch::Merge(&patch)).await?;
                    quotas.patch_status("pods", &PatchParams::default(), &Patch::Merge(&patch)).await?;
                }
            }
            Step::RequireAgeRatio { older, newer, ratio } => {
                let now = Timestamp::now();
                let age = |pod: Pod| -> Result<f64> {
                    let created = pod.metadata.creation_timestamp.context("no creationTimestamp")?;
                    Ok(now.duration_since(created.0).as_secs_f64())
                };
                let old = age(pods.get(self.pod_name(*older)?).await?)?;
                let new = age(pods.get(self.pod_name(*newer)?).await?)?;
                if new <= 0.0 || old / new < *ratio {
                    bail!(
                        "precondition failed: pod {older} is {old:.1} s old and pod {newer} {new:.1} s, a ratio \
                         below {ratio}; the ranking could fall back to the UID tie-break"
                    );
                }
            }
        }
        Ok(())
    }

    async fn identify(&mut self, rs: &str, expect: usize) -> Result<()> {
        let uid = self.ns.api::<ReplicaSet>().get(rs).await?.metadata.uid.context("no uid")?;
        let mut candidates: Vec<Pod> = self
            .ns
            .api::<Pod>()
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|p| controller_uid(p) == Some(uid.as_str()) && is_active(p) && pod_id(p).is_none())
            .collect();
        if candidates.len() != expect {
            bail!("{} unidentified active pods of {rs}, expected {expect}", candidates.len());
        }
        candidates.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name).cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        });
        for pod in candidates {
            let id = self.ids.keys().next_back().map_or(0, |last| last + 1);
            let name = pod.metadata.name.context("a pod without a name")?;
            let patch = serde_json::json!({"metadata": {"annotations": {ID_ANNOTATION: id.to_string()}}});
            self.ns.api::<Pod>().patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
            self.ids.insert(id, name);
        }
        Ok(())
    }

    async fn wait_converged(&self, rs: &str) -> Result<()> {
        let started = Instant::now();
        let waited = eventually(&format!("ReplicaSet {rs} converged for {STABLE_FOR:?}"), CONVERGE_TIMEOUT, || async {
            if !self.converged(rs).await? {
                return Ok(None);
            }
            // Any flap (or error) restarts the wait.
            Ok(consistently("converged", STABLE_FOR, || self.converged(rs)).await.ok())
        })
        .await;
        match waited {
            Ok(()) => Ok(()),
            Err(e) => {
                let now = match capture::end_state(&self.ns, &self.replica_sets, &self.snapshots).await {
                    Ok(state) => state.to_string(),
                    Err(e) => format!("(unreadable: {e:#})"),
                };
                Err(e.context(format!("after {:?}, the state was:\n{now}", started.elapsed())))
            }
        }
    }

    async fn converged(&self, name: &str) -> Result<bool> {
        let rs = self.ns.api::<ReplicaSet>().get(name).await?;
        let uid = rs.metadata.uid.clone().context("no uid")?;
        let spec = &rs.spec;
        let want = spec.replicas.unwrap_or(1);
        let selector = spec.selector.match_labels.clone().unwrap_or_default();
        let pods = self.ns.api::<Pod>().list(&ListParams::default()).await?.items;
        let (mut active, mut ready) = (0, 0);
        for pod in &pods {
            let matches = selector.iter().all(|(k, v)| pod.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
            match controller_uid(pod) {
                Some(owner) if owner == uid => {
                    if !matches {
                        return Ok(false); // not released yet
                    }
                    if is_active(pod) {
                        active += 1;
                        ready += i32::from(is_ready(pod));
                    }
                }
                None if matches && is_active(pod) => return Ok(false), // not adopted yet
                _ => {}
            }
        }
        let status = rs.status.unwrap_or_default();
        Ok(active == want
            && status.replicas == want
            && status.ready_replicas.unwrap_or(0) == ready
            && status.observed_generation == rs.metadata.generation)
    }
}

fn template_labels(app: &str) -> BTreeMap<String, String> {
    testkit::labels(&[("app", app)])
}

fn template_labels_with(app: &str, tier: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = template_labels(app);
    if let Some(tier) = tier {
        labels.insert("tier".into(), tier.into());
    }
    labels
}

fn replica_set(
    name: &str,
    replicas: i32,
    min_ready_seconds: i32,
    owner: Option<&FakeOwner>,
    tier: Option<&str>,
) -> ReplicaSet {
    let mut rs = testkit::rs(name)
        .without_namespace()
        .replicas(replicas)
        .min_ready_seconds(min_ready_seconds)
        .labels(&template_labels(name))
        .template_labels(&template_labels_with(name, tier));
    if let Some(owner) = owner {
        rs = rs.controlled_by("Deployment", owner.name, owner.uid);
    }
    rs.build()
}

fn orphan_pod(name: &str, id: u32, app: &str) -> Pod {
    testkit::pod(name).unsaved().labels(&template_labels(app)).annotation(ID_ANNOTATION, &id.to_string()).build()
}
