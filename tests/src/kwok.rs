//! kwok, the fake kubelet of the live cluster: the process (with kwok's node stage and our pod stages), the fake Node objects it keeps Ready, and stopping it by PID.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, DeleteParams, PostParams};

use crate::binaries::KWOK_NODE_INITIALIZE;
use crate::controlplane::{ControlPlane, admin_credentials};
use crate::kubeconfig;
use crate::process::{DEFAULT_GRACE, ManagedProcess};
use crate::stages::{Behaviour, stages_yaml};
use crate::workdir::WorkDir;

/// The annotation (and its value) that hands a Node to kwok: it manages only nodes that carry it.
pub const FAKE_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

/// The taint the apiserver puts on every new Node (admission plugin `TaintNodesByCondition`);
/// kube-controller-manager's node-lifecycle-controller lifts it once the node is Ready.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// A running kwok process. Stopped by [`Kwok::stop`], on drop, or at process exit.
#[derive(Debug)]
pub struct Kwok {
    // Field order matters for drop: the process before its directory.
    process: ManagedProcess,
    stages: PathBuf,
    dir: WorkDir,
}

impl Kwok {
    /// Starts kwok against `control_plane` with its own (admin) kubeconfig, managing the nodes that
    /// carry [`FAKE_NODE_ANNOTATION`]: kwok's `node-initialize` stage from `kwok_stages` makes
    /// them Ready, and the pods bound to them follow `behaviours` (by [`crate::stages::BEHAVIOUR_ANNOTATION`])
    /// or `default`. Node Leases are renewed every 10 s (40 s leases), which keeps the nodes
    /// healthy for the node-lifecycle-controller (50 s grace period). kwok has no readiness
    /// endpoint: a node turning Ready ([`wait_node_ready`]) is the sign that it works.
    pub fn start<'a>(
        control_plane: &ControlPlane,
        kwok_stages: &Path,
        default: &Behaviour,
        behaviours: impl IntoIterator<Item = (&'a str, &'a Behaviour)>,
    ) -> Result<Self> {
        let bin = control_plane.binaries().kwok()?;
        let dir = WorkDir::create("kwok")?;
        let kubeconfig_path = dir.path().join("kwok.kubeconfig");
        kubeconfig::write_kubeconfig(
            &kubeconfig_path,
            control_plane.server_url(),
            control_plane.ca_pem(),
            &admin_credentials(control_plane.pki()),
            "default",
        )?;
        let stages = dir.path().join("pod-stages.yaml");
        std::fs::write(&stages, stages_yaml(default, behaviours)?)
            .with_context(|| format!("writing {}", stages.display()))?;
        let args = vec![
            format!("--kubeconfig={}", kubeconfig_path.display()),
            format!("--manage-nodes-with-annotation-selector={}={}", FAKE_NODE_ANNOTATION.0, FAKE_NODE_ANNOTATION.1),
            // The addresses only appear in node and pod status; kwok serves no kubelet port here
            // (no --node-port or --server-address), so nothing ever connects to them.
            "--cidr=10.244.0.1/16".to_string(),
            "--node-ip=10.1.0.1".to_string(),
            // Without a heartbeat the node-lifecycle-controller would find every node
            // unreachable after its grace period and taint it: no pod could be scheduled.
            "--node-lease-duration-seconds=40".to_string(),
            "-c".to_string(),
            kwok_stages.join(KWOK_NODE_INITIALIZE).display().to_string(),
            "-c".to_string(),
            stages.display().to_string(),
        ];
        let process = ManagedProcess::spawn("kwok", &bin, &args, &dir.path().join("kwok.log"))?;
        Ok(Self { process, stages, dir })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The process handle (log, exit status).
    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    /// The generated pod Stage file kwok was given.
    pub fn stages_path(&self) -> &Path {
        &self.stages
    }

    /// Stops kwok (SIGTERM, grace period, SIGKILL) and removes its directory. Idempotent; also
    /// done on drop and at exit.
    pub fn stop(&self) {
        self.process.stop(DEFAULT_GRACE);
        self.dir.remove();
    }
}

impl Drop for Kwok {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fake Node for kwok to manage, with the capacity the scheduler places pods by.
#[derive(Debug, Clone)]
pub struct FakeNode {
    /// The Node's name (cluster-wide: prefix it with the test's namespace).
    pub name: String,
    /// Labels; `kubernetes.io/hostname: <name>` is always added.
    pub labels: BTreeMap<String, String>,
    /// Taints (besides the apiserver's temporary [`NOT_READY_TAINT`]).
    pub taints: Vec<Taint>,
    /// `cpu` capacity and allocatable.
    pub cpu: String,
    /// `memory` capacity and allocatable.
    pub memory: String,
    /// `pods` capacity and allocatable: at most this many pods are scheduled onto the node.
    pub pods: u32,
}

impl FakeNode {
    /// A node like a big worker: cpu 32, memory 256Gi, 110 pods.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            cpu: "32".to_string(),
            memory: "256Gi".to_string(),
            pods: 110,
        }
    }

    /// The Node object: annotated for kwok, with capacity and allocatable in its status (kept on
    /// create; kwok's node-initialize stage keeps them too).
    pub fn to_node(&self) -> Result<Node> {
        let mut labels = self.labels.clone();
        labels.insert("kubernetes.io/hostname".to_string(), self.name.clone());
        let resources = serde_json::json!({"cpu": self.cpu, "memory": self.memory, "pods": self.pods.to_string()});
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {FAKE_NODE_ANNOTATION.0: FAKE_NODE_ANNOTATION.1},
            },
            "spec": {"taints": self.taints},
            "status": {"capacity": resources, "allocatable": resources},
        }))
        .with_context(|| format!("building node {}", self.name))
    }

    /// Creates the node; see [`wait_node_ready`] for when pods can land on it.
    pub async fn create(&self, client: &kube::Client) -> Result<Node> {
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &self.to_node()?)
            .await
            .with_context(|| format!("creating node {}", self.name))
    }
}

/// Whether `node` can take pods: its Ready condition is True and the apiserver's
/// [`NOT_READY_TAINT`] is gone.
pub fn node_is_schedulable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == NOT_READY_TAINT || t.key == "node.kubernetes.io/unreachable"));
    ready && !tainted && !node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
}

/// Waits until node `name` is schedulable ([`node_is_schedulable`]), failing early with kwok's log
/// if kwok exits.
pub async fn wait_node_ready(client: &kube::Client, kwok: &Kwok, name: &str, timeout: Duration) -> Result<Node> {
    let nodes = Api::<Node>::all(client.clone());
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        if kwok.process.exit_status().is_some() {
            return Err(kwok.process.error_with_log(&format!("exited while node {name} was starting")));
        }
        match nodes.get(name).await {
            Ok(node) if node_is_schedulable(&node) => return Ok(node),
            Ok(node) => {
                let taints: Vec<String> =
                    node.spec.and_then(|s| s.taints).unwrap_or_default().into_iter().map(|t| t.key).collect();
                last = format!("conditions {:?}, taints {taints:?}", node.status.and_then(|s| s.conditions));
            }
            Err(e) => last = format!("{e}"),
        }
        if Instant::now() >= deadline {
            return Err(kwok.process.error_with_log(&format!("node {name} not schedulable in time (last: {last})")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes node `name`. Its pods stay bound to it until kube-controller-manager's
/// pod-garbage-collector-controller deletes them as orphans (40 to 80 s later, see
/// [`crate::live`]).
pub async fn delete_node(client: &kube::Client, name: &str) -> Result<()> {
    Api::<Node>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting node {name}"))?;
    Ok(())
}
