//! The YAML fixture suite (`tests/fixtures/**.yaml`): every case runs through the embedded
//! default policy in the real sandbox and through the same library compiled natively; both must
//! meet the fixture's expectation and produce the very same plan.

use std::path::PathBuf;

use policy_kit::{
    fixtures::Fixture,
    harness::{Policy, Run},
};

/// The suite holds 130 cases; fewer than this means fixtures went missing (or were not found).
const MIN_FIXTURES: usize = 120;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Checks one fixture with one policy; on a mismatch, runs it again to still get the outcome
/// for the sandbox-versus-native comparison.
fn check(policy: &Policy, label: &str, fixture: &Fixture, failures: &mut Vec<String>) -> Option<Run> {
    match policy.check(fixture) {
        Ok(run) => Some(run),
        Err(e) => {
            failures.push(format!("{} [{label}]: {e:#}", fixture.name));
            policy.run(fixture).ok()
        }
    }
}

#[test]
fn every_fixture_passes_in_the_sandbox_and_natively_with_identical_plans() {
    let fixtures = Fixture::load_dir(&fixtures_dir()).expect("loading tests/fixtures");
    assert!(
        fixtures.len() >= MIN_FIXTURES,
        "only {} fixtures under {}; expected at least {MIN_FIXTURES}",
        fixtures.len(),
        fixtures_dir().display()
    );
    let sandboxed = Policy::embedded().expect("loading the embedded default policy");
    let native = Policy::Native;

    let mut failures = Vec::new();
    for fixture in &fixtures {
        assert!(!fixture.description.trim().is_empty(), "fixture {} has an empty description", fixture.name);
        let in_sandbox = check(&sandboxed, "sandbox", fixture, &mut failures);
        let natively = check(&native, "native", fixture, &mut failures);
        if let (Some(a), Some(b)) = (&in_sandbox, &natively) {
            if a.outcome != b.outcome {
                failures.push(format!(
                    "{} [sandbox vs native]: plans differ:\n  sandbox: {:?}\n  native:  {:?}",
                    fixture.name, a.outcome, b.outcome
                ));
            }
            if a.status_after_scale_error != b.status_after_scale_error {
                failures.push(format!(
                    "{} [sandbox vs native]: status after scale error differs:\n  sandbox: {:?}\n  native:  {:?}",
                    fixture.name, a.status_after_scale_error, b.status_after_scale_error
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} fixtures failed:\n{}", failures.len(), fixtures.len(), failures.join("\n"));
}

/// A fixture whose expectation is wrong on purpose, field by field.
const WRONG: &str = r"
description: replicas 3 with one pod creates 2, but this fixture claims otherwise
replicaSet: {replicas: 3}
pods:
  - {name: a, node: n1, ready: true, readySince: -1h}
expect:
  create: 1
  delete: [a]
  status: {replicas: 7, readyReplicas: 1}
  requeueAfter: 5s
";

/// The same case with the right expectation.
const RIGHT: &str = r"
description: replicas 3 with one pod creates 2
replicaSet: {replicas: 3}
pods:
  - {name: a, node: n1, ready: true, readySince: -1h}
expect:
  create: 2
  status: {replicas: 1, readyReplicas: 1}
";

/// A scale error whose expected status is wrong on purpose.
const WRONG_AFTER_SCALE_ERROR: &str = r#"
description: a failed create adds FailedCreate, but this fixture expects FailedDelete
replicaSet: {replicas: 2}
expect:
  create: 2
scaleError:
  message: quota exceeded
  expectStatus:
    conditions:
      - {type: ReplicaFailure, status: "True", reason: FailedDelete, message: quota exceeded, lastTransitionTime: now}
"#;

#[test]
fn a_wrong_expectation_is_reported_as_a_mismatch() {
    let policies = [("sandbox", Policy::embedded().expect("embedded policy")), ("native", Policy::Native)];
    for (label, policy) in &policies {
        let wrong = Fixture::parse("wrong", WRONG).unwrap();
        let message = format!("{:#}", policy.check(&wrong).expect_err(label));
        for diff in [
            "create: expected 1, got 2",
            r#"delete: expected ["a"], got []"#,
            "status.replicas: expected 7, got 1",
            "requeueAfter: expected 5s, got none",
        ] {
            assert!(message.contains(diff), "[{label}] `{diff}` missing from: {message}");
        }
        // Only the wrong fields are reported.
        assert!(!message.contains("readyReplicas"), "[{label}] {message}");

        let right = Fixture::parse("right", RIGHT).unwrap();
        policy.check(&right).unwrap_or_else(|e| panic!("[{label}] {e:#}"));

        let wrong = Fixture::parse("wrong-after-scale-error", WRONG_AFTER_SCALE_ERROR).unwrap();
        let message = format!("{:#}", policy.check(&wrong).expect_err(label));
        assert!(message.contains("after scale error: conditions"), "[{label}] {message}");
        assert!(message.contains("FailedCreate"), "[{label}] {message}");
    }
}

#[test]
fn a_wrong_expected_refusal_is_reported_as_a_mismatch() {
    let yaml = r#"
description: a valid selector gives a plan, not the refusal this fixture expects
replicaSet: {replicas: 0}
expect:
  error: {invalidSelector: "values set can't be empty"}
"#;
    let fixture = Fixture::parse("wrong-refusal", yaml).unwrap();
    let yaml = r#"
description: an Exists requirement with values is refused, but not with the text this fixture expects
replicaSet:
  selector:
    matchExpressions:
      - {key: env, operator: Exists, values: [dev]}
  templateLabels: {env: dev}
expect:
  error: {invalidSelector: "values set can't be empty"}
"#;
    let wrong_text = Fixture::parse("wrong-refusal-text", yaml).unwrap();
    for (label, policy) in [("sandbox", Policy::embedded().unwrap()), ("native", Policy::Native)] {
        let message = format!("{:#}", policy.check(&fixture).expect_err(label));
        assert!(message.contains("got a plan"), "[{label}] {message}");
        let message = format!("{:#}", policy.check(&wrong_text).expect_err(label));
        assert!(message.contains("values set must be empty for exists"), "[{label}] {message}");
    }
}
