//! The controllers under measurement, each a separate process: kube-controller-manager
//! (ReplicaSet controller only) and the host's `host-process` binary, started with the same
//! QPS/burst/workers; plus their `/metrics`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Result, bail};

use super::scenarios;
use crate::host_process::HostProcess;
use crate::workdir::WorkDir;
use crate::{ControlPlane, KcmOptions, KubeControllerManager};

/// Who does the work in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// kube-controller-manager with only `replicaset-controller`.
    Upstream,
    /// The host (`host-process run`), embedded policy.
    Host,
    /// No controller: a plain client creating (and deleting) the pods itself, unthrottled.
    Limit,
}

impl Subject {
    /// A short name for tables and progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Subject::Upstream => "upstream",
            Subject::Host => "host",
            Subject::Limit => "raw limit",
        }
    }
}

/// Client-side limits and worker count, the same for both controllers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// `--kube-api-qps`.
    pub qps: f32,
    /// `--kube-api-burst`.
    pub burst: u32,
    /// `--concurrent-replicaset-syncs` / `--workers`.
    pub workers: u32,
}

impl Limits {
    /// kube-controller-manager's defaults: 20/30, 5 workers.
    pub const KCM_DEFAULTS: Limits = Limits { qps: 20.0, burst: 30, workers: 5 };

    /// `qps/burst, N workers`.
    pub fn label(&self) -> String {
        format!("{}/{}, {} workers", self.qps, self.burst, self.workers)
    }
}

/// A running controller process.
pub enum Running {
    /// kube-controller-manager (boxed: it holds its options and paths, far larger than the host's).
    Upstream(Box<KubeControllerManager>),
    /// The host.
    Host {
        /// The process, serving `/metrics` and `/readyz`.
        host: HostProcess,
        /// Holds the log.
        dir: WorkDir,
    },
}

/// The `host-process` binary next to the running executable (same profile).
pub fn host_process_path() -> Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("host-process"))
}

/// Builds `host-process` with the profile of the running executable, so the host measured is the
/// current source (`cargo run --bin bench` builds only `bench`). Falls back to an existing binary
/// when cargo is not available.
pub fn ensure_host_process() -> Result<PathBuf> {
    let path = host_process_path()?;
    let exe = std::env::current_exe()?;
    let release = exe.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "tests", "--bin", "host-process", "--manifest-path"]).arg(&manifest);
    if release {
        cmd.arg("--release");
    }
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(status) if path.exists() => {
            eprintln!("warning: building host-process failed ({status}); using {}", path.display());
        }
        Ok(status) => bail!("building host-process failed ({status}); run `cargo build --release -p tests --bins`"),
        Err(e) if path.exists() => eprintln!("warning: cannot run cargo ({e}); using {}", path.display()),
        Err(e) => bail!(
            "cannot run cargo ({e}) and {} is missing: run `cargo build --release -p tests --bins`",
            path.display()
        ),
    }
    Ok(path)
}

/// The host's compiled-module cache for the whole bench run (see [`warm_module_cache`]).
static MODULE_CACHE: OnceLock<PathBuf> = OnceLock::new();

/// Compiles the embedded policy into `dir` once, so every host the bench starts loads it as a
/// restarted controller does (`--module-cache-dir`); the cold compile is reported by the policy
/// bench. Returns how long the compile took.
pub fn warm_module_cache(dir: &Path) -> Result<Duration> {
    use host::sandbox::{Sandbox, SandboxLimits};
    let module = Sandbox::with_module_cache(SandboxLimits::default(), dir)?.compile(host::embedded::DEFAULT_POLICY)?;
    MODULE_CACHE.set(dir.to_path_buf()).map_err(|_| anyhow::anyhow!("the module cache is warmed once per run"))?;
    Ok(module.compile_time)
}

impl Running {
    /// Starts `subject` (not [`Subject::Limit`]) on `cp` with `limits`; `host_args` are extra
    /// flags for the host. Returns once its caches are synced.
    pub async fn start(cp: &ControlPlane, subject: Subject, limits: Limits, host_args: &[String]) -> Result<Self> {
        match subject {
            Subject::Upstream => {
                let options = KcmOptions {
                    concurrent_replicaset_syncs: limits.workers,
                    kube_api_qps: limits.qps,
                    kube_api_burst: limits.burst,
                    secure_port: true,
                    ..KcmOptions::default()
                };
                Ok(Running::Upstream(Box::new(cp.start_kube_controller_manager(options).await?)))
            }
            Subject::Host => {
                let dir = WorkDir::create("bench-host")?;
                let mut flags = vec![
                    "--leader-elect=false".to_string(),
                    "--shutdown-grace-seconds=5".to_string(),
                    format!("--workers={}", limits.workers),
                    format!("--kube-api-qps={}", limits.qps),
                    format!("--kube-api-burst={}", limits.burst),
                ];
                if !host_args.iter().any(|a| a.starts_with("--watch-modules")) {
                    flags.push("--watch-modules=false".to_string());
                }
                if let Some(cache) = MODULE_CACHE.get() {
                    flags.push(format!("--module-cache-dir={}", cache.display()));
                }
                flags.extend(host_args.iter().cloned());
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                let host = HostProcess::spawn(
                    "host",
                    &host_process_path()?,
                    cp.kubeconfig_path(),
                    &flags,
                    &dir.path().join("host.log"),
                )?;
                host.wait_readyz(200, "", Duration::from_secs(60)).await?;
                Ok(Running::Host { host, dir })
            }
            Subject::Limit => bail!("the raw limit runs no controller"),
        }
    }

    /// The controller's PID.
    pub fn pid(&self) -> u32 {
        match self {
            Running::Upstream(kcm) => kcm.pid(),
            Running::Host { host, .. } => host.process().pid(),
        }
    }

    /// The controller's Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        match self {
            Running::Upstream(kcm) => kcm.metrics().await,
            Running::Host { host, .. } => host.metrics().await,
        }
    }

    /// The controller's own count of API requests in `metrics`: the host's
    /// `wasm_replicaset_api_requests_total` (watches excluded), KCM's `rest_client_requests_total`
    /// (every request of the process, informers' lists and watches included).
    pub fn own_requests(&self, metrics: &str) -> f64 {
        match self {
            Running::Upstream(_) => scenarios::total(metrics, "rest_client_requests_total"),
            Running::Host { .. } => scenarios::total(metrics, "wasm_replicaset_api_requests_total"),
        }
    }

    /// Whether the process still runs.
    pub fn check_alive(&self) -> Result<()> {
        let process = match self {
            Running::Upstream(kcm) => kcm.process(),
            Running::Host { host, .. } => host.process(),
        };
        match process.exit_status() {
            Some(status) => Err(process.error_with_log(&format!("exited during the run ({status})"))),
            None => Ok(()),
        }
    }

    /// Stops the process.
    pub fn stop(self) {
        match self {
            Running::Upstream(kcm) => kcm.stop(),
            Running::Host { host, dir } => {
                host.process().stop(Duration::from_secs(5));
                dir.remove();
            }
        }
    }
}
