//! Runs fixtures through a policy: the API a guest author's own tests use.
//!
//! ```no_run
//! use policy_kit::harness::Policy;
//! # fn main() -> anyhow::Result<()> {
//! let policy = Policy::from_file("target/my-policy.wasm".as_ref())?;
//! policy.check_dir("tests/fixtures".as_ref())?; // fails with one line per mismatch
//! # Ok(()) }
//! ```

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result, bail};

use host::{
    contract::{ReplicaSetStatus, Snapshot},
    embedded::DEFAULT_POLICY,
    sandbox::{CallStats, PolicyModule, ReconcileOutcome, Sandbox, SandboxLimits},
};

use crate::{fixtures::Fixture, native};

/// A policy to run fixtures through: a component in the real sandbox, or the default policy
/// compiled natively.
pub enum Policy {
    /// A component, run exactly as the controller runs it (fresh store, limits, guard rails).
    Sandboxed {
        /// The sandbox.
        sandbox: Sandbox,
        /// The compiled component.
        module: Arc<PolicyModule>,
    },
    /// The `guest-replicaset` library as native code.
    Native,
}

/// What one fixture produced.
#[derive(Debug)]
pub struct Run {
    /// The plan, or the policy's refusal.
    pub outcome: ReconcileOutcome,
    /// What `status-after-scale-error` returned, for fixtures that ask for it.
    pub status_after_scale_error: Option<ReplicaSetStatus>,
    /// Fuel, memory and time of the call (zero for native runs).
    pub stats: CallStats,
}

impl Policy {
    /// The default policy embedded in this binary, in the sandbox.
    pub fn embedded() -> Result<Self> {
        Self::from_bytes(DEFAULT_POLICY).context("loading the embedded default policy")
    }

    /// A component file, in the sandbox.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("loading {}", path.display()))
    }

    /// Component bytes, in the sandbox with default limits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let sandbox = Sandbox::new(SandboxLimits::default())?;
        let module = Arc::new(sandbox.compile(bytes)?);
        Ok(Self::Sandboxed { sandbox, module })
    }

    /// A one-line description: the module digest, or "native".
    pub fn describe(&self) -> String {
        match self {
            Self::Sandboxed { module, .. } => format!("{} ({} bytes)", module.digest, module.size),
            Self::Native => "guest-replicaset (native)".to_string(),
        }
    }

    /// Runs one snapshot; a guest failure (trap, fuel, guard rail, ...) is an error.
    pub fn reconcile(&self, key: &str, snapshot: &Snapshot) -> Result<(ReconcileOutcome, CallStats)> {
        match self {
            Self::Sandboxed { sandbox, module } => Ok(sandbox.reconcile_blocking(module, key, snapshot)?),
            Self::Native => Ok((native::reconcile(&native::NativeSnapshot::new(snapshot)), CallStats::default())),
        }
    }

    /// Runs a fixture (and its scale-error case, if any).
    pub fn run(&self, fixture: &Fixture) -> Result<Run> {
        let key = format!("{}/{}", fixture.snapshot.replica_set.namespace, fixture.snapshot.replica_set.name);
        let (outcome, stats) = self.reconcile(&key, &fixture.snapshot)?;
        let status_after_scale_error = match (&fixture.scale_error, &outcome) {
            (Some(case), Ok(plan)) => {
                let rs = &fixture.snapshot.replica_set;
                let now = fixture.snapshot.now;
                Some(match self {
                    Self::Sandboxed { sandbox, module } => {
                        sandbox.status_after_scale_error_blocking(module, &key, rs, &plan.status, &case.message, now)?
                    }
                    Self::Native => native::status_after_scale_error(rs, &plan.status, &case.message, now),
                })
            }
            _ => None,
        };
        Ok(Run { outcome, status_after_scale_error, stats })
    }

    /// Runs a fixture and compares the result with its expectation.
    pub fn check(&self, fixture: &Fixture) -> Result<Run> {
        if fixture.expect.is_none() {
            bail!("fixture {} has no `expect` section", fixture.name);
        }
        let run = self.run(fixture)?;
        fixture.check(&run.outcome)?;
        if let Some(status) = &run.status_after_scale_error {
            fixture.check_scale_error_status(status)?;
        }
        Ok(run)
    }

    /// Checks every fixture under `dir`; the error lists each failing fixture on its own line.
    pub fn check_dir(&self, dir: &Path) -> Result<usize> {
        let fixtures = Fixture::load_dir(dir)?;
        let failures: Vec<String> =
            fixtures.iter().filter_map(|f| self.check(f).err().map(|e| format!("{}: {e:#}", f.name))).collect();
        if !failures.is_empty() {
            bail!("{} of {} fixtures failed:\n{}", failures.len(), fixtures.len(), failures.join("\n"));
        }
        Ok(fixtures.len())
    }
}
