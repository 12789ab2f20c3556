//! Command-line interface: one subcommand per way people use the host.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{dry_run, modules, run};

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
    DryRun(DryRunArgs),
    /// Upload, list, promote or roll back policy modules of a running host.
    Module {
        /// Where the ReconcileModules live.
        #[command(flatten)]
        target: modules::cli::Target,
        /// What to do.
        #[command(subcommand)]
        command: modules::cli::ModuleCommand,
    },
    /// Print the ReconcileModule CustomResourceDefinition (YAML).
    Crd,
}

/// `host dry-run`.
#[derive(Debug, clap::Args)]
pub struct DryRunArgs {
    /// The fixture (YAML) to run.
    #[arg(long)]
    pub fixture: PathBuf,
    /// A policy component to run instead of the embedded default.
    #[arg(long, conflicts_with = "native")]
    pub module: Option<PathBuf>,
    /// Run the default policy as native code instead of in the sandbox.
    #[arg(long)]
    pub native: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
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
        Command::Run(args) => run_async(run::run(args)),
        Command::DryRun(args) => dry_run::run(&args),
        Command::Module { target, command } => run_async(async move { modules::cli::run(&target, &command).await }),
        Command::Crd => {
            print!("{}", modules::resource::crd_yaml());
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
