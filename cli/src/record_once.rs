//! `record NAMESPACE/NAME --out FILE`: the snapshot a sync of that ReplicaSet would see right
//! now, read from the cluster, with the serving module's plan as the expectation.
//!
//! Pods are read in the controller's trimmed form, so nothing secret (environment, annotations
//! other than the pod-deletion-cost, container specs) is ever loaded, let alone written.

use std::{path::PathBuf, sync::Arc};

use anyhow::{Context, Result, bail};
use host::{
    engine::BURST_REPLICAS,
    informers::cached::CachedPod,
    modules::resource::{Phase, ReconcileModule},
    run::kube_config,
    snapshot::{self, Context as SyncContext},
    time::unix_nanos,
};
use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::ConfigMap};
use kube::{Api, api::ListParams};
use policy_kit::{
    harness::Policy,
    record::{ModuleResult, Recording, Trigger},
};

/// `record` flags.
#[derive(Debug, clap::Args)]
pub struct RecordOnceArgs {
    /// The ReplicaSet, as NAMESPACE/NAME.
    #[arg(value_name = "NAMESPACE/NAME", value_parser = parse_key)]
    pub replica_set: (String, String),
    /// Where to write the fixture.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Plan with this component; default: the Active ReconcileModule of --module-namespace, or
    /// the embedded policy when there is none.
    #[arg(long, value_name = "FILE.wasm")]
    pub module: Option<PathBuf>,
    /// Where the controller's ReconcileModules live.
    #[arg(long, env = "POD_NAMESPACE", default_value = "wasm-replicaset-system")]
    pub module_namespace: String,
}

fn parse_key(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("`{text}` is not NAMESPACE/NAME")),
    }
}

/// Reads the ReplicaSet, its namespace's pods and ReplicaSets, plans, and writes the fixture.
pub async fn run(args: &RecordOnceArgs) -> Result<()> {
    let (namespace, name) = &args.replica_set;
    let client = kube::Client::try_from(kube_config(args.kubeconfig.as_ref()).await?)?;
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let Some(rs) =
        replica_sets.get_opt(name).await.with_context(|| format!("reading ReplicaSet {namespace}/{name}"))?
    else {
        bail!("ReplicaSet {namespace}/{name} not found");
    };
    let related = replica_sets.list(&ListParams::default()).await.context("listing ReplicaSets")?.items;
    let pods: Vec<Arc<CachedPod>> = Api::<CachedPod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .context("listing pods")?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    // A tool has no expectations of its own in flight: the snapshot says they are satisfied.
    let context = SyncContext { expectations_satisfied: true, now: unix_nanos(), burst_replicas: BURST_REPLICAS };
    let projection = snapshot::from_lists(&rs, &related, &pods, context);
    let (bytes, origin) = serving_module(&client, args).await?;
    let key = format!("{namespace}/{name}");
    let snapshot = projection.snapshot.clone();
    let (digest, outcome) = tokio::task::spawn_blocking(move || -> Result<_> {
        let policy = Policy::from_bytes(&bytes).with_context(|| format!("loading {origin}"))?;
        let outcome = policy.reconcile(&key, &snapshot).map(|(o, _)| o).map_err(|e| format!("{e:#}"));
        Ok((policy.describe(), outcome))
    })
    .await??;
    let recording = Recording {
        trigger: Trigger::Manual,
        note: "the state read from the cluster (expectations assumed satisfied)".into(),
        snapshot: projection.snapshot,
        serving: ModuleResult { module: digest.clone(), outcome },
        shadow: None,
    };
    let text = recording.render()?;
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {}: ReplicaSet {namespace}/{name}, {} candidate pods, expectation from {digest}",
        args.out.display(),
        recording.snapshot.pods.len()
    );
    Ok(())
}

/// The module to plan with and where it came from: `--module`, the Active ReconcileModule, or
/// the embedded policy.
async fn serving_module(client: &kube::Client, args: &RecordOnceArgs) -> Result<(Vec<u8>, String)> {
    if let Some(path) = &args.module {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok((bytes, path.display().to_string()));
    }
    let objects: Api<ReconcileModule> = Api::namespaced(client.clone(), &args.module_namespace);
    let active = match objects.list(&ListParams::default()).await {
        Ok(list) => list.items.into_iter().find(|o| o.status.as_ref().and_then(|s| s.phase) == Some(Phase::Active)),
        // No CRD: no uploaded module can be serving.
        Err(kube::Error::Api(status)) if status.code == 404 => None,
        Err(e) => return Err(e).context("listing ReconcileModules"),
    };
    let Some(active) = active else {
        return Ok((host::embedded::DEFAULT_POLICY.to_vec(), "the embedded policy".into()));
    };
    let name = format!("ReconcileModule {}/{}", args.module_namespace, kube::ResourceExt::name_any(&active));
    let bytes = match (&active.spec.module.inline, &active.spec.module.config_map) {
        (Some(inline), _) => inline.0.clone(),
        (None, Some(reference)) => {
            Api::<ConfigMap>::namespaced(client.clone(), &args.module_namespace)
                .get(&reference.name)
                .await
                .with_context(|| format!("reading ConfigMap {} of {name}", reference.name))?
                .binary_data
                .and_then(|mut data| data.remove(&reference.key))
                .with_context(|| format!("ConfigMap {} of {name} has no key {}", reference.name, reference.key))?
                .0
        }
        (None, None) => bail!("{name} names no module source"),
    };
    Ok((bytes, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespace_slash_name() {
        assert_eq!(parse_key("prod/web"), Ok(("prod".into(), "web".into())));
        for bad in ["web", "/web", "prod/", "a/b/c"] {
            assert_eq!(parse_key(bad), Err(format!("`{bad}` is not NAMESPACE/NAME")));
        }
    }
}
