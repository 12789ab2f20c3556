//! kube-scheduler for the live cluster: its own kubeconfig, leader election off, HTTPS on a free 127.0.0.1 port, ready once `/readyz` passes (which includes its informer handlers having synced), and stopping it by PID.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::controlplane::{ControlPlane, admin_credentials};
use crate::kubeconfig;
use crate::process::{DEFAULT_GRACE, ManagedProcess};
use crate::serving::{SecureServing, port_clash, retry_port_clashes};
use crate::workdir::WorkDir;

const POLL: Duration = Duration::from_millis(50);

/// A running kube-scheduler. Stopped by [`Scheduler::stop`], on drop, or at process exit.
#[derive(Debug)]
pub struct Scheduler {
    // Field order matters for drop: the process before its directory.
    process: ManagedProcess,
    serving: SecureServing,
    dir: WorkDir,
}

impl Scheduler {
    /// Starts kube-scheduler against `control_plane` with the default profile, a kubeconfig of
    /// its own (admin credentials), `--leader-elect=false`, HTTPS on a free 127.0.0.1 port with a
    /// certificate from the control plane's CA, and `extra_args` last. Returns once `/readyz`
    /// passes: its `sched-handler-sync` check means the scheduler's event handlers have synced, so
    /// a pod created afterwards is scheduled.
    pub async fn start(control_plane: &ControlPlane, extra_args: &[String], startup_timeout: Duration) -> Result<Self> {
        retry_port_clashes("kube-scheduler", || async {
            let scheduler = Self::spawn(control_plane, extra_args).await.map_err(|e| (e, false))?;
            match scheduler.wait_ready(Instant::now() + startup_timeout).await {
                Ok(()) => Ok(scheduler),
                Err(e) => {
                    let clash = port_clash(&scheduler.process);
                    Err((e, clash))
                }
            }
        })
        .await
    }

    async fn spawn(control_plane: &ControlPlane, extra_args: &[String]) -> Result<Self> {
        let bin = control_plane.binaries().kube_scheduler()?;
        let dir = WorkDir::create("kube-scheduler")?;
        let kubeconfig_path = dir.path().join("kube-scheduler.kubeconfig");
        kubeconfig::write_kubeconfig(
            &kubeconfig_path,
            control_plane.server_url(),
            control_plane.ca_pem(),
            &admin_credentials(control_plane.pki()),
            "default",
        )?;
        let (serving, serving_args) = SecureServing::new(control_plane, "kube-scheduler", dir.path()).await?;
        let mut args = vec![format!("--kubeconfig={}", kubeconfig_path.display()), "--leader-elect=false".to_string()];
        args.extend(serving_args);
        args.extend(extra_args.iter().cloned());
        let process = ManagedProcess::spawn("kube-scheduler", &bin, &args, &dir.path().join("kube-scheduler.log"))?;
        Ok(Self { process, serving, dir })
    }

    async fn wait_ready(&self, deadline: Instant) -> Result<()> {
        let mut last;
        loop {
            if self.process.exit_status().is_some() {
                return Err(self.process.error_with_log("exited during startup"));
            }
            match self.get("/readyz?verbose").await {
                Ok(body) if body.lines().any(|l| l.trim() == "readyz check passed") => return Ok(()),
                Ok(body) => last = body,
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                return Err(self
                    .process
                    .error_with_log(&format!("/readyz not passing in time (last: {})", last.trim())));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET path` on the scheduler's HTTPS port: one of `/healthz`, `/readyz`, `/livez`,
    /// `/metrics` (with queries such as `?verbose`). Call inside a tokio runtime.
    pub async fn get(&self, path: &str) -> Result<String> {
        self.serving.get("kube-scheduler", path).await
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The HTTPS port.
    pub fn port(&self) -> u16 {
        self.serving.port()
    }

    /// The file receiving the scheduler's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// Stops the scheduler (SIGTERM, grace period, SIGKILL) and removes its directory.
    /// Idempotent; also done on drop and at exit.
    pub fn stop(&self) {
        self.process.stop(DEFAULT_GRACE);
        self.dir.remove();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}
