//! Tools for policy authors: pin a reconcile down in a YAML fixture, run fixtures through any
//! component in the real sandbox (or the default policy natively), check a module against the
//! conformance cases every ReplicaSet policy must pass, record live syncs as fixtures, and render
//! plans for people.
//!
//! Start at [`harness::Policy`]: `Policy::from_file(path)?.check_dir(dir)?` is a guest author's
//! whole test; [`suite`] is the same check as a command for CI, and [`record`] turns what
//! happened in a cluster into fixtures. The controller itself (`host`) does not depend on this
//! crate.

pub mod conformance;
pub mod dry_run;
pub mod fixtures;
pub mod harness;
pub mod junit;
pub mod native;
pub mod record;
pub mod render;
pub mod suite;
