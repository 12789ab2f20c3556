//! `wasm-replicaset module push | list | promote | rollback`: the client side of hot swap.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::{ByteString, api::core::v1::ConfigMap};
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

use host::{
    modules::{
        manager::ROLLBACK_ANNOTATION,
        resource::{Base64, ConfigMapKey, Mode, ModuleSource, Phase, ReconcileModule, ReconcileModuleSpec},
    },
    run::kube_config,
    sandbox::{Sandbox, SandboxLimits},
};
use policy_kit::conformance;

/// Objects hold at most 1 MiB; base64 grows bytes by 4/3, so larger modules go to a ConfigMap.
const INLINE_LIMIT: usize = 700 * 1024;
/// The ConfigMap key holding a module.
const CONFIG_MAP_KEY: &str = "module.wasm";

/// Flags every `module` verb shares.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace the controller watches for ReconcileModules (its --module-namespace).
    #[arg(long, short = 'n', default_value = "wasm-replicaset-system", global = true)]
    pub namespace: String,
}

/// `wasm-replicaset module ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ModuleCommand {
    /// Validate a component locally, then create or update its ReconcileModule.
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// The ReconcileModule's name.
        #[arg(long, default_value = "replicaset-policy")]
        name: String,
        /// Run it beside the active module and only report differences.
        #[arg(long)]
        shadow: bool,
        /// Wait until the host has decided (Active, Shadow or Rejected) and print its verdict.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// List the ReconcileModules and what the host made of them.
    List,
    /// Turn a shadow module into the active one.
    Promote {
        /// The ReconcileModule's name.
        name: String,
    },
    /// Ask the host to return from this (serving) module to the last good one.
    Rollback {
        /// The ReconcileModule's name; default: the one that is Active.
        name: Option<String>,
    },
}

/// Runs a `module` verb.
pub async fn run(target: &Target, command: &ModuleCommand) -> Result<()> {
    match command {
        ModuleCommand::Push { file, name, shadow, wait, timeout } => {
            push(target, file, name, *shadow, (*wait).then(|| Duration::from_secs(*timeout))).await
        }
        ModuleCommand::List => list(target).await,
        ModuleCommand::Promote { name } => promote(target, name).await,
        ModuleCommand::Rollback { name } => rollback(target, name.as_deref()).await,
    }
}

async fn api(target: &Target) -> Result<(kube::Client, Api<ReconcileModule>)> {
    let client = kube::Client::try_from(kube_config(target.kubeconfig.as_ref()).await?)?;
    let api = Api::namespaced(client.clone(), &target.namespace);
    Ok((client, api))
}

async fn push(target: &Target, file: &PathBuf, name: &str, shadow: bool, wait: Option<Duration>) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    // Validate here first, exactly as the host will: a bad module never reaches the cluster.
    let (digest, contract, cases) = tokio::task::spawn_blocking({
        let bytes = bytes.clone();
        move || -> Result<_> {
            let sandbox = Sandbox::new(SandboxLimits::default())?;
            let module =
                sandbox.compile(&bytes).with_context(|| format!("{} is not a valid policy", file_name(&bytes)))?;
            let cases = conformance::check(&sandbox, &module)?;
            Ok((module.digest, module.contract_version.clone(), cases))
        }
    })
    .await??;
    let (client, api) = api(target).await?;
    let source = if bytes.len() <= INLINE_LIMIT {
        ModuleSource { inline: Some(Base64(bytes.clone())), config_map: None }
    } else {
        let config_map_name = format!("{name}-module");
        let cm = ConfigMap {
            metadata: ObjectMeta { name: Some(config_map_name.clone()), ..Default::default() },
            binary_data: Some([(CONFIG_MAP_KEY.to_string(), ByteString(bytes.clone()))].into()),
            ..Default::default()
        };
        let cms: Api<ConfigMap> = Api::namespaced(client, &target.namespace);
        let params = PatchParams::apply("host-module-push").force();
        cms.patch(&config_map_name, &params, &Patch::Apply(&cm)).await.context("storing the module in a ConfigMap")?;
        ModuleSource {
            inline: None,
            config_map: Some(ConfigMapKey { name: config_map_name, key: CONFIG_MAP_KEY.into() }),
        }
    };
    let mode = if shadow { Mode::Shadow } else { Mode::Active };
    let spec = ReconcileModuleSpec { module: source, mode };
    let generation = match api.get_opt(name).await? {
        Some(_) => {
            // Null the unused source so switching between inline and ConfigMap works.
            let patch = json!({"spec": {"mode": spec.mode, "module": {"inline": spec.module.inline, "configMap": spec.module.config_map}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?.metadata.generation
        }
        None => api.create(&PostParams::default(), &ReconcileModule::new(name, spec)).await?.metadata.generation,
    };
    println!(
        "pushed ReconcileModule {}/{name}: {digest} ({} KB, contract {contract}, mode {mode:?}); passed {cases} conformance cases locally",
        target.namespace,
        bytes.len() / 1024
    );
    let Some(timeout) = wait else { return Ok(()) };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let obj = api.get(name).await?;
        let status = obj.status.unwrap_or_default();
        let decided =
            status.observed_generation == generation && status.digest.as_deref() == Some(digest.to_string().as_str());
        if decided || (status.observed_generation == generation && status.phase == Some(Phase::Rejected)) {
            let phase = status.phase.map(|p| format!("{p:?}")).unwrap_or_default();
            println!("host: {phase}: {}", status.message.unwrap_or_default());
            if status.phase == Some(Phase::Rejected) {
                bail!("the host rejected the module");
            }
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the host did not decide within {timeout:?}; is it running and watching namespace {}?",
                target.namespace
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn file_name(bytes: &[u8]) -> String {
    format!("the file ({} bytes)", bytes.len())
}

async fn list(target: &Target) -> Result<()> {
    let (_, api) = api(target).await?;
    let objects = api.list(&kube::api::ListParams::default()).await?;
    println!("{:<24} {:<11} {:<7} {:<13} {:<8} MESSAGE", "NAME", "PHASE", "MODE", "DIGEST", "CONTRACT");
    for obj in objects {
        let status = obj.status.clone().unwrap_or_default();
        println!(
            "{:<24} {:<11} {:<7} {:<13} {:<8} {}",
            obj.name_any(),
            status.phase.map_or_else(|| "-".into(), |p| format!("{p:?}")),
            format!("{:?}", obj.spec.mode),
            status.short_digest.unwrap_or_else(|| "-".into()),
            status.world_version.unwrap_or_else(|| "-".into()),
            status.message.unwrap_or_default()
        );
        if let Some(shadow) = status.shadow {
            println!(
                "{:<24} shadow: {} agreed, {} differed, {} failed{}",
                "",
                shadow.agreements,
                shadow.differences,
                shadow.errors,
                shadow
                    .example_key
                    .map(|k| format!("; e.g. {k}: {}", shadow.example_difference.unwrap_or_default()))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

async fn promote(target: &Target, name: &str) -> Result<()> {
    let (_, api) = api(target).await?;
    api.patch(name, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"mode": "Active"}})))
        .await
        .with_context(|| format!("promoting {name}"))?;
    println!("ReconcileModule {}/{name}: mode Active; the host validates it again and serves it", target.namespace);
    Ok(())
}

async fn rollback(target: &Target, name: Option<&str>) -> Result<()> {
    let (_, api) = api(target).await?;
    let name = match name {
        Some(name) => name.to_string(),
        None => api
            .list(&kube::api::ListParams::default())
            .await?
            .into_iter()
            .find(|o| o.status.as_ref().and_then(|s| s.phase) == Some(Phase::Active))
            .map(|o| o.name_any())
            .context("no ReconcileModule is Active; the host serves its baseline module")?,
    };
    let token = jiff::Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {ROLLBACK_ANNOTATION: token}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("requesting a rollback of {name}"))?;
    println!("asked the host to roll back from ReconcileModule {}/{name}", target.namespace);
    Ok(())
}
