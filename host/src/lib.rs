//! The mechanism of a ReplicaSet controller whose policy runs as a sandboxed WebAssembly
//! component: informers, the work queue, expectations, the sandbox, applying plans, status,
//! events, leader election, hot swap.
//!
//! Newcomers: start at [`run::Controller::start`], which wires everything, then read
//! [`engine::sync`], one sync in upstream `syncReplicaSet`'s order. Data flows one way through
//! the layers below: watch → cache/index → queue → snapshot → guest → plan → guard rails →
//! apply → status. Tools for policy authors (fixtures, dry runs, conformance) live in the
//! `policy-kit` crate, and the command line in `wasm-replicaset`; neither is needed here.

// === The policy side: the contract, the sandbox, the serving module ===
pub mod contract;
pub mod embedded;
pub mod policy;
pub mod sandbox;

// === Watch → cache/index → queue ===
pub mod informers;
pub mod queue;
pub mod selector;

// === One sync: snapshot → plan → apply → status ===
pub mod apply;
pub mod consistency;
pub mod engine;
pub mod events;
pub mod expectations;
pub mod slow_start;
pub mod snapshot;
pub mod time;

// === Around the engine: hot swap, leader election, the API client, observability ===
pub mod client;
pub mod leader;
pub mod metrics;
pub mod modules;
pub mod random;
pub mod server;
pub mod telemetry;
pub mod token_bucket;

// === Wiring ===
pub mod run;

// === Builders of API objects for tests (the `testkit` feature) ===
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
