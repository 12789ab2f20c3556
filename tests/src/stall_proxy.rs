//! An HTTPS reverse proxy in front of the API server that can stall pod watches: while stalled, a
//! pod watch stays open but delivers nothing (no events, no bookmarks), and every other request,
//! pod creations included, passes. The failure mode of kubernetes/kubernetes#129795, which a TCP
//! proxy like toxiproxy cannot produce: an HTTP/2 client multiplexes its watches and its writes
//! over one connection.
//!
//! The proxy terminates TLS with the API server's own serving certificate (valid for 127.0.0.1)
//! and forwards each request as the admin (client certificate), so a client's kubeconfig for it
//! ([`StallProxy::write_kubeconfig`]) needs no credentials. Works for HTTP/1.1 and HTTP/2 clients,
//! JSON and protobuf alike: bodies pass as bytes.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Request, Response, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::controlplane::ControlPlane;
use crate::kubeconfig::{self, Credentials};

type ProxyBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The running proxy; stops serving on drop.
pub struct StallProxy {
    addr: std::net::SocketAddr,
    ca_pem: String,
    stalled: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl StallProxy {
    /// Starts the proxy on a free 127.0.0.1 port in front of `control_plane`.
    pub async fn start(control_plane: &ControlPlane) -> Result<Self> {
        let pki = control_plane.pki();
        let tls = server_tls(&pki.apiserver_serving.cert_pem, &pki.apiserver_serving.key_pem)?;
        let mut config = control_plane.config().clone();
        // The proxy passes every answer on as it is; retrying is the client's business.
        config.default_retry = false;
        let upstream = kube::Client::try_from(config).context("the proxy's upstream client")?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.context("binding the stall proxy")?;
        let addr = listener.local_addr()?;
        let (stalled, stall_rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, tokio_rustls::TlsAcceptor::from(tls), upstream, stall_rx));
        Ok(Self { addr, ca_pem: pki.serving_ca_pem.clone(), stalled, task })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Writes a kubeconfig for the proxy (no credentials: the proxy authenticates upstream).
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> Result<()> {
        kubeconfig::write_kubeconfig(
            path,
            &self.url(),
            &self.ca_pem,
            &Credentials::Token("stall-proxy".into()),
            namespace,
        )
    }

    /// From now on, pod watches (open ones and new ones) deliver nothing.
    pub fn stall_pod_watches(&self) {
        self.stalled.send_replace(true);
        tracing::info!("stall proxy: pod watches stalled");
    }

    /// Pod watches deliver again, starting with what they held back.
    pub fn release_pod_watches(&self) {
        self.stalled.send_replace(false);
        tracing::info!("stall proxy: pod watches released");
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_tls(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>().context("serving cert")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("serving key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    upstream: kube::Client,
    stalled: watch::Receiver<bool>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (acceptor, upstream, stalled) = (acceptor.clone(), upstream.clone(), stalled.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = hyper::service::service_fn(move |request| {
                let (upstream, stalled) = (upstream.clone(), stalled.clone());
                async move { Ok::<_, std::convert::Infallible>(forward(request, &upstream, stalled).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(error = %e, "stall proxy: connection ended");
            }
        });
    }
}

/// Sends `request` upstream and streams the answer back, holding it while a pod watch is stalled.
async fn forward(
    request: Request<Incoming>,
    upstream: &kube::Client,
    stalled: watch::Receiver<bool>,
) -> Response<ProxyBody> {
    let pod_watch = is_pod_watch(request.uri());
    let (mut parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return error_response(&format!("reading the request body: {e}")),
    };
    // Absolute-form URIs (HTTP/2) become origin-form: the upstream client prefixes its base URL.
    parts.uri = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).parse().expect("a path is a URI");
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.headers.remove(header::AUTHORIZATION);
    parts.version = http::Version::HTTP_11;
    let upstream_request = Request::from_parts(parts, kube::client::Body::from(body.to_vec()));
    let response = match upstream.send(upstream_request).await {
        Ok(response) => response,
        Err(e) => return error_response(&format!("upstream: {e}")),
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = if pod_watch { relay_when_unstalled(body, stalled) } else { body.map_err(Into::into).boxed_unsync() };
    Response::from_parts(parts, body)
}

/// The upstream body, frame by frame, each one waiting while the stall is on.
fn relay_when_unstalled(mut body: kube::client::Body, mut stalled: watch::Receiver<bool>) -> ProxyBody {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(16);
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            if stalled.wait_for(|s| !*s).await.is_err() {
                return;
            }
            if tx.send(frame.map_err(Into::into)).await.is_err() {
                return;
            }
        }
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    BodyExt::boxed_unsync(StreamBody::new(frames.boxed()))
}

fn error_response(message: &str) -> Response<ProxyBody> {
    tracing::warn!(message, "stall proxy: answering 502");
    let body = Full::new(Bytes::from(message.to_string())).map_err(|never| match never {}).boxed_unsync();
    Response::builder().status(502).body(body).expect("a static response is valid")
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1); HTTP/2 forbids them.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"] {
        headers.remove(name);
    }
}

/// A watch of pods, in one namespace or all: `/api/v1/[namespaces/<ns>/]pods?...watch=true`.
fn is_pod_watch(uri: &http::Uri) -> bool {
    let path = uri.path().trim_end_matches('/');
    let in_namespace = path
        .strip_prefix("/api/v1/namespaces/")
        .is_some_and(|rest| matches!(rest.split('/').collect::<Vec<_>>()[..], [_, "pods"]));
    let pods = path == "/api/v1/pods" || in_namespace;
    let watch = uri.query().is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    pods && watch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pod_watches_are_stalled() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        assert!(is_pod_watch(&uri("/api/v1/pods?allowWatchBookmarks=true&watch=true&resourceVersion=5")));
        assert!(is_pod_watch(&uri("/api/v1/namespaces/ns/pods?watch=1")));
        assert!(!is_pod_watch(&uri("/api/v1/namespaces/ns/pods")), "a list");
        assert!(
            !is_pod_watch(&uri("/api/v1/namespaces/ns/pods/p?watch=true")),
            "one pod by name is not the informer's watch"
        );
        assert!(!is_pod_watch(&uri("/apis/apps/v1/replicasets?watch=true")));
        assert!(!is_pod_watch(&uri("/api/v1/namespaces/ns/events?watch=true")));
    }
}
