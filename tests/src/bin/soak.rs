//! The long soak: `cargo run -p tests --bin soak -- --minutes 10` (see `tests::soak`).

use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use tests::soak::{SoakOptions, run};

/// Runs the host on a live cluster under random scaling, pod deletions, node drains, readiness
/// flaps and a network fault toggled every 30 s, checking its invariants on every revision.
#[derive(Parser)]
struct Args {
    /// How long the chaos lasts.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// ReplicaSets.
    #[arg(long, default_value_t = 50)]
    sets: usize,
    /// Seed of the chaos's choices (default: random; printed, so a run can be replayed).
    #[arg(long)]
    seed: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let host_bin = tests::bench::subject::ensure_host_process()?;
    let seed = args.seed.unwrap_or_else(host::random::u64);
    eprintln!("soak: {} minutes, {} ReplicaSets, seed {seed}", args.minutes, args.sets);
    let options = SoakOptions { duration: Duration::from_secs(args.minutes * 60), sets: args.sets, host_bin, seed };
    let report = run(&options).await.map_err(|e| e.context(format!("soak with seed {seed}")))?;
    println!("soak {} min, seed {seed}: {report}", args.minutes);
    Ok(())
}
