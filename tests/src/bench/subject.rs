//! The controllers under measurement, each a separate process: kube-controller-manager
//! (ReplicaSet controller only) and the host's `host-process` binary, started with the same
//! QPS/burst/workers; plus their `/metrics`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::prom;
use crate::ports::free_port;
use crate::process::ManagedProcess;
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
        /// The process.
        process: ManagedProcess,
        /// Where `/metrics` and `/readyz` are served.
        port: u16,
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
            eprintln!("warning: building host-process failed ({status}); using {}", path.display())
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
                let exe = host_process_path()?;
                let port = free_port()?;
                let dir = WorkDir::create("bench-host")?;
                let mut cmd = Command::new(&exe);
                cmd.arg("run")
                    .arg("--kubeconfig")
                    .arg(cp.kubeconfig_path())
                    .args(["--leader-elect=false", "--shutdown-grace-seconds", "5"])
                    .arg(format!("--http-addr=127.0.0.1:{port}"))
                    .arg(format!("--workers={}", limits.workers))
                    .arg(format!("--kube-api-qps={}", limits.qps))
                    .arg(format!("--kube-api-burst={}", limits.burst));
                if !host_args.iter().any(|a| a.starts_with("--watch-modules")) {
                    cmd.arg("--watch-modules=false");
                }
                cmd.args(host_args);
                let process = ManagedProcess::spawn_command("host", cmd, &dir.path().join("host.log"))?;
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if process.exit_status().is_some() {
                        return Err(process.error_with_log("exited during startup"));
                    }
                    if let Ok((200, _)) = http_get(port, "/readyz").await {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(process.error_with_log("not ready within 60 s"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Running::Host { process, port, dir })
            }
            Subject::Limit => bail!("the raw limit runs no controller"),
        }
    }

    /// The controller's PID.
    pub fn pid(&self) -> u32 {
        match self {
            Running::Upstream(kcm) => kcm.pid(),
            Running::Host { process, .. } => process.pid(),
        }
    }

    /// The controller's Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        match self {
            Running::Upstream(kcm) => kcm.metrics().await,
            Running::Host { port, .. } => match http_get(*port, "/metrics").await? {
                (200, body) => Ok(body),
                (code, body) => bail!("host /metrics answered {code}: {body}"),
            },
        }
    }

    /// The controller's own count of API requests in `metrics`: the host's
    /// `wasm_replicaset_api_requests_total` (watches excluded), KCM's `rest_client_requests_total`
    /// (every request of the process, informers' lists and watches included).
    pub fn own_requests(&self, metrics: &str) -> f64 {
        match self {
            Running::Upstream(_) => prom::sum(metrics, "rest_client_requests_total"),
            Running::Host { .. } => prom::sum(metrics, "wasm_replicaset_api_requests_total"),
        }
    }

    /// Whether the process still runs.
    pub fn check_alive(&self) -> Result<()> {
        let process = match self {
            Running::Upstream(kcm) => kcm.process(),
            Running::Host { process, .. } => process,
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
            Running::Host { process, dir, .. } => {
                process.stop(Duration::from_secs(5));
                dir.remove();
            }
        }
    }
}

/// `GET path` on 127.0.0.1:`port` over plain HTTP/1.0; returns the status code and body.
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
        let code = head.split_whitespace().nth(1).context("no status")?.parse()?;
        anyhow::Ok((code, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await.with_context(|| format!("GET {path} timed out"))?
}
