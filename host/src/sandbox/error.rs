//! Typed failures of loading a policy module and of calling one.

use std::time::Duration;

use super::{guard_rails::Violation, module::Digest};

/// Why a module was refused at load time. Every variant renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with the \\0asm magic)")]
    NotWasm,
    /// A core module: policies must be components.
    #[error("a core WebAssembly module, not a component (encode it with `wasm-tools component new`)")]
    CoreModule,
    /// Compilation or validation failed.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component asks for a capability the sandbox never grants.
    #[error("imports `{0}`, but a policy may import only `log` (no WASI, no other capabilities)")]
    ForbiddenImport(String),
    /// The component was built against another version of the contract.
    #[error("implements contract {found}, but this host implements {expected}")]
    WrongVersion {
        /// The version the component imports.
        found: String,
        /// The version this host implements.
        expected: &'static str,
    },
    /// The component's imports or exports do not match the world.
    #[error("does not implement world {world}: {reason}")]
    WrongWorld {
        /// The world this host expects.
        world: &'static str,
        /// What did not match.
        reason: String,
    },
}

impl LoadError {
    /// A short, stable label for reports (the conformance command, JUnit failure types).
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotWasm => "not_wasm",
            Self::CoreModule => "core_module",
            Self::Invalid(_) => "invalid_component",
            Self::ForbiddenImport(_) => "forbidden_import",
            Self::WrongVersion { .. } => "wrong_version",
            Self::WrongWorld { .. } => "wrong_world",
        }
    }
}

/// A call into a module that failed; names the module and the cause in one line.
#[derive(Debug, thiserror::Error)]
#[error("policy module {}: {failure}", digest.short())]
pub struct GuestError {
    /// The module that failed.
    pub digest: Digest,
    /// What went wrong.
    pub failure: GuestFailure,
}

/// What went wrong in a guest call.
#[derive(Debug, thiserror::Error)]
pub enum GuestFailure {
    /// The call used its whole fuel budget (deterministic for a given snapshot).
    #[error("ran out of fuel (budget {budget} units)")]
    OutOfFuel {
        /// The budget the call had.
        budget: u64,
    },
    /// The call ran past its wall-clock deadline.
    #[error("exceeded its deadline of {0:?}")]
    Deadline(Duration),
    /// The guest tried to grow its memory beyond the cap.
    #[error("exceeded its memory limit (asked for {desired} bytes, limit {limit})")]
    MemoryLimit {
        /// The size the guest asked for.
        desired: usize,
        /// The cap.
        limit: usize,
    },
    /// The guest exhausted the wasm stack.
    #[error("overflowed its stack")]
    StackOverflow,
    /// The guest trapped (a panic in a Rust guest is an `unreachable` trap); `last_error_log` is
    /// the last error-level line it logged, which carries a Rust guest's panic message.
    #[error("trapped: {trap}{}", last_error_log.as_deref().map(|m| format!(" (last error it logged: {m})")).unwrap_or_default())]
    Trap {
        /// The trap.
        trap: String,
        /// The guest's last error-level log line, if any.
        last_error_log: Option<String>,
    },
    /// The guest declared the snapshot invalid: a contract mismatch between host and guest.
    #[error("rejected the snapshot as invalid: {0}")]
    RejectedSnapshot(String),
    /// The plan broke a guard rail and was not applied.
    #[error("returned a plan that breaks a guard rail: {0}")]
    InvalidPlan(#[from] Violation),
    /// Instantiation failed for a reason other than the limits above.
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
}

impl GuestFailure {
    /// A short, stable label for metrics and status reasons.
    pub fn label(&self) -> &'static str {
        match self {
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::Deadline(_) => "deadline",
            Self::MemoryLimit { .. } => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Trap { .. } => "trap",
            Self::RejectedSnapshot(_) => "rejected_snapshot",
            Self::InvalidPlan(_) => "invalid_plan",
            Self::Instantiate(_) => "instantiate",
        }
    }
}
