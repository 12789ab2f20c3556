//! Faults on purpose: latency and connection resets, an API server shedding load, a partition of
//! the host's only replica, an expired watch, a stalled pod watch past the expectations TTL (and
//! kube-controller-manager in the same spot), split brain between two replicas, and a two-minute
//! soak on a live cluster.
//!
//! Each scenario starts a private control plane (its API server flags differ), toxiproxy and the
//! host binary (`host-process`) as the deployed ServiceAccount, reaching the API server only
//! through toxiproxy (or the stall proxy); the test's own clients talk to the API server
//! directly. Invariants are checked on every revision a watch delivers ([`tests::invariants`]),
//! and who wrote what and when is read from the API server's audit log ([`tests::audit`]).
//! Every process is stopped by PID when its scenario ends.
//!
//! The scenarios that load the CPU run one at a time ([`serial`]): on 2 cores, two of them at
//! once would measure the machine, not the controller. The kube-controller-manager comparison,
//! which mostly waits out its fixed 5-minute expectations timeout, runs beside them ([`beside`]).

mod beside;
mod expiry;
mod latency;
mod overload;
mod partition;
mod soak;
mod split_brain;
mod stall;

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
pub use tests::faults::{create_rs, scale};
use tests::host_process::HostProcess;
use tests::prometheus::metric;

/// The host's own `main`, built as a bin of this package.
pub const HOST: &str = env!("CARGO_BIN_EXE_host-process");

/// Anything expected "soon" on a loaded 2-core machine.
pub const SOON: Duration = Duration::from_secs(30);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held for the whole of a CPU-heavy scenario, so they run one at a time.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// The host binary's path.
pub fn host_bin() -> &'static Path {
    Path::new(HOST)
}

/// A sample of the host's `/metrics` (0 when absent).
pub async fn host_metric(host: &HostProcess, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    Ok(metric(&host.metrics().await?, name, labels).unwrap_or(0.0))
}

/// The seconds between two audit timestamps.
pub fn seconds(from: jiff::Timestamp, to: jiff::Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}
