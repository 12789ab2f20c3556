//! The command line: one subcommand per way people use the controller — run it, dry-run a
//! policy on a fixture, push and manage policy modules, print the CRD. Wiring only: the runtime
//! is the `host` crate, the authoring tools are `policy-kit`.

pub mod module;

use std::{process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use host::{modules::resource, run};
use policy_kit::{conformance, dry_run};

/// A ReplicaSet controller whose policy runs as a sandboxed WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "host", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller against a cluster.
    Run(run::RunArgs),
    /// Run a policy on a fixture file and print the plan it computes.
    DryRun(dry_run::DryRunArgs),
    /// Upload, list, promote or roll back policy modules of a running host.
    Module {
        /// Where the ReconcileModules live.
        #[command(flatten)]
        target: module::Target,
        /// What to do.
        #[command(subcommand)]
        command: module::ModuleCommand,
    },
    /// Print the ReconcileModule CustomResourceDefinition (YAML).
    Crd,
}

/// Runs `job` on a single-threaded runtime. The controller's async work is I/O (API calls,
/// watches, the HTTP endpoints); guest calls and module compilation run on tokio's blocking pool.
/// On a 2-core machine a multi-threaded scheduler spent more CPU handing tasks between its workers
/// (futex wake-ups, work stealing) than it saved (see the README's Benchmarks section).
fn run_async(job: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(job)?;
    Ok(ExitCode::SUCCESS)
}

/// Parses arguments, runs the subcommand and turns any error into one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_async(run::run(args, Arc::new(conformance::check))),
        Command::DryRun(args) => dry_run::run(&args),
        Command::Module { target, command } => run_async(async move { module::run(&target, &command).await }),
        Command::Crd => {
            print!("{}", resource::crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
