//! The controller under test: the host's engine started in-process for one test namespace, and
//! small builders for the objects tests create.

use std::{collections::BTreeMap, sync::Arc};

use anyhow::Result;
use clap::Parser;
use host::{
    run::{Controller, RunArgs},
    testkit,
};
use k8s_openapi::api::apps::v1::ReplicaSet;

use crate::{ControlPlane, TestNamespace};

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    run: RunArgs,
}

/// Starts the host's controller (embedded policy) on the shared control plane, watching only
/// `ns`; `flags` are extra `wasm-replicaset run` flags. Stop it with [`Controller::shutdown`].
pub async fn start_controller(ns: &TestNamespace, flags: &[&str]) -> Result<Controller> {
    start_controller_on(crate::shared().await?, ns, flags).await
}

/// [`start_controller`] on `control_plane` (e.g. a live cluster's) instead of the shared one.
pub async fn start_controller_on(
    control_plane: &ControlPlane,
    ns: &TestNamespace,
    flags: &[&str],
) -> Result<Controller> {
    let kubeconfig = control_plane.kubeconfig_path().display().to_string();
    // One replica per test: no leader election; an ephemeral port for the HTTP endpoints.
    let mut argv = vec![
        "wasm-replicaset",
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        ns.name(),
        "--shutdown-grace-seconds",
        "5",
        "--leader-elect=false",
        "--http-addr=127.0.0.1:0",
    ];
    argv.extend_from_slice(flags);
    let flags = Flags::try_parse_from(argv)?;
    Controller::start(&flags.run, Arc::new(policy_kit::conformance::check)).await
}

/// A ReplicaSet of `replicas` pods selecting and labelled `app: <name>`, with a pause container,
/// ready to create through a namespaced API.
pub fn replica_set(name: &str, replicas: i32) -> ReplicaSet {
    testkit::rs(name).without_namespace().replicas(replicas).build()
}

/// A ReplicaSet of `replicas` pods whose selector and template labels are `labels`.
pub fn replica_set_with(name: &str, replicas: i32, labels: &BTreeMap<String, String>) -> ReplicaSet {
    testkit::rs(name).without_namespace().replicas(replicas).labels(labels).build()
}
