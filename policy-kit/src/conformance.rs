//! The checks a module must pass before it may serve: built-in snapshots every ReplicaSet policy
//! must handle, whatever its ranking or pacing.
//!
//! A candidate passes when, on every case, it returns within its fuel, memory and time limits, its
//! plan passes the guard rails (nothing created beyond spec or deleted below it, only owned pods
//! deleted, nothing scaled while expectations are pending or the ReplicaSet is deleting), its
//! status counts are the true counts, and it refuses an invalid selector. Which pods it deletes,
//! and how fast it scales, are the policy's own business.

use anyhow::{Result, bail};

use host::{
    contract::ReconcileError,
    sandbox::{PolicyModule, Sandbox},
};

use crate::fixtures::{ErrorExpect, Fixture};

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

/// Runs every case through `module` (blocking); the error names the first failing case.
pub fn check(sandbox: &Sandbox, module: &PolicyModule) -> Result<usize> {
    for (name, yaml) in CASES {
        let fixture = Fixture::parse(name, yaml)?;
        let key = "conformance/foobar";
        let (outcome, _) = match sandbox.reconcile_blocking(module, key, &fixture.snapshot) {
            Ok(done) => done,
            Err(e) => bail!("conformance case {name}: {}", e.failure),
        };
        let expect = fixture.expect.as_ref().expect("every conformance case states an expectation");
        match (&outcome, &expect.error) {
            (Err(ReconcileError::InvalidSelector(_)), Some(ErrorExpect { invalid_selector: Some(_), .. })) => {}
            (Ok(_), Some(_)) => bail!("conformance case {name}: planned on an invalid selector instead of refusing it"),
            (Err(refusal), _) => bail!("conformance case {name}: refused a valid snapshot: {refusal:?}"),
            (Ok(_), None) => {
                if let Err(mismatch) = fixture.check_status(&outcome) {
                    bail!("conformance case {name}: wrong status: {mismatch}");
                }
            }
        }
        if let Ok(plan) = &outcome {
            // Status after a failed scale must keep the counts honest too.
            let rs = &fixture.snapshot.replica_set;
            if let Err(e) = sandbox.status_after_scale_error_blocking(
                module,
                key,
                rs,
                &plan.status,
                "conformance",
                fixture.snapshot.now,
            ) {
                bail!("conformance case {name} (after a scale error): {}", e.failure);
            }
        }
    }
    Ok(CASES.len())
}

#[cfg(test)]
mod tests {
    use host::embedded::DEFAULT_POLICY;

    use super::*;

    #[test]
    fn the_default_policy_passes_every_case() {
        let sandbox = Sandbox::new(host::sandbox::SandboxLimits::default()).unwrap();
        let module = sandbox.compile(DEFAULT_POLICY).unwrap();
        assert_eq!(check(&sandbox, &module).unwrap(), CASES.len());
    }

    #[test]
    fn every_case_parses_and_states_an_expectation() {
        for (name, yaml) in CASES {
            assert!(Fixture::parse(name, yaml).unwrap().expect.is_some(), "{name}");
        }
    }
}
