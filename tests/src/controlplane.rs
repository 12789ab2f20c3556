//! One control plane: etcd and kube-apiserver on free 127.0.0.1 ports with generated certificates, readiness on `/readyz`, clients and kubeconfigs, and stopping both by PID.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::binaries::Binaries;
use crate::kubeconfig::{self, Credentials};
use crate::pki::{Pki, PkiFiles};
use crate::ports::{free_port, pid_listens_on};
use crate::process::{DEFAULT_GRACE, ManagedProcess};
use crate::workdir::WorkDir;

/// How a control plane is started.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Where etcd and kube-apiserver are; `None` uses [`Binaries::locate`].
    pub bin_dir: Option<PathBuf>,
    /// How long etcd plus kube-apiserver may take to become ready.
    pub startup_timeout: Duration,
    /// Extra kube-apiserver flags, appended last (so they override the harness's).
    pub extra_apiserver_args: Vec<String>,
    /// Extra etcd flags, appended last (so they override the harness's).
    pub extra_etcd_args: Vec<String>,
    /// Write an audit log ([`ControlPlane::audit_log`], read with [`crate::audit`]): every
    /// request but the API server's own and health checks, with user, user agent, verb, object,
    /// response code and timestamps.
    pub audit: bool,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        Self {
            bin_dir: None,
            // Generous: a 2-core machine may be busy compiling while tests start.
            startup_timeout: Duration::from_secs(90),
            extra_apiserver_args: Vec::new(),
            extra_etcd_args: Vec::new(),
            audit: false,
        }
    }
}

/// A running etcd + kube-apiserver pair with its certificates, admin kubeconfig and data in a temp
/// directory. Stopped by [`ControlPlane::stop`], on drop, or at process exit.
///
/// It holds no `kube::Client`: a client is tied to the tokio runtime it was made in, and each
/// `#[tokio::test]` has its own runtime, so [`ControlPlane::client`] makes a new one per call.
#[derive(Debug)]
pub struct ControlPlane {
    // Field order matters for drop: processes before the directory holding their data.
    apiserver: ManagedProcess,
    etcd: ManagedProcess,
    binaries: Binaries,
    pki: Pki,
    pki_files: PkiFiles,
    server: String,
    etcd_url: String,
    kubeconfig_path: PathBuf,
    config: kube::Config,
    audit_log: Option<PathBuf>,
    startup: Duration,
    dir: WorkDir,
}

/// A launch attempt's failure, and whether a new set of ports may fix it.
struct LaunchError {
    error: anyhow::Error,
    port_clash: bool,
}

impl From<anyhow::Error> for LaunchError {
    fn from(error: anyhow::Error) -> Self {
        Self { error, port_clash: false }
    }
}

impl LaunchError {
    fn from_process(process: &ManagedProcess, what: &str) -> Self {
        let port_clash = process.log_tail(200).contains("address already in use");
        Self { error: process.error_with_log(what), port_clash }
    }
}

const MAX_LAUNCH_ATTEMPTS: u32 = 3;
const POLL: Duration = Duration::from_millis(50);

impl ControlPlane {
    /// Starts a private control plane with default options.
    pub async fn start() -> Result<Self> {
        Self::start_with(ControlPlaneOptions::default()).await
    }

    /// Starts a private control plane: generates certificates, starts etcd and kube-apiserver on
    /// free ports, waits for `/readyz` and writes the admin kubeconfig. Must be called inside a
    /// tokio runtime.
    pub async fn start_with(options: ControlPlaneOptions) -> Result<Self> {
        let started = Instant::now();
        let binaries = match &options.bin_dir {
            Some(dir) => Binaries::in_dir(dir),
            None => Binaries::locate(),
        };
        let apiserver_bin = binaries.kube_apiserver()?;
        let etcd_bin = binaries.etcd()?;
        let dir = WorkDir::create("controlplane")?;
        let pki = Pki::generate()?;
        let pki_files = pki.write(&dir.path().join("pki"))?;
        let audit_log = if options.audit { Some(crate::audit::configure(dir.path())?) } else { None };

        let mut attempt = 0;
        let Launched { apiserver, etcd, server, etcd_url, config } = loop {
            attempt += 1;
            let launch = Launch {
                etcd_bin: &etcd_bin,
                apiserver_bin: &apiserver_bin,
                dir: dir.path(),
                attempt,
                pki: &pki,
                pki_files: &pki_files,
                options: &options,
                audit: audit_log.as_ref().map(|a| &a.args[..]).unwrap_or_default(),
            };
            match launch.run().await {
                Ok(started) => break started,
                Err(e) if e.port_clash && attempt < MAX_LAUNCH_ATTEMPTS => {
                    tracing::warn!("control plane port clash, retrying with new ports: {:#}", e.error);
                }
                Err(e) => return Err(e.error),
            }
        };

        let kubeconfig_path = dir.path().join("admin.kubeconfig");
        kubeconfig::write_kubeconfig(
            &kubeconfig_path,
            &server,
            &pki.serving_ca_pem,
            &admin_credentials(&pki),
            "default",
        )?;
        let startup = started.elapsed();
        tracing::info!(%server, ?startup, dir = %dir.path().display(), "control plane ready");
        let audit_log = audit_log.map(|a| a.path);
        Ok(Self {
            apiserver,
            etcd,
            binaries,
            pki,
            pki_files,
            server,
            etcd_url,
            kubeconfig_path,
            config,
            audit_log,
            startup,
            dir,
        })
    }

    /// A new `kube::Client` with the admin identity (system:masters). Call inside a tokio runtime;
    /// the client must not outlive that runtime.
    pub fn client(&self) -> Result<kube::Client> {
        tokio::runtime::Handle::try_current().context("ControlPlane::client must be called inside a tokio runtime")?;
        kube::Client::try_from(self.config.clone()).context("building a kube client")
    }

    /// The admin client configuration.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// The apiserver URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// etcd's client URL, `http://127.0.0.1:<port>`.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The admin kubeconfig file (client certificate with O=system:masters, data inline).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The audit log, if [`ControlPlaneOptions::audit`] asked for one (read it with
    /// [`crate::audit::read`]).
    pub fn audit_log(&self) -> Option<&Path> {
        self.audit_log.as_deref()
    }

    /// The CA certificate (PEM) that signed the apiserver's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.pki.serving_ca_pem
    }

    /// The generated certificates and keys.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The generated certificates and keys as files (what the apiserver was given).
    pub fn pki_files(&self) -> &PkiFiles {
        &self.pki_files
    }

    /// The binaries this control plane was started from (kube-controller-manager and kubectl are
    /// taken from the same place).
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The temp directory holding data, certificates, kubeconfigs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How long [`ControlPlane::start_with`] took.
    pub fn startup_duration(&self) -> Duration {
        self.startup
    }

    /// The etcd process.
    pub fn etcd(&self) -> &ManagedProcess {
        &self.etcd
    }

    /// The kube-apiserver process.
    pub fn apiserver(&self) -> &ManagedProcess {
        &self.apiserver
    }

    /// PIDs of etcd and kube-apiserver.
    pub fn pids(&self) -> Vec<u32> {
        vec![self.etcd.pid(), self.apiserver.pid()]
    }

    /// Writes a kubeconfig at `path` that authenticates with bearer `token` (e.g. a ServiceAccount
    /// TokenRequest token), default namespace `namespace`.
    pub fn write_token_kubeconfig(&self, path: &Path, token: &str, namespace: &str) -> Result<()> {
        kubeconfig::write_kubeconfig(
            path,
            &self.server,
            &self.pki.serving_ca_pem,
            &Credentials::Token(token.to_string()),
            namespace,
        )
    }

    /// Stops kube-apiserver, then etcd (SIGTERM, grace period, SIGKILL), and removes the temp
    /// directory. Idempotent; also done on drop and at exit. Do not call it on the shared control
    /// plane: other tests use it.
    pub fn stop(&self) {
        self.apiserver.stop(DEFAULT_GRACE);
        self.etcd.stop(DEFAULT_GRACE);
        self.dir.remove();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn admin_credentials(pki: &Pki) -> Credentials {
    Credentials::ClientCertificate { cert_pem: pki.admin.cert_pem.clone(), key_pem: pki.admin.key_pem.clone() }
}

/// One attempt at starting etcd and kube-apiserver on fresh ports.
struct Launch<'a> {
    etcd_bin: &'a Path,
    apiserver_bin: &'a Path,
    dir: &'a Path,
    attempt: u32,
    pki: &'a Pki,
    pki_files: &'a PkiFiles,
    options: &'a ControlPlaneOptions,
    /// The audit flags (none without an audit log).
    audit: &'a [String],
}

/// What a successful launch produced.
struct Launched {
    apiserver: ManagedProcess,
    etcd: ManagedProcess,
    server: String,
    etcd_url: String,
    config: kube::Config,
}

impl Launch<'_> {
    async fn run(&self) -> std::result::Result<Launched, LaunchError> {
        let deadline = Instant::now() + self.options.startup_timeout;
        let (client_port, peer_port, apiserver_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let n = self.attempt;
        let mut etcd_args = vec![
            "--name=harness".to_string(),
            format!("--data-dir={}", self.dir.join(format!("etcd-{n}")).display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=harness={peer_url}"),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        etcd_args.extend(self.options.extra_etcd_args.iter().cloned());
        let etcd = ManagedProcess::spawn("etcd", self.etcd_bin, &etcd_args, &self.dir.join(format!("etcd-{n}.log")))?;
        wait_for_etcd(&etcd, client_port, deadline).await?;

        let server = format!("https://127.0.0.1:{apiserver_port}");
        let f = self.pki_files;
        let mut args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={apiserver_port}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            // v1.37 refuses a loopback advertise address with the endpoint reconciler ("may not
            // be in the loopback range"); nothing here needs the `kubernetes` Service endpoints.
            "--endpoint-reconciler-type=none".to_string(),
            format!("--cert-dir={}", self.dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", f.apiserver_cert.display()),
            format!("--tls-private-key-file={}", f.apiserver_key.display()),
            format!("--client-ca-file={}", f.client_ca.display()),
            "--authorization-mode=RBAC".to_string(),
            // No ServiceAccount controller runs, so the "default" SA never exists and the
            // admission plugin would reject every pod.
            "--disable-admission-plugins=ServiceAccount".to_string(),
            format!("--service-account-issuer={server}"),
            format!("--service-account-key-file={}", f.sa_pub.display()),
            format!("--service-account-signing-key-file={}", f.sa_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            "--allow-privileged=true".to_string(),
            "--profiling=false".to_string(),
        ];
        args.extend(self.audit.iter().cloned());
        args.extend(self.options.extra_apiserver_args.iter().cloned());
        let apiserver = ManagedProcess::spawn(
            "kube-apiserver",
            self.apiserver_bin,
            &args,
            &self.dir.join(format!("kube-apiserver-{n}.log")),
        )?;
        let config = kubeconfig::config_from_value(kubeconfig::kubeconfig_value(
            &server,
            &self.pki.serving_ca_pem,
            &admin_credentials(self.pki),
            "default",
        ))
        .await?;
        wait_for_readyz(&apiserver, &etcd, &config, deadline).await?;
        Ok(Launched { apiserver, etcd, server, etcd_url, config })
    }
}

/// Polls etcd's `GET /health` until it reports healthy, failing early if etcd exits.
async fn wait_for_etcd(etcd: &ManagedProcess, port: u16, deadline: Instant) -> std::result::Result<(), LaunchError> {
    let mut last;
    loop {
        if etcd.exit_status().is_some() {
            return Err(LaunchError::from_process(etcd, "exited during startup"));
        }
        match etcd_health(port).await {
            // Healthy, and it is our etcd answering, not a stranger that took the port.
            Ok(true) if pid_listens_on(etcd.pid(), port) => return Ok(()),
            Ok(true) => last = format!("127.0.0.1:{port} answered, but not from etcd's PID"),
            Ok(false) => last = "reported unhealthy".to_string(),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            return Err(LaunchError::from_process(
                etcd,
                &format!("not healthy on 127.0.0.1:{port} in time (last: {last})"),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn etcd_health(port: u16) -> Result<bool> {
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).contains("\"health\":\"true\""))
    };
    tokio::time::timeout(Duration::from_secs(2), fut).await.map_err(|_| anyhow!("GET /health timed out"))?
}

/// Polls kube-apiserver's `/readyz` until it answers `ok`, failing early if it or etcd exits.
async fn wait_for_readyz(
    apiserver: &ManagedProcess,
    etcd: &ManagedProcess,
    config: &kube::Config,
    deadline: Instant,
) -> std::result::Result<(), LaunchError> {
    let client = kube::Client::try_from(config.clone()).context("building a client for the readiness check")?;
    let mut last;
    loop {
        if apiserver.exit_status().is_some() {
            return Err(LaunchError::from_process(apiserver, "exited during startup"));
        }
        if etcd.exit_status().is_some() {
            return Err(LaunchError::from_process(etcd, "exited during apiserver startup"));
        }
        let request = http::Request::get("/readyz").body(Vec::new()).context("building the /readyz request")?;
        match tokio::time::timeout(Duration::from_secs(5), client.request_text(request)).await {
            Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
            Ok(Ok(body)) => last = body,
            Ok(Err(e)) => last = format!("{e}"),
            Err(_) => last = "GET /readyz timed out".to_string(),
        }
        if Instant::now() >= deadline {
            return Err(LaunchError::from_process(
                apiserver,
                &format!("/readyz not ok in time (last: {})", last.trim()),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
