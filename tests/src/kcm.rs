//! kube-controller-manager running only the upstream ReplicaSet controller against a harness control plane: the reference for differential tests and benchmarks.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::controlplane::{ControlPlane, admin_credentials};
use crate::kubeconfig;
use crate::pki::write_file;
use crate::ports::free_port;
use crate::process::{DEFAULT_GRACE, ManagedProcess};
use crate::workdir::WorkDir;

/// How kube-controller-manager is started. The defaults are KCM's own defaults.
#[derive(Debug, Clone)]
pub struct KcmOptions {
    /// `--concurrent-replicaset-syncs` (KCM default 5).
    pub concurrent_replicaset_syncs: u32,
    /// `--kube-api-qps` (KCM default 20).
    pub kube_api_qps: f32,
    /// `--kube-api-burst` (KCM default 30).
    pub kube_api_burst: u32,
    /// Serve HTTPS (`/healthz`, `/metrics`) on a free port; `false` passes `--secure-port=0`.
    pub secure_port: bool,
    /// Extra flags, appended last (so they override the harness's).
    pub extra_args: Vec<String>,
    /// How long KCM may take to become healthy.
    pub startup_timeout: Duration,
}

impl Default for KcmOptions {
    fn default() -> Self {
        Self {
            concurrent_replicaset_syncs: 5,
            kube_api_qps: 20.0,
            kube_api_burst: 30,
            secure_port: true,
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// A running kube-controller-manager limited to `replicaset-controller`. Stopped by
/// [`KubeControllerManager::stop`], on drop, or at process exit.
#[derive(Debug)]
pub struct KubeControllerManager {
    // Field order matters for drop: the process before its directory.
    process: ManagedProcess,
    port: Option<u16>,
    https: Option<kube::Config>,
    dir: WorkDir,
}

const POLL: Duration = Duration::from_millis(50);
const MAX_LAUNCH_ATTEMPTS: u32 = 3;

impl KubeControllerManager {
    /// Starts kube-controller-manager with the admin kubeconfig of `control_plane`:
    /// `--controllers=replicaset-controller --leader-elect=false
    /// --use-service-account-credentials=false`, the QPS/burst/concurrency of `options`, and (if
    /// `options.secure_port`) HTTPS on a free 127.0.0.1 port with a certificate from the control
    /// plane's CA and `--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics`.
    /// Returns once the `replicaset-controller` health check passes (with a secure port) and the
    /// log shows the controller's informer caches synced, so work submitted afterwards is seen.
    pub async fn start(control_plane: &ControlPlane, options: KcmOptions) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::launch(control_plane, &options).await {
                Err((e, true)) if attempt < MAX_LAUNCH_ATTEMPTS => {
                    tracing::warn!("kube-controller-manager port clash, retrying: {e:#}");
                    attempt += 1;
                }
                Err((e, _)) => return Err(e),
                Ok(kcm) => return Ok(kcm),
            }
        }
    }

    /// One attempt; on failure also says whether the port was taken (worth retrying).
    async fn launch(
        control_plane: &ControlPlane,
        options: &KcmOptions,
    ) -> std::result::Result<Self, (anyhow::Error, bool)> {
        let kcm = Self::spawn(control_plane, options).await.map_err(|e| (e, false))?;
        match kcm.wait_started(Instant::now() + options.startup_timeout).await {
            Ok(()) => Ok(kcm),
            Err(e) => {
                let clash = kcm.process.log_tail(200).contains("address already in use");
                Err((e, clash))
            }
        }
    }

    async fn spawn(control_plane: &ControlPlane, options: &KcmOptions) -> Result<Self> {
        let bin = control_plane.binaries().kube_controller_manager()?;
        let dir = WorkDir::create("kcm")?;
        let mut args = vec![
            format!("--kubeconfig={}", control_plane.kubeconfig_path().display()),
            "--controllers=replicaset-controller".to_string(),
            "--leader-elect=false".to_string(),
            "--use-service-account-credentials=false".to_string(),
            format!("--concurrent-replicaset-syncs={}", options.concurrent_replicaset_syncs),
            format!("--kube-api-qps={}", options.kube_api_qps),
            format!("--kube-api-burst={}", options.kube_api_burst),
        ];
        let (port, https) = if options.secure_port {
            let port = free_port()?;
            let serving = control_plane.pki().serving_cert("kube-controller-manager")?;
            let cert = dir.path().join("kcm.crt");
            let key = dir.path().join("kcm.key");
            write_file(&cert, &serving.cert_pem, false)?;
            write_file(&key, &serving.key_pem, true)?;
            args.extend([
                format!("--secure-port={port}"),
                "--bind-address=127.0.0.1".to_string(),
                format!("--tls-cert-file={}", cert.display()),
                format!("--tls-private-key-file={}", key.display()),
                format!("--cert-dir={}", dir.path().display()),
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics".to_string(),
            ]);
            let config = kubeconfig::config_from_value(kubeconfig::kubeconfig_value(
                &format!("https://127.0.0.1:{port}"),
                control_plane.ca_pem(),
                &admin_credentials(control_plane.pki()),
                "default",
            ))
            .await?;
            (Some(port), Some(config))
        } else {
            args.push("--secure-port=0".to_string());
            (None, None)
        };
        args.extend(options.extra_args.iter().cloned());
        let process = ManagedProcess::spawn(
            "kube-controller-manager",
            &bin,
            &args,
            &dir.path().join("kube-controller-manager.log"),
        )?;
        Ok(Self { process, port, https, dir })
    }

    async fn wait_started(&self, deadline: Instant) -> Result<()> {
        let mut last = String::from("no answer yet");
        let mut healthy = self.https.is_none();
        loop {
            if self.process.exit_status().is_some() {
                return Err(self.process.error_with_log("exited during startup"));
            }
            if !healthy {
                // Per-check paths like /healthz/replicaset-controller are not always-allowed (only
                // the exact paths are), but the verbose listing of /healthz is.
                match self.get("/healthz?verbose").await {
                    Ok(body) if body.contains("[+]replicaset-controller ok") => healthy = true,
                    Ok(body) => last = body,
                    Err(e) => last = format!("{e:#}"),
                }
            }
            if healthy {
                if replicaset_caches_synced(&self.process.log_tail(2000)) {
                    return Ok(());
                }
                last = "the replicaset controller's caches are not synced yet".to_string();
            }
            if Instant::now() >= deadline {
                return Err(self
                    .process
                    .error_with_log(&format!("replicaset-controller not ready in time (last: {})", last.trim())));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn get(&self, path: &str) -> Result<String> {
        let config = self
            .https
            .clone()
            .context("kube-controller-manager was started without a secure port (KcmOptions::secure_port)")?;
        let client = kube::Client::try_from(config).context("building an HTTPS client for KCM")?;
        let request = http::Request::get(path).body(Vec::new()).context("building a request")?;
        tokio::time::timeout(Duration::from_secs(5), client.request_text(request))
            .await
            .with_context(|| format!("GET {path} on kube-controller-manager timed out"))?
            .with_context(|| format!("GET {path} on kube-controller-manager"))
    }

    /// The Prometheus text of KCM's `/metrics` (e.g. `workqueue_*{name="replicaset"}`). Needs a
    /// secure port; call inside a tokio runtime.
    pub async fn metrics(&self) -> Result<String> {
        self.get("/metrics").await
    }

    /// The process ID (benchmarks read `/proc/<pid>/stat` and `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The HTTPS port, if started with one.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The file receiving KCM's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The process handle.
    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    /// Stops KCM (SIGTERM, grace period, SIGKILL) and removes its directory. Idempotent; also done
    /// on drop and at exit.
    pub fn stop(&self) {
        self.process.stop(DEFAULT_GRACE);
        self.dir.remove();
    }
}

impl Drop for KubeControllerManager {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ControlPlane {
    /// Starts kube-controller-manager (ReplicaSet controller only) against this control plane; see
    /// [`KubeControllerManager::start`].
    pub async fn start_kube_controller_manager(&self, options: KcmOptions) -> Result<KubeControllerManager> {
        KubeControllerManager::start(self, options).await
    }
}

/// Whether KCM's log shows the ReplicaSet controller started and then its caches synced
/// (`"Starting controller" name="replicaset"` followed by `"Caches are synced"`, klog v0).
fn replicaset_caches_synced(log: &str) -> bool {
    log.find("\"Starting controller\" name=\"replicaset\"")
        .is_some_and(|start| log[start..].contains("\"Caches are synced\""))
}
