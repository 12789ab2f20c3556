//! toxiproxy, the fault-injecting TCP proxy (`github.com/Shopify/toxiproxy/v2` v2.5.0, built by
//! `tests/controlplane/build.sh`): the server as a managed process on a free loopback port, and
//! its HTTP API (proxies and toxics) driven from Rust.
//!
//! A test puts a [`Proxy`] between a client (the controller) and the API server, gives the client
//! a kubeconfig whose server is [`Proxy::url`], then adds and removes [`Toxic`]s while it runs.
//! Toxics act on every connection through the proxy, open ones and new ones alike; each one acts
//! on one direction (`downstream`: server to client, `upstream`: client to server).
//!
//! What each toxic does to an HTTPS client, as measured with kube-apiserver (the reason a test
//! picks one over another):
//! - `latency` holds each chunk for `latency ± jitter` ms; a removed toxic delivers what it held;
//! - `timeout` with `timeout: 0` drops every byte and keeps the connection open: a blackhole,
//!   after which the TLS streams that lost bytes are broken for good;
//! - `reset_peer` holds the first chunk of each connection for `timeout` ms, then drops it and
//!   resets the connection: left in place, no connection ever carries a byte (a partition that
//!   answers with RSTs). [`PeriodicResets`] puts it on for a moment every few seconds instead, so
//!   connections carry traffic between the resets.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::binaries::Binaries;
use crate::process::{DEFAULT_GRACE, ManagedProcess};
use crate::workdir::WorkDir;
use crate::{eventually, ports};

/// The toxiproxy version `tests/controlplane/build.sh` builds (its binary reports `git`: the
/// module build sets no version).
pub const TOXIPROXY_VERSION: &str = "v2.5.0";

/// A running toxiproxy server. Stopped by PID by [`Toxiproxy::stop`], on drop, or at exit.
#[derive(Debug)]
pub struct Toxiproxy {
    // Field order matters for drop: the process before its directory.
    process: ManagedProcess,
    api: Api,
    dir: WorkDir,
}

/// toxiproxy's HTTP API on its port: what a background task needs to change toxics.
#[derive(Debug, Clone, Copy)]
struct Api {
    port: u16,
}

/// Which way a toxic acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// From the client to the server.
    Upstream,
    /// From the server to the client.
    Downstream,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Self::Upstream => "upstream",
            Self::Downstream => "downstream",
        }
    }
}

/// A toxic's type and attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toxic {
    /// Each chunk waits `latency ± jitter`.
    Latency {
        /// Mean added delay.
        latency: Duration,
        /// Uniform spread around it.
        jitter: Duration,
    },
    /// No data passes; the connection is closed after `after` (never if zero).
    Timeout {
        /// When to close each connection; zero keeps it open (a blackhole).
        after: Duration,
    },
    /// Each connection is reset (TCP RST) `after` its first chunk.
    ResetPeer {
        /// Time from the first chunk to the reset.
        after: Duration,
    },
}

impl Toxic {
    fn type_and_attributes(self) -> (&'static str, Value) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match self {
            Self::Latency { latency, jitter } => ("latency", json!({"latency": ms(latency), "jitter": ms(jitter)})),
            Self::Timeout { after } => ("timeout", json!({"timeout": ms(after)})),
            Self::ResetPeer { after } => ("reset_peer", json!({"timeout": ms(after)})),
        }
    }
}

/// A proxy of a [`Toxiproxy`]: where clients connect, and its name for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The name toxics are added under.
    pub name: String,
    /// `127.0.0.1:<port>` clients connect to.
    pub listen: String,
}

impl Proxy {
    /// `https://<listen>`: the server URL for a kubeconfig (the API server's certificate is for
    /// 127.0.0.1, whatever the port).
    pub fn url(&self) -> String {
        format!("https://{}", self.listen)
    }
}

impl Toxiproxy {
    /// Starts the server on a free 127.0.0.1 port and waits until its API answers.
    pub async fn start(binaries: &Binaries) -> Result<Self> {
        let bin = binaries.toxiproxy()?;
        let dir = WorkDir::create("toxiproxy")?;
        let api_port = ports::free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.args(["-host", "127.0.0.1", "-port", &api_port.to_string()])
            // Its default level traces every toxic change; info keeps the log readable.
            .env("LOG_LEVEL", "info");
        let process = ManagedProcess::spawn_command("toxiproxy", cmd, &dir.path().join("toxiproxy.log"))?;
        let server = Self { process, api: Api { port: api_port }, dir };
        let pid = server.process.pid();
        eventually("toxiproxy's API to answer", Duration::from_secs(20), || async {
            if let Some(status) = server.process.exit_status() {
                return Ok(Some(Err(server.process.error_with_log(&format!("exited during startup ({status})")))));
            }
            if !ports::pid_listens_on(pid, api_port) {
                return Ok(None);
            }
            // `/version` answers plain text (`git` for a module build), not JSON.
            let answered = http_request(api_port, "GET", "/version", None).await;
            Ok(answered.ok().filter(|(status, _)| *status == 200).map(|_| Ok(())))
        })
        .await??;
        Ok(server)
    }

    /// Creates proxy `name` from a free loopback port to `upstream` (`host:port`).
    pub async fn proxy(&self, name: &str, upstream: &str) -> Result<Proxy> {
        let body = json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": true});
        let created = self.request("POST", "/proxies", Some(&body)).await?;
        let listen = created["listen"].as_str().context("toxiproxy did not say where the proxy listens")?;
        Ok(Proxy { name: name.to_string(), listen: listen.to_string() })
    }

    /// Adds `toxic` to `proxy` on `stream` under `name` (unique per proxy).
    pub async fn add(&self, proxy: &Proxy, name: &str, stream: Stream, toxic: Toxic) -> Result<()> {
        self.api.add(&proxy.name, name, stream, toxic).await
    }

    /// Adds `toxic` to both directions of `proxy`, as `<name>-up` and `<name>-down`.
    pub async fn add_both_ways(&self, proxy: &Proxy, name: &str, toxic: Toxic) -> Result<()> {
        self.add(proxy, &format!("{name}-up"), Stream::Upstream, toxic).await?;
        self.add(proxy, &format!("{name}-down"), Stream::Downstream, toxic).await
    }

    /// Removes toxic `name` from `proxy`.
    pub async fn remove(&self, proxy: &Proxy, name: &str) -> Result<()> {
        self.api.remove(&proxy.name, name).await
    }

    /// Starts resetting every connection through `proxy` that carries data, once every `period`,
    /// until [`PeriodicResets::stop`].
    pub fn periodic_resets(&self, proxy: &Proxy, period: Duration) -> PeriodicResets {
        let (api, name) = (self.api, proxy.name.clone());
        let task = tokio::spawn(async move {
            let proxy = name;
            loop {
                let reset = Toxic::ResetPeer { after: Duration::ZERO };
                if let Err(e) = api.add(&proxy, RESETS, Stream::Downstream, reset).await {
                    tracing::warn!(error = %e, "could not add the resets");
                }
                tokio::time::sleep(RESET_WINDOW).await;
                if let Err(e) = api.remove(&proxy, RESETS).await {
                    tracing::warn!(error = %e, "could not remove the resets");
                }
                tokio::time::sleep(period.saturating_sub(RESET_WINDOW)).await;
            }
        });
        PeriodicResets { task, api: self.api, proxy: proxy.name.clone() }
    }

    /// Removes the two toxics [`Toxiproxy::add_both_ways`] added.
    pub async fn remove_both_ways(&self, proxy: &Proxy, name: &str) -> Result<()> {
        self.remove(proxy, &format!("{name}-up")).await?;
        self.remove(proxy, &format!("{name}-down")).await
    }

    /// The names of the toxics `proxy` has now.
    pub async fn toxics(&self, proxy: &Proxy) -> Result<Vec<String>> {
        let listed = self.request("GET", &format!("/proxies/{}/toxics", proxy.name), None).await?;
        let names = listed.as_array().context("toxics are not a list")?.iter();
        Ok(names.filter_map(|t| t["name"].as_str().map(String::from)).collect())
    }

    /// The server process.
    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    /// Stops the server by PID and removes its directory. Idempotent; also done on drop.
    pub fn stop(&self) {
        self.process.stop(DEFAULT_GRACE);
        self.dir.remove();
    }

    async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        self.api.request(method, path, body).await
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The toxic name [`PeriodicResets`] uses.
const RESETS: &str = "periodic-resets";

/// How long each reset of [`PeriodicResets`] stays on: long enough that every connection with
/// traffic (watches, keep-alive pings every 5 s) sends a chunk into it, short enough that new
/// connections get through between two resets.
const RESET_WINDOW: Duration = Duration::from_millis(1000);

/// Connections through a proxy reset periodically ([`Toxiproxy::periodic_resets`]). Dropping it
/// stops the resets but may leave the last one on: call [`PeriodicResets::stop`].
#[derive(Debug)]
pub struct PeriodicResets {
    task: tokio::task::JoinHandle<()>,
    api: Api,
    proxy: String,
}

impl PeriodicResets {
    /// Stops the resets and removes the toxic if it is on.
    pub async fn stop(self) -> Result<()> {
        self.task.abort();
        let listed = self.api.request("GET", &format!("/proxies/{}/toxics", self.proxy), None).await?;
        if listed.as_array().is_some_and(|toxics| toxics.iter().any(|t| t["name"] == RESETS)) {
            self.api.remove(&self.proxy, RESETS).await?;
        }
        Ok(())
    }
}

impl Drop for PeriodicResets {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Api {
    async fn add(self, proxy: &str, name: &str, stream: Stream, toxic: Toxic) -> Result<()> {
        let (kind, attributes) = toxic.type_and_attributes();
        let body =
            json!({"name": name, "type": kind, "stream": stream.as_str(), "toxicity": 1.0, "attributes": attributes});
        self.request("POST", &format!("/proxies/{proxy}/toxics"), Some(&body)).await?;
        tracing::info!(proxy, toxic = name, ?toxic, ?stream, "toxic added");
        Ok(())
    }

    async fn remove(self, proxy: &str, name: &str) -> Result<()> {
        self.request("DELETE", &format!("/proxies/{proxy}/toxics/{name}"), None).await?;
        tracing::info!(proxy, toxic = name, "toxic removed");
        Ok(())
    }

    /// One HTTP/1.1 request to the API; the JSON answer (`null` for an empty body).
    async fn request(self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, text) =
            http_request(self.port, method, path, body).await.with_context(|| format!("toxiproxy {method} {path}"))?;
        if !(200..300).contains(&status) {
            bail!("toxiproxy {method} {path} answered {status}: {}", text.trim());
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("toxiproxy {method} {path} answered {text:?}"))
    }
}

/// `method path` with an optional JSON body to `127.0.0.1:port`: the status and the body text.
async fn http_request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange).await.context("timed out")??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of the HTTP header")?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        crate::host_process::dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxics_serialize_to_toxiproxys_attribute_names_in_milliseconds() {
        let latency = Toxic::Latency { latency: Duration::from_millis(200), jitter: Duration::from_millis(100) };
        assert_eq!(latency.type_and_attributes(), ("latency", json!({"latency": 200, "jitter": 100})));
        let blackhole = Toxic::Timeout { after: Duration::ZERO };
        assert_eq!(blackhole.type_and_attributes(), ("timeout", json!({"timeout": 0})));
        let reset = Toxic::ResetPeer { after: Duration::from_secs(5) };
        assert_eq!(reset.type_and_attributes(), ("reset_peer", json!({"timeout": 5000})));
    }

    #[test]
    fn a_proxy_url_is_https_on_its_listen_address() {
        let proxy = Proxy { name: "api".into(), listen: "127.0.0.1:4321".into() };
        assert_eq!(proxy.url(), "https://127.0.0.1:4321");
    }
}
