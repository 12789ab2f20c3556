//! The manager on the scripted API, with real modules and paused time: the wiring between the
//! watch, the rollback channel, the shadow tick, the rollout, the compiler and the requests.
//! The rules themselves are tested on plain values in `rollout_tests.rs`.

use std::sync::atomic::Ordering;

use futures::channel::mpsc as stream;
use tokio::sync::oneshot;

use super::*;
use crate::{
    embedded::DEFAULT_POLICY,
    events::EventType,
    modules::{
        resource::{Phase, ReconcileModuleStatus},
        scripted::{ScriptedApi, object},
    },
    sandbox::{GuestError, GuestFailure, Sandbox},
};

type WatchEvent = Result<watcher::Event<ReconcileModule>, watcher::Error>;

/// A running manager, the ends of its inputs and what it talks to.
struct Harness {
    api: ScriptedApi,
    policy: Arc<ActivePolicy>,
    watch: stream::UnboundedSender<WatchEvent>,
    leading: watch::Sender<bool>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Every module passes the checks (the conformance cases are the tests crate's business).
fn pass(_: &Sandbox, _: &PolicyModule) -> Result<usize> {
    Ok(0)
}

impl Harness {
    /// A leading manager on the embedded policy, rolling back after 3 failures in a row.
    async fn start() -> Self {
        Self::with_checks(pass).await
    }

    async fn with_checks(checks: impl ModuleCheck) -> Self {
        let sandbox = Sandbox::new(crate::sandbox::SandboxLimits::default()).expect("a sandbox");
        let baseline = sandbox.load(DEFAULT_POLICY.to_vec()).await.expect("the default policy compiles");
        let (rollbacks_tx, rollbacks) = mpsc::unbounded_channel();
        let serving = Serving::new(baseline, Source::Embedded);
        let policy = Arc::new(ActivePolicy::with_source(sandbox, serving, 3, Some(rollbacks_tx)));
        let api = ScriptedApi::default();
        let (leading, leading_rx) = watch::channel(true);
        let (watch, events) = stream::unbounded();
        let (stop, stopped) = oneshot::channel::<()>();
        let manager =
            ModuleManager::with_api(api.clone(), policy.clone(), Arc::new(checks), rollbacks).writing_when(leading_rx);
        let task = tokio::spawn(manager.run_on(events, async {
            let _ = stopped.await;
        }));
        Self { api, policy, watch, leading, stop, task }
    }

    fn send(&self, event: watcher::Event<ReconcileModule>) {
        self.watch.unbounded_send(Ok(event)).expect("the manager is running");
    }

    /// The watch delivers `obj`, and a GET finds it from now on.
    fn apply(&self, obj: &ReconcileModule) {
        self.api.put(obj);
        self.send(watcher::Event::Apply(obj.clone()));
    }

    /// The watch restarts and lists `objects`.
    fn relist(&self, objects: &[ReconcileModule]) {
        self.send(watcher::Event::Init);
        for obj in objects {
            self.api.put(obj);
            self.send(watcher::Event::InitApply(obj.clone()));
        }
        self.send(watcher::Event::InitDone);
    }

    /// The name of the object whose module serves, or `embedded`.
    fn serving(&self) -> String {
        match &self.policy.serving().source {
            Source::Object { name, .. } => name.clone(),
            _ => "embedded".into(),
        }
    }

    async fn phase_becomes(&self, name: &str, phase: Phase) -> ReconcileModuleStatus {
        until(&format!("{name} {phase:?}"), || self.api.phase(name) == Some(phase)).await;
        self.api.status(name).expect("a status")
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the manager ends cleanly");
    }
}

/// Lets the manager run until `done` holds. Modules compile on real threads, so the limit is in
/// real time; virtual time moves 1 ms per look.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Lets the manager finish what it was given (the clock does not move while a module compiles).
async fn settle() {
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_active_module_serves_and_its_status_says_so() {
    let h = Harness::start().await;
    h.apply(&object("newest-first", test_guests::NEWEST_FIRST).build());
    let status = h.phase_becomes("newest-first", Phase::Active).await;

    let serving = h.policy.serving();
    assert!(matches!(&serving.source, Source::Object { name, generation: 1, .. } if name == "newest-first"));
    assert_eq!(status.digest, Some(serving.module.digest.to_string()));
    assert_eq!(status.world_version.as_deref(), Some("0.1.0"));
    assert_eq!(status.observed_generation, Some(1));
    assert!(status.message.unwrap_or_default().starts_with("serving since "));
    let conditions: Vec<_> = status.conditions.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
    assert_eq!(conditions, [("Validated", "True"), ("Serving", "True")]);
    let events = h.api.events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].kind, events[0].reason.as_str()), (EventType::Normal, "Activated"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rejected_module_leaves_the_serving_one_untouched() {
    let h = Harness::start().await;
    h.apply(&object("good", test_guests::NEWEST_FIRST).build());
    h.phase_becomes("good", Phase::Active).await;
    let before = h.policy.serving();

    h.apply(&object("broken", b"#!/bin/sh\necho hello\n").build());
    let status = h.phase_becomes("broken", Phase::Rejected).await;
    assert!(status.message.unwrap_or_default().contains("not a WebAssembly file"));
    assert_eq!(status.conditions[0].status, "False", "Validated is False");
    assert!(Arc::ptr_eq(&before, &h.policy.serving()), "the serving module is the same handle");
    assert_eq!(h.api.phase("good"), Some(Phase::Active), "the serving object is told nothing");
    let last = h.api.events().pop().expect("an event");
    assert_eq!((last.name.as_str(), last.kind, last.reason.as_str()), ("broken", EventType::Warning, "Rejected"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_module_that_fails_the_checks_is_rejected_with_the_reason() {
    let checks = |_: &Sandbox, module: &PolicyModule| -> Result<usize> {
        bail!("conformance case scale-down-ranking: module {} deleted the wrong pod", module.digest.short())
    };
    let h = Harness::with_checks(checks).await;
    h.apply(&object("newest-first", test_guests::NEWEST_FIRST).build());
    let status = h.phase_becomes("newest-first", Phase::Rejected).await;
    assert!(status.message.unwrap_or_default().starts_with("conformance case scale-down-ranking"));
    assert_eq!(h.serving(), "embedded");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn three_failures_in_a_row_roll_back_to_the_last_good_module() {
    let h = Harness::start().await;
    h.apply(&object("good", test_guests::NEWEST_FIRST).build());
    h.phase_becomes("good", Phase::Active).await;
    h.apply(&object("fragile", test_guests::TRAP_ON_BOOM).build());
    h.phase_becomes("fragile", Phase::Active).await;
    assert_eq!(h.api.phase("good"), Some(Phase::Pending), "superseded");

    let failing = h.policy.serving();
    let trap = || GuestError {
        digest: failing.module.digest,
        failure: GuestFailure::Trap { trap: "wasm trap: unreachable".into(), last_error_log: None },
    };
    for _ in 0..2 {
        h.policy.record_failure(&failing, "modules/boom-web", &trap());
    }
    settle().await;
    assert_eq!(h.serving(), "fragile", "two failures are not a streak yet");

    h.policy.record_failure(&failing, "modules/boom-web", &trap());
    let status = h.phase_becomes("fragile", Phase::RolledBack).await;
    assert_eq!(h.serving(), "good");
    assert_eq!(status.failing_key.as_deref(), Some("modules/boom-web"));
    let message = status.message.unwrap_or_default();
    assert!(message.contains("failed 3 syncs in a row, the last on modules/boom-web: trapped"), "{message}");
    assert_eq!(status.digest, Some(failing.module.digest.to_string()), "the status names the failed module");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rollback_can_be_asked_for_with_the_annotation() {
    let h = Harness::start().await;
    h.apply(&object("newest-first", test_guests::NEWEST_FIRST).build());
    h.phase_becomes("newest-first", Phase::Active).await;
    h.apply(&object("newest-first", test_guests::NEWEST_FIRST).rollback_token("2025-01-01T00:00:00Z").build());
    let status = h.phase_becomes("newest-first", Phase::RolledBack).await;
    assert!(status.message.unwrap_or_default().contains("rollback requested (wasm-replicaset module rollback)"));
    assert_eq!(h.serving(), "embedded");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn statuses_are_written_only_while_leading() {
    let h = Harness::start().await;
    h.leading.send_replace(false);
    h.apply(&object("a", test_guests::NEWEST_FIRST).build());
    until("a to serve", || h.serving() == "a").await;
    settle().await;
    assert!(h.api.patches().is_empty(), "a standby writes no status");
    assert!(h.api.events().is_empty(), "and emits no event");

    h.leading.send_replace(true);
    h.apply(&object("b", test_guests::TRAP_ON_BOOM).build());
    h.phase_becomes("b", Phase::Active).await;
    assert_eq!(h.api.phase("a"), Some(Phase::Pending), "the new leader tells a it was superseded");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shadow_counts_are_reported_only_when_they_change() {
    let h = Harness::start().await;
    h.apply(&object("candidate", test_guests::NEWEST_FIRST).shadow().build());
    h.phase_becomes("candidate", Phase::Shadow).await;
    let reports = || h.api.shadow_reports("candidate");

    tokio::time::sleep(SHADOW_REPORT_INTERVAL).await;
    until("the first counts", || reports().len() == 1).await;
    assert_eq!(reports()[0]["agreements"], 0);

    tokio::time::sleep(SHADOW_REPORT_INTERVAL * 3).await;
    settle().await;
    assert_eq!(reports().len(), 1, "three ticks, no change, no write");

    h.policy.shadow().expect("a shadow").agreements.fetch_add(2, Ordering::Relaxed);
    tokio::time::sleep(SHADOW_REPORT_INTERVAL).await;
    until("the new counts", || reports().len() == 2).await;
    assert_eq!(reports()[1]["agreements"], 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_shadow_report_that_failed_is_written_at_the_next_tick() {
    let h = Harness::start().await;
    h.apply(&object("candidate", test_guests::NEWEST_FIRST).shadow().build());
    h.phase_becomes("candidate", Phase::Shadow).await;
    // While the module compiles on a real thread, virtual time can reach a tick and the first
    // counts may already be written: count from here, with new counts so a write is due.
    let before = h.api.shadow_reports("candidate").len();
    h.api.fail_patches(true);
    h.policy.shadow().expect("a shadow").agreements.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(SHADOW_REPORT_INTERVAL).await;
    settle().await;
    h.api.fail_patches(false);
    assert_eq!(h.api.shadow_reports("candidate").len(), before, "the failed write is not counted");
    tokio::time::sleep(SHADOW_REPORT_INTERVAL).await;
    until("the counts after all", || h.api.shadow_reports("candidate").len() == before + 1).await;
    assert_eq!(h.api.shadow_reports("candidate")[before]["agreements"], 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn promoting_a_shadow_clears_it() {
    let h = Harness::start().await;
    h.apply(&object("candidate", test_guests::NEWEST_FIRST).shadow().build());
    h.phase_becomes("candidate", Phase::Shadow).await;
    assert!(h.policy.shadow().is_some());
    // `module promote`: the mode changes, so does the generation.
    h.apply(&object("candidate", test_guests::NEWEST_FIRST).generation(2).build());
    h.phase_becomes("candidate", Phase::Active).await;
    assert!(h.policy.shadow().is_none());
    assert_eq!(h.serving(), "candidate");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_relist_removes_objects_deleted_while_the_watch_was_down() {
    let h = Harness::start().await;
    h.apply(&object("gone", test_guests::NEWEST_FIRST).build());
    h.phase_becomes("gone", Phase::Active).await;
    // "gone" was deleted while the watch was down; "candidate" was created.
    h.api.remove("gone");
    h.relist(&[object("candidate", test_guests::TRAP_ON_BOOM).shadow().build()]);
    h.phase_becomes("candidate", Phase::Shadow).await;
    assert_eq!(h.serving(), "embedded");
    assert!(h.policy.shadow().is_some());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn deleting_the_serving_object_returns_to_the_baseline() {
    let h = Harness::start().await;
    let obj = object("newest-first", test_guests::NEWEST_FIRST).build();
    h.apply(&obj);
    h.phase_becomes("newest-first", Phase::Active).await;
    h.api.remove("newest-first");
    h.send(watcher::Event::Delete(obj));
    until("the embedded policy to serve", || h.serving() == "embedded").await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_module_can_come_from_a_config_map() {
    let h = Harness::start().await;
    h.api.put_config_map("policy-bytes", "module.wasm", test_guests::NEWEST_FIRST);
    h.apply(&object("from-cm", b"").in_config_map("policy-bytes", "module.wasm").build());
    h.phase_becomes("from-cm", Phase::Active).await;

    h.apply(&object("no-such-key", b"").in_config_map("policy-bytes", "other.wasm").build());
    let status = h.phase_becomes("no-such-key", Phase::Rejected).await;
    assert_eq!(status.message.as_deref(), Some(r#"ConfigMap policy-bytes has no binaryData key "other.wasm""#));
    h.apply(&object("no-such-map", b"").in_config_map("missing", "module.wasm").build());
    let status = h.phase_becomes("no-such-map", Phase::Rejected).await;
    assert_eq!(status.message.as_deref(), Some("ConfigMap missing not found"));
    assert_eq!(h.serving(), "from-cm");
    h.stop().await;
}
