//! Running the built kubectl with a harness kubeconfig (or none, for `kubectl kustomize`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;

use crate::binaries::Binaries;
use crate::controlplane::ControlPlane;

/// How long one kubectl invocation may run.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The kubectl binary plus the kubeconfig it is run with.
#[derive(Debug, Clone)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: Option<PathBuf>,
}

impl Kubectl {
    /// kubectl at `bin`, run with `--kubeconfig=<kubeconfig>` if given.
    pub fn new(bin: impl Into<PathBuf>, kubeconfig: Option<PathBuf>) -> Self {
        Self { bin: bin.into(), kubeconfig }
    }

    /// kubectl from [`Binaries::locate`] with no kubeconfig (for commands that need no cluster,
    /// like `kubectl kustomize`).
    pub fn standalone() -> Result<Self> {
        Ok(Self::new(Binaries::locate().kubectl()?, None))
    }

    /// The same kubectl with another kubeconfig (e.g. one from
    /// [`ControlPlane::write_token_kubeconfig`]).
    pub fn with_kubeconfig(&self, kubeconfig: impl Into<PathBuf>) -> Self {
        Self::new(self.bin.clone(), Some(kubeconfig.into()))
    }

    /// The kubectl binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A command for kubectl with `--kubeconfig` set (if any), ready for more arguments.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        if let Some(kubeconfig) = &self.kubeconfig {
            cmd.arg(format!("--kubeconfig={}", kubeconfig.display()));
        }
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs `kubectl args...` and returns its stdout; a non-zero exit is an error with stderr.
    pub async fn run(&self, args: &[&str]) -> Result<String> {
        self.run_with_stdin(args, None).await
    }

    /// Runs `kubectl args...` with `stdin` (e.g. `apply -f -`) and returns its stdout.
    pub async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let shown = format!("kubectl {}", args.join(" "));
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("starting {shown} ({})", self.bin.display()))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await.with_context(|| format!("writing the stdin of {shown}"))?;
        }
        let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| format!("{shown} did not finish within {TIMEOUT:?}"))?
            .with_context(|| format!("waiting for {shown}"))?;
        if !output.status.success() {
            bail!("{shown} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
        }
        String::from_utf8(output.stdout).with_context(|| format!("{shown} printed non-UTF-8"))
    }

    /// `kubectl kustomize <dir>`: the rendered manifests as YAML.
    pub async fn kustomize(&self, dir: &Path) -> Result<String> {
        let dir = dir.to_str().context("kustomize directory is not UTF-8")?;
        self.run(&["kustomize", dir]).await
    }
}

impl ControlPlane {
    /// kubectl (from this control plane's binaries) with the admin kubeconfig.
    pub fn kubectl(&self) -> Result<Kubectl> {
        Ok(Kubectl::new(self.binaries().kubectl()?, Some(self.kubeconfig_path().to_path_buf())))
    }
}
