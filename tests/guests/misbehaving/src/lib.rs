//! One guest, seven misbehaviours, picked by cargo feature at build time.
// Each feature leaves the code of the others unreachable or unused.
#![allow(unreachable_code, unused_variables, dead_code)]

use guest_replicaset::{bindings, types};

struct Misbehaving;

fn empty_plan(snapshot: &types::Snapshot) -> types::Plan {
    types::Plan {
        adopt: vec![],
        release: vec![],
        create: 0,
        delete: vec![],
        status: snapshot.replica_set.status.clone(),
        requeue_after: None,
    }
}

impl bindings::Guest for Misbehaving {
    fn reconcile(snapshot: types::Snapshot) -> Result<types::Plan, types::ReconcileError> {
        #[cfg(feature = "spin")]
        {
            let mut x = snapshot.now as u64;
            loop {
                x = std::hint::black_box(x ^ (x << 13) ^ (x >> 7));
            }
        }
        #[cfg(feature = "oom")]
        {
            // Reserve without touching: filling would spend fuel (bulk memory is metered) and
            // hit the fuel budget before the memory cap this guest exists to test.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(Vec::with_capacity(1 << 20)));
            }
        }
        #[cfg(feature = "panic")]
        {
            panic_with_log(&format!("the test guest panics on every call ({} pods)", snapshot.pods.len()));
        }
        #[cfg(feature = "bad-plan")]
        {
            let mut plan = empty_plan(&snapshot);
            plan.delete = (0..snapshot.pods.len() as u32).collect();
            return Ok(plan);
        }
        #[cfg(feature = "trap-on-boom")]
        {
            if snapshot.replica_set.name.starts_with("boom") {
                panic_with_log(&format!("refusing ReplicaSet {}", snapshot.replica_set.name));
            }
            return guest_replicaset::reconcile(&snapshot);
        }
        #[cfg(feature = "stateful")]
        {
            // Tries to carry state from one call to the next: a counter in a static and a
            // heap allocation it leaks. On a pristine instance every call reads 1.
            static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            std::mem::forget(std::hint::black_box(vec![0u8; 64 << 10]));
            let mut plan = empty_plan(&snapshot);
            plan.requeue_after = Some(calls * 1_000_000_000);
            return Ok(plan);
        }
        #[cfg(feature = "slow")]
        {
            let mut x = 1u64;
            for _ in 0..(snapshot.replica_set.replicas.max(0) as u64 * 200_000) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        Ok(empty_plan(&snapshot))
    }

    fn status_after_scale_error(
        _rs: types::ReplicaSet,
        status: types::ReplicaSetStatus,
        _message: String,
        _now: i64,
    ) -> types::ReplicaSetStatus {
        #[cfg(feature = "panic")]
        panic_with_log("the test guest panics on every call");
        #[cfg(feature = "trap-on-boom")]
        return guest_replicaset::status_after_scale_error(&_rs, status, &_message, _now);
        status
    }
}

/// Logs the message at error level (as a panic hook would) and panics.
#[cfg(any(feature = "panic", feature = "trap-on-boom"))]
fn panic_with_log(message: &str) -> ! {
    bindings::log(types::Level::Error, message, &[]);
    panic!("{message}");
}

#[cfg(target_arch = "wasm32")]
bindings::export_policy!(Misbehaving);
