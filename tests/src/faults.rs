//! The fault-injection fixture: a private control plane (with the audit log on request), a
//! toxiproxy server, and host replicas that reach the API server only through a proxy of their
//! own, as the deployed ServiceAccount with exactly the deployed RBAC.
//!
//! Each replica gets its own proxy so a test can cut one replica off (split brain) and leave the
//! others alone; the test's own clients talk to the API server directly, so they see the truth.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::audit::{self, AuditEvent};
use crate::controller::replica_set;
use crate::controlplane::{ControlPlane, ControlPlaneOptions};
use crate::deploy::{self, TestRbac, wait_access};
use crate::host_process::HostProcess;
use crate::invariants::Invariants;
use crate::kubeconfig::{self, Credentials};
use crate::live::{LiveCluster, LiveOptions};
use crate::modules::install_crd;
use crate::namespace::TestNamespace;
use crate::toxiproxy::{Proxy, Toxic, Toxiproxy};
use crate::workdir::WorkDir;

/// The ServiceAccount of `deploy/serviceaccount.yaml`, recreated in the test namespace.
pub const ACCOUNT: &str = "wasm-replicaset-controller";

/// How long a host process (a debug build) may take to serve: it compiles the embedded policy.
pub const HOST_START: Duration = Duration::from_secs(60);

/// The toxic name [`FaultCluster::partition`] uses.
const PARTITION: &str = "partition";

/// How a [`FaultCluster`] is started.
#[derive(Debug, Clone, Default)]
pub struct FaultOptions {
    /// Extra kube-apiserver flags.
    pub apiserver_args: Vec<String>,
    /// Record every request in the audit log.
    pub audit: bool,
}

/// A private control plane (bare or live), toxiproxy, and a namespace whose ServiceAccount holds
/// the deployed RBAC. Dropping it stops toxiproxy and the cluster by PID (hosts are the test's to
/// drop first).
pub struct FaultCluster {
    // Field order matters for drop: toxiproxy before the cluster.
    toxiproxy: Toxiproxy,
    ns: TestNamespace,
    token: String,
    dir: WorkDir,
    cluster: Cluster,
}

/// The cluster under a [`FaultCluster`].
enum Cluster {
    Bare(Box<ControlPlane>),
    Live(Box<LiveCluster>),
}

/// A host replica and the proxy it reaches the API server through.
pub struct Replica {
    /// The host process.
    pub host: HostProcess,
    /// Its proxy.
    pub proxy: Proxy,
}

impl FaultCluster {
    /// Starts the control plane and toxiproxy, creates the namespace, installs the module CRD and
    /// the deployed RBAC, and gets a token for the ServiceAccount.
    pub async fn start(options: FaultOptions) -> Result<Self> {
        let control_plane = ControlPlane::start_with(ControlPlaneOptions {
            extra_apiserver_args: options.apiserver_args,
            audit: options.audit,
            ..ControlPlaneOptions::default()
        })
        .await?;
        Self::around(Cluster::Bare(Box::new(control_plane))).await
    }

    /// [`FaultCluster::start`] on a private live cluster (kube-scheduler, kwok nodes and pod
    /// behaviours) started with `options`.
    pub async fn start_live(options: LiveOptions) -> Result<Self> {
        Self::around(Cluster::Live(Box::new(LiveCluster::start(options).await?))).await
    }

    async fn around(cluster: Cluster) -> Result<Self> {
        let control_plane = match &cluster {
            Cluster::Bare(cp) => cp,
            Cluster::Live(live) => live.control_plane(),
        };
        let toxiproxy = Toxiproxy::start(control_plane.binaries()).await?;
        let ns = control_plane.create_namespace(&crate::shared::current_test_name()).await?;
        install_crd(ns.client()).await?;
        TestRbac::from_rendered(&deploy::render().await?, ns.name(), ACCOUNT)?.apply(ns.client()).await?;
        let token = ns.service_account_token(ACCOUNT, 3600).await?;
        wait_access(&ns, ACCOUNT, "update", "leases", "coordination.k8s.io", true).await?;
        wait_access(&ns, ACCOUNT, "create", "pods", "", true).await?;
        let dir = WorkDir::create(&format!("faults-{}", ns.name()))?;
        Ok(Self { toxiproxy, ns, token, dir, cluster })
    }

    /// The test namespace (with an admin client that talks to the API server directly).
    pub fn ns(&self) -> &TestNamespace {
        &self.ns
    }

    /// The control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        match &self.cluster {
            Cluster::Bare(cp) => cp,
            Cluster::Live(live) => live.control_plane(),
        }
    }

    /// The live cluster, if it was started with [`FaultCluster::start_live`].
    pub fn live(&self) -> Option<&LiveCluster> {
        match &self.cluster {
            Cluster::Bare(_) => None,
            Cluster::Live(live) => Some(live),
        }
    }

    /// toxiproxy.
    pub fn toxiproxy(&self) -> &Toxiproxy {
        &self.toxiproxy
    }

    /// A directory for logs and kubeconfigs, removed with the cluster.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new proxy named `name` to the API server.
    pub async fn proxy(&self, name: &str) -> Result<Proxy> {
        let upstream = self.control_plane().server_url().trim_start_matches("https://").to_string();
        self.toxiproxy.proxy(name, &upstream).await
    }

    /// A kubeconfig for the ServiceAccount whose server is `server`.
    pub fn kubeconfig(&self, name: &str, server: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        let credentials = Credentials::Token(self.token.clone());
        kubeconfig::write_kubeconfig(&path, server, self.control_plane().ca_pem(), &credentials, self.ns.name())?;
        Ok(path)
    }

    /// Starts host replica `name` (its leader-election identity starts with it) behind a proxy of
    /// its own, with [`host_flags`] plus `flags`, and waits until it serves `/healthz`.
    pub async fn start_replica(&self, bin: &Path, name: &str, flags: &[&str]) -> Result<Replica> {
        let proxy = self.proxy(name).await?;
        let kubeconfig = self.kubeconfig(name, &proxy.url())?;
        let mut all = host_flags(self.ns.name());
        all.extend(flags.iter().map(ToString::to_string));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let host = HostProcess::spawn(name, bin, &kubeconfig, &all, &self.dir.path().join(format!("{name}.log")))?;
        host.wait_serving(HOST_START).await?;
        Ok(Replica { host, proxy })
    }

    /// Cuts `proxy` off: every byte either way is dropped and connections stay open (a
    /// blackhole), until [`FaultCluster::heal`].
    pub async fn partition(&self, proxy: &Proxy) -> Result<()> {
        self.toxiproxy.add_both_ways(proxy, PARTITION, Toxic::Timeout { after: Duration::ZERO }).await
    }

    /// Ends [`FaultCluster::partition`].
    pub async fn heal(&self, proxy: &Proxy) -> Result<()> {
        self.toxiproxy.remove_both_ways(proxy, PARTITION).await
    }

    /// Every request in the audit log so far (the cluster must have been started with
    /// [`FaultOptions::audit`]).
    pub fn audit(&self) -> Result<Vec<AuditEvent>> {
        let path = self.control_plane().audit_log().context("this cluster was started without an audit log")?;
        audit::read(path)
    }
}

/// `host run` flags every fault test uses: the test namespace only, with the Lease and the
/// ReconcileModules there, JSON logs.
pub fn host_flags(ns: &str) -> Vec<String> {
    ["--namespace", ns, "--module-namespace", ns, "--shutdown-grace-seconds=5", "--log-format=json"]
        .map(String::from)
        .to_vec()
}

/// Creates ReplicaSet `name` with `replicas` pods labelled `app: <name>`.
pub async fn create_rs(ns: &TestNamespace, name: &str, replicas: i32) -> Result<ReplicaSet> {
    ns.api::<ReplicaSet>()
        .create(&PostParams::default(), &replica_set(name, replicas))
        .await
        .with_context(|| format!("creating ReplicaSet {name}"))
}

/// Sets `spec.replicas` of ReplicaSet `name`.
pub async fn scale(ns: &TestNamespace, name: &str, replicas: i32) -> Result<()> {
    let patch = json!({"spec": {"replicas": replicas}});
    ns.api::<ReplicaSet>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("scaling {name} to {replicas}"))?;
    Ok(())
}

/// Pods the host must never touch, protected in `invariants`: two orphans its selectors do not
/// match, and two that match ReplicaSet `app: <selecting>` but are controlled by another owner.
pub async fn create_decoys(ns: &TestNamespace, invariants: &Invariants, selecting: &str) -> Result<Vec<String>> {
    let pods = ns.api::<Pod>();
    let mut names = Vec::new();
    for i in 0..4 {
        let name = format!("decoy-{i}");
        let labels: BTreeMap<&str, &str> =
            if i < 2 { [("app", "unrelated")].into() } else { [("app", selecting)].into() };
        let owner = json!([{
            "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "someone-else",
            "uid": format!("00000000-0000-0000-0000-00000000000{i}"), "controller": true
        }]);
        let pod = json!({
            "metadata": {"name": name, "labels": labels, "ownerReferences": if i < 2 { json!(null) } else { owner }},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
        });
        pods.create(&PostParams::default(), &serde_json::from_value(pod)?).await?;
        invariants.protect(&name);
        names.push(name);
    }
    Ok(names)
}

/// From the audit log: the pod requests of host replica `name` with `verb`, whatever their
/// answer.
pub fn host_pod_requests(cluster: &FaultCluster, name: &str, verb: &str) -> Result<Vec<AuditEvent>> {
    let agent = format!(" {name}_");
    Ok(cluster
        .audit()?
        .into_iter()
        .filter(|e| e.user_agent.contains(&agent) && e.verb == verb && e.target() == "pods")
        .collect())
}

/// From the audit log: every pod host replica `name` deleted was controlled by a ReplicaSet of
/// the namespace when it went; returns how many it deleted.
pub fn check_host_deletes(cluster: &FaultCluster, invariants: &Invariants, name: &str) -> Result<usize> {
    let mut deleted = 0;
    for delete in host_pod_requests(cluster, name, "delete")?.iter().filter(|e| e.succeeded()) {
        let pod = delete.name.as_deref().unwrap_or_default();
        let owner = invariants.last_owner(pod);
        anyhow::ensure!(
            owner.as_deref().is_some_and(|o| invariants.is_replica_set(o)),
            "{name} deleted pod {pod}, controlled by {owner:?}, not by a ReplicaSet of the namespace"
        );
        deleted += 1;
    }
    Ok(deleted)
}
