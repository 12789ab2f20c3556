//! `wasm-replicaset run`: builds the clients, the sandbox and the engine, and runs until SIGINT/SIGTERM.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tokio::sync::{mpsc, watch};

use crate::{
    apply::KubeApi,
    client,
    embedded::DEFAULT_POLICY,
    engine::{Collaborators, Engine, EngineConfig, stopped},
    events::{self, RecorderConfig},
    leader::{LeaderElectionConfig, LeaderElector, LeaderHandle, PreflightError},
    metrics::{Live, Metrics},
    modules::{ModuleCheck, manager::ModuleManager},
    policy::{ActivePolicy, RollbackRequest, Serving, Source},
    sandbox::{Sandbox, SandboxLimits},
    server,
    telemetry::{self, LogFormat},
};

/// `wasm-replicaset run` flags; names follow kube-controller-manager's where they mean the same.
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
    /// Extra fuel per label of the snapshot's (interned) label sets.
    #[arg(long, default_value_t = SandboxLimits::default().fuel_per_label)]
    pub guest_fuel_per_label: u64,
    /// Cap on a guest's memory, in MiB, before the allowance of 4 bytes per byte of input
    /// (never above 256 MiB).
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
    /// Watch ReconcileModule objects (needs their CRD: `wasm-replicaset crd | kubectl apply -f -`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub watch_modules: bool,
    /// Roll back to the last good module after this many syncs in a row fail because of the
    /// active module (trap, fuel, deadline, memory, invalid plan); 0 never rolls back.
    #[arg(long, default_value_t = 3)]
    pub rollback_after: u32,
    /// Sync only while holding a Lease, so several replicas can run (kube-controller-manager's
    /// flag; followers keep their caches warm).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// The Lease's name.
    #[arg(long, default_value = "wasm-replicaset-controller")]
    pub leader_elect_resource_name: String,
    /// The Lease's namespace (default: --module-namespace).
    #[arg(long)]
    pub leader_elect_resource_namespace: Option<String>,
    /// How long a lease lasts without renewal (e.g. 15s).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops syncing (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often to try to acquire or renew (e.g. 2s).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// Address of /healthz, /readyz and /metrics; `off` disables them.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http_addr: String,
    /// Directory for compiled policy modules, keyed by digest, so a restart or a module pushed
    /// again skips compiling (created private; must be writable by this process only). Unset:
    /// every module is compiled when loaded.
    #[arg(long, env = "WASM_REPLICASET_MODULE_CACHE")]
    pub module_cache_dir: Option<PathBuf>,
    /// How long a ReplicaSet's unobserved pod creations and deletions hold back its scaling
    /// before it is synced anyway (upstream's fixed ExpectationsTimeout, 5m); e.g. 30s.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub expectations_ttl: Duration,
}

/// `15s`, `1m30s`, `500ms` as a positive Duration (jiff's friendly format).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed: jiff::SignedDuration =
        text.parse().map_err(|e| format!("`{text}` is not a duration like 15s, 1m30s or 500ms: {e}"))?;
    match Duration::try_from(parsed) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("`{text}` must be positive")),
    }
}

impl RunArgs {
    /// Parses `run` flags (without the subcommand), e.g. `["--namespace", "demo"]`; for
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
        let argv =
            std::iter::once(std::ffi::OsString::from("wasm-replicaset")).chain(flags.into_iter().map(Into::into));
        Ok(<Flags as clap::Parser>::try_parse_from(argv)?.run)
    }

    fn sandbox_limits(&self) -> SandboxLimits {
        SandboxLimits {
            fuel_base: self.guest_fuel,
            fuel_per_pod: self.guest_fuel_per_pod,
            fuel_per_label: self.guest_fuel_per_label,
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

/// A running controller: informers, leader election, workers, the module manager, the event
/// writer and the HTTP endpoints.
pub struct Controller {
    /// The engine (caches, queue, policy).
    pub engine: Arc<Engine<KubeApi>>,
    /// Whether this replica leads (always true without leader election).
    pub leading: watch::Receiver<bool>,
    http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    release: watch::Sender<bool>,
    workers: tokio::task::JoinHandle<()>,
    elector: Option<tokio::task::JoinHandle<()>>,
    events: tokio::task::JoinHandle<()>,
    grace: Duration,
}

impl Controller {
    /// Connects, loads the policy module and starts everything; workers sync while leading.
    /// An uploaded module serves only once it passes `checks`.
    pub async fn start(args: &RunArgs, checks: Arc<dyn ModuleCheck>) -> Result<Self> {
        // One identity for the Lease and the user agents, so the audit log names the replica.
        let identity = format!("{}_{}", hostname(), uuid_like());
        // Made before the clients: the write client refuses writes while this replica does not
        // lead (client::leadership); the elector drives it.
        let (leading_tx, leading_rx) = watch::channel(!args.leader_elect);
        let clients = Clients::connect(args, &identity, &leading_rx).await?;
        // Compiled before anything else, so a standby is ready to sync the moment it leads.
        let (policy, rollbacks) = load_policy(args).await?;
        let metrics = Arc::new(Metrics::default());
        // `stop` ends the workers, informers and module manager; `release` then ends the
        // elector, which releases the lease only after the last sync is done.
        let (stop, stop_rx) = watch::channel(false);
        let (release, release_rx) = watch::channel(false);
        let election = Election::start(args, identity, clients.election, release_rx, (leading_tx, leading_rx)).await?;
        let leading = election.leading.clone();

        let (recorder, writer) = events::new_recorder(clients.writes.clone(), RecorderConfig::default());
        let events = tokio::spawn(writer.run());
        if args.watch_modules {
            let manager = ModuleManager::new(
                clients.writes.clone(),
                &args.module_namespace,
                policy.clone(),
                checks,
                recorder.clone(),
                rollbacks,
            )
            .with_metrics(metrics.clone())
            .writing_when(leading.clone());
            tokio::spawn(manager.run(stopped(stop_rx.clone())));
        }
        let engine_config = EngineConfig {
            namespace: args.namespace.clone(),
            expectations_ttl: args.expectations_ttl,
            ..EngineConfig::default()
        };
        let api = KubeApi::new(clients.writes, recorder.clone());
        let collaborators = Collaborators { policy: policy.clone(), metrics: metrics.clone(), api };
        let engine = Engine::start(clients.watches, &engine_config, collaborators, stop_rx.clone());
        metrics.attach(Live {
            queue: engine.shared.queue.clone(),
            requests: clients.stats,
            events: recorder,
            policy,
            leading: leading.clone(),
            engine: engine.shared.clone(),
            reachability: clients.reachability.clone(),
        });
        let readiness = readiness(engine.clone(), clients.reachability, leading.clone(), election.holder);
        let http_addr = serve_http(&args.http_addr, metrics, readiness, stopped(release.subscribe())).await?;
        let scope =
            args.namespace.as_ref().map_or_else(|| "all namespaces".to_string(), |ns| format!("namespace {ns}"));
        let workers = tokio::spawn(lead(engine.clone(), args.workers, scope, leading.clone(), stop_rx));
        Ok(Self {
            engine,
            leading,
            http_addr,
            stop,
            release,
            workers,
            elector: election.task,
            events,
            grace: Duration::from_secs(args.shutdown_grace_seconds),
        })
    }

    /// Where /healthz, /readyz and /metrics are served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Stops taking keys, waits up to the grace period for the syncs in flight, then releases the
    /// lease, stops the informers and flushes queued events.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(self.grace, self.workers).await.is_err() {
            tracing::warn!(grace = ?self.grace, "syncs still running after the grace period; exiting anyway");
        }
        let _ = self.release.send(true);
        if let Some(elector) = self.elector {
            let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
        }
        drop(self.engine);
        // The writer ends once every recorder is gone and its queue is empty.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.events).await;
    }
}

/// The API clients: like kube-controller-manager, the informers, the writes and leader election
/// each get their own, with its own QPS/burst budget, so watches never compete with pod writes
/// and lease renewals never queue behind a burst of them (a busy leader would otherwise lose its
/// lease in the middle of a large scale-up).
struct Clients {
    watches: kube::Client,
    writes: kube::Client,
    election: kube::Client,
    /// The write client's request counts (for /metrics).
    stats: client::RequestStats,
    /// Whether the API server answers any of them (for /readyz).
    reachability: client::Reachability,
}

impl Clients {
    /// Each client's user agent names this replica's `identity` and the client's purpose.
    /// Only the write client is gated on `leading`: the elector writes its Lease to lead at all.
    async fn connect(args: &RunArgs, identity: &str, leading: &watch::Receiver<bool>) -> Result<Self> {
        let config = kube_config(args.kubeconfig.as_ref()).await?;
        let reachability = client::Reachability::default();
        let build = |purpose: &str, leader_only: Option<&watch::Receiver<bool>>| {
            let options = client::ClientOptions {
                qps: args.kube_api_qps,
                burst: args.kube_api_burst,
                user_agent: Some(client::user_agent(identity, purpose)),
                reachability: reachability.clone(),
                leader_only: leader_only.cloned(),
            };
            client::build_client_with(config.clone(), &options)
        };
        let (writes, stats) = build("writes", Some(leading))?;
        let (watches, _) = build("watches", None)?;
        let (election, _) = build("leader-election", None)?;
        Ok(Self { watches, writes, election, stats, reachability })
    }
}

/// Compiles the starting module (`--module`, or the embedded default) and wraps it in the
/// policy the engine calls; also returns where its rollback requests arrive.
async fn load_policy(args: &RunArgs) -> Result<(Arc<ActivePolicy>, mpsc::UnboundedReceiver<RollbackRequest>)> {
    let sandbox = match &args.module_cache_dir {
        Some(dir) => Sandbox::with_module_cache(args.sandbox_limits(), dir)?,
        None => Sandbox::new(args.sandbox_limits())?,
    };
    let (bytes, source) = match &args.module {
        Some(path) => (
            std::fs::read(path).with_context(|| format!("reading module {}", path.display()))?,
            Source::File(path.display().to_string()),
        ),
        None => (DEFAULT_POLICY.to_vec(), Source::Embedded),
    };
    let module = sandbox.load(bytes).await.with_context(|| format!("loading policy module ({source})"))?;
    tracing::info!(module = %module.digest, contract = %module.contract_version, origin = %source, compile = ?module.compile_time, compiled = ?module.compiled, "policy module loaded");
    let (rollback_tx, rollback_rx) = mpsc::unbounded_channel();
    let serving = Serving::new(module, source);
    let policy = ActivePolicy::with_source(sandbox, serving, args.rollback_after, Some(rollback_tx));
    Ok((Arc::new(policy), rollback_rx))
}

/// Leader election, when enabled: whether this replica leads, who does, and the elector's task.
struct Election {
    leading: watch::Receiver<bool>,
    holder: Option<LeaderHandle>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Election {
    /// Starts electing (or, with `--leader-elect=false`, leads at once); the elector runs until
    /// `release` turns true and then gives the lease up. Fails at once, naming the fix, when the
    /// Lease can never be written. `leading` is the channel the elector reports on (true from the
    /// start without election).
    async fn start(
        args: &RunArgs,
        identity: String,
        client: kube::Client,
        release: watch::Receiver<bool>,
        (leading_tx, leading): (watch::Sender<bool>, watch::Receiver<bool>),
    ) -> Result<Self> {
        if !args.leader_elect {
            tracing::info!(
                "leader election off (--leader-elect=false): this replica reconciles as soon as its caches sync"
            );
            return Ok(Self { leading, holder: None, task: None });
        }
        let namespace = args.leader_elect_resource_namespace.clone().unwrap_or_else(|| args.module_namespace.clone());
        let mut config = LeaderElectionConfig::new(namespace, &args.leader_elect_resource_name, identity);
        config.lease_duration = args.leader_elect_lease_duration;
        config.renew_deadline = args.leader_elect_renew_deadline;
        config.retry_period = args.leader_elect_retry_period;
        config.release_on_cancel = true;
        let lease = config.describe();
        let elector = LeaderElector::new(client, config).map_err(|e| anyhow::anyhow!("leader election: {e}"))?;
        elector.preflight().await.map_err(|e| anyhow::anyhow!("leader election cannot work: {e}; {}", fix_for(&e)))?;
        tracing::info!(%lease, "leader election on: this replica reconciles only while it holds the lease");
        let holder = Some(elector.handle());
        let task = Some(tokio::spawn(elector.run(release, leading_tx)));
        Ok(Self { leading, holder, task })
    }
}

/// What to do about a Lease that can never be written, in flag and manifest terms.
fn fix_for(error: &PreflightError) -> &'static str {
    match error {
        PreflightError::NamespaceMissing(_) => {
            "create it with `kubectl apply -k deploy/`, pick an existing namespace with --leader-elect-resource-namespace (or --module-namespace), or run a single replica with --leader-elect=false"
        }
        PreflightError::Forbidden { .. } => {
            "grant get, create and update on leases there (deploy/rbac.yaml), or run a single replica with --leader-elect=false"
        }
    }
}

/// Serves /healthz, /readyz and /metrics on `addr` until `stop` (`off`: not at all); returns the
/// bound address.
async fn serve_http(
    addr: &str,
    metrics: Arc<Metrics>,
    readiness: server::Readiness,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<SocketAddr>> {
    if addr == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = addr.parse().with_context(|| format!("--http-addr {addr:?} is not host:port"))?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the HTTP server to {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(server::serve(listener, metrics, readiness, stop));
    Ok(Some(bound))
}

/// Runs the workers whenever this replica leads. Losing the lease aborts them at once — a
/// replica that may no longer be the leader must not write — and the caches stay warm for the
/// next term.
async fn lead(
    engine: Arc<Engine<KubeApi>>,
    workers: usize,
    scope: String,
    mut leading: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = stopped(stop.clone()) => return,
            ok = async { leading.wait_for(|l| *l).await.map(|_| ()) } => if ok.is_err() { return },
        }
        tracing::info!("leading: reconciling ReplicaSets in {scope}");
        let (term_tx, term_rx) = watch::channel(false);
        let run = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.run_workers(workers, term_rx).await })
        };
        tokio::select! {
            () = stopped(stop.clone()) => {
                // Shutdown: no new keys; the syncs in flight finish (the caller bounds the wait).
                let _ = term_tx.send(true);
                let _ = run.await;
                return;
            }
            // A closed channel (no leader election) means leadership can never be lost.
            () = async { if leading.wait_for(|l| !*l).await.is_err() { std::future::pending::<()>().await } } => {
                tracing::warn!("lost the lease: stopping every sync now");
                run.abort();
            }
        }
    }
}

/// `/readyz`: caches synced, the API server answering and no access denied; says whether this
/// replica leads.
fn readiness(
    engine: Arc<Engine<KubeApi>>,
    reachability: client::Reachability,
    leading: watch::Receiver<bool>,
    holder: Option<LeaderHandle>,
) -> server::Readiness {
    Box::new(move || {
        reachability.check().map_err(|e| e.to_string())?;
        let note = engine.readiness()?;
        let role = match (&holder, *leading.borrow()) {
            (None, _) => "no leader election".to_string(),
            (Some(_), true) => "leading".to_string(),
            (Some(h), false) => match h.last_error() {
                Some(reason) => format!("not leading: {reason}"),
                None => format!("not leading: standing by (leader: {})", h.holder().unwrap_or_else(|| "none".into())),
            },
        };
        Ok(format!("{note}; {role}"))
    })
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "host".into())
}

/// A random suffix (16 hex digits) so two processes on one host never share an identity.
fn uuid_like() -> String {
    format!("{:016x}", crate::random::u64())
}

/// Runs the controller until SIGINT or SIGTERM.
pub async fn run(args: RunArgs, checks: Arc<dyn ModuleCheck>) -> Result<()> {
    run_with(args, checks, |_| {}).await
}

/// [`run`], handing the started controller to `attach` first (before any sync, as nothing else
/// runs on this thread until it returns): the binary subscribes its recorder to the sync log.
pub async fn run_with(args: RunArgs, checks: Arc<dyn ModuleCheck>, attach: impl FnOnce(&Controller)) -> Result<()> {
    telemetry::init(args.log_format);
    let controller = Controller::start(&args, checks).await?;
    attach(&controller);
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
