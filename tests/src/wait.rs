//! Polling helpers for eventually-consistent assertions against the apiserver.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

const POLL: Duration = Duration::from_millis(50);

/// Polls `check` every 50 ms until it returns `Ok(Some(value))`, for at most `timeout`.
/// `Ok(None)` and errors mean "not yet"; on timeout the error names `what` and the last error.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last: Option<anyhow::Error> = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() >= deadline {
            match last {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` every 50 ms for `duration` and fails as soon as it returns `Ok(false)` or an
/// error: asserts that something stays true (e.g. "no replacement pod appears").
pub async fn consistently<F, Fut>(what: &str, duration: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(true) => {}
            Ok(false) => bail!("{what} stopped holding after {:?}", started.elapsed()),
            Err(e) => bail!("checking {what} failed after {:?}: {e:#}", started.elapsed()),
        }
        if started.elapsed() >= duration {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}
