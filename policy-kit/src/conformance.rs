//! The checks a module must pass before it may serve: built-in snapshots every ReplicaSet policy
//! must handle, whatever its ranking or pacing.
//!
//! A candidate passes when, on every case, it returns within its fuel, memory and time limits, its
//! plan passes the guard rails (nothing created beyond spec or deleted below it, only owned pods
//! deleted, nothing scaled while expectations are pending or the ReplicaSet is deleting), its
//! status counts are the true counts, and it refuses an invalid selector. Which pods it deletes,
//! and how fast it scales, are the policy's own business.
//!
//! [`check`] is what the controller and `module push` run (the first failure is the error);
//! [`crate::suite`] runs the same cases one by one for the `conformance` command.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use host::{
    contract::ReconcileError,
    sandbox::{GuestFailure, PolicyModule, Sandbox},
};

use crate::fixtures::{ErrorExpect, Fixture, Mismatch};

/// The built-in cases, by file name.
const CASES: [(&str, &str); 9] = [
    ("scale-up-from-zero", include_str!("conformance/scale-up-from-zero.yaml")),
    ("steady-state", include_str!("conformance/steady-state.yaml")),
    ("scale-down", include_str!("conformance/scale-down.yaml")),
    ("orphans-and-strangers", include_str!("conformance/orphans-and-strangers.yaml")),
    ("expectations-pending", include_str!("conformance/expectations-pending.yaml")),
    ("replica-set-deleting", include_str!("conformance/replica-set-deleting.yaml")),
    ("invalid-selector", include_str!("conformance/invalid-selector.yaml")),
    ("min-ready-seconds", include_str!("conformance/min-ready-seconds.yaml")),
    ("large", include_str!("conformance/large.yaml")),
];

/// The key every conformance call is made for (it only labels the guest's log lines).
pub const KEY: &str = "conformance/foobar";

/// The built-in cases, parsed.
pub fn cases() -> Vec<Fixture> {
    CASES.iter().map(|(name, yaml)| Fixture::parse(name, yaml).expect("every built-in case parses")).collect()
}

/// Why a module failed one case; each variant names the rule it broke.
#[derive(Debug, thiserror::Error)]
pub enum CaseFailure {
    /// The guest call failed: trap, fuel, deadline, memory, a plan breaking a guard rail, ...
    #[error("{label}: {0}", label = .0.label())]
    Guest(GuestFailure),
    /// `status-after-scale-error` failed on the case's plan.
    #[error("after a scale error, {label}: {0}", label = .0.label())]
    AfterScaleError(GuestFailure),
    /// The policy refused a snapshot whose selector is valid.
    #[error("refused a valid snapshot: {0:?}")]
    Refused(ReconcileError),
    /// The policy planned on a selector it had to refuse.
    #[error("planned on an invalid selector instead of refusing it")]
    PlannedOnInvalidSelector,
    /// The plan's status (conformance) or the plan (a fixture) is not what the case expects.
    #[error("mismatch: {0}")]
    Mismatch(Mismatch),
}

impl CaseFailure {
    /// A short, stable label of the rule broken (the JUnit failure type).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Guest(failure) | Self::AfterScaleError(failure) => failure.label(),
            Self::Refused(_) => "refused",
            Self::PlannedOnInvalidSelector => "planned_on_invalid_selector",
            Self::Mismatch(_) => "mismatch",
        }
    }
}

/// One case's verdict and what the `reconcile` call cost.
#[derive(Debug)]
pub struct CaseRun {
    /// Pass, or why not.
    pub verdict: Result<(), CaseFailure>,
    /// Fuel `reconcile` consumed (0 when the call failed before returning).
    pub fuel: u64,
    /// Wall time of the case, both calls included.
    pub duration: Duration,
}

/// Runs one built-in case (blocking): the conformance rules, not the case's exact plan.
pub fn run_case(sandbox: &Sandbox, module: &PolicyModule, fixture: &Fixture) -> CaseRun {
    let started = Instant::now();
    let (outcome, stats) = match sandbox.reconcile_blocking(module, KEY, &fixture.snapshot) {
        Ok(done) => done,
        Err(e) => return CaseRun { verdict: Err(CaseFailure::Guest(e.failure)), fuel: 0, duration: started.elapsed() },
    };
    let expect = fixture.expect.as_ref().expect("every conformance case states an expectation");
    let verdict = match (outcome, &expect.error) {
        (Err(ReconcileError::InvalidSelector(_)), Some(ErrorExpect { invalid_selector: Some(_), .. })) => Ok(()),
        (Ok(_), Some(_)) => Err(CaseFailure::PlannedOnInvalidSelector),
        (Err(refusal), _) => Err(CaseFailure::Refused(refusal)),
        (Ok(plan), None) => fixture
            .check_status(&Ok(plan.clone()))
            .map_err(CaseFailure::Mismatch)
            // Status after a failed scale must keep the counts honest too.
            .and_then(|()| {
                let (rs, now) = (&fixture.snapshot.replica_set, fixture.snapshot.now);
                sandbox
                    .status_after_scale_error_blocking(module, KEY, rs, &plan.status, "conformance", now)
                    .map(drop)
                    .map_err(|e| CaseFailure::AfterScaleError(e.failure))
            }),
    };
    CaseRun { verdict, fuel: stats.fuel, duration: started.elapsed() }
}

/// Runs every case through `module` (blocking); the error names the first failing case.
pub fn check(sandbox: &Sandbox, module: &PolicyModule) -> Result<usize> {
    let cases = cases();
    for fixture in &cases {
        if let Err(failure) = run_case(sandbox, module, fixture).verdict {
            bail!("conformance case {}: {failure}", fixture.name);
        }
    }
    Ok(cases.len())
}

#[cfg(test)]
mod tests {
    use host::embedded::DEFAULT_POLICY;

    use super::*;

    fn sandbox() -> Sandbox {
        Sandbox::new(host::sandbox::SandboxLimits::default()).unwrap()
    }

    #[test]
    fn the_default_policy_passes_every_case() {
        let sandbox = sandbox();
        let module = sandbox.compile(DEFAULT_POLICY).unwrap();
        assert_eq!(check(&sandbox, &module).unwrap(), CASES.len());
    }

    #[test]
    fn every_case_parses_and_states_an_expectation() {
        for fixture in cases() {
            assert!(fixture.expect.is_some(), "{}", fixture.name);
        }
    }

    #[test]
    fn a_trapping_module_fails_with_the_trap_named() {
        let sandbox = sandbox();
        let module = sandbox.compile(test_guests::PANIC).unwrap();
        let run = run_case(&sandbox, &module, &cases()[0]);
        let failure = run.verdict.unwrap_err();
        assert_eq!(failure.label(), "trap");
        assert!(failure.to_string().starts_with("trap: trapped"), "{failure}");
    }

    #[test]
    fn a_plan_breaking_a_guard_rail_fails_the_first_case_that_shows_it() {
        let sandbox = sandbox();
        let module = sandbox.compile(test_guests::BAD_PLAN).unwrap();
        let error = check(&sandbox, &module).unwrap_err().to_string();
        assert!(error.starts_with("conformance case ") && error.contains("invalid_plan: "), "{error}");
    }
}
