//! Scenario 7, short: two minutes of the soak ([`tests::soak`]) on a live cluster: random scales,
//! pod deletions, node drains and readiness flaps, with the network fault between the host and
//! the API server changed every 30 s, every invariant checked on every revision. The long soak is
//! the `soak` binary; a failure here names its seed so the binary can replay it.

use std::time::Duration;

use anyhow::Result;
use tests::soak::{SoakOptions, run};

use crate::{host_bin, serial};

#[tokio::test]
async fn a_two_minute_soak_on_a_live_cluster_keeps_every_invariant() -> Result<()> {
    let _serial = serial().await;
    let seed = host::random::u64();
    let options =
        SoakOptions { duration: Duration::from_secs(120), sets: 50, host_bin: host_bin().to_path_buf(), seed };
    let report = run(&options).await.map_err(|e| {
        e.context(format!("soak with seed {seed} (replay: cargo run -p tests --bin soak -- --minutes 2 --seed {seed})"))
    })?;
    eprintln!("soak 2 min, seed {seed}: {report}");
    Ok(())
}
