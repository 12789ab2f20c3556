//! The rollout's rules, one test each, on plain values: a module is its source and the digest of
//! its bytes, so no wasm is compiled here (the manager's tests use real modules).

use std::{collections::VecDeque, sync::Arc};

use super::*;
use crate::modules::scripted::object;

/// A module without wasm: what the rollout looks at, nothing more.
#[derive(Debug)]
struct Fake {
    source: Source,
    digest: Digest,
}

impl Module for Arc<Fake> {
    fn source(&self) -> &Source {
        &self.source
    }

    fn digest(&self) -> Digest {
        self.digest
    }

    fn contract_version(&self) -> &str {
        "0.1.0"
    }

    fn is(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
    }
}

type M = Arc<Fake>;

/// Bytes that fail validation.
const BAD: &[u8] = b"bad";

/// A rollout whose validations are answered at once: a module with the digest of the object's
/// bytes, or a rejection for [`BAD`].
struct Core {
    rollout: Rollout<M>,
}

impl Core {
    fn new() -> Self {
        let baseline = Arc::new(Fake { source: Source::Embedded, digest: Digest::of(b"baseline") });
        Self { rollout: Rollout::new(baseline) }
    }

    /// A standby: decides everything, writes nothing.
    fn standby() -> Self {
        let mut core = Self::new();
        assert!(core.rollout.step(Input::Leading(false)).is_empty());
        core
    }

    /// Steps `input`, answers the validations it asks for, and returns every other effect, in
    /// order.
    fn feed(&mut self, input: Input<M>) -> Vec<Effect<M>> {
        let mut inputs = VecDeque::from([input]);
        let mut effects = Vec::new();
        while let Some(input) = inputs.pop_front() {
            for effect in self.rollout.step(input) {
                match effect {
                    Effect::Validate(obj) => inputs.push_back(validated(*obj)),
                    other => effects.push(other),
                }
            }
        }
        effects
    }

    fn apply(&mut self, obj: ReconcileModule) -> Vec<Effect<M>> {
        self.feed(Input::Applied(obj))
    }

    /// The serving module fails `--rollback-after` syncs in a row.
    fn fail_serving(&mut self) -> Vec<Effect<M>> {
        let failed = self.rollout.serving().clone();
        self.fail(failed)
    }

    fn fail(&mut self, failed: M) -> Vec<Effect<M>> {
        self.feed(Input::FailureStreak { failed, key: "modules/boom".into(), reason: "trapped".into(), streak: 3 })
    }

    fn serving(&self) -> String {
        label(self.rollout.serving())
    }

    fn shadow(&self) -> Option<String> {
        self.rollout.shadow().map(label)
    }

    fn history(&self) -> Vec<String> {
        self.rollout.history().iter().map(label).collect()
    }

    fn state(&self, name: &str) -> Option<State> {
        self.rollout.state(&format!("uid-{name}"))
    }
}

/// The answer to a validation of `obj`.
fn validated(obj: ReconcileModule) -> Input<M> {
    let bytes = obj.spec.module.inline.as_ref().expect("inline bytes").0.clone();
    let outcome = if bytes == BAD {
        Err("not a WebAssembly file".to_string())
    } else {
        let source = Source::Object {
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
            uid: obj.uid().unwrap_or_default(),
            generation: obj.metadata.generation.unwrap_or(0),
        };
        Ok(Arc::new(Fake { source, digest: Digest::of(&bytes) }))
    };
    Input::Validated { object: obj, outcome, took: Duration::from_millis(5), at: Timestamp::UNIX_EPOCH }
}

/// `name@generation` for an object's module, `baseline` for the baseline.
fn label(module: &M) -> String {
    match &module.source {
        Source::Object { name, generation, .. } => format!("{name}@{generation}"),
        _ => "baseline".into(),
    }
}

/// What the effects swapped in, in order.
fn serves(effects: &[Effect<M>]) -> Vec<String> {
    effects.iter().filter_map(|e| if let Effect::Serve(m) = e { Some(label(m)) } else { None }).collect()
}

/// The reports among the effects: object name, phase, event reason.
fn reports(effects: &[Effect<M>]) -> Vec<(String, Phase, Option<&'static str>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Report(Report { to, event, status }) => {
                let name = match to {
                    Target::Seen(object) => object.name.clone(),
                    Target::Named(name) => name.clone(),
                };
                Some((name, status.phase, event.as_ref().map(|n| n.reason)))
            }
            _ => None,
        })
        .collect()
}

fn report_of(effects: &[Effect<M>], name: &str) -> StatusReport {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Report(Report { to: Target::Named(n), status, .. }) if n == name => Some(status.clone()),
            Effect::Report(Report { to: Target::Seen(o), status, .. }) if o.name == name => Some(status.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no report for {name} in {effects:?}"))
}

/// A superseded object's report, as [`reports`] lists it.
fn superseded(name: &str) -> (String, Phase, Option<&'static str>) {
    (name.to_string(), Phase::Pending, None)
}

// === rules 1 to 5: applied objects ===

#[test]
fn a_new_generation_is_validated_and_an_active_module_serves() {
    let mut rollout = Core::new().rollout;
    let effects = rollout.step(Input::Applied(object("a", b"a").build()));
    assert!(matches!(effects.as_slice(), [Effect::Validate(obj)] if obj.name_any() == "a"), "{effects:?}");
    assert_eq!(rollout.state("uid-a"), Some(State::Validating));

    let effects = rollout.step(validated(object("a", b"a").build()));
    assert_eq!(serves(&effects), ["a@1"]);
    assert_eq!(reports(&effects), [("a".into(), Phase::Active, Some("Activated"))]);
    assert!(effects.iter().any(|e| matches!(e, Effect::Count("activated"))));
    assert_eq!(rollout.state("uid-a"), Some(State::Active));
}

#[test]
fn a_status_only_update_changes_nothing() {
    let mut core = Core::new();
    core.apply(object("a", b"a").build());
    // Our own status write comes back through the watch: same generation, same token.
    let effects = core.apply(object("a", b"a").rolled_back_at(7, "whatever the status says").build());
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(core.serving(), "a@1");
}

#[test]
fn objects_being_deleted_are_never_decided() {
    let mut core = Core::new();
    assert!(core.apply(object("a", b"a").deleting().build()).is_empty());
    assert_eq!(core.state("a"), Some(State::Pending));
    assert_eq!(core.serving(), "baseline");
}

#[test]
fn a_new_rollback_token_rolls_back_only_a_serving_object() {
    let mut core = Core::new();
    core.apply(object("a", b"a").build());
    core.apply(object("s", b"s").shadow().build());
    // A token on an object that does not serve asks for nothing.
    assert!(core.apply(object("s", b"s").shadow().rollback_token("t1").build()).is_empty());

    let effects = core.apply(object("a", b"a").rollback_token("t1").build());
    assert_eq!(serves(&effects), ["baseline"]);
    let status = report_of(&effects, "a");
    assert_eq!(status.phase, Phase::RolledBack);
    assert!(status.message.ends_with(": rollback requested (wasm-replicaset module rollback)"), "{}", status.message);
    assert_eq!(status.failing_key, None, "a rollback by hand names no failing key");
    assert_eq!(core.state("a"), Some(State::RolledBack));
}

#[test]
fn a_rolled_back_generation_stays_rolled_back_until_a_new_generation() {
    // Another host (or this one before a restart) rolled back generation 1 of "a".
    let mut core = Core::new();
    let effects = core.apply(object("a", b"a").rolled_back_at(1, "failed 3 syncs in a row").build());
    assert!(effects.is_empty(), "not validated, nothing to roll back here: {effects:?}");
    assert_eq!(core.state("a"), Some(State::RolledBack));
    assert_eq!(core.serving(), "baseline");

    let effects = core.apply(object("a", b"a2").generation(2).rolled_back_at(1, "failed 3 syncs in a row").build());
    assert_eq!(serves(&effects), ["a@2"], "a new generation is validated again");
}

#[test]
fn a_standby_follows_a_rollback_made_by_the_leader() {
    let mut standby = Core::standby();
    standby.apply(object("a", b"a").build());
    standby.apply(object("b", b"b").build());
    // While the standby's watch was down, the leader served generation 2 of "b" and rolled it
    // back; the relist shows generation 2 already RolledBack.
    let b2 = object("b", b"b2").generation(2).rolled_back_at(2, "rolled back to 0123 (embedded default): trapped");
    let effects = standby.feed(Input::Relisted(vec![object("a", b"a").build(), b2.build()]));
    assert_eq!(serves(&effects), ["a@1"], "b's module no longer serves here either");
    assert!(reports(&effects).is_empty(), "a standby writes nothing");
    assert_eq!(standby.state("b"), Some(State::RolledBack));
}

// === rules 6 to 8: validated modules ===

#[test]
fn a_rejected_module_changes_nothing_but_its_status() {
    let mut core = Core::new();
    core.apply(object("a", b"a").build());
    core.apply(object("s", b"s").shadow().build());
    let effects = core.apply(object("b", BAD).build());
    assert!(serves(&effects).is_empty());
    assert_eq!(reports(&effects), [("b".into(), Phase::Rejected, Some("Rejected"))]);
    assert_eq!(report_of(&effects, "b").message, "not a WebAssembly file");
    assert_eq!((core.serving(), core.shadow()), ("a@1".into(), Some("s@1".into())));
    assert_eq!(core.history(), ["baseline"]);
    assert_eq!(core.state("b"), Some(State::Rejected));
}

#[test]
fn an_activation_tells_the_previous_object_it_was_superseded() {
    let mut core = Core::new();
    core.apply(object("a", b"a").build());
    let effects = core.apply(object("b", b"b").build());
    assert_eq!(
        reports(&effects),
        [("b".into(), Phase::Active, Some("Activated")), superseded("a")],
        "the new one first, then the one it replaced"
    );
    let status = report_of(&effects, "a");
    assert_eq!(status.message, "superseded by ReconcileModule b; push it again to serve it");
    assert_eq!(status.module, Some((Digest::of(b"a"), "0.1.0".into())));
    assert_eq!(core.state("a"), Some(State::Pending));

    // A new generation of the serving object supersedes nothing.
    let effects = core.apply(object("b", b"b2").generation(2).build());
    assert_eq!(reports(&effects), [("b".into(), Phase::Active, Some("Activated"))]);
    assert_eq!(core.history(), ["baseline", "a@1", "b@1"]);
}

#[test]
fn promoting_a_shadow_clears_it() {
    let mut core = Core::new();
    core.apply(object("candidate", b"c").shadow().build());
    assert_eq!(core.shadow(), Some("candidate@1".into()));
    // `module promote` switches the mode: a new generation.
    let effects = core.apply(object("candidate", b"c").generation(2).build());
    assert!(matches!(effects.as_slice(), [Effect::Serve(_), Effect::Shadow(None), ..]), "{effects:?}");
    assert_eq!((core.serving(), core.shadow()), ("candidate@2".into(), None));
}

#[test]
fn a_new_shadow_supersedes_the_previous_one_and_its_counts_start_over() {
    let mut core = Core::new();
    let counts = ShadowSummary { agreements: 4, ..ShadowSummary::default() };
    core.apply(object("s1", b"s1").shadow().build());
    assert!(matches!(core.feed(Input::ShadowCounts(counts.clone())).as_slice(), [Effect::ReportShadow { .. }]));
    core.feed(Input::ShadowReported(counts.clone()));

    let effects = core.apply(object("s2", b"s2").shadow().build());
    assert_eq!(reports(&effects), [("s2".into(), Phase::Shadow, Some("Shadowing")), superseded("s1")]);
    assert_eq!(core.shadow(), Some("s2@1".into()));
    let effects = core.feed(Input::ShadowCounts(counts));
    assert!(
        matches!(effects.as_slice(), [Effect::ReportShadow { name, .. }] if name == "s2"),
        "the same counts are news for a new shadow: {effects:?}"
    );
}

#[test]
fn the_history_holds_at_most_eight_modules() {
    let mut core = Core::new();
    for i in 0..10 {
        let name = format!("m{i}");
        core.apply(object(&name, name.as_bytes()).build());
    }
    let expected: Vec<String> = (1..=8).map(|i| format!("m{i}@1")).collect();
    assert_eq!(core.history(), expected, "the baseline and m0 were forgotten, oldest first");
}

// === rule 9: rollbacks ===

#[test]
fn a_failure_streak_rolls_back_to_the_last_good_module() {
    let mut core = Core::new();
    core.apply(object("a", b"a").build());
    core.apply(object("b", b"b").build());
    let effects = core.fail_serving();
    assert_eq!(serves(&effects), ["a@1"]);
    assert_eq!(reports(&effects), [("b".into(), Phase::RolledBack, Some("RolledBack"))]);
    let status = report_of(&effects, "b");
    let to = Digest::of(b"a").short();
    assert_eq!(
        status.message,
        format!(
            "rolled back to {to} (ReconcileModule modules/a (generation 1)): failed 3 syncs in a row, the last on modules/boom: trapped"
        )
    );
    assert_eq!(status.failing_key.as_deref(), Some("modules/boom"));
    assert_eq!(status.module, Some((Digest::of(b"b"), "0.1.0".into())), "the status names the failed module");
    assert_eq!(core.history(), ["baseline"]);

    // Then the baseline, which never fails over to anything.
    assert_eq!(serves(&core.fail_serving()), ["baseline"]);
}

#[test]
fn a_rollback_skips_history_entries_with_the_failed_digest() {
    let mut core = Core::new();
    core.apply(object("a", b"v1").build());
    core.apply(object("b", b"v2").build());
    // The same bytes again, under another name: they would fail the same way.
    core.apply(object("c", b"v2").build());
    assert_eq!(core.history(), ["baseline", "a@1", "b@1"]);
    assert_eq!(serves(&core.fail_serving()), ["a@1"]);
    assert_eq!(core.history(), ["baseline"], "the skipped entry is dropped");
}

#[test]
fn a_rollback_request_for_a_module_already_swapped_out_is_ignored() {
    let mut core = Core::new();
    core.apply(object("a", b"a").build());
    let stale = core.rollout.serving().clone();
    core.apply(object("b", b"b").build());
    assert!(core.fail(stale).is_empty());
    // Same bytes as the serving module, but another handle: still stale.
    let twin = Arc::new(Fake { source: core.rollout.serving().source.clone(), digest: Digest::of(b"b") });
    assert!(core.fail(twin).is_empty());
    assert_eq!(core.serving(), "b@1");
}

// === rules 10 and 11: deletions and relists ===

#[test]
fn deleting_the_serving_object_returns_to_the_baseline() {
    let mut core = Core::new();
    core.apply(object("a", b"a").build());
    core.apply(object("b", b"b").build());
    let effects = core.feed(Input::Deleted(object("b", b"b").build()));
    assert_eq!(serves(&effects), ["baseline"]);
    assert!(reports(&effects).is_empty(), "a deleted object is told nothing");
    assert!(core.history().is_empty(), "a rollback must not bring back what led up to it");
    assert_eq!(core.state("b"), None, "forgotten");
}

#[test]
fn deleting_another_object_drops_its_modules_from_the_history() {
    let mut core = Core::new();
    core.apply(object("a", b"a").build());
    core.apply(object("a", b"a2").generation(2).build());
    core.apply(object("b", b"b").build());
    assert_eq!(core.history(), ["baseline", "a@1", "a@2"]);
    assert!(core.feed(Input::Deleted(object("a", b"a2").generation(2).build())).is_empty());
    assert_eq!((core.serving(), core.history()), ("b@1".into(), vec!["baseline".into()]));
}

#[test]
fn deleting_the_shadow_object_stops_shadowing() {
    let mut core = Core::new();
    core.apply(object("s", b"s").shadow().build());
    let effects = core.feed(Input::Deleted(object("s", b"s").shadow().build()));
    assert!(matches!(effects.as_slice(), [Effect::Shadow(None)]), "{effects:?}");
    assert_eq!(core.shadow(), None);
}

#[test]
fn a_re_created_object_is_another_source() {
    let mut core = Core::new();
    core.apply(object("a", b"a").build());
    // Deleted and created again while the watch was down: the relist shows another UID.
    let effects = core.feed(Input::Relisted(vec![object("a", b"a").uid("uid-a-again").build()]));
    assert_eq!(serves(&effects), ["baseline", "a@1"]);
    assert_eq!(core.history(), ["baseline"]);
}

#[test]
fn a_relist_removes_objects_deleted_while_the_watch_was_down() {
    let mut core = Core::new();
    core.apply(object("a", b"a").build());
    core.apply(object("s", b"s").shadow().build());
    let effects = core.feed(Input::Relisted(vec![]));
    assert_eq!(serves(&effects), ["baseline"]);
    assert_eq!(core.shadow(), None);
    assert_eq!((core.state("a"), core.state("s")), (None, None));
}

#[test]
fn with_several_active_objects_a_relist_serves_the_newest() {
    let mut core = Core::new();
    let listed = vec![
        object("c", b"c").created_at(30).build(),
        object("a", b"a").created_at(10).build(),
        object("b", b"b").created_at(20).build(),
    ];
    core.feed(Input::Relisted(listed));
    assert_eq!(core.serving(), "c@1");
    assert_eq!(core.history(), ["baseline", "a@1", "b@1"]);
}

// === rules 12 to 14: writes, shadow reports, order ===

#[test]
fn statuses_and_events_are_decided_only_while_leading() {
    let mut core = Core::standby();
    let effects = core.apply(object("a", b"a").build());
    assert_eq!(serves(&effects), ["a@1"], "a standby serves what the leader serves");
    assert!(reports(&effects).is_empty());
    assert!(effects.iter().any(|e| matches!(e, Effect::Count("activated"))), "metrics count on every replica");

    core.feed(Input::Leading(true));
    let effects = core.apply(object("b", b"b").build());
    assert_eq!(reports(&effects), [("b".into(), Phase::Active, Some("Activated")), superseded("a")]);
}

#[test]
fn shadow_counts_are_written_only_when_they_changed_and_only_while_leading() {
    let mut core = Core::new();
    let counts = |agreements| ShadowSummary { agreements, ..ShadowSummary::default() };
    assert!(core.feed(Input::ShadowCounts(counts(0))).is_empty(), "no shadow, nothing to report");
    core.apply(object("s", b"s").shadow().build());

    assert_eq!(core.feed(Input::ShadowCounts(counts(0))).len(), 1, "the first counts are news");
    // Not written (the patch failed): still news.
    assert_eq!(core.feed(Input::ShadowCounts(counts(0))).len(), 1);
    core.feed(Input::ShadowReported(counts(0)));
    assert!(core.feed(Input::ShadowCounts(counts(0))).is_empty());
    assert_eq!(core.feed(Input::ShadowCounts(counts(2))).len(), 1);

    core.feed(Input::Leading(false));
    assert!(core.feed(Input::ShadowCounts(counts(3))).is_empty());
}

#[test]
fn watch_inputs_wait_while_a_validation_is_in_flight() {
    let mut rollout = Core::new().rollout;
    assert_eq!(rollout.step(Input::Applied(object("a", b"a").build())).len(), 1);
    // The rest of the watch waits for a's verdict: what b's inputs ask for depends on what a
    // leaves serving.
    assert!(rollout.step(Input::Applied(object("b", b"b").build())).is_empty());
    assert!(rollout.step(Input::Deleted(object("b", b"b").build())).is_empty());
    assert_eq!(rollout.state("uid-b"), None);

    let effects = rollout.step(validated(object("a", b"a").build()));
    assert_eq!(serves(&effects), ["a@1"]);
    assert!(matches!(effects.last(), Some(Effect::Validate(obj)) if obj.name_any() == "b"), "then b: {effects:?}");
    let effects = rollout.step(validated(object("b", b"b").build()));
    assert_eq!(serves(&effects), ["b@1", "baseline"], "b served, then its deletion came");
}
