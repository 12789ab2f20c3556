//! `dry-run`: runs a policy on one fixture and prints the plan for people or as JSON.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::Result;
use host::contract::Conditions;
use serde::Serialize;

use crate::{
    fixtures::{Fixture, StatusSpec},
    harness::Policy,
    render::{self, PlanView},
};

/// `dry-run` flags.
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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    fixture: String,
    policy: String,
    plan: Option<PlanView>,
    refusal: Option<String>,
    status_after_scale_error: Option<StatusSpec>,
    fuel: u64,
    mismatches: Vec<String>,
}

/// Runs the dry run; exits 1 when the fixture's expectation is not met.
pub fn run(args: &DryRunArgs) -> Result<ExitCode> {
    let fixture = Fixture::load(&args.fixture)?;
    let policy = match (&args.module, args.native) {
        (_, true) => Policy::Native,
        (Some(path), false) => Policy::from_file(path)?,
        (None, false) => Policy::embedded()?,
    };
    let run = policy.run(&fixture)?;
    let mut mismatches = fixture.check(&run.outcome).err().map(|m| m.0).unwrap_or_default();
    if let Some(status) = &run.status_after_scale_error {
        mismatches.extend(fixture.check_scale_error_status(status).err().map(|m| m.0).unwrap_or_default());
    }
    let snapshot = &fixture.snapshot;
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = Report {
            fixture: args.fixture.display().to_string(),
            policy: policy.describe(),
            plan: run.outcome.as_ref().ok().map(|p| PlanView::of(snapshot, p)),
            refusal: run.outcome.as_ref().err().map(|e| format!("{e:?}")),
            status_after_scale_error: run.status_after_scale_error.as_ref().map(StatusSpec::of),
            fuel: run.stats.fuel,
            mismatches: mismatches.clone(),
        };
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "fixture: {} — {}", args.fixture.display(), fixture.description)?;
        writeln!(out, "policy:  {}", policy.describe())?;
        writeln!(
            out,
            "replicaset {}/{}: spec.replicas {}, {} candidate pods",
            snapshot.replica_set.namespace,
            snapshot.replica_set.name,
            snapshot.replica_set.replicas,
            snapshot.pods.len()
        )?;
        match &run.outcome {
            Ok(plan) => write!(out, "plan:\n{}", render::plan_text(snapshot, plan))?,
            Err(refusal) => writeln!(out, "no plan: {refusal:?}")?,
        }
        if let Some(status) = &run.status_after_scale_error {
            writeln!(out, "after a scale error: {status}\n  conditions: {}", Conditions(&status.conditions))?;
        }
        if run.stats.fuel > 0 {
            writeln!(
                out,
                "cost:    {} fuel, {} KiB memory, {:?}",
                run.stats.fuel,
                run.stats.memory_high_water / 1024,
                run.stats.duration
            )?;
        }
        match (&fixture.expect, mismatches.is_empty()) {
            (None, _) => writeln!(out, "expect:  (the fixture states no expectation)")?,
            (Some(_), true) => writeln!(out, "expect:  matches")?,
            (Some(_), false) => {
                writeln!(out, "expect:  DIFFERS")?;
                for m in &mismatches {
                    writeln!(out, "  - {m}")?;
                }
            }
        }
    }
    if mismatches.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the plan differs from the fixture's expectation: {}", mismatches.join("; "));
        Ok(ExitCode::FAILURE)
    }
}
