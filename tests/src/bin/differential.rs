//! `cargo run -p tests --bin differential [-- --scenario NAME]... [--keep-going]`: runs the
//! differential scenarios under kube-controller-manager and under the host (each run on a fresh
//! private control plane), prints scenario | upstream end state | host end state | match, and
//! exits non-zero if any scenario differs or fails.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use tests::differential::{parallelism_from_env, render_table, run_all, scenarios};

/// Compare the host's ReplicaSet controller with upstream's on scripted scenarios.
#[derive(Parser)]
#[command(name = "differential")]
struct Args {
    /// Run only this scenario (repeatable; default: all).
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Run every scenario even after one differs (default: start no new scenario after a
    /// difference; the ones already running finish).
    #[arg(long)]
    keep_going: bool,
    /// Scenarios run at once, each with two control planes (default: $DIFFERENTIAL_PARALLEL or 3).
    #[arg(long)]
    parallel: Option<usize>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let all = scenarios::all();
    if args.list {
        for s in &all {
            println!("{:45} {}", s.name, s.purpose);
        }
        return ExitCode::SUCCESS;
    }
    let chosen = if args.scenarios.is_empty() {
        all
    } else {
        let mut chosen = Vec::new();
        for name in &args.scenarios {
            if let Some(s) = scenarios::by_name(name) {
                chosen.push(s);
            } else {
                eprintln!("no scenario named {name}; --list shows them");
                return ExitCode::from(2);
            }
        }
        chosen
    };
    let total = chosen.len();
    let started = Instant::now();
    let outcomes = run_all(chosen, args.parallel.unwrap_or_else(parallelism_from_env), args.keep_going).await;
    print!("{}", render_table(&outcomes));
    if outcomes.len() < total {
        println!("{} scenario(s) not run after a difference (--keep-going runs them all)", total - outcomes.len());
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    if outcomes.len() == total && outcomes.iter().all(tests::differential::Outcome::matches) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
