//! `host run`: builds the clients, the sandbox and the engine, and runs until SIGINT/SIGTERM.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tokio::sync::{mpsc, watch};

use crate::{
    client,
    consistency::ConsistencyStore,
    embedded::DEFAULT_POLICY,
    engine::{Engine, EngineConfig, KubeReplicaSetControl, stopped},
    events::{self, RecorderConfig},
    modules::manager::ModuleManager,
    pod_control::KubePodControl,
    policy::{ActivePolicy, Serving, Source},
    sandbox::{Sandbox, SandboxLimits},
    telemetry::{self, LogFormat},
};

/// `host run` flags; names follow kube-controller-manager's where they mean the same.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch and manage only this namespace (default: all namespaces).
    #[arg(long)]
    pub namespace: Option<String>,
    /// ReplicaSets synced at once (kube-controller-manager's --concurrent-replicaset-syncs).
    #[arg(long, visible_alias = "concurrent-replicaset-syncs", default_value_t = 5)]
    pub workers: usize,
    /// Policy component to run instead of the embedded default.
    #[arg(long)]
    pub module: Option<PathBuf>,
    /// Client-side requests per second to the API server (kube-controller-manager's default).
    #[arg(long, default_value_t = 20.0)]
    pub kube_api_qps: f32,
    /// Client-side burst of requests to the API server.
    #[arg(long, default_value_t = 30)]
    pub kube_api_burst: u32,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Fuel per guest call, before the per-pod allowance.
    #[arg(long, default_value_t = SandboxLimits::default().fuel_base)]
    pub guest_fuel: u64,
    /// Extra fuel per candidate pod.
    #[arg(long, default_value_t = SandboxLimits::default().fuel_per_pod)]
    pub guest_fuel_per_pod: u64,
    /// Cap on a guest's memory, in MiB.
    #[arg(long, default_value_t = 64)]
    pub guest_memory_mib: usize,
    /// Wall-clock deadline per guest call, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub guest_deadline_ms: u64,
    /// How long in-flight syncs may take to finish after SIGTERM, in seconds.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Namespace whose ReconcileModule objects replace the policy at runtime.
    #[arg(long, env = "POD_NAMESPACE", default_value = "wasm-replicaset-system")]
    pub module_namespace: String,
    /// Watch ReconcileModule objects (needs their CRD: `host crd | kubectl apply -f -`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub watch_modules: bool,
    /// Roll back to the last good module after this many syncs in a row fail because of the
    /// active module (trap, fuel, deadline, memory, invalid plan); 0 never rolls back.
    #[arg(long, default_value_t = 3)]
    pub rollback_after: u32,
}

impl RunArgs {
    /// Parses `host run` flags (without the subcommand), e.g. `["--namespace", "demo"]`; for
    /// embedding the controller in tests and tools.
    pub fn from_flags<I, S>(flags: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            run: RunArgs,
        }
        let argv = std::iter::once(std::ffi::OsString::from("host")).chain(flags.into_iter().map(Into::into));
        Ok(<Flags as clap::Parser>::try_parse_from(argv)?.run)
    }

    fn sandbox_limits(&self) -> SandboxLimits {
        SandboxLimits {
            fuel_base: self.guest_fuel,
            fuel_per_pod: self.guest_fuel_per_pod,
            memory_bytes: self.guest_memory_mib << 20,
            deadline: Duration::from_millis(self.guest_deadline_ms),
            // Each worker makes at most one call at a time; leave room for module validation.
            max_concurrent_calls: (self.workers as u32 * 2).max(8),
            ..SandboxLimits::default()
        }
    }
}

/// Loads the kubeconfig the way kubectl does (or the in-cluster config).
pub async fn kube_config(path: Option<&PathBuf>) -> Result<kube::Config> {
    match path {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster"),
    }
}

/// A running controller: informers, workers and the event writer.
pub struct Controller {
    /// The engine (caches, queue, policy).
    pub engine: Arc<Engine<KubePodControl, KubeReplicaSetControl>>,
    stop: watch::Sender<bool>,
    workers: tokio::task::JoinHandle<()>,
    events: tokio::task::JoinHandle<()>,
    grace: Duration,
}

impl Controller {
    /// Connects, loads the policy module and starts the informers and workers.
    pub async fn start(args: &RunArgs) -> Result<Self> {
        let config = kube_config(args.kubeconfig.as_ref()).await?;
        // Like kube-controller-manager, the informers and the controller use separate clients,
        // each with its own QPS/burst budget, so watches never compete with pod writes.
        let (client, _client_stats) = client::build_client(config.clone(), args.kube_api_qps, args.kube_api_burst)?;
        let (watch_client, _) = client::build_client(config, args.kube_api_qps, args.kube_api_burst)?;

        let sandbox = Sandbox::new(args.sandbox_limits())?;
        let (bytes, origin) = match &args.module {
            Some(path) => (
                std::fs::read(path).with_context(|| format!("reading module {}", path.display()))?,
                path.display().to_string(),
            ),
            None => (DEFAULT_POLICY.to_vec(), "embedded default".to_string()),
        };
        let module = sandbox.load(bytes).await.with_context(|| format!("loading policy module ({origin})"))?;
        tracing::info!(module = %module.digest, contract = %module.contract_version, origin, compile = ?module.compile_time, "policy module loaded");
        let source = match &args.module {
            Some(path) => Source::File(path.display().to_string()),
            None => Source::Embedded,
        };
        let (rollback_tx, rollback_rx) = mpsc::unbounded_channel();
        let policy = Arc::new(ActivePolicy::with_source(
            sandbox,
            Serving::new(module, source),
            args.rollback_after,
            Some(rollback_tx),
        ));

        let (recorder, writer) = events::new_recorder(client.clone(), RecorderConfig::default());
        let events = tokio::spawn(writer.run());
        let (stop, stop_rx) = watch::channel(false);
        if args.watch_modules {
            let manager = ModuleManager::new(
                client.clone(),
                &args.module_namespace,
                policy.clone(),
                recorder.clone(),
                rollback_rx,
            );
            tokio::spawn(manager.run(stopped(stop_rx.clone())));
        }
        let consistency = ConsistencyStore::default();
        let pod_control = KubePodControl::new(client.clone(), recorder, consistency.clone());
        let engine_config = EngineConfig { namespace: args.namespace.clone(), ..EngineConfig::default() };
        let engine = Engine::start(
            watch_client,
            &engine_config,
            policy,
            consistency,
            pod_control,
            KubeReplicaSetControl::new(client),
            stop_rx.clone(),
        );
        let workers = tokio::spawn({
            let (engine, count) = (engine.clone(), args.workers);
            async move { engine.run_workers(count, stop_rx).await }
        });
        Ok(Self { engine, stop, workers, events, grace: Duration::from_secs(args.shutdown_grace_seconds) })
    }

    /// Stops taking keys, waits up to the grace period for the syncs in flight, stops the
    /// informers and flushes queued events.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(self.grace, self.workers).await.is_err() {
            tracing::warn!(grace = ?self.grace, "syncs still running after the grace period; exiting anyway");
        }
        drop(self.engine);
        // The writer ends once every recorder is gone and its queue is empty.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.events).await;
    }
}

/// Runs the controller until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<()> {
    telemetry::init(args.log_format);
    let controller = Controller::start(&args).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: no new syncs; waiting for the syncs in flight");
    controller.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
