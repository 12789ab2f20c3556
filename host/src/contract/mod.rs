//! The policy contract (`wit/replicaset.wit`) as Rust types: the host's only `bindgen!` site.
//!
//! Everything that crosses into a guest is built from these types; the rest of the host never
//! sees wasmtime's generated code except through this module.

pub mod convert;
mod display;
pub mod native;

// The generated items are documented from the WIT where wasmtime's bindgen carries the docs over;
// the rest (constructors, accessors, trait plumbing) is its own.
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "replicaset-policy",
        // Plans are compared (shadow mode, fixtures) and label sets interned by value.
        additional_derives: [PartialEq, Eq, Hash],
    });
}

pub use display::Conditions;

pub use bindings::{
    ReplicasetPolicy, ReplicasetPolicyImports, ReplicasetPolicyPre,
    wasm_replicaset::policy::types::{
        Condition, Controller, Host as TypesHost, Label, LabelSelector, Level, Node, Plan, Pod, PodPhase,
        ReconcileError, ReplicaSet, ReplicaSetStatus, SelectorRequirement, Snapshot, Span,
    },
};

/// The WIT package this host implements; components must import its `types` interface.
pub const PACKAGE: &str = "wasm-replicaset:policy";
/// The contract version (the WIT package version).
pub const VERSION: &str = "0.1.0";
/// The world every policy component must implement.
pub const WORLD: &str = "wasm-replicaset:policy/replicaset-policy@0.1.0";
