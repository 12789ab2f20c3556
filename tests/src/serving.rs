//! HTTPS endpoints of the Kubernetes components the harness starts besides kube-apiserver (kube-controller-manager, kube-scheduler): a serving certificate from the control plane's CA on a free 127.0.0.1 port, the flags that use it, a client for their health and metrics paths, and retrying a launch whose port was taken.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::controlplane::{ControlPlane, admin_credentials};
use crate::kubeconfig;
use crate::pki::write_file;
use crate::ports::free_port;
use crate::process::ManagedProcess;

/// How often a launch is tried when the port handed out was taken before the component bound it.
const MAX_LAUNCH_ATTEMPTS: u32 = 3;

/// The HTTPS side of a component: its port and a client configuration that trusts its certificate.
#[derive(Debug, Clone)]
pub(crate) struct SecureServing {
    port: u16,
    config: kube::Config,
}

impl SecureServing {
    /// Writes a serving certificate for `component` (signed by the control plane's serving CA)
    /// into `dir` and picks a free port. Returns the endpoint and the component's flags:
    /// `--secure-port`, `--bind-address=127.0.0.1`, the certificate and key, `--cert-dir` and
    /// `--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics` (no authorization
    /// webhook runs, so only always-allowed paths can be read).
    pub(crate) async fn new(control_plane: &ControlPlane, component: &str, dir: &Path) -> Result<(Self, Vec<String>)> {
        let port = free_port()?;
        let serving = control_plane.pki().serving_cert(component)?;
        let cert = dir.join(format!("{component}.crt"));
        let key = dir.join(format!("{component}.key"));
        write_file(&cert, &serving.cert_pem, false)?;
        write_file(&key, &serving.key_pem, true)?;
        let args = vec![
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".to_string(),
            format!("--tls-cert-file={}", cert.display()),
            format!("--tls-private-key-file={}", key.display()),
            format!("--cert-dir={}", dir.display()),
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics".to_string(),
        ];
        let config = kubeconfig::config_from_value(kubeconfig::kubeconfig_value(
            &format!("https://127.0.0.1:{port}"),
            control_plane.ca_pem(),
            &admin_credentials(control_plane.pki()),
            "default",
        ))
        .await?;
        Ok((Self { port, config }, args))
    }

    /// The HTTPS port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `GET path` on the component named `component` (for error messages), with a 5 s timeout.
    pub(crate) async fn get(&self, component: &str, path: &str) -> Result<String> {
        let client = kube::Client::try_from(self.config.clone())
            .with_context(|| format!("building an HTTPS client for {component}"))?;
        let request = http::Request::get(path).body(Vec::new()).context("building a request")?;
        tokio::time::timeout(Duration::from_secs(5), client.request_text(request))
            .await
            .with_context(|| format!("GET {path} on {component} timed out"))?
            .with_context(|| format!("GET {path} on {component}"))
    }
}

/// Runs `launch` up to three times while it fails because its port was taken: [`free_port`] only
/// finds a port that is free *now*, and another process may bind it before the component does.
/// `launch` returns the started component, or the error and whether [`port_clash`] said so.
pub(crate) async fn retry_port_clashes<T, F, Fut>(component: &str, mut launch: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, (anyhow::Error, bool)>>,
{
    let mut attempt = 1;
    loop {
        match launch().await {
            Ok(started) => return Ok(started),
            Err((e, true)) if attempt < MAX_LAUNCH_ATTEMPTS => {
                tracing::warn!("{component} port clash, retrying: {e:#}");
                attempt += 1;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Whether `process` failed because its port was taken, per its log.
pub(crate) fn port_clash(process: &ManagedProcess) -> bool {
    process.log_tail(200).contains("address already in use")
}
