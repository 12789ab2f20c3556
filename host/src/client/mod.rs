//! The API clients: HTTP/2 over `TCP_NODELAY` connections with dead-connection pings
//! ([`transport`]), client-go's QPS/burst token bucket ([`throttle`]), a user agent naming the
//! replica, and a record of whether the API server is reachable ([`reachability`]).
//!
//! [`build_client`] puts them together; `run` builds one client per purpose (watches, writes,
//! leader election), as kube-controller-manager does, all sharing one [`Reachability`].

pub mod leadership;
pub mod reachability;
pub mod throttle;
pub mod transport;

pub use leadership::{LeaderOnlyLayer, NotLeading};
pub use reachability::Reachability;
pub use throttle::{RequestCounts, RequestStats, Throttle, ThrottleLayer};

/// How [`build_client_with`] builds a client.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Requests per second; non-positive or non-finite means no limit (see [`throttle`]).
    pub qps: f32,
    /// Requests allowed at once before the rate applies; 0 is raised to 1.
    pub burst: u32,
    /// The `User-Agent` header, so the API server's audit log and metrics can tell clients (and
    /// replicas) apart; `None` sends none.
    pub user_agent: Option<String>,
    /// Where every request's outcome is recorded.
    pub reachability: Reachability,
    /// Whether this replica leads, for a client whose writes must stop with leadership
    /// ([`leadership`]); `None` writes regardless (reads, and the leader election itself).
    pub leader_only: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Builds a [`kube::Client`] from `config` whose every non-watch request first takes a token from a
/// `qps`/`burst` token bucket, and returns the client with the [`RequestStats`] it updates.
///
/// # Errors
///
/// Fails as [`kube::client::ClientBuilder::try_from`] does (TLS, auth or proxy configuration).
pub fn build_client(config: kube::Config, qps: f32, burst: u32) -> Result<(kube::Client, RequestStats), kube::Error> {
    build_client_with(config, &ClientOptions { qps, burst, ..ClientOptions::default() })
}

/// [`build_client`] with a user agent, a shared [`Reachability`] and, for the write client, a
/// leadership gate.
///
/// # Errors
///
/// Fails as [`kube::client::ClientBuilder::try_from`] does (TLS, auth or proxy configuration), or
/// if the user agent is not a valid header value.
pub fn build_client_with(
    mut config: kube::Config,
    options: &ClientOptions,
) -> Result<(kube::Client, RequestStats), kube::Error> {
    if let Some(agent) = &options.user_agent {
        let value = http::HeaderValue::from_str(agent).map_err(|e| kube::Error::HttpError(http::Error::from(e)))?;
        config.headers.push((http::header::USER_AGENT, value));
    }
    let layer = ThrottleLayer::new(options.qps, options.burst);
    let stats = layer.stats();
    let leader_only = options.leader_only.clone().map(LeaderOnlyLayer::new);
    let client = transport::client(config, &layer, &options.reachability, leader_only)?;
    Ok((client, stats))
}

/// `wasm-replicaset/<version> (<os>/<arch>) <identity>/<purpose>`, in the shape of client-go's
/// default (`kube-controller-manager/v1.37.2 (linux/amd64) kubernetes/<commit>/<controller>`).
pub fn user_agent(identity: &str, purpose: &str) -> String {
    format!(
        "wasm-replicaset/{} ({}/{}) {identity}/{purpose}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_agent_names_the_version_platform_replica_and_purpose() {
        let agent = user_agent("host-a_00ff", "writes");
        assert!(agent.starts_with(&format!("wasm-replicaset/{} (", env!("CARGO_PKG_VERSION"))), "{agent}");
        assert!(agent.ends_with(") host-a_00ff/writes"), "{agent}");
        assert!(http::HeaderValue::from_str(&agent).is_ok());
    }
}
