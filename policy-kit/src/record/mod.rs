//! Turns what happened in a cluster into a test: a live sync's snapshot becomes a fixture whose
//! expectation is the serving module's plan, with why it was recorded (and, for a shadow
//! difference, the candidate's plan) in comments; [`RecordDir`] keeps a directory of them bounded.
//!
//! Replaying one with `dry-run --fixture FILE` runs the serving module on exactly the snapshot it
//! saw; [`shadow_variant`] swaps the expectation for the candidate's plan, so the same file
//! becomes the candidate's test.

mod dir;

use std::fmt::Write as _;

use anyhow::{Result, bail};
use host::{contract::Snapshot, sandbox::ReconcileOutcome};

pub use dir::RecordDir;

use crate::fixtures::{expect_of, fixture_of, time::format_instant};

/// Which syncs are recorded (`--record-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Trigger {
    /// A shadow candidate planned differently from the serving module, or failed.
    ShadowDiff,
    /// A sync failed (the module, or applying its plan).
    Failure,
    /// Every sync that planned.
    All,
    /// Asked for by hand (`wasm-replicaset record`), not a live sync.
    #[value(skip)]
    Manual,
}

impl Trigger {
    /// The word in file names and comments.
    pub fn word(self) -> &'static str {
        match self {
            Self::ShadowDiff => "shadow-diff",
            Self::Failure => "failure",
            Self::All => "sync",
            Self::Manual => "snapshot",
        }
    }
}

/// What one module did with the snapshot: its short name and its outcome, or why the call
/// failed (one line).
#[derive(Debug, Clone)]
pub struct ModuleResult {
    /// The module's digest (short or full).
    pub module: String,
    /// The plan or refusal, or the failure.
    pub outcome: Result<ReconcileOutcome, String>,
}

/// A sync worth keeping.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Why it is recorded.
    pub trigger: Trigger,
    /// One line: the difference, the failure, or what the sync did.
    pub note: String,
    /// The snapshot the modules saw.
    pub snapshot: std::sync::Arc<Snapshot>,
    /// The serving module's result: the expectation.
    pub serving: ModuleResult,
    /// The shadow candidate's result, for a shadow difference.
    pub shadow: Option<ModuleResult>,
}

/// The comment line that opens the candidate's plan; [`shadow_variant`] looks for it.
const SHADOW_MARK: &str = "# The shadow module's plan (remove the `#` of the lines below, in place of `expect:` above, to expect it instead):";

impl Recording {
    /// `namespace-name`, for file names.
    pub fn subject(&self) -> String {
        let rs = &self.snapshot.replica_set;
        format!("{}-{}", rs.namespace, rs.name)
    }

    /// The fixture file: comments saying where it came from, the snapshot, the serving module's
    /// plan as the expectation, and the candidate's plan commented out.
    pub fn render(&self) -> Result<String> {
        let rs = &self.snapshot.replica_set;
        let key = format!("{}/{}", rs.namespace, rs.name);
        let description = format!("recorded {} of {key}: {}", self.trigger.word(), self.note);
        let mut file = fixture_of(&self.snapshot, description)?;
        let source = if self.trigger == Trigger::Manual { "the cluster's state" } else { "a live sync" };
        let mut text = format!(
            "# Recorded by wasm-replicaset from {source} of {key} at {}.\n# Why: {}: {}\n",
            format_instant(self.snapshot.now),
            self.trigger.word(),
            self.note
        );
        match &self.serving.outcome {
            Ok(outcome) => {
                file.expect = Some(expect_of(&self.snapshot, outcome));
                let _ = writeln!(
                    text,
                    "# Expect: the plan of the serving module {}. Replay: wasm-replicaset dry-run --fixture <this file> [--module <that module>.wasm]",
                    self.serving.module
                );
            }
            Err(failure) => {
                let _ =
                    writeln!(text, "# No expectation: the serving module {} failed: {failure}", self.serving.module);
            }
        }
        text.push_str(&serde_yaml::to_string(&file)?);
        if let Some(shadow) = &self.shadow {
            text.push_str(&shadow_block(&self.snapshot, shadow)?);
        }
        Ok(text)
    }
}

/// The candidate's plan as commented-out YAML under [`SHADOW_MARK`], or its failure.
fn shadow_block(snapshot: &Snapshot, shadow: &ModuleResult) -> Result<String> {
    match &shadow.outcome {
        Err(failure) => Ok(format!("# The shadow module {} failed on this snapshot: {failure}\n", shadow.module)),
        Ok(outcome) => {
            #[derive(serde::Serialize)]
            struct Expect {
                expect: crate::fixtures::ExpectSpec,
            }
            let yaml = serde_yaml::to_string(&Expect { expect: expect_of(snapshot, outcome) })?;
            let mut block = format!("# Shadow module: {}\n{SHADOW_MARK}\n", shadow.module);
            for line in yaml.lines() {
                let _ = writeln!(block, "#{line}");
            }
            Ok(block)
        }
    }
}

/// The recorded fixture `text` with the candidate's plan as its expectation instead of the
/// serving module's: the recorded difference, as a test of the candidate.
pub fn shadow_variant(text: &str) -> Result<String> {
    let Some((fixture, shadow)) = text.split_once(&format!("{SHADOW_MARK}\n")) else {
        bail!("the fixture holds no shadow plan (it was not recorded from a shadow difference)");
    };
    let mut out = String::with_capacity(text.len());
    let mut in_expect = false;
    for line in fixture.lines() {
        // `expect:` is a top-level key: it ends at the next line that is not indented.
        if line == "expect:" {
            in_expect = true;
            continue;
        }
        if in_expect && line.starts_with(' ') {
            continue;
        }
        in_expect = false;
        out.push_str(line);
        out.push('\n');
    }
    for line in shadow.lines() {
        out.push_str(line.strip_prefix('#').unwrap_or(line));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use host::contract::{Plan, ReconcileError};

    use super::*;
    use crate::fixtures::Fixture;

    const THREE_PODS: &str = r"
description: three pods, one wanted
replicaSet: {replicas: 1}
pods:
  - {name: a, node: n1, ready: true, readySince: -3h}
  - {name: b, node: n1, ready: true, readySince: -2h}
  - {name: c, node: n2, ready: true, readySince: -1h}
";

    fn plan(snapshot: &Snapshot, delete: Vec<u32>) -> ReconcileOutcome {
        let status = snapshot.replica_set.status.clone();
        Ok(Plan { adopt: vec![], release: vec![], create: 0, delete, status, requeue_after: None })
    }

    fn recording(shadow: Option<Result<ReconcileOutcome, String>>) -> Recording {
        let snapshot = Arc::new(Fixture::parse("three", THREE_PODS).unwrap().snapshot);
        Recording {
            trigger: Trigger::ShadowDiff,
            note: "delete: active [c, b] vs shadow [a, b]".into(),
            serving: ModuleResult { module: "sha256:aaaa".into(), outcome: Ok(plan(&snapshot, vec![2, 1])) },
            shadow: shadow.map(|outcome| ModuleResult { module: "sha256:bbbb".into(), outcome }),
            snapshot,
        }
    }

    #[test]
    fn the_serving_plan_is_the_expectation_and_the_shadow_plan_a_comment() {
        let rec = recording(None);
        let shadow = Some(Ok(plan(&rec.snapshot, vec![0, 1])));
        let text = recording(shadow).render().unwrap();
        assert!(text.starts_with("# Recorded by wasm-replicaset from a live sync of default/foobar at "), "{text}");
        assert!(text.contains("# Why: shadow-diff: delete: active [c, b] vs shadow [a, b]\n"), "{text}");
        let serving = Fixture::parse("rec", &text).unwrap();
        assert_eq!(serving.expect.as_ref().unwrap().delete, ["c", "b"]);
        assert_eq!(serving.check(&plan(&serving.snapshot, vec![2, 1])), Ok(()));

        let candidate = Fixture::parse("rec", &shadow_variant(&text).unwrap()).unwrap();
        assert_eq!(candidate.expect.as_ref().unwrap().delete, ["a", "b"]);
        assert_eq!(candidate.snapshot, serving.snapshot);
        assert_eq!(candidate.check(&plan(&candidate.snapshot, vec![0, 1])), Ok(()));
    }

    #[test]
    fn a_failed_module_is_said_in_a_comment_and_leaves_no_expectation() {
        let mut rec = recording(Some(Err("trapped: unreachable".into())));
        rec.serving.outcome = Err("ran out of fuel".into());
        let text = rec.render().unwrap();
        assert!(text.contains("# No expectation: the serving module sha256:aaaa failed: ran out of fuel"), "{text}");
        assert!(
            text.contains("# The shadow module sha256:bbbb failed on this snapshot: trapped: unreachable"),
            "{text}"
        );
        assert!(Fixture::parse("rec", &text).unwrap().expect.is_none());
        assert!(shadow_variant(&text).unwrap_err().to_string().contains("holds no shadow plan"));
    }

    #[test]
    fn a_refusal_is_recorded_as_the_expected_error() {
        let mut rec = recording(None);
        rec.serving.outcome = Ok(Err(ReconcileError::InvalidSelector("operator Near".into())));
        let fixture = Fixture::parse("rec", &rec.render().unwrap()).unwrap();
        assert_eq!(fixture.expect.unwrap().error.unwrap().kind(), Some(("invalid-selector", "operator Near")));
    }
}
