//! kube-controller-manager against a harness control plane with a chosen list of controllers: by default only the upstream ReplicaSet controller (the reference for differential tests and benchmarks); the live cluster runs node lifecycle and pod garbage collection instead.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::controlplane::ControlPlane;
use crate::process::{DEFAULT_GRACE, ManagedProcess};
use crate::serving::{SecureServing, port_clash, retry_port_clashes};
use crate::workdir::WorkDir;

/// The upstream ReplicaSet controller's name in `--controllers`.
pub const REPLICASET_CONTROLLER: &str = "replicaset-controller";

/// How kube-controller-manager is started. The defaults are KCM's own defaults, except the
/// controller list.
#[derive(Debug, Clone)]
pub struct KcmOptions {
    /// `--controllers`: the controllers to run, by the names `kube-controller-manager --help`
    /// lists (e.g. `node-lifecycle-controller`; not aliases such as `replicaset`, which the
    /// health check would not find). Default: [`REPLICASET_CONTROLLER`] only.
    pub controllers: Vec<String>,
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
            controllers: vec![REPLICASET_CONTROLLER.to_string()],
            concurrent_replicaset_syncs: 5,
            kube_api_qps: 20.0,
            kube_api_burst: 30,
            secure_port: true,
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// A running kube-controller-manager limited to the controllers of [`KcmOptions::controllers`].
/// Stopped by [`KubeControllerManager::stop`], on drop, or at process exit.
#[derive(Debug)]
pub struct KubeControllerManager {
    // Field order matters for drop: the process before its directory.
    process: ManagedProcess,
    serving: Option<SecureServing>,
    controllers: Vec<String>,
    dir: WorkDir,
}

const POLL: Duration = Duration::from_millis(50);

impl KubeControllerManager {
    /// Starts kube-controller-manager with the admin kubeconfig of `control_plane`:
    /// `--controllers=<options.controllers> --leader-elect=false
    /// --use-service-account-credentials=false`, the QPS/burst/concurrency of `options`, and (if
    /// `options.secure_port`) HTTPS on a free 127.0.0.1 port with a certificate from the control
    /// plane's CA and `--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics`.
    /// Returns once every controller's health check passes (with a secure port) and, if the
    /// ReplicaSet controller runs, the log shows its informer caches synced, so work submitted
    /// afterwards is seen.
    pub async fn start(control_plane: &ControlPlane, options: KcmOptions) -> Result<Self> {
        retry_port_clashes("kube-controller-manager", || Self::launch(control_plane, &options)).await
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
                let clash = port_clash(&kcm.process);
                Err((e, clash))
            }
        }
    }

    async fn spawn(control_plane: &ControlPlane, options: &KcmOptions) -> Result<Self> {
        let bin = control_plane.binaries().kube_controller_manager()?;
        let dir = WorkDir::create("kcm")?;
        let mut args = vec![
            format!("--kubeconfig={}", control_plane.kubeconfig_path().display()),
            format!("--controllers={}", options.controllers.join(",")),
            "--leader-elect=false".to_string(),
            "--use-service-account-credentials=false".to_string(),
            format!("--concurrent-replicaset-syncs={}", options.concurrent_replicaset_syncs),
            format!("--kube-api-qps={}", options.kube_api_qps),
            format!("--kube-api-burst={}", options.kube_api_burst),
        ];
        let serving = if options.secure_port {
            let (serving, serving_args) =
                SecureServing::new(control_plane, "kube-controller-manager", dir.path()).await?;
            args.extend(serving_args);
            Some(serving)
        } else {
            args.push("--secure-port=0".to_string());
            None
        };
        args.extend(options.extra_args.iter().cloned());
        let process = ManagedProcess::spawn(
            "kube-controller-manager",
            &bin,
            &args,
            &dir.path().join("kube-controller-manager.log"),
        )?;
        Ok(Self { process, serving, controllers: options.controllers.clone(), dir })
    }

    async fn wait_started(&self, deadline: Instant) -> Result<()> {
        let mut last = String::from("no answer yet");
        let mut healthy = self.serving.is_none();
        let runs_replicaset = self.controllers.iter().any(|c| c == REPLICASET_CONTROLLER);
        loop {
            if self.process.exit_status().is_some() {
                return Err(self.process.error_with_log("exited during startup"));
            }
            if !healthy {
                // Per-check paths like /healthz/replicaset-controller are not always-allowed (only
                // the exact paths are), but the verbose listing of /healthz is.
                match self.get("/healthz?verbose").await {
                    Ok(body) if all_controllers_healthy(&body, &self.controllers) => healthy = true,
                    Ok(body) => last = body,
                    Err(e) => last = format!("{e:#}"),
                }
            }
            if healthy {
                if !runs_replicaset || replicaset_caches_synced(&self.process.log_tail(2000)) {
                    return Ok(());
                }
                last = "the replicaset controller's caches are not synced yet".to_string();
            }
            if Instant::now() >= deadline {
                return Err(self.process.error_with_log(&format!(
                    "{} not ready in time (last: {})",
                    self.controllers.join(","),
                    last.trim()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET path` on KCM's HTTPS port: one of the always-allowed paths (`/healthz`, `/readyz`,
    /// `/livez`, `/metrics`, with queries such as `?verbose`). Needs a secure port; call inside a
    /// tokio runtime.
    pub async fn get(&self, path: &str) -> Result<String> {
        self.serving
            .as_ref()
            .context("kube-controller-manager was started without a secure port (KcmOptions::secure_port)")?
            .get("kube-controller-manager", path)
            .await
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
        self.serving.as_ref().map(SecureServing::port)
    }

    /// The controllers it runs (`--controllers`).
    pub fn controllers(&self) -> &[String] {
        &self.controllers
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
    /// Starts kube-controller-manager (by default the ReplicaSet controller only) against this
    /// control plane; see [`KubeControllerManager::start`].
    pub async fn start_kube_controller_manager(&self, options: KcmOptions) -> Result<KubeControllerManager> {
        KubeControllerManager::start(self, options).await
    }
}

/// Whether KCM's verbose `/healthz` lists every one of `controllers` as passing (`[+]<name> ok`).
fn all_controllers_healthy(healthz: &str, controllers: &[String]) -> bool {
    controllers.iter().all(|c| healthz.lines().any(|line| line.trim() == format!("[+]{c} ok")))
}

/// Whether KCM's log shows the ReplicaSet controller started and then its caches synced
/// (`"Starting controller" name="replicaset"` followed by `"Caches are synced"`, klog v0).
fn replicaset_caches_synced(log: &str) -> bool {
    log.find("\"Starting controller\" name=\"replicaset\"")
        .is_some_and(|start| log[start..].contains("\"Caches are synced\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_requested_controller_must_pass_its_health_check() {
        let healthz =
            "[+]node-lifecycle-controller ok\n[-]pod-garbage-collector-controller failed\nhealthz check failed";
        let controllers = |names: &[&str]| names.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert!(all_controllers_healthy(healthz, &controllers(&["node-lifecycle-controller"])));
        assert!(!all_controllers_healthy(
            healthz,
            &controllers(&["node-lifecycle-controller", "pod-garbage-collector-controller"])
        ));
        // A prefix of another controller's name is not that controller.
        assert!(!all_controllers_healthy(healthz, &controllers(&["node-lifecycle"])));
    }
}
