//! Scenario 4 with kube-controller-manager ([`crate::stall`]): it mostly waits out upstream's
//! fixed 5-minute expectations timeout, so it runs beside the CPU-heavy scenarios instead of
//! after them. libtest starts tests in name order, and this module's name sorts first, so on two
//! test threads it starts at once and the serialised scenarios run on the other thread meanwhile.

use std::time::Duration;

use anyhow::{Result, ensure};

use crate::stall::{Which, stalled_watch};

#[tokio::test]
async fn kube_controller_manager_with_a_stalled_pod_watch_past_its_five_minute_expectations_timeout() -> Result<()> {
    let ttl = Duration::from_secs(300);
    let outcome = stalled_watch(Which::Kcm, ttl).await?;
    ensure!(outcome.stale_skips >= 1.0, "kube-controller-manager never skipped a sync for a stale cache");
    eprintln!(
        "stalled pod watch, kube-controller-manager (timeout 5m): {} pods created in all, {} stale-cache skips, \
         converged {:.1?} after the release",
        outcome.created, outcome.stale_skips, outcome.converged
    );
    Ok(())
}
