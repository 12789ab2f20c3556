//! The differential check: the same scripted [`Scenario`]s run once under kube-controller-manager
//! (upstream's ReplicaSet controller) and once under the host, each run on a fresh private control
//! plane, and their [`EndState`]s compared: pods per ReplicaSet (by a stable id the scenario
//! gives them, so "which pods survived a scale-down" is comparable), the status fields, and the
//! set of Event reasons.
//!
//! The scenarios play kubelet and scheduler through the API as they would (readiness and restarts
//! through the pods' status subresource, nodes through `pods/binding`, deletion cost through the
//! annotation), and include a scale-down decided by each rule of upstream's deletion ranking; see
//! [`scenarios`] for what can and cannot be made deterministic on a real API server.
//!
//! A scenario is a list of [`Step`]s (create/scale a ReplicaSet, wait until it has converged,
//! give its pods stable ids, play kubelet or scheduler on a pod by id, create orphans, relabel,
//! delete, set a quota, snapshot an intermediate state); [`runner::run`] plays one against one
//! [`Controller`] on a fresh control plane; [`run_all`] plays each scenario under both (the two
//! runs at once, several scenarios at once) and [`render_table`] shows the results. A difference
//! fails unless it is listed in [`compare::INTENTIONAL`] (an upstream bug the host fixes on
//! purpose, which the README must name; none so far).
//!
//! Used by `cargo test -p tests --test differential` and
//! `cargo run -p tests --bin differential [-- --scenario NAME]... [--keep-going]`.

pub mod capture;
pub mod compare;
pub mod end_state;
pub mod live_scenarios;
pub mod runner;
pub mod scenario;
pub mod scenarios;

pub use compare::{Outcome, Verdict, parallelism_from_env, render_table, run_all};
pub use end_state::{EndState, FieldDiff};
pub use runner::{Controller, RunResult, run};
pub use scenario::{FakeOwner, Scenario, Since, Step};
