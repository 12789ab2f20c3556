//! The one control plane shared by all tests of a test binary: started lazily by the first test that asks, stopped at process exit.

use anyhow::{Result, anyhow};
use tokio::sync::OnceCell;

use crate::controlplane::ControlPlane;
use crate::namespace::TestNamespace;

/// The shared control plane, or the message of the error that kept it from starting (kept so
/// every later test fails fast with the same message instead of retrying a slow startup).
static SHARED: OnceCell<std::result::Result<ControlPlane, String>> = OnceCell::const_new();

/// The control plane shared by every test in this test binary, started on first use.
///
/// Rust never drops `static`s: its processes are stopped by the harness's `atexit` handler (or by
/// PDEATHSIG if the binary is killed). Tests must isolate themselves with namespaces ([`ns`]) and
/// must not stop it. Call inside a tokio runtime; get clients with [`ControlPlane::client`].
pub async fn shared() -> Result<&'static ControlPlane> {
    let started = SHARED.get_or_init(|| async { ControlPlane::start().await.map_err(|e| format!("{e:#}")) }).await;
    started.as_ref().map_err(|e| anyhow!("the shared control plane failed to start: {e}"))
}

/// A fresh, uniquely named namespace on the shared control plane, named after the calling test.
pub async fn ns() -> Result<TestNamespace> {
    shared().await?.create_namespace(&current_test_name()).await
}

/// The name of the running test (libtest names each test's thread after it), or `test`.
pub fn current_test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map_or_else(|| "test".to_string(), |n| n.rsplit("::").next().unwrap_or(n).to_string())
}
