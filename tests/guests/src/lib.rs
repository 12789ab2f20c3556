//! Test-only components that misbehave in one way each, for the sandbox's failure tests.

macro_rules! guest {
    ($(#[$doc:meta])* $name:ident, $file:literal) => {
        $(#[$doc])*
        pub const $name: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/", $file, ".wasm"));
    };
}

guest!(
    /// Loops forever in `reconcile`.
    SPIN, "spin"
);
guest!(
    /// Allocates without bound in `reconcile`.
    OOM, "oom"
);
guest!(
    /// Panics (a Rust panic is a wasm `unreachable` trap) in every export, after logging why.
    PANIC, "panic"
);
guest!(
    /// Plans to delete every candidate pod, whoever owns it.
    BAD_PLAN, "bad-plan"
);
guest!(
    /// Busy-waits about `replica-set.replicas` milliseconds' worth of work, then returns an empty
    /// plan: for tests that need a call to be in flight.
    SLOW, "slow"
);
guest!(
    /// The upstream policy, except that it panics for ReplicaSets whose name starts with `boom`:
    /// it passes the conformance cases, then fails in production (for rollback tests).
    TRAP_ON_BOOM, "trap-on-boom"
);
guest!(
    /// Counts its calls in a static and leaks memory on each: `requeue-after` is the count in
    /// seconds, so a call that does not start from a pristine instance shows.
    STATEFUL, "stateful"
);
guest!(
    /// The example guest `examples/guest-newest-first`: scale-downs delete the newest pods.
    NEWEST_FIRST, "newest-first"
);
guest!(
    /// A component of an unrelated world (`exports hello`).
    OTHER_WORLD, "other-world"
);
guest!(
    /// The right world plus a `wasi:clocks/wall-clock` import.
    WASI, "wasi"
);
guest!(
    /// Built against contract 0.2.0 of `wasm-replicaset:policy`.
    NEXT_CONTRACT, "next-contract"
);
