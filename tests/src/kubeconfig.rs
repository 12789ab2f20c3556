//! Kubeconfig files for other processes (kubectl, the controller binary) and `kube::Client`s built from them: the admin client-certificate identity or a bearer token.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::pki::write_file;

/// How a kubeconfig's user authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A client certificate and its key, PEM.
    ClientCertificate {
        /// Certificate, PEM.
        cert_pem: String,
        /// Private key, PEM.
        key_pem: String,
    },
    /// A bearer token (e.g. from a ServiceAccount TokenRequest).
    Token(String),
}

/// A self-contained kubeconfig (all data inline) for `server` trusting `ca_pem`, with a single
/// context `harness` whose default namespace is `namespace`.
pub fn kubeconfig_value(server: &str, ca_pem: &str, credentials: &Credentials, namespace: &str) -> serde_json::Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match credentials {
        Credentials::ClientCertificate { cert_pem, key_pem } => serde_json::json!({
            "client-certificate-data": b64(cert_pem),
            "client-key-data": b64(key_pem),
        }),
        Credentials::Token(token) => serde_json::json!({ "token": token }),
    };
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "harness",
            "cluster": { "server": server, "certificate-authority-data": b64(ca_pem) },
        }],
        "users": [{ "name": "harness", "user": user }],
        "contexts": [{
            "name": "harness",
            "context": { "cluster": "harness", "user": "harness", "namespace": namespace },
        }],
        "current-context": "harness",
    })
}

/// Writes a kubeconfig (see [`kubeconfig_value`]) to `path` as YAML, mode 0600.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    credentials: &Credentials,
    namespace: &str,
) -> Result<()> {
    let value = kubeconfig_value(server, ca_pem, credentials, namespace);
    let yaml = serde_yaml::to_string(&value).context("serializing a kubeconfig")?;
    write_file(path, &yaml, true)
}

/// A `kube::Config` from a kubeconfig JSON value (as made by [`kubeconfig_value`]).
pub async fn config_from_value(value: serde_json::Value) -> Result<kube::Config> {
    let kubeconfig: Kubeconfig = serde_json::from_value(value).context("parsing a generated kubeconfig")?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("building a client config from a generated kubeconfig")
}

/// A `kube::Config` read from the kubeconfig file at `path` (its current context).
pub async fn config_from_file(path: &Path) -> Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("building a client config from {}", path.display()))
}

/// A `kube::Client` for the kubeconfig file at `path`. Call inside a tokio runtime; the client
/// must not outlive that runtime.
pub async fn client_from_file(path: &Path) -> Result<kube::Client> {
    let config = config_from_file(path).await?;
    kube::Client::try_from(config).with_context(|| format!("building a client from {}", path.display()))
}
