//! The live-cluster mode: a control plane plus kube-scheduler, kwok with fake nodes and pod behaviours the tests choose, and kube-controller-manager running node lifecycle and pod garbage collection; one shared per test binary, started lazily, every process stopped by PID.
//!
//! What runs, and why:
//! - [`ControlPlane`] as in the bare mode (plus [`LiveOptions::extra_apiserver_args`]);
//! - kube-scheduler ([`Scheduler`]) places pods on the fake nodes by their capacity, labels and
//!   taints;
//! - kwok ([`Kwok`]) plays the kubelet of every node annotated `kwok.x-k8s.io/node: fake`: nodes
//!   turn Ready and renew their Leases, and pods follow the [`Behaviour`] named by their
//!   [`BEHAVIOUR_ANNOTATION`] (or the default one);
//! - kube-controller-manager with only `node-lifecycle-controller` and
//!   `pod-garbage-collector-controller` ([`LiveOptions::kcm_controllers`]), never the ReplicaSet
//!   controller, so the host under test is the only one managing ReplicaSets. The node lifecycle
//!   controller lifts the `node.kubernetes.io/not-ready` taint the apiserver puts on every new
//!   node (no pod could be scheduled otherwise) and watches the Lease heartbeats; the pod
//!   garbage collector deletes the pods of deleted nodes.
//!
//! Timing facts of kube-controller-manager v1.37 that tests must live with:
//! - pods of a **deleted Node** are deleted by the pod garbage collector as orphans after a
//!   40 s quarantine (checking the node is really gone) on its 20 s cycle: 40-80 s after the
//!   delete. Both are constants (`quarantineTime`, `gcCheckPeriod` in `pkg/controller/podgc`),
//!   not flags;
//! - the node lifecycle controller no longer evicts pods itself: since v1.29 taint-based eviction
//!   is `taint-eviction-controller`, which does not run here; with only node lifecycle, an
//!   unreachable node gets taints and its pods get `Ready: False`, nothing more.
//!
//! Nodes are cluster-wide and shared by all tests: a test that changes or deletes nodes makes its
//! own in a pool ([`FakeNode::in_pool`], [`in_pool`]) so other tests' pods never land there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::OnceCell;

use crate::binaries::Binaries;
use crate::controlplane::{ControlPlane, ControlPlaneOptions};
use crate::kcm::{KcmOptions, KubeControllerManager, REPLICASET_CONTROLLER};
use crate::kwok::{self, FakeNode, Kwok};
use crate::namespace::TestNamespace;
use crate::scheduler::Scheduler;
use crate::shared::current_test_name;
use crate::stages::{BEHAVIOUR_ANNOTATION, Behaviour};

/// `node-lifecycle-controller`: lifts the not-ready taint of new nodes; required.
pub const NODE_LIFECYCLE_CONTROLLER: &str = "node-lifecycle-controller";
/// `pod-garbage-collector-controller`: deletes the pods of deleted nodes.
pub const POD_GARBAGE_COLLECTOR: &str = "pod-garbage-collector-controller";

/// The label and taint key that reserves a node for one test's pods ([`FakeNode::in_pool`]).
pub const POOL_KEY: &str = "harness.wasm-replicaset.io/pool";

/// How a live cluster is started.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveOptions {
    /// Fake nodes `node-0`..`node-<n-1>` created at start (cpu 32, memory 256Gi, 110 pods each).
    pub nodes: usize,
    /// What kwok does with pods that have no [`BEHAVIOUR_ANNOTATION`].
    pub default_behaviour: Behaviour,
    /// Behaviours pods pick by name with [`BEHAVIOUR_ANNOTATION`] (names: lowercase
    /// alphanumerics and '-'). Fixed for the cluster's life: kwok reads its stages at start.
    pub behaviours: BTreeMap<String, Behaviour>,
    /// Extra kube-apiserver flags, appended last.
    pub extra_apiserver_args: Vec<String>,
    /// Write the API server's audit log ([`crate::ControlPlaneOptions::audit`]).
    pub audit: bool,
    /// kube-controller-manager's `--controllers`; must include [`NODE_LIFECYCLE_CONTROLLER`] and
    /// must not include the ReplicaSet controller (or `*`).
    pub kcm_controllers: Vec<String>,
    /// Extra kube-controller-manager flags, appended last.
    pub extra_kcm_args: Vec<String>,
    /// Where the binaries are; `None` uses [`Binaries::locate`].
    pub bin_dir: Option<PathBuf>,
    /// How long each component may take to become ready.
    pub startup_timeout: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            default_behaviour: Behaviour::ready_after(Duration::ZERO),
            behaviours: BTreeMap::new(),
            extra_apiserver_args: Vec::new(),
            audit: false,
            kcm_controllers: vec![NODE_LIFECYCLE_CONTROLLER.to_string(), POD_GARBAGE_COLLECTOR.to_string()],
            extra_kcm_args: Vec::new(),
            bin_dir: None,
            // Generous, as for the control plane: the machine may be busy compiling.
            startup_timeout: Duration::from_secs(90),
        }
    }
}

impl LiveOptions {
    /// These options plus behaviour `name`.
    pub fn with_behaviour(mut self, name: &str, behaviour: Behaviour) -> Self {
        self.behaviours.insert(name.to_string(), behaviour);
        self
    }

    fn validate(&self) -> Result<()> {
        let has = |name: &str| self.kcm_controllers.iter().any(|c| c == name);
        if !has(NODE_LIFECYCLE_CONTROLLER) {
            bail!(
                "kcm_controllers must include {NODE_LIFECYCLE_CONTROLLER}: without it new nodes keep the \
                 node.kubernetes.io/not-ready taint and no pod is ever scheduled"
            );
        }
        if has(REPLICASET_CONTROLLER) || has("replicaset") || has("*") {
            bail!("kcm_controllers must not run the ReplicaSet controller: it would fight the host under test");
        }
        Ok(())
    }
}

/// A running live cluster. Stopped by [`LiveCluster::stop`], on drop, or at process exit.
#[derive(Debug)]
pub struct LiveCluster {
    // Field order matters for drop: the components before the control plane they talk to.
    kwok: Kwok,
    scheduler: Scheduler,
    kcm: KubeControllerManager,
    control_plane: ControlPlane,
    nodes: Vec<String>,
    options: LiveOptions,
    startup: Duration,
}

impl LiveCluster {
    /// Starts a private live cluster: checks every binary first (a missing one is an error naming
    /// `tests/controlplane/build.sh`), starts the control plane, then kwok, kube-controller-manager
    /// and kube-scheduler, creates the nodes and returns once they are schedulable. Call inside a
    /// tokio runtime.
    pub async fn start(options: LiveOptions) -> Result<Self> {
        let started = Instant::now();
        options.validate()?;
        let binaries = match &options.bin_dir {
            Some(dir) => Binaries::in_dir(dir),
            None => Binaries::locate(),
        };
        // Fail before spending seconds on a control plane that could not be completed.
        for found in [binaries.kube_scheduler(), binaries.kwok(), binaries.kube_controller_manager()] {
            found?;
        }
        let kwok_stages = binaries.kwok_stages()?;

        let control_plane = ControlPlane::start_with(ControlPlaneOptions {
            bin_dir: options.bin_dir.clone(),
            startup_timeout: options.startup_timeout,
            extra_apiserver_args: options.extra_apiserver_args.clone(),
            audit: options.audit,
            ..ControlPlaneOptions::default()
        })
        .await?;
        let named = options.behaviours.iter().map(|(name, b)| (name.as_str(), b));
        let kwok = Kwok::start(&control_plane, &kwok_stages, &options.default_behaviour, named)?;
        let kcm_options = KcmOptions {
            controllers: options.kcm_controllers.clone(),
            extra_args: options.extra_kcm_args.clone(),
            startup_timeout: options.startup_timeout,
            ..KcmOptions::default()
        };
        let (kcm, scheduler) = tokio::try_join!(
            KubeControllerManager::start(&control_plane, kcm_options),
            Scheduler::start(&control_plane, &[], options.startup_timeout),
        )?;

        let mut cluster =
            Self { kwok, scheduler, kcm, control_plane, nodes: Vec::new(), options, startup: Duration::ZERO };
        let names: Vec<String> = (0..cluster.options.nodes).map(|i| format!("node-{i}")).collect();
        let created = names.iter().map(|name| cluster.add_node(FakeNode::new(name.clone())));
        futures::future::try_join_all(created).await?;
        cluster.nodes = names;
        cluster.startup = started.elapsed();
        tracing::info!(startup = ?cluster.startup, nodes = cluster.nodes.len(), "live cluster ready");
        Ok(cluster)
    }

    /// Creates `node` for kwok to manage and waits until pods can be scheduled onto it.
    pub async fn add_node(&self, node: FakeNode) -> Result<Node> {
        let client = self.control_plane.client()?;
        node.create(&client).await?;
        kwok::wait_node_ready(&client, &self.kwok, &node.name, self.options.startup_timeout).await
    }

    /// Deletes node `name`; see [`kwok::delete_node`] for what happens to its pods.
    pub async fn delete_node(&self, name: &str) -> Result<()> {
        kwok::delete_node(&self.control_plane.client()?, name).await
    }

    /// The control plane (clients, kubeconfig, namespaces).
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// A new admin `kube::Client`; see [`ControlPlane::client`].
    pub fn client(&self) -> Result<kube::Client> {
        self.control_plane.client()
    }

    /// The names of the nodes created at start.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The options it was started with.
    pub fn options(&self) -> &LiveOptions {
        &self.options
    }

    /// kwok.
    pub fn kwok(&self) -> &Kwok {
        &self.kwok
    }

    /// kube-scheduler.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// kube-controller-manager (node lifecycle and pod garbage collection).
    pub fn kube_controller_manager(&self) -> &KubeControllerManager {
        &self.kcm
    }

    /// PIDs of every process it started: etcd, kube-apiserver, kwok, kube-controller-manager,
    /// kube-scheduler.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = self.control_plane.pids();
        pids.extend([self.kwok.pid(), self.kcm.pid(), self.scheduler.pid()]);
        pids
    }

    /// How long [`LiveCluster::start`] took.
    pub fn startup_duration(&self) -> Duration {
        self.startup
    }

    /// Stops kwok, kube-scheduler, kube-controller-manager, then the control plane, each by PID.
    /// Idempotent; also done on drop and at exit. Do not call it on the shared live cluster.
    pub fn stop(&self) {
        self.kwok.stop();
        self.scheduler.stop();
        self.kcm.stop();
        self.control_plane.stop();
    }
}

impl Drop for LiveCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

// === The shared live cluster ===

/// The options the shared live cluster was started with, and it or its startup error (kept so
/// every later test fails fast with the same message).
static SHARED: OnceCell<(LiveOptions, std::result::Result<LiveCluster, String>)> = OnceCell::const_new();

/// The live cluster shared by every test in this test binary, started with `options` on first
/// use. Every caller must pass the same options (a test binary keeps them in one function); a
/// caller with other options gets an error rather than a cluster that lacks its behaviours.
///
/// Like [`crate::shared`], it is never dropped: its processes are stopped at exit by PID. Tests
/// isolate themselves with namespaces ([`ns`]) and pools of their own nodes, and must not stop it.
pub async fn shared(options: &LiveOptions) -> Result<&'static LiveCluster> {
    let (started_with, started) = SHARED
        .get_or_init(|| async {
            (options.clone(), LiveCluster::start(options.clone()).await.map_err(|e| format!("{e:#}")))
        })
        .await;
    if started_with != options {
        bail!("the shared live cluster was started with other options: {started_with:?}");
    }
    started.as_ref().map_err(|e| anyhow!("the shared live cluster failed to start: {e}"))
}

/// A fresh namespace, named after the calling test, on the shared live cluster.
pub async fn ns(options: &LiveOptions) -> Result<TestNamespace> {
    shared(options).await?.control_plane().create_namespace(&current_test_name()).await
}

// === Pods: behaviours and pools ===

/// `rs` with its pods following behaviour `name` (the template gets [`BEHAVIOUR_ANNOTATION`]).
pub fn with_behaviour(rs: ReplicaSet, name: &str) -> ReplicaSet {
    edit_template(rs, |template| {
        template["metadata"]["annotations"][BEHAVIOUR_ANNOTATION] = serde_json::json!(name);
    })
}

/// `rs` controlled by a (paused) Deployment of the same name, created here. Upstream ranks pods by
/// colocation only among the pods of ReplicaSets that share a controller, as a Deployment's do;
/// for a ReplicaSet without one every rank is 0. No deployment controller runs, so the Deployment
/// itself does nothing.
pub async fn owned_by_deployment(ns: &TestNamespace, mut rs: ReplicaSet) -> Result<ReplicaSet> {
    let name = rs.name_any();
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"paused": true, "selector": rs.spec.selector, "template": rs.spec.template},
    }))?;
    let deployment = ns.api::<Deployment>().create(&PostParams::default(), &deployment).await?;
    rs.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name,
        uid: deployment.uid().context("a created Deployment has a UID")?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    Ok(rs)
}

/// `rs` with its pods placed in `pool`: they select its nodes' [`POOL_KEY`] label and tolerate
/// their taint.
pub fn in_pool(rs: ReplicaSet, pool: &str) -> ReplicaSet {
    edit_template(rs, |template| {
        template["spec"]["nodeSelector"][POOL_KEY] = serde_json::json!(pool);
        let toleration =
            serde_json::json!({"key": POOL_KEY, "operator": "Equal", "value": pool, "effect": "NoSchedule"});
        match template["spec"]["tolerations"].as_array_mut() {
            Some(tolerations) => tolerations.push(toleration),
            None => template["spec"]["tolerations"] = serde_json::json!([toleration]),
        }
    })
}

/// Switches pod `name` to behaviour `behaviour` by annotating it. kwok matches stages again on
/// every change of a pod, so the new behaviour continues from the pod's current state (e.g. a
/// `Running`, not `Ready` pod switched to a `Ready` behaviour turns Ready after that delay).
pub async fn switch_behaviour(pods: &Api<Pod>, name: &str, behaviour: &str) -> Result<Pod> {
    let patch = serde_json::json!({"metadata": {"annotations": {BEHAVIOUR_ANNOTATION: behaviour}}});
    pods.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("switching pod {name} to behaviour {behaviour}"))
}

impl FakeNode {
    /// This node reserved for `pool`: labelled `POOL_KEY=<pool>` and tainted
    /// `POOL_KEY=<pool>:NoSchedule`, so only pods placed with [`in_pool`] land on it.
    pub fn in_pool(mut self, pool: &str) -> Self {
        self.labels.insert(POOL_KEY.to_string(), pool.to_string());
        self.taints.push(Taint {
            key: POOL_KEY.to_string(),
            value: Some(pool.to_string()),
            effect: "NoSchedule".to_string(),
            time_added: None,
        });
        self
    }

    /// This node with room for at most `pods` pods.
    pub fn with_pod_capacity(mut self, pods: u32) -> Self {
        self.pods = pods;
        self
    }
}

/// Edits `rs`'s pod template as JSON (missing objects are created on assignment).
fn edit_template(rs: ReplicaSet, edit: impl FnOnce(&mut serde_json::Value)) -> ReplicaSet {
    let mut value = serde_json::to_value(rs).expect("a ReplicaSet serializes");
    edit(&mut value["spec"]["template"]);
    serde_json::from_value(value).expect("an edited template is still a ReplicaSet")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::replica_set;

    #[test]
    fn behaviour_and_pool_edits_reach_the_pod_template_and_keep_the_rest() {
        let rs = in_pool(with_behaviour(replica_set("web", 2), "slow"), "p1");
        let template = rs.spec.template.as_ref().unwrap();
        let annotations = template.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
        assert_eq!(annotations[BEHAVIOUR_ANNOTATION], "slow");
        let spec = template.spec.as_ref().unwrap();
        assert_eq!(spec.node_selector.as_ref().unwrap()[POOL_KEY], "p1");
        let toleration = &spec.tolerations.as_ref().unwrap()[0];
        assert_eq!((toleration.key.as_deref(), toleration.value.as_deref()), (Some(POOL_KEY), Some("p1")));
        assert_eq!(spec.containers[0].image.as_deref(), Some("registry.k8s.io/pause:3.10"));
        assert_eq!(rs.spec.replicas, Some(2));
    }

    #[test]
    fn a_pool_node_is_labelled_and_tainted_for_its_pool_only() {
        let node = FakeNode::new("n").in_pool("p1").with_pod_capacity(2).to_node().unwrap();
        assert_eq!(node.metadata.labels.as_ref().unwrap()[POOL_KEY], "p1");
        assert_eq!(node.metadata.labels.as_ref().unwrap()["kubernetes.io/hostname"], "n");
        let taint = &node.spec.as_ref().unwrap().taints.as_ref().unwrap()[0];
        assert_eq!((taint.key.as_str(), taint.effect.as_str()), (POOL_KEY, "NoSchedule"));
        let status = node.status.unwrap();
        assert_eq!(status.allocatable.unwrap()["pods"].0, "2");
        assert_eq!(status.capacity.unwrap()["cpu"].0, "32");
    }

    #[test]
    fn the_kcm_controller_list_needs_node_lifecycle_and_never_the_replicaset_controller() {
        assert!(LiveOptions::default().validate().is_ok());
        let with = |controllers: &[&str]| LiveOptions {
            kcm_controllers: controllers.iter().map(ToString::to_string).collect(),
            ..LiveOptions::default()
        };
        assert!(with(&[POD_GARBAGE_COLLECTOR]).validate().is_err());
        for fighting in [REPLICASET_CONTROLLER, "replicaset", "*"] {
            let err = with(&[NODE_LIFECYCLE_CONTROLLER, fighting]).validate().unwrap_err().to_string();
            assert!(err.contains("fight the host"), "{err}");
        }
    }
}
