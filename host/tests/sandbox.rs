//! The sandbox against real components: the default policy, and one misbehaving test guest per
//! failure mode. Every failure is a typed error naming the module; the host stays usable.

use std::{sync::Arc, time::Duration};

use host::{
    contract::Snapshot,
    embedded::DEFAULT_POLICY,
    sandbox::{
        CallBudget, Compiled, GuestFailure, LoadError, Sandbox, SandboxLimits, guard_rails::Violation, input_bytes,
    },
};
use policy_kit::fixtures::Fixture;

/// Three running pods, one orphan and one of another controller; the ReplicaSet wants 2.
const SCALE_DOWN: &str = r"
description: a ReplicaSet of 2 holding 3 pods
replicaSet: {replicas: 2}
pods:
  - {name: a, node: n1, ready: true, readySince: -1h}
  - {name: b, node: n1, ready: true, readySince: -2h}
  - {name: c, node: n2, ready: true, readySince: -3h}
  - {name: orphan, controller: none, labels: {app: other}}
  - {name: foreign, controller: other}
";

fn snapshot() -> Snapshot {
    Fixture::parse("scale-down", SCALE_DOWN).unwrap().snapshot
}

/// A ReplicaSet of `pods` holding `pods` running pods on five nodes.
fn snapshot_of(pods: usize) -> Snapshot {
    let lines: Vec<String> =
        (0..pods).map(|i| format!("  - {{name: p{i}, node: n{}, ready: true, readySince: -1h}}", i % 5)).collect();
    let yaml = format!("description: {pods} pods\nreplicaSet: {{replicas: {pods}}}\npods:\n{}\n", lines.join("\n"));
    Fixture::parse("many", &yaml).unwrap().snapshot
}

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxLimits::default()).unwrap()
}

#[test]
fn the_default_policy_imports_nothing_but_log_and_the_contract_types() {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, DEFAULT_POLICY).unwrap();
    let mut imports: Vec<String> =
        component.component_type().imports(&engine).map(|(name, _)| name.to_string()).collect();
    imports.sort();
    assert_eq!(imports, ["log", "wasm-replicaset:policy/types@0.1.0"]);
    let mut exports: Vec<String> =
        component.component_type().exports(&engine).map(|(name, _)| name.to_string()).collect();
    exports.sort();
    assert_eq!(exports, ["reconcile", "status-after-scale-error"]);
}

#[test]
fn the_default_policy_loads_and_reports_its_digest_and_contract_version() {
    let module = sandbox().compile(DEFAULT_POLICY).unwrap();
    assert_eq!(module.contract_version, "0.1.0");
    assert_eq!(module.size, DEFAULT_POLICY.len());
    assert!(module.digest.to_string().starts_with("sha256:"));
}

#[test]
fn the_default_policy_is_smaller_than_300_kb() {
    assert!(DEFAULT_POLICY.len() < 300 * 1024, "{} bytes", DEFAULT_POLICY.len());
}

#[test]
fn a_file_that_is_not_wasm_is_refused_in_one_line() {
    let err = sandbox().compile(b"#!/bin/sh\necho hi\n").unwrap_err();
    assert!(matches!(err, LoadError::NotWasm), "{err}");
    assert_eq!(err.to_string().lines().count(), 1);
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    // The smallest valid core module: magic + version 1.
    let err = sandbox().compile(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(matches!(err, LoadError::CoreModule), "{err}");
}

#[test]
fn truncated_component_bytes_are_refused_as_invalid() {
    let err = sandbox().compile(&DEFAULT_POLICY[..DEFAULT_POLICY.len() / 2]).unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
    assert_eq!(err.to_string().lines().count(), 1, "{err}");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let err = sandbox().compile(test_guests::OTHER_WORLD).unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    assert!(err.to_string().contains("reconcile"), "{err}");
}

#[test]
fn a_component_importing_wasi_is_refused_naming_the_import() {
    let err = sandbox().compile(test_guests::WASI).unwrap_err();
    assert!(matches!(err, LoadError::ForbiddenImport(ref name) if name == "wasi:clocks/wall-clock@0.2.0"), "{err}");
}

#[test]
fn a_component_of_another_contract_version_is_refused() {
    let err = sandbox().compile(test_guests::NEXT_CONTRACT).unwrap_err();
    assert!(matches!(err, LoadError::WrongVersion { ref found, .. } if found == "0.2.0"), "{err}");
}

#[test]
fn a_guest_that_loops_forever_runs_out_of_fuel_the_same_way_every_time() {
    let sandbox = sandbox();
    let module = sandbox.compile(test_guests::SPIN).unwrap();
    let budget = |e: host::sandbox::GuestError| match e.failure {
        GuestFailure::OutOfFuel { budget } => budget,
        other => panic!("expected fuel exhaustion, got {other}"),
    };
    let first = budget(sandbox.reconcile_blocking(&module, "default/foobar", &snapshot()).unwrap_err());
    let second = budget(sandbox.reconcile_blocking(&module, "default/foobar", &snapshot()).unwrap_err());
    assert_eq!(first, second);
    // The base, 100 k per pod, 2 k per label of the snapshot's label sets (app, foo twice).
    assert_eq!(first, CallBudget::for_snapshot(sandbox.limits(), &snapshot()).fuel);
    assert_eq!(first, 20_000_000 + 5 * 100_000 + 2 * 2_000);
}

#[test]
fn a_guest_that_loops_forever_with_unbounded_fuel_hits_the_deadline() {
    let limits = SandboxLimits { fuel_base: u64::MAX / 2, deadline: Duration::from_millis(100), ..Default::default() };
    let sandbox = Sandbox::new(limits).unwrap();
    let module = sandbox.compile(test_guests::SPIN).unwrap();
    let started = std::time::Instant::now();
    let err = sandbox.reconcile_blocking(&module, "default/foobar", &snapshot()).unwrap_err();
    assert!(matches!(err.failure, GuestFailure::Deadline(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.to_string().contains(&module.digest.short()), "{err}");
}

#[test]
fn a_guest_that_allocates_without_bound_hits_the_memory_cap() {
    let limits = SandboxLimits { memory_bytes: 16 << 20, ..Default::default() };
    let sandbox = Sandbox::new(limits).unwrap();
    let module = sandbox.compile(test_guests::OOM).unwrap();
    let err = sandbox.reconcile_blocking(&module, "default/foobar", &snapshot()).unwrap_err();
    match err.failure {
        GuestFailure::MemoryLimit { desired, limit } => {
            // 16 MiB plus 4 bytes per byte of the snapshot's text.
            assert_eq!(limit, (16 << 20) + 4 * input_bytes(&snapshot()));
            assert!(desired > limit);
        }
        other => panic!("expected the memory cap, got {other}"),
    }
}

#[test]
fn a_guest_that_panics_is_a_trap_carrying_its_last_error_log() {
    let sandbox = sandbox();
    let module = sandbox.compile(test_guests::PANIC).unwrap();
    let err = sandbox.reconcile_blocking(&module, "default/foobar", &snapshot()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err.failure, GuestFailure::Trap { .. }), "{text}");
    assert!(text.contains("unreachable"), "{text}");
    assert!(text.contains("panics on every call (5 pods)"), "{text}");
    assert_eq!(text.lines().count(), 1);
}

#[test]
fn a_plan_deleting_pods_the_replica_set_does_not_own_is_rejected() {
    let sandbox = sandbox();
    let module = sandbox.compile(test_guests::BAD_PLAN).unwrap();
    let err = sandbox.reconcile_blocking(&module, "default/foobar", &snapshot()).unwrap_err();
    // Pods 0-2 are owned; 3 is an orphan, the first one the guard rails refuse.
    assert!(matches!(err.failure, GuestFailure::InvalidPlan(Violation::DeleteNotOwned { index: 3 })), "{err}");
}

#[test]
fn the_sandbox_keeps_serving_after_every_kind_of_failure() {
    let limits = SandboxLimits { memory_bytes: 16 << 20, ..Default::default() };
    let sandbox = Sandbox::new(limits).unwrap();
    let good = sandbox.compile(DEFAULT_POLICY).unwrap();
    for bad in [test_guests::SPIN, test_guests::OOM, test_guests::PANIC, test_guests::BAD_PLAN] {
        let module = sandbox.compile(bad).unwrap();
        assert!(sandbox.reconcile_blocking(&module, "default/foobar", &snapshot()).is_err());
        let (outcome, _) = sandbox.reconcile_blocking(&good, "default/foobar", &snapshot()).unwrap();
        assert!(outcome.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_call_the_sandbox_at_once_without_blocking_the_runtime() {
    let sandbox = sandbox();
    let module = sandbox.load(DEFAULT_POLICY.to_vec()).await.unwrap();
    let slow = sandbox.load(test_guests::SLOW.to_vec()).await.unwrap();
    // Large snapshots go to the blocking pool; the slow guest on a small one is tried on the
    // async worker under the probe's small fuel cap, then moved to the pool.
    let large = Arc::new(snapshot_of(host::sandbox::INLINE_PODS + 1));
    let small = Arc::new(snapshot());
    let key: Arc<str> = Arc::from("default/foobar");
    // A ticker on the runtime must keep ticking while 64 calls run: the longest gap between two
    // ticks is how long the runtime was kept from other work.
    let longest_gap = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let ticker = {
        let longest_gap = longest_gap.clone();
        tokio::spawn(async move {
            let mut last = std::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let gap = last.elapsed();
                last = std::time::Instant::now();
                let mut longest = longest_gap.lock().unwrap();
                *longest = (*longest).max(gap);
            }
        })
    };
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let (module, snapshot) = if i % 2 == 0 { (&module, &large) } else { (&slow, &small) };
            let (sandbox, module, key, snapshot) = (sandbox.clone(), module.clone(), key.clone(), snapshot.clone());
            tokio::spawn(async move { sandbox.reconcile(&module, &key, &snapshot).await })
        })
        .collect();
    for call in calls {
        let (outcome, stats) = call.await.unwrap().unwrap();
        assert!(outcome.is_ok());
        assert!(stats.fuel > 0);
    }
    ticker.abort();
    let longest_gap = *longest_gap.lock().unwrap();
    eprintln!("longest gap between ticks: {longest_gap:?}");
    assert!(longest_gap < Duration::from_millis(250), "the runtime stalled for {longest_gap:?}");
}

#[test]
fn call_stats_report_fuel_and_memory() {
    let sandbox = sandbox();
    let module = sandbox.compile(DEFAULT_POLICY).unwrap();
    let (_, stats) = sandbox.reconcile_blocking(&module, "default/foobar", &snapshot()).unwrap();
    assert!(stats.fuel > 0 && stats.fuel < 20_000_000, "{stats:?}");
    assert!(stats.memory_high_water > 0, "{stats:?}");
}

#[test]
fn every_call_starts_from_a_pristine_instance() {
    // The guest counts its calls in a static and leaks memory each time; reused instances (or
    // a pool slot handed back without its memory reset) would show a count above 1.
    let sandbox = sandbox();
    let module = sandbox.compile(test_guests::STATEFUL).unwrap();
    for _ in 0..20 {
        let (plan, stats) = sandbox.reconcile_blocking(&module, "default/foobar", &snapshot()).unwrap();
        assert_eq!(plan.unwrap().requeue_after, Some(1_000_000_000), "a call saw state from an earlier one");
        assert!(stats.memory_high_water < 4 << 20, "{} bytes", stats.memory_high_water);
    }
}

#[test]
fn a_module_loaded_from_the_module_cache_plans_like_a_compiled_one() {
    let dir = std::env::temp_dir().join(format!("sandbox-module-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sandbox = Sandbox::with_module_cache(SandboxLimits::default(), &dir).unwrap();
    let compiled = sandbox.compile(DEFAULT_POLICY).unwrap();
    // A second sandbox stands for the next start of the process.
    let restarted = Sandbox::with_module_cache(SandboxLimits::default(), &dir).unwrap();
    let cached = restarted.compile(DEFAULT_POLICY).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!((compiled.compiled, cached.compiled), (Compiled::Fresh, Compiled::Cached));
    let (expected, _) = sandbox.reconcile_blocking(&compiled, "default/foobar", &snapshot()).unwrap();
    let (actual, _) = restarted.reconcile_blocking(&cached, "default/foobar", &snapshot()).unwrap();
    assert_eq!(actual.unwrap(), expected.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_call_that_outgrows_the_inline_probe_is_run_again_with_its_whole_budget() {
    let sandbox = sandbox();
    let slow = sandbox.load(test_guests::SLOW.to_vec()).await.unwrap();
    let snapshot = Arc::new(snapshot());
    assert!(snapshot.pods.len() <= host::sandbox::INLINE_PODS, "the fixture is a small snapshot");
    let (outcome, stats) = sandbox.reconcile(&slow, &Arc::from("default/foobar"), &snapshot).await.unwrap();
    assert!(outcome.is_ok());
    assert!(stats.fuel > host::sandbox::INLINE_FUEL, "the plan came from the second run: {stats:?}");
    // And it costs what the same call costs on the calling thread.
    let (_, blocking) = sandbox.reconcile_blocking(&slow, "default/foobar", &snapshot).unwrap();
    assert_eq!(stats.fuel, blocking.fuel);
}
