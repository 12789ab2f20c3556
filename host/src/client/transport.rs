//! The connection stack under every client: kube's HTTPS stack (rustls, timeouts, retries of
//! 429/503/504, auth, extra headers), speaking HTTP/2 with `TCP_NODELAY` and keep-alive pings.

use std::time::Duration;

use super::{LeaderOnlyLayer, Reachability, ThrottleLayer};

/// An HTTP/2 connection silent this long is pinged (client-go: 30 s `ReadIdleTimeout`).
///
/// Shorter than client-go's so that a partition is noticed, and reported by `/readyz`, within
/// [`KEEPALIVE_INTERVAL`] + [`KEEPALIVE_TIMEOUT`] = 10 s; a busy connection is never pinged, an
/// idle one costs a 17-byte frame each way per interval.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// How long a ping may go unanswered before the connection is dropped (client-go: 15 s
/// `PingTimeout`).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A `kube::Client` for `config` whose requests pass `throttle` and report to `reachability`,
/// and whose writes need `leader_only`'s leadership when given.
pub(super) fn client(
    config: kube::Config,
    throttle: &ThrottleLayer,
    reachability: &Reachability,
    leader_only: Option<LeaderOnlyLayer>,
) -> Result<kube::Client, kube::Error> {
    // Proxies and exec credentials (whose client certificates expire) need kube's own builder;
    // it reports outcomes from outside kube's stack, and its retries (inside) take no token.
    let builder = if config.proxy_url.is_some() || config.auth_info.exec.is_some() {
        let recorder = reachability.recorder();
        let throttle = throttle.clone();
        kube::client::ClientBuilder::try_from(config)?.with_layer(&tower::layer::layer_fn(
            move |service: KubeService| {
                let service = tower::ServiceExt::map_result(service, recorder.clone());
                tower::ServiceExt::boxed(tower::Layer::layer(&throttle, service))
            },
        ))
    } else {
        http2_client_builder(config, throttle, reachability)?
    };
    // Outside the throttle: a write still waiting for a token is cancelled with leadership.
    Ok(builder.with_layer(&tower::util::option_layer(leader_only)).build())
}

/// The service type kube's `ClientBuilder::try_from` builds (kube's `GenericService`, not exported).
type KubeService = tower::util::BoxService<
    http::Request<kube::client::Body>,
    http::Response<Box<kube::client::DynBody>>,
    tower::BoxError,
>;

/// kube's default HTTPS stack (rustls, connect/read/write timeouts, server-error retries, auth,
/// extra headers), but speaking HTTP/2 when the apiserver offers it, over TCP connections with
/// `TCP_NODELAY`, as client-go does.
///
/// kube 5 speaks HTTP/1.1 only and leaves Nagle's algorithm on. With HTTP/1.1 every concurrent
/// request needs its own TLS connection, so each slow-start batch of creates or burst of deletes
/// opens new ones (a handshake each, on both sides' CPU); and on a new connection the request is
/// written right after the client's last handshake flight, so Nagle holds it until that flight is
/// ACKed, which the apiserver's kernel delays by up to 40 ms. Measured on a local apiserver
/// (`cargo run --release -p tests --bin bench -- --only probe`): creates in batches of 2, 4, 8
/// took ~50 ms per batch with kube's client, ~5 ms with `TCP_NODELAY`. HTTP/2 multiplexes every
/// request, watches included, over one connection.
///
/// Every try of a request takes a token from `throttle`, retries included, as in client-go
/// (`Request.request` throttles before each try): when an API server sheds load with 429 and
/// `Retry-After: 1`, the rejected part of a burst then comes back spread at the client's QPS
/// instead of all at once a second later, to be rejected together again.
///
/// Like client-go, it pings an HTTP/2 connection that has been silent for
/// [`KEEPALIVE_INTERVAL`] and drops it if no answer comes within [`KEEPALIVE_TIMEOUT`]: without
/// that, a connection whose packets vanish (a partition, a dead peer) looks like an idle watch
/// for minutes, until the watch's own idle timeout. Every request on a dropped connection then
/// fails at once, and `reachability` records it.
fn http2_client_builder(
    config: kube::Config,
    throttle: &ThrottleLayer,
    reachability: &Reachability,
) -> Result<kube::client::ClientBuilder<KubeService>, kube::Error> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use kube::client::ConfigExt;
    use tower::{BoxError, ServiceBuilder, ServiceExt as _};

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let mut https =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config.rustls_client_config()?).https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|e| kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(e)))?;
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let mut connector = hyper_timeout::TimeoutConnector::new(https.enable_all_versions().wrap_connector(http));
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .build(connector);
    let retry = config.default_retry.then(|| tower::retry::RetryLayer::new(RetryAfter::default()));
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .layer(throttle)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper)
        .map_result(reachability.recorder())
        .boxed();
    Ok(kube::client::ClientBuilder::new(service, config.default_namespace))
}
/// How many times an answer with `Retry-After` is retried (client-go's default `maxRetries`).
pub const MAX_RETRIES: u32 = 10;

/// client-go's retry: an answer of 429 or 5xx that carries `Retry-After: <seconds>` is retried
/// after exactly that long, at most [`MAX_RETRIES`] times; nothing else is retried.
///
/// kube's `RetryPolicy::server_retry` retries 429/503/504 up to 15 times after the longer of
/// `Retry-After` and an exponential backoff growing to 1000 s, so an API server shedding load
/// with `Retry-After: 1` saw a create wait minutes before its next try.
#[derive(Clone, Copy, Debug, Default)]
struct RetryAfter {
    retries: u32,
}

impl RetryAfter {
    /// How long `response` asks us to wait, if it is retryable and retries are left.
    fn wait(&self, status: http::StatusCode, headers: &http::HeaderMap) -> Option<Duration> {
        if self.retries >= MAX_RETRIES || !(status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) {
            return None;
        }
        let seconds: u64 = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
        Some(Duration::from_secs(seconds))
    }
}

impl<Res> tower::retry::Policy<http::Request<kube::client::Body>, http::Response<Res>, tower::BoxError> for RetryAfter {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut http::Request<kube::client::Body>,
        result: &mut Result<http::Response<Res>, tower::BoxError>,
    ) -> Option<Self::Future> {
        let response = result.as_ref().ok()?;
        let wait = self.wait(response.status(), response.headers())?;
        self.retries += 1;
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(
        &mut self,
        request: &http::Request<kube::client::Body>,
    ) -> Option<http::Request<kube::client::Body>> {
        // A streamed body cannot be sent twice: such a request is not retried.
        let body = request.body().try_clone()?;
        let mut clone = http::Request::builder()
            .method(request.method().clone())
            .uri(request.uri().clone())
            .version(request.version())
            .body(body)
            .ok()?;
        *clone.headers_mut() = request.headers().clone();
        *clone.extensions_mut() = request.extensions().clone();
        Some(clone)
    }
}

// === tests ===

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::TcpListener,
    };

    use super::*;
    use crate::client::{ClientOptions, RequestCounts, build_client, build_client_with};

    #[test]
    fn only_429_and_5xx_with_retry_after_are_retried_after_exactly_that_long_ten_times() {
        let after = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::RETRY_AFTER, v.parse().unwrap());
            h
        };
        let policy = RetryAfter::default();
        assert_eq!(policy.wait(http::StatusCode::TOO_MANY_REQUESTS, &after("1")), Some(Duration::from_secs(1)));
        assert_eq!(policy.wait(http::StatusCode::SERVICE_UNAVAILABLE, &after("3")), Some(Duration::from_secs(3)));
        assert_eq!(policy.wait(http::StatusCode::TOO_MANY_REQUESTS, &http::HeaderMap::new()), None);
        assert_eq!(policy.wait(http::StatusCode::CONFLICT, &after("1")), None);
        assert_eq!(policy.wait(http::StatusCode::TOO_MANY_REQUESTS, &after("soon")), None);
        let spent = RetryAfter { retries: MAX_RETRIES };
        assert_eq!(spent.wait(http::StatusCode::TOO_MANY_REQUESTS, &after("1")), None);
    }

    #[tokio::test]
    async fn build_client_counts_requests_to_a_real_http_server() {
        // A one-shot HTTP/1.1 server on loopback answering GET /version.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let body = r#"{"major":"1","minor":"37","gitVersion":"v1.37.2","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            head
        });

        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let (client, stats) = build_client(config, 20.0, 30).unwrap();
        let version = client.apiserver_version().await.unwrap();
        assert_eq!(version.git_version, "v1.37.2");
        assert!(server.join().unwrap().starts_with("GET /version"));
        assert_eq!(stats.snapshot(), RequestCounts { requests: 1, ..RequestCounts::default() });
    }

    #[tokio::test]
    async fn every_try_of_a_request_retried_after_429_takes_a_token_as_in_client_go() {
        // Answers 429 with `Retry-After: 0` twice, then the version.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in 0..3 {
                let (mut stream, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).unwrap();
                let body = r#"{"major":"1","minor":"37","gitVersion":"v1.37.2","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#;
                let (status, extra, body) =
                    if answer < 2 { ("429 Too Many Requests", "retry-after: 0\r\n", "") } else { ("200 OK", "", body) };
                write!(
                    stream,
                    "HTTP/1.1 {status}\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let (client, stats) = build_client(config, 20.0, 30).unwrap();
        assert_eq!(client.apiserver_version().await.unwrap().git_version, "v1.37.2");
        server.join().unwrap();
        assert_eq!(stats.snapshot().requests, 3, "each of the three tries took a token");
    }

    #[tokio::test]
    async fn a_client_sends_its_user_agent_and_reports_refused_connections_and_answers() {
        let reachability = Reachability::default();
        let options = |port: u16| {
            let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
            let options = ClientOptions {
                user_agent: Some("wasm-replicaset/test (linux/x86_64) host-a/writes".into()),
                reachability: reachability.clone(),
                ..ClientOptions::default()
            };
            (config, options)
        };
        // Nothing listens on a port just freed: refused.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (config, refused) = options(closed);
        let (client, _) = build_client_with(config, &refused).unwrap();
        assert!(client.apiserver_version().await.is_err());
        assert!(reachability.check().is_err(), "a refused connection is a failure");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap();
            write!(stream, "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let (mut config, answering) = options(port);
        // One attempt: kube's retry layer would ask again after a 503.
        config.default_retry = false;
        let (client, _) = build_client_with(config, &answering).unwrap();
        assert!(client.apiserver_version().await.is_err(), "a 503 is an error to the caller");
        let head = server.join().unwrap().to_ascii_lowercase();
        assert!(head.contains("user-agent: wasm-replicaset/test (linux/x86_64) host-a/writes\r\n"), "{head}");
        assert_eq!(reachability.check(), Ok(()), "but an answer: the server is reachable");
    }
}
