//! The `conformance` command: runs a module through the built-in conformance cases and any
//! fixture directories in the real sandbox, prints one line per case (result, fuel, time) and a
//! summary, writes JUnit XML for CI, and exits non-zero when a case fails.
//!
//! A module that does not load (not a component, the wrong world, a forbidden import) fails
//! every case with the typed reason, so a CI system shows each case red rather than one opaque
//! error.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use host::sandbox::{PolicyModule, Sandbox, SandboxLimits};

use crate::{
    conformance::{self, CaseFailure},
    fixtures::{self, Fixture},
    junit,
};

/// `conformance` flags.
#[derive(Debug, clap::Args)]
pub struct ConformanceArgs {
    /// The policy component (.wasm).
    pub module: PathBuf,
    /// Also check every fixture (`*.yaml`) under DIR against its expectation; repeatable.
    #[arg(long = "fixtures", value_name = "DIR")]
    pub fixtures: Vec<PathBuf>,
    /// Write the results as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// One case to run: a built-in conformance case, or a fixture with its full expectation.
enum Case {
    /// Checked against the conformance rules only.
    Conformance(Fixture),
    /// Checked against its whole expectation.
    Fixture(Fixture),
    /// A fixture file that could not be read; fails with the reason.
    Unreadable {
        /// The fixture's name.
        name: String,
        /// Why, one line.
        error: String,
    },
}

/// A group of cases reported together: `conformance`, or one fixture directory.
pub struct Suite {
    name: String,
    cases: Vec<Case>,
}

impl Suite {
    /// The built-in conformance cases.
    fn conformance() -> Self {
        Self { name: "conformance".into(), cases: conformance::cases().into_iter().map(Case::Conformance).collect() }
    }

    /// Every fixture under `dir`; a file that does not parse is a failing case, not an abort.
    fn fixtures(dir: &Path) -> Result<Self> {
        let cases = fixtures::fixture_paths(dir)?
            .iter()
            .map(|path| match Fixture::load_in(dir, path) {
                Ok(fixture) => Case::Fixture(fixture),
                Err(e) => Case::Unreadable { name: fixtures::name_in(dir, path), error: format!("{e:#}") },
            })
            .collect();
        Ok(Self { name: dir.display().to_string(), cases })
    }
}

/// What happened to one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The suite's name.
    pub suite: String,
    /// The case's name within its suite.
    pub name: String,
    /// `None` if it passed, else the failure's label and its one-line message.
    pub failure: Option<(&'static str, String)>,
    /// Fuel the `reconcile` call consumed (0 if it did not return).
    pub fuel: u64,
    /// Wall time of the case.
    pub duration: Duration,
}

impl CaseReport {
    /// The line printed for this case.
    pub fn line(&self) -> String {
        let name = format!("{}/{}", self.suite, self.name);
        let (result, why) = match &self.failure {
            None => ("PASS", String::new()),
            Some((label, message)) => ("FAIL", format!("  {label}: {message}")),
        };
        let millis = self.duration.as_secs_f64() * 1000.0;
        format!("{result}  {name:<48} fuel {:>11}  {millis:>8.2} ms{why}", group_thousands(self.fuel))
    }
}

/// Runs the command; exit 0 only if every case passed.
pub fn run(args: &ConformanceArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.module).with_context(|| format!("reading {}", args.module.display()))?;
    let mut suites = vec![Suite::conformance()];
    for dir in &args.fixtures {
        suites.push(Suite::fixtures(dir)?);
    }
    let sandbox = Sandbox::new(SandboxLimits::default())?;
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let module = sandbox.compile(&bytes);
    match &module {
        Ok(m) => writeln!(
            out,
            "module {}: {} ({} KB, contract {})",
            args.module.display(),
            m.digest,
            m.size / 1024,
            m.contract_version
        )?,
        Err(e) => writeln!(out, "module {}: does not load: {}: {e}", args.module.display(), e.label())?,
    }
    let mut reports = Vec::new();
    for suite in &suites {
        for case in &suite.cases {
            let report = match &module {
                Ok(module) => run_case(&sandbox, module, &suite.name, case),
                Err(e) => not_loaded(&suite.name, case, e.label(), &e.to_string()),
            };
            writeln!(out, "{}", report.line())?;
            reports.push(report);
        }
    }
    let failed = reports.iter().filter(|r| r.failure.is_some()).count();
    let elapsed = started.elapsed();
    writeln!(
        out,
        "{} cases: {} passed, {failed} failed in {:.1} ms",
        reports.len(),
        reports.len() - failed,
        elapsed.as_secs_f64() * 1000.0
    )?;
    if let Some(path) = &args.junit {
        let xml = junit::render(&format!("wasm-replicaset conformance {}", args.module.display()), &reports, elapsed);
        std::fs::write(path, xml).with_context(|| format!("writing JUnit XML to {}", path.display()))?;
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs one case on a module that loaded.
fn run_case(sandbox: &Sandbox, module: &PolicyModule, suite: &str, case: &Case) -> CaseReport {
    let (name, run) = match case {
        Case::Conformance(fixture) => (&fixture.name, conformance::run_case(sandbox, module, fixture)),
        Case::Fixture(fixture) => (&fixture.name, run_fixture(sandbox, module, fixture)),
        Case::Unreadable { name, error } => {
            return report(suite, name, Some(("invalid_fixture", error.clone())), 0, Duration::ZERO);
        }
    };
    let failure = run.verdict.err().map(|f| (f.label(), failure_message(&f)));
    report(suite, name, failure, run.fuel, run.duration)
}

/// Every case fails the same way when the module does not load.
fn not_loaded(suite: &str, case: &Case, label: &'static str, message: &str) -> CaseReport {
    let name = match case {
        Case::Conformance(f) | Case::Fixture(f) => &f.name,
        Case::Unreadable { name, .. } => name,
    };
    report(suite, name, Some((label, format!("the module does not load: {message}"))), 0, Duration::ZERO)
}

fn report(
    suite: &str,
    name: &str,
    failure: Option<(&'static str, String)>,
    fuel: u64,
    duration: Duration,
) -> CaseReport {
    CaseReport { suite: suite.to_string(), name: name.to_string(), failure, fuel, duration }
}

/// The failure's message without its label (the line prints the label once).
fn failure_message(failure: &CaseFailure) -> String {
    let text = failure.to_string();
    text.strip_prefix(failure.label()).and_then(|t| t.strip_prefix(": ")).map_or(text.clone(), str::to_string)
}

/// A fixture's whole expectation, and its scale-error case if it has one.
fn run_fixture(sandbox: &Sandbox, module: &PolicyModule, fixture: &Fixture) -> conformance::CaseRun {
    let started = Instant::now();
    let done = |verdict, fuel| conformance::CaseRun { verdict, fuel, duration: started.elapsed() };
    if fixture.expect.is_none() {
        let why = fixtures::Mismatch(vec!["the fixture states no `expect`, so there is nothing to check".into()]);
        return done(Err(CaseFailure::Mismatch(why)), 0);
    }
    let (outcome, stats) = match sandbox.reconcile_blocking(module, conformance::KEY, &fixture.snapshot) {
        Ok(done) => done,
        Err(e) => return done(Err(CaseFailure::Guest(e.failure)), 0),
    };
    if let Err(mismatch) = fixture.check(&outcome) {
        return done(Err(CaseFailure::Mismatch(mismatch)), stats.fuel);
    }
    let verdict = match (&fixture.scale_error, &outcome) {
        (Some(case), Ok(plan)) => {
            let (rs, now) = (&fixture.snapshot.replica_set, fixture.snapshot.now);
            match sandbox.status_after_scale_error_blocking(
                module,
                conformance::KEY,
                rs,
                &plan.status,
                &case.message,
                now,
            ) {
                Ok(status) => fixture.check_scale_error_status(&status).map_err(CaseFailure::Mismatch),
                Err(e) => Err(CaseFailure::AfterScaleError(e.failure)),
            }
        }
        _ => Ok(()),
    };
    done(verdict, stats.fuel)
}

/// `1234567` as `1,234,567`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuel_is_grouped_by_thousands() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000), "1,000");
        assert_eq!(group_thousands(41_234_567), "41,234,567");
    }

    #[test]
    fn a_case_line_names_the_result_the_fuel_the_time_and_the_reason() {
        let failed = report(
            "conformance",
            "large",
            Some(("out_of_fuel", "ran out".into())),
            12_345,
            Duration::from_micros(1500),
        );
        let line = failed.line();
        assert!(line.starts_with("FAIL  conformance/large "), "{line}");
        assert!(
            line.contains("fuel      12,345") && line.contains("1.50 ms") && line.ends_with("out_of_fuel: ran out"),
            "{line}"
        );
        let passed = report("fixtures", "a", None, 1, Duration::ZERO).line();
        assert!(passed.starts_with("PASS  fixtures/a ") && passed.ends_with(" ms"), "{passed}");
    }

    #[test]
    fn every_case_fails_with_the_load_error_when_the_module_does_not_load() {
        let sandbox = Sandbox::new(SandboxLimits::default()).unwrap();
        let error = sandbox.compile(b"\0asm\x01\0\0\0").unwrap_err();
        let suite = Suite::conformance();
        let reports: Vec<_> =
            suite.cases.iter().map(|c| not_loaded("conformance", c, error.label(), &error.to_string())).collect();
        assert_eq!(reports.len(), 9);
        for r in &reports {
            let (label, message) = r.failure.as_ref().unwrap();
            assert_eq!(*label, "core_module");
            assert!(message.contains("not a component"), "{message}");
        }
    }
}
