//! The default policy, `guest-replicaset`, built by build.rs and embedded in the binary.

/// The component's bytes.
pub const DEFAULT_POLICY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-replicaset.wasm"));
