//! One `reconcile` call, sandboxed vs native, for ReplicaSets of 10 to 5,000 pods scaling down by
//! half (so the deletion ranking runs). The sandboxed figure is what production pays per sync:
//! a fresh store, instantiation, lowering the snapshot, the call, lifting the plan, guard rails.
//!
//! Run: `cargo bench -p policy-kit --bench policy` (prints a Markdown table; no assertions).

use std::time::{Duration, Instant};

use host::{
    contract::{Controller, LabelSelector, Node, Pod, PodPhase, ReplicaSet, ReplicaSetStatus, Snapshot},
    embedded::DEFAULT_POLICY,
    sandbox::{Compiled, PolicyModule, Sandbox, SandboxLimits},
    snapshot::StringTable,
};
use policy_kit::native::{self, NativeSnapshot};

const NOW: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const SECOND: i64 = 1_000_000_000;

/// `pods` owned, running pods on `pods / 10` nodes with varied readiness, restarts and ages;
/// spec.replicas is half of them.
fn scale_down_snapshot(pods: usize) -> Snapshot {
    let mut strings = StringTable::default();
    let labels = strings.label_set([("app", "web"), ("pod-template-hash", "6d4cf56db6")].into_iter());
    let node_count = (pods / 10).max(1);
    let nodes: Vec<Node> =
        (0..node_count).map(|n| Node { name: format!("node-{n}"), related_active_pods: (n % 7) as u32 + 1 }).collect();
    let candidates = (0..pods)
        .map(|i| {
            let name = format!("web-6d4cf56db6-{i:05x}");
            let uid = format!("{:08x}-1111-2222-3333-{:012x}", i * 7919, i);
            Pod {
                name: strings.span(&name),
                namespace: strings.shared_span("default"),
                uid: strings.span(&uid),
                labels,
                controller: Controller::ThisReplicaSet,
                creation_timestamp: Some(NOW - (i as i64 % 500) * 60 * SECOND),
                deletion_timestamp: None,
                deletion_cost: (i % 50 == 0).then(|| strings.span("10")),
                phase: if i % 20 == 0 { PodPhase::Pending } else { PodPhase::Running },
                node: (i % node_count) as u32,
                ready: i % 20 != 0,
                ready_transition: Some(NOW - (i as i64 % 300) * 17 * SECOND),
                max_container_restarts: (i % 3) as u32,
                max_sidecar_restarts: 0,
            }
        })
        .collect();
    let (label_sets, pod_strings) = strings.finish();
    let status = ReplicaSetStatus {
        replicas: pods as i32,
        fully_labeled_replicas: pods as i32,
        ready_replicas: 0,
        available_replicas: 0,
        terminating_replicas: Some(0),
        observed_generation: 1,
        conditions: vec![],
    };
    Snapshot {
        replica_set: ReplicaSet {
            namespace: "default".into(),
            name: "web-6d4cf56db6".into(),
            uid: "rs-uid".into(),
            generation: 2,
            deletion_timestamp: None,
            replicas: (pods / 2) as i32,
            min_ready_seconds: 0,
            selector: LabelSelector {
                match_labels: vec![host::contract::Label { key: "app".into(), value: "web".into() }],
                match_expressions: vec![],
            },
            template_labels: labels,
            status,
        },
        pods: candidates,
        label_sets,
        nodes,
        pod_strings,
        expectations_satisfied: true,
        now: NOW,
        burst_replicas: 500,
    }
}

/// Median of `runs` timings of `f`, after a warm-up, with the iteration count adapted so each
/// sample lasts at least a millisecond.
fn median(mut f: impl FnMut()) -> Duration {
    for _ in 0..3 {
        f();
    }
    let probe = Instant::now();
    f();
    let per_sample = (Duration::from_millis(1).as_nanos() / probe.elapsed().as_nanos().max(1)).clamp(1, 1000) as u32;
    let mut samples: Vec<Duration> = (0..31)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_sample {
                f();
            }
            t.elapsed() / per_sample
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

/// `POLICY_BENCH_PROFILE=<pods>`: calls the sandbox on a snapshot of that many pods for ten
/// seconds and nothing else, for `perf record` to look at.
fn profile(sandbox: &Sandbox, module: &PolicyModule, pods: usize) {
    let snapshot = scale_down_snapshot(pods);
    let until = Instant::now() + Duration::from_secs(10);
    let mut calls = 0u64;
    while Instant::now() < until {
        sandbox.reconcile_blocking(module, "default/web", &snapshot).expect("sandboxed call").0.expect("a plan");
        calls += 1;
    }
    println!("{calls} calls of {pods} pods in 10 s: {:.1} µs each", 1e7 / calls as f64);
}

/// What loading the default policy costs at start-up: compiling it, and loading it from the
/// module cache (`--module-cache-dir`) as every start after the first does.
fn load_times() {
    let dir = std::env::temp_dir().join(format!("policy-bench-cache-{}", std::process::id()));
    let sandbox = Sandbox::with_module_cache(SandboxLimits::default(), &dir).expect("sandbox");
    let compiled = sandbox.compile(DEFAULT_POLICY).expect("compiles");
    let cached = median(|| {
        let module = sandbox.compile(DEFAULT_POLICY).expect("loads");
        assert_eq!(module.compiled, Compiled::Cached);
    });
    std::fs::remove_dir_all(&dir).expect("removing the bench's module cache");
    println!(
        "loading it: compiled {:.1} ms; from the module cache {:.1} ms (median)\n",
        compiled.compile_time.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3
    );
}

/// What a small call costs awaited from a multi-threaded runtime, as the engine's workers await
/// it: handed to tokio's blocking pool (as every call was before), and through
/// `Sandbox::reconcile`, which runs small calls on the async worker.
fn hop(sandbox: &Sandbox) {
    use std::sync::Arc;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let module = Arc::new(sandbox.compile(DEFAULT_POLICY).expect("compiles"));
    let key: Arc<str> = "default/web".into();
    println!("| pods | handed to the blocking pool | `Sandbox::reconcile` | saved |");
    println!("|---:|---:|---:|---:|");
    for pods in [1usize, 10, 100] {
        let snapshot = Arc::new(scale_down_snapshot(pods));
        let pooled = median(|| {
            let (sandbox, module, snapshot) = (sandbox.clone(), module.clone(), snapshot.clone());
            runtime.block_on(async move {
                tokio::spawn(async move {
                    tokio::task::spawn_blocking(move || sandbox.reconcile_blocking(&module, "default/web", &snapshot))
                        .await
                        .expect("blocking task")
                        .expect("call")
                        .0
                        .expect("a plan")
                })
                .await
                .expect("task")
            });
        });
        let awaited = median(|| {
            let (sandbox, module, key, snapshot) = (sandbox.clone(), module.clone(), key.clone(), snapshot.clone());
            runtime.block_on(async move {
                tokio::spawn(async move {
                    sandbox.reconcile(&module, &key, &snapshot).await.expect("call").0.expect("a plan")
                })
                .await
                .expect("task")
            });
        });
        println!(
            "| {pods} | {:.1} µs | {:.1} µs | {:.1} µs |",
            pooled.as_secs_f64() * 1e6,
            awaited.as_secs_f64() * 1e6,
            (pooled.as_secs_f64() - awaited.as_secs_f64()) * 1e6
        );
    }
    println!();
}

fn main() {
    let sandbox = Sandbox::new(SandboxLimits::default()).expect("sandbox");
    let module = sandbox.compile(DEFAULT_POLICY).expect("the default policy compiles");
    if let Some(pods) = std::env::var("POLICY_BENCH_PROFILE").ok().and_then(|p| p.parse().ok()) {
        return profile(&sandbox, &module, pods);
    }
    println!("default policy: {} ({} bytes)\n", module.digest, module.size);
    load_times();
    hop(&sandbox);
    println!(
        "| pods | deletes | sandboxed (median) | native (median) | sandbox / native | fuel per call | guest memory |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for pods in [0usize, 10, 100, 1000, 5000] {
        let snapshot = scale_down_snapshot(pods);
        let native_snapshot = NativeSnapshot::new(&snapshot);
        let (outcome, stats) = sandbox.reconcile_blocking(&module, "default/web", &snapshot).expect("sandboxed call");
        let plan = outcome.expect("a plan");
        assert_eq!(Ok(plan.clone()), native::reconcile(&native_snapshot), "sandbox and native disagree");
        let sandboxed = median(|| {
            let (outcome, _) = sandbox.reconcile_blocking(&module, "default/web", &snapshot).expect("sandboxed call");
            outcome.expect("a plan");
        });
        let native = median(|| {
            native::reconcile(&native_snapshot).expect("native call");
        });
        println!(
            "| {pods} | {} | {:.1} µs | {:.1} µs | {:.2}× | {} | {} KiB |",
            plan.delete.len(),
            sandboxed.as_secs_f64() * 1e6,
            native.as_secs_f64() * 1e6,
            sandboxed.as_secs_f64() / native.as_secs_f64(),
            stats.fuel,
            stats.memory_high_water >> 10
        );
    }
}
