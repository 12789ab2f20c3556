//! The `wasm-replicaset` binary (built here as `host-process`, the same `main`) running as a child process, and plain
//! HTTP GETs of its `/healthz`, `/readyz` and `/metrics`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::ManagedProcess;
use crate::{eventually, ports};

/// One `GET http://127.0.0.1:<port><path>`: the status code and the body.
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET {path} on port {port} timed out"))?
        .with_context(|| format!("GET {path} on port {port}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("GET {path}: no HTTP header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path}: no status in {head:?}"))?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

/// Decodes an HTTP/1.1 chunked body.
pub(crate) fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// The `wasm-replicaset` binary (built here as `host-process`, the same `main`) running `run` as a child process.
#[derive(Debug)]
pub struct HostProcess {
    process: ManagedProcess,
    port: u16,
}

impl HostProcess {
    /// Starts `bin run --kubeconfig <kubeconfig> --http-addr 127.0.0.1:<free port> <flags...>`,
    /// logging to `log`.
    pub fn spawn(name: &str, bin: &Path, kubeconfig: &Path, flags: &[&str], log: &Path) -> Result<Self> {
        let port = ports::free_port()?;
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg(format!("--http-addr=127.0.0.1:{port}"))
            .args(flags)
            .env_remove("KUBECONFIG")
            .env_remove("POD_NAMESPACE")
            .env("HOSTNAME", name);
        // Deterministic logging whatever the developer's environment says, unless asked.
        match std::env::var("HARNESS_HOST_LOG") {
            Ok(filter) if !filter.is_empty() => cmd.env("RUST_LOG", filter),
            _ => cmd.env_remove("RUST_LOG"),
        };
        let process = ManagedProcess::spawn_command(name, cmd, log)?;
        Ok(Self { process, port })
    }

    /// The process.
    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    /// The port of /healthz, /readyz and /metrics.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `GET <path>` on the host's HTTP port.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        if let Some(status) = self.process.exit_status() {
            return Err(self.process.error_with_log(&format!("exited ({status}) before GET {path}")));
        }
        http_get(self.port, path).await
    }

    /// `/readyz`: the status code and the text.
    pub async fn readyz(&self) -> Result<(u16, String)> {
        self.get("/readyz").await
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let (status, body) = self.get("/metrics").await?;
        if status != 200 {
            bail!("/metrics answered {status}: {body}");
        }
        Ok(body)
    }

    /// Waits until this process (not a stranger that took the port) serves /healthz.
    pub async fn wait_serving(&self, timeout: Duration) -> Result<()> {
        let pid = self.process.pid();
        eventually(&format!("{} to serve /healthz", self.process.name()), timeout, || async {
            if let Some(status) = self.process.exit_status() {
                // Not retried: `eventually` would keep polling a dead process.
                return Ok(Some(Err(self.process.error_with_log(&format!("exited early ({status})")))));
            }
            if !ports::pid_listens_on(pid, self.port) {
                return Ok(None);
            }
            let (status, body) = http_get(self.port, "/healthz").await?;
            Ok((status == 200 && body.trim() == "ok").then_some(Ok(())))
        })
        .await
        .map_err(|e| self.process.error_with_log(&format!("{e:#}")))?
    }

    /// Waits until `/readyz` answers `status` with a body containing `text`; returns the body.
    pub async fn wait_readyz(&self, status: u16, text: &str, timeout: Duration) -> Result<String> {
        eventually(&format!("{} /readyz to be {status} with {text:?}", self.process.name()), timeout, || async {
            let (got, body) = self.readyz().await?;
            Ok((got == status && body.contains(text)).then_some(body))
        })
        .await
        .map_err(|e| self.process.error_with_log(&format!("{e:#}")))
    }

    /// SIGKILL, as a crash or an OOM kill would: no release of the lease, no flush. Only this
    /// process (our child, not reaped yet, so its PID cannot have been reused) is signalled.
    pub fn kill(&self) -> Result<()> {
        if self.process.exit_status().is_some() {
            bail!("{} already exited", self.process.name());
        }
        // SAFETY: plain syscall on our own unreaped child.
        let rc = unsafe { libc::kill(self.process.pid() as libc::pid_t, libc::SIGKILL) };
        if rc != 0 {
            bail!("kill({}) failed: {}", self.process.pid(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM, as the kubelet sends when a pod stops: the host finishes its syncs in flight,
    /// releases the lease and exits.
    pub fn terminate(&self) -> Result<()> {
        if self.process.exit_status().is_some() {
            bail!("{} already exited", self.process.name());
        }
        // SAFETY: plain syscall on our own unreaped child.
        let rc = unsafe { libc::kill(self.process.pid() as libc::pid_t, libc::SIGTERM) };
        if rc != 0 {
            bail!("kill({}, SIGTERM) failed: {}", self.process.pid(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The log's lines parsed as JSON (the host runs with `--log-format json`); a line that is
    /// not JSON is an error.
    pub fn json_log(&self) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(self.process.log_path())
            .with_context(|| format!("reading {}", self.process.log_path().display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("a log line is not JSON: {l}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
