//! The command line: one subcommand per way people use the controller — run it (recording syncs
//! as fixtures if asked), dry-run a policy on a fixture, check a module against the conformance
//! cases, record a ReplicaSet's current state as a fixture, push and manage policy modules, print
//! the CRD. Wiring only: the runtime is the `host` crate, the authoring tools are `policy-kit`.
//!
//! Installed as `wasm-replicaset`, and as the kubectl plugin `kubectl-wasm_replicaset`.

pub mod module;
pub mod record;
pub mod record_once;

use std::{process::ExitCode, sync::Arc};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use host::{modules::resource, run};
use policy_kit::{conformance, dry_run, suite};

/// The binary's name.
pub const BINARY: &str = "wasm-replicaset";
/// How people type it as a kubectl plugin (kubectl runs the file `kubectl-wasm_replicaset`).
pub const KUBECTL_PLUGIN: &str = "kubectl wasm-replicaset";

/// A ReplicaSet controller whose policy runs as a sandboxed WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "wasm-replicaset", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller against a cluster.
    Run(Box<RunCommand>),
    /// Run a policy on a fixture file and print the plan it computes.
    DryRun(dry_run::DryRunArgs),
    /// Check a policy component against the conformance cases and fixture directories.
    Conformance(suite::ConformanceArgs),
    /// Write a ReplicaSet's current snapshot from the cluster as a fixture.
    Record(record_once::RecordOnceArgs),
    /// Upload, list, promote or roll back policy modules of a running controller.
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

/// `run`: the controller's flags and the recorder's.
#[derive(Debug, clap::Args)]
pub struct RunCommand {
    /// The controller.
    #[command(flatten)]
    pub run: run::RunArgs,
    /// Recording syncs as fixtures.
    #[command(flatten)]
    pub record: record::RecordArgs,
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

/// Runs the controller, with the recorder attached before the first sync.
async fn run_controller(command: RunCommand) -> anyhow::Result<()> {
    let RunCommand { run, record } = command;
    run::run_with(run, Arc::new(conformance::check), |controller| {
        // Detached: it ends when the engine's channels close.
        drop(record::start(&record, &controller.engine));
    })
    .await
}

/// Parses arguments as `wasm-replicaset`, runs the subcommand and turns any error into one line
/// on stderr.
pub fn main() -> ExitCode {
    main_as(BINARY)
}

/// [`main`], with usage and help naming the command as `shown` (e.g. [`KUBECTL_PLUGIN`]).
pub fn main_as(shown: &'static str) -> ExitCode {
    let parsed = Cli::command().bin_name(shown).get_matches();
    let cli = match Cli::from_arg_matches(&parsed) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Run(command) => run_async(run_controller(*command)),
        Command::DryRun(args) => dry_run::run(&args),
        Command::Conformance(args) => suite::run(&args),
        Command::Record(args) => run_async(async move { record_once::run(&args).await }),
        Command::Module { target, command } => run_async(async move { module::run(&target, &command).await }),
        Command::Crd => {
            print!("{}", resource::crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `error` and its causes in one line. Some libraries (kube's kubeconfig loader) already put
/// their source into their own message; a cause the line already says is not said twice.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_joined_on_one_line_and_repeats_are_left_out() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let error = anyhow::Error::new(io)
            .context("failed to read kubeconfig: No such file or directory (os error 2)")
            .context("reading kubeconfig /nope\nat startup");
        assert_eq!(
            one_line(&error),
            "reading kubeconfig /nope at startup: failed to read kubeconfig: No such file or directory (os error 2)"
        );
    }
}
