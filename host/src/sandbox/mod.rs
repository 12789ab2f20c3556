//! Runs policy components in a sandbox: one engine, a fresh store per call, and a fuel budget,
//! memory cap, stack cap and wall-clock deadline on every call.
//!
//! A call never panics the host: a trap, fuel exhaustion, deadline, memory overrun or a plan
//! that breaks a guard rail comes back as a [`GuestError`] naming the cause and the module.
//! Calls run on tokio's blocking pool, so a slow guest never stalls the runtime, and a semaphore
//! keeps them within the pooling allocator's instance slots.

mod budget;
mod cache;
mod error;
pub mod guard_rails;
mod module;

use std::{
    sync::{Arc, Condvar, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::Semaphore;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
    component::{HasSelf, Linker},
};

pub use budget::{CallBudget, input_bytes};
pub use cache::{Compiled, ModuleCache};
pub use error::{GuestError, GuestFailure, LoadError};
pub use module::{Digest, PolicyModule};

use crate::contract::{self, Plan, ReconcileError, ReplicaSet, ReplicaSetStatus, ReplicasetPolicy, Snapshot};

/// How often the epoch advances; deadlines are whole multiples of it.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits applied to every guest call.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// Fuel each call starts with, before the allowances for what its snapshot carries.
    pub fuel_base: u64,
    /// Extra fuel per candidate pod. Fuel, unlike the deadline, is deterministic: the same
    /// snapshot either always fits its budget or always fails.
    pub fuel_per_pod: u64,
    /// Extra fuel per label of the snapshot's label sets (see [`CallBudget`]).
    pub fuel_per_label: u64,
    /// Cap on a guest's linear memory before the allowance for its input, in bytes.
    pub memory_bytes: usize,
    /// Extra linear memory per byte of input text.
    pub memory_per_input_byte: usize,
    /// The largest linear memory any call may get (an instance slot's size).
    pub memory_max_bytes: usize,
    /// Cap on the wasm stack, in bytes.
    pub max_wasm_stack: usize,
    /// Wall-clock deadline per call (rounded up to 10 ms ticks).
    pub deadline: Duration,
    /// Calls that may run at once (instance slots in the pooling allocator).
    pub max_concurrent_calls: u32,
    /// Log lines a guest may emit per call; the rest are counted and dropped.
    pub log_lines_per_call: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        // The default policy uses ~4 M fuel for 1,000 pods; these leave 20x headroom.
        Self {
            fuel_base: 20_000_000,
            fuel_per_pod: 100_000,
            fuel_per_label: 2_000,
            memory_bytes: 64 << 20,
            memory_per_input_byte: 4,
            memory_max_bytes: 256 << 20,
            max_wasm_stack: 512 << 10,
            deadline: Duration::from_secs(1),
            max_concurrent_calls: 32,
            log_lines_per_call: 32,
        }
    }
}

/// What one call cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    /// Fuel consumed.
    pub fuel: u64,
    /// Largest linear memory the guest asked for, in bytes.
    pub memory_high_water: usize,
    /// Wall time of instantiation plus the call.
    pub duration: Duration,
    /// Log lines dropped beyond the per-call budget.
    pub logs_dropped: u32,
}

/// The outcome of `reconcile`: a plan that passed the guard rails, or the policy's own refusal.
pub type ReconcileOutcome = Result<Plan, ReconcileError>;

/// The fuel a call may burn on the async worker that awaits it before it is handed to the
/// blocking pool (see [`Sandbox::run`]): 1.5x what the default policy needs for 100 pods, and a
/// fraction of a millisecond of a guest that only loops.
pub const INLINE_FUEL: u64 = 300_000;

/// Snapshots of at most this many pods are tried on the async worker first (see
/// [`Sandbox::run`]); larger ones would mostly spend the probe's fuel for nothing.
pub const INLINE_PODS: usize = 100;

/// The shared wasm engine and the linker that offers guests their only import, `log`.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<CallState>,
    limits: SandboxLimits,
    permits: Arc<Semaphore>,
    ticker: EpochTicker,
    cache: Option<ModuleCache>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("limits", &self.inner.limits).finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the engine (pooling allocator when the address space allows it) and starts the
    /// epoch ticker that enforces deadlines.
    pub fn new(limits: SandboxLimits) -> anyhow::Result<Self> {
        Self::build(limits, None)
    }

    /// [`Sandbox::new`], keeping compiled modules in `dir` across restarts (see [`ModuleCache`]).
    pub fn with_module_cache(limits: SandboxLimits, dir: &std::path::Path) -> anyhow::Result<Self> {
        Self::build(limits, Some(ModuleCache::open(dir)?))
    }

    fn build(limits: SandboxLimits, cache: Option<ModuleCache>) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(limits.max_wasm_stack)
            // Determinism: a policy must compute the same plan on every node.
            .cranelift_nan_canonicalization(true)
            .wasm_relaxed_simd(false);
        let slots = limits.max_concurrent_calls;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            // A component built by wit-component holds up to 3 core instances (main, shim, fixups).
            .total_core_instances(slots * 4)
            .total_memories(slots)
            .total_tables(slots * 4)
            .max_memory_size(limits.memory_max_bytes.max(limits.memory_bytes))
            // Resetting a slot for the next call by zeroing what stays resident is cheaper than
            // handing the pages back to the kernel and faulting them in again: 2 MiB covers the
            // stack, data and the heap a typical call touches (measured: the fixed cost of an
            // empty call fell from ~37 µs to ~20 µs, `POLICY_BENCH_PROFILE=0`).
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            // Where the kernel can say which pages a call dirtied (Linux 6.7+ PAGEMAP_SCAN), only
            // those are reset; elsewhere this falls back to resetting the resident prefix.
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = match Engine::new(&config) {
            Ok(engine) => engine,
            Err(pooling_error) => {
                // Pooling reserves address space per slot; some hosts cap virtual memory.
                tracing::warn!(error = %pooling_error, "pooling allocator unavailable, allocating instances on demand");
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&config).map_err(anyhow::Error::from).context("creating the wasm engine")?
            }
        };
        let mut linker = Linker::new(&engine);
        ReplicasetPolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("defining the `log` import")?;
        let ticker = EpochTicker::start(&engine);
        let permits = Arc::new(Semaphore::new(slots as usize));
        Ok(Self { inner: Arc::new(Inner { engine, linker, limits, permits, ticker, cache }) })
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.inner.limits
    }

    /// Compiles and validates a component (blocking: call it off the async runtime, or use
    /// [`Sandbox::load`]).
    pub fn compile(&self, bytes: &[u8]) -> Result<PolicyModule, LoadError> {
        PolicyModule::compile(&self.inner.engine, &self.inner.linker, self.inner.cache.as_ref(), bytes)
    }

    /// Compiles and validates a component on the blocking pool.
    pub async fn load(&self, bytes: Vec<u8>) -> Result<Arc<PolicyModule>, LoadError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.compile(&bytes).map(Arc::new))
            .await
            .unwrap_or_else(|join| Err(LoadError::Invalid(format!("compiler task failed: {join}"))))
    }

    /// Runs `reconcile` for one key and checks the plan's guard rails (see [`Sandbox::run`] for
    /// where the call runs).
    pub async fn reconcile(
        &self,
        module: &Arc<PolicyModule>,
        key: &Arc<str>,
        snapshot: &Arc<Snapshot>,
    ) -> Result<(ReconcileOutcome, CallStats), GuestError> {
        let budget = CallBudget::for_snapshot(&self.inner.limits, snapshot);
        let (module, key, snapshot) = (module.clone(), key.clone(), snapshot.clone());
        let small = snapshot.pods.len() <= INLINE_PODS;
        self.run(module.digest, budget, small, move |sandbox, budget, probe| {
            sandbox.reconcile_within(&module, &key, &snapshot, budget, probe)
        })
        .await
    }

    /// [`Sandbox::reconcile`] on the calling thread (tests, benchmarks, the CLI).
    pub fn reconcile_blocking(
        &self,
        module: &PolicyModule,
        key: &str,
        snapshot: &Snapshot,
    ) -> Result<(ReconcileOutcome, CallStats), GuestError> {
        let budget = CallBudget::for_snapshot(&self.inner.limits, snapshot);
        self.reconcile_within(module, key, snapshot, budget, false)
    }

    fn reconcile_within(
        &self,
        module: &PolicyModule,
        key: &str,
        snapshot: &Snapshot,
        budget: CallBudget,
        probe: bool,
    ) -> Result<(ReconcileOutcome, CallStats), GuestError> {
        let (outcome, stats) =
            self.call(module, key, budget, probe, |policy, store| policy.call_reconcile(store, snapshot))?;
        let fail = |failure| GuestError { digest: module.digest, failure };
        match outcome {
            Ok(plan) => {
                guard_rails::check_plan(snapshot, &plan).map_err(|v| fail(GuestFailure::InvalidPlan(v)))?;
                Ok((Ok(plan), stats))
            }
            Err(ReconcileError::InvalidSnapshot(why)) => Err(fail(GuestFailure::RejectedSnapshot(why))),
            Err(refusal) => Ok((Err(refusal), stats)),
        }
    }

    /// Runs `status-after-scale-error` (see [`Sandbox::run`] for where the call runs).
    pub async fn status_after_scale_error(
        &self,
        module: &Arc<PolicyModule>,
        key: &Arc<str>,
        replica_set: ReplicaSet,
        plan_status: ReplicaSetStatus,
        message: String,
        now: i64,
    ) -> Result<ReplicaSetStatus, GuestError> {
        let (module, key) = (module.clone(), key.clone());
        self.run(module.digest, CallBudget::base(&self.inner.limits), true, move |sandbox, budget, probe| {
            sandbox.status_within(&module, &key, &replica_set, &plan_status, &message, now, budget, probe)
        })
        .await
    }

    /// [`Sandbox::status_after_scale_error`] on the calling thread.
    pub fn status_after_scale_error_blocking(
        &self,
        module: &PolicyModule,
        key: &str,
        replica_set: &ReplicaSet,
        plan_status: &ReplicaSetStatus,
        message: &str,
        now: i64,
    ) -> Result<ReplicaSetStatus, GuestError> {
        let budget = CallBudget::base(&self.inner.limits);
        self.status_within(module, key, replica_set, plan_status, message, now, budget, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn status_within(
        &self,
        module: &PolicyModule,
        key: &str,
        replica_set: &ReplicaSet,
        plan_status: &ReplicaSetStatus,
        message: &str,
        now: i64,
        budget: CallBudget,
        probe: bool,
    ) -> Result<ReplicaSetStatus, GuestError> {
        let (status, _) = self.call(module, key, budget, probe, |policy, store| {
            policy.call_status_after_scale_error(store, replica_set, plan_status, message, now)
        })?;
        guard_rails::check_status(&status)
            .map_err(|v| GuestError { digest: module.digest, failure: GuestFailure::InvalidPlan(v) })?;
        Ok(status)
    }

    /// Runs a call under `budget`, holding one of the instance slots. Handing a call to the
    /// blocking pool and back costs ~40 µs, more than a small call itself, so a `small` call
    /// first runs here on the async worker with its fuel capped at [`INLINE_FUEL`] (a
    /// millisecond, even for a guest that only loops); a call that needs more is run
    /// again, from the start, on the blocking pool with its whole budget. A call is a pure
    /// function of its input on a fresh instance, so running it twice changes nothing but the
    /// time.
    async fn run<R: Send + 'static>(
        &self,
        digest: Digest,
        budget: CallBudget,
        small: bool,
        call: impl FnOnce(&Sandbox, CallBudget, bool) -> Result<R, GuestError> + Clone + Send + 'static,
    ) -> Result<R, GuestError> {
        let permit = self.inner.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        if small {
            if budget.fuel <= INLINE_FUEL {
                return call(self, budget, false);
            }
            let probe = CallBudget { fuel: INLINE_FUEL, ..budget };
            match call.clone()(self, probe, true) {
                Err(GuestError { failure: GuestFailure::OutOfFuel { .. }, .. }) => {}
                done => return done,
            }
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            call(&this, budget, false)
        })
        .await
        .unwrap_or_else(|join| Err(GuestError { digest, failure: GuestFailure::Instantiate(join.to_string()) }))
    }

    /// Instantiates `module` in a fresh store under every limit and runs `f` on it.
    fn call<R>(
        &self,
        module: &PolicyModule,
        key: &str,
        budget: CallBudget,
        probe: bool,
        f: impl FnOnce(&ReplicasetPolicy, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<(R, CallStats), GuestError> {
        let limits = &self.inner.limits;
        let _ticking = self.inner.ticker.ticking();
        let started = Instant::now();
        let state = CallState::new(key, module.digest, limits, budget.memory);
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|state| &mut state.memory);
        let fail = |failure| GuestError { digest: module.digest, failure };
        store.set_fuel(budget.fuel).map_err(|e| fail(GuestFailure::Instantiate(module::one_line(&e))))?;
        store.set_epoch_deadline(limits.deadline.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64);
        let result = module.pre.instantiate(&mut store).and_then(|policy| f(&policy, &mut store));
        let out_of_fuel = matches!(&result, Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel));
        // A probe that ran out of fuel is run again: its log lines would show twice.
        if !(probe && out_of_fuel) {
            store.data_mut().log.flush();
        }
        let state = store.data();
        let stats = CallStats {
            fuel: budget.fuel - store.get_fuel().unwrap_or(0),
            memory_high_water: state.memory.high_water,
            duration: started.elapsed(),
            logs_dropped: state.log.dropped,
        };
        if stats.logs_dropped > 0 {
            tracing::debug!(key, module = %module.digest.short(), dropped = stats.logs_dropped, "guest log lines over budget dropped");
        }
        match result {
            Ok(value) => Ok((value, stats)),
            Err(error) => Err(fail(classify(&error, store.data(), budget.fuel, limits))),
        }
    }
}

/// Turns a wasmtime error into the cause a user can act on.
fn classify(error: &wasmtime::Error, state: &CallState, budget: u64, limits: &SandboxLimits) -> GuestFailure {
    if let Some(desired) = state.memory.refused {
        return GuestFailure::MemoryLimit { desired, limit: state.memory.limit };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => GuestFailure::OutOfFuel { budget },
        Some(Trap::Interrupt) => GuestFailure::Deadline(limits.deadline),
        Some(Trap::StackOverflow) => GuestFailure::StackOverflow,
        Some(trap) => GuestFailure::Trap { trap: trap.to_string(), last_error_log: state.log.last_error.clone() },
        None => GuestFailure::Instantiate(module::one_line(error)),
    }
}

/// Per-call store data: the memory limiter and the guest's log sink.
pub struct CallState {
    memory: MemoryLimiter,
    log: LogSink,
}

impl CallState {
    fn new(key: &str, digest: Digest, limits: &SandboxLimits, memory: usize) -> Self {
        Self {
            memory: MemoryLimiter { limit: memory, high_water: 0, refused: None },
            log: LogSink {
                key: key.to_string(),
                module: digest.short(),
                remaining: limits.log_lines_per_call,
                dropped: 0,
                last_error: None,
                pending: Vec::new(),
            },
        }
    }
}

/// Caps linear memory and records the high-water mark and any refused growth.
struct MemoryLimiter {
    limit: usize,
    high_water: usize,
    refused: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            // An error (not `Ok(false)`) traps at once instead of letting the guest's allocator
            // abort later with a less precise `unreachable`.
            return Err(wasmtime::Error::msg(format!("memory limit {} exceeded", self.limit)));
        }
        self.high_water = self.high_water.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Collects a call's guest log lines, within a budget, and forwards them to tracing with the key
/// and module attached once the call is over (see [`Sandbox::run`] for why not at once).
struct LogSink {
    key: String,
    module: String,
    remaining: u32,
    dropped: u32,
    last_error: Option<String>,
    pending: Vec<(contract::Level, String, String)>,
}

impl LogSink {
    fn flush(&mut self) {
        let (key, module) = (&self.key, &self.module);
        for (level, message, fields) in self.pending.drain(..) {
            match level {
                contract::Level::Trace => tracing::trace!(target: "guest", key, module, fields, "{message}"),
                contract::Level::Debug => tracing::debug!(target: "guest", key, module, fields, "{message}"),
                contract::Level::Info => tracing::info!(target: "guest", key, module, fields, "{message}"),
                contract::Level::Warn => tracing::warn!(target: "guest", key, module, fields, "{message}"),
                contract::Level::Error => tracing::error!(target: "guest", key, module, fields, "{message}"),
            }
        }
    }
}

impl contract::TypesHost for CallState {}

impl contract::ReplicasetPolicyImports for CallState {
    fn log(&mut self, level: contract::Level, message: String, fields: Vec<(String, String)>) {
        let sink = &mut self.log;
        if matches!(level, contract::Level::Error) {
            sink.last_error = Some(message.chars().take(512).collect());
        }
        if sink.remaining == 0 {
            sink.dropped += 1;
            return;
        }
        sink.remaining -= 1;
        let fields = fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
        sink.pending.push((level, message, fields));
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while at least one guest call runs, and
/// sleeps otherwise: an idle controller should not wake up 100 times a second (that was most of
/// its idle CPU). The thread ends within a second of the engine being dropped.
struct EpochTicker {
    calls: Arc<(Mutex<usize>, Condvar)>,
}

/// Keeps the epoch advancing while it lives (one per guest call).
struct Ticking<'a>(&'a EpochTicker);

impl EpochTicker {
    fn start(engine: &Engine) -> Self {
        let calls = Arc::new((Mutex::new(0usize), Condvar::new()));
        let weak = engine.weak();
        let shared = calls.clone();
        thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                let (running, wake) = &*shared;
                loop {
                    let mut n = running.lock().unwrap_or_else(PoisonError::into_inner);
                    while *n == 0 {
                        let (guard, waited) =
                            wake.wait_timeout(n, Duration::from_secs(1)).unwrap_or_else(PoisonError::into_inner);
                        n = guard;
                        if waited.timed_out() && weak.upgrade().is_none() {
                            return;
                        }
                    }
                    drop(n);
                    let Some(engine) = weak.upgrade() else { return };
                    engine.increment_epoch();
                    drop(engine);
                    thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawning the epoch ticker thread");
        Self { calls }
    }

    fn ticking(&self) -> Ticking<'_> {
        let (running, wake) = &*self.calls;
        *running.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        wake.notify_one();
        Ticking(self)
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        *self.0.calls.0.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
    }
}
