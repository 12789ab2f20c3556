//! What the rollout needs to know about a compiled module (its source, digest and identity),
//! and the host's module handle, `Arc<Serving>`, which provides it.

use std::{fmt, sync::Arc};

use crate::{
    policy::{Serving, Source},
    sandbox::Digest,
};

/// What the rollout needs to know about a compiled module. None of it needs wasm, so the rules
/// are tested with plain values; the host's handle is `Arc<Serving>`.
pub trait Module: Clone + fmt::Debug {
    /// Where it came from.
    fn source(&self) -> &Source;
    /// The sha256 of its bytes: two uploads of the same bytes have the same digest.
    fn digest(&self) -> Digest;
    /// The contract version it implements.
    fn contract_version(&self) -> &str;
    /// Whether `other` is this very handle, not merely the same bytes: the policy asks to roll
    /// back the handle that failed, and a later upload of the same bytes is another handle.
    fn is(&self, other: &Self) -> bool;

    /// Whether it came from the object with `uid` (any generation). A re-created object has
    /// another UID, so it is another source.
    fn comes_from(&self, uid: &str) -> bool {
        !uid.is_empty() && matches!(self.source(), Source::Object { uid: u, .. } if u == uid)
    }
}

/// The host's module handle: identity is the `Arc` (the policy's rollback request names it).
impl Module for Arc<Serving> {
    fn source(&self) -> &Source {
        &self.source
    }

    fn digest(&self) -> Digest {
        self.module.digest
    }

    fn contract_version(&self) -> &str {
        &self.module.contract_version
    }

    fn is(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
    }
}
