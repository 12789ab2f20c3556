//! A compiled, validated policy component and its identity (sha256 digest, contract version).

use std::{fmt, time::Duration};

use sha2::{Digest as _, Sha256};
use wasmtime::{
    Engine,
    component::{Component, Linker},
};

use super::{
    CallState, LoadError,
    cache::{Compiled, ModuleCache},
};
use crate::contract::{self, ReplicasetPolicyPre};

/// The sha256 of a module's bytes: its identity in logs, metrics, events and status.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The raw 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex digits, enough to tell modules apart in a log line.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.short())
    }
}

/// A policy component, compiled once and pre-instantiated, ready for a fresh store per call.
pub struct PolicyModule {
    /// The sha256 of the component's bytes.
    pub digest: Digest,
    /// The contract version the component imports (e.g. `0.1.0`).
    pub contract_version: String,
    /// The component's size in bytes.
    pub size: usize,
    /// How long compiling (or loading from the cache) and validating took.
    pub compile_time: Duration,
    /// Whether the machine code was compiled now or loaded from the module cache.
    pub compiled: Compiled,
    pub(super) pre: ReplicasetPolicyPre<CallState>,
}

impl fmt::Debug for PolicyModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyModule")
            .field("digest", &self.digest)
            .field("contract_version", &self.contract_version)
            .field("size", &self.size)
            .finish()
    }
}

impl PolicyModule {
    /// Compiles `bytes` and checks them against the world: blocking, 50-300 ms for a real module.
    pub(super) fn compile(
        engine: &Engine,
        linker: &Linker<CallState>,
        cache: Option<&ModuleCache>,
        bytes: &[u8],
    ) -> Result<Self, LoadError> {
        let started = std::time::Instant::now();
        check_header(bytes)?;
        let digest = Digest::of(bytes);
        let (component, compiled) = match cache {
            Some(cache) => cache.component(engine, bytes, digest),
            None => Component::new(engine, bytes).map(|c| (c, Compiled::Fresh)),
        }
        .map_err(|e| LoadError::Invalid(one_line(&e)))?;
        let contract_version = check_imports(engine, &component)?;
        // instantiate_pre checks every import's type; ReplicasetPolicyPre::new every export's.
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld { world: contract::WORLD, reason: one_line(&e) })?;
        let pre = ReplicasetPolicyPre::new(instance_pre)
            .map_err(|e| LoadError::WrongWorld { world: contract::WORLD, reason: one_line(&e) })?;
        Ok(Self { digest, contract_version, size: bytes.len(), compile_time: started.elapsed(), compiled, pre })
    }
}

/// Tells "not wasm" and "core module" apart from other invalid input, for a precise error.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8 are the version and layer: layer 0 is a core module, layer 1 a component.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// Allows only the `log` function and the contract's `types` interface; returns the contract
/// version the component was built against.
fn check_imports(engine: &Engine, component: &Component) -> Result<String, LoadError> {
    let types_prefix = format!("{}/types@", contract::PACKAGE);
    let mut version = None;
    for (name, _) in component.component_type().imports(engine) {
        if name == "log" {
            continue;
        }
        if let Some(found) = name.strip_prefix(&types_prefix) {
            if !same_contract_line(found, contract::VERSION) {
                return Err(LoadError::WrongVersion { found: found.to_string(), expected: contract::VERSION });
            }
            version = Some(found.to_string());
            continue;
        }
        return Err(LoadError::ForbiddenImport(name.to_string()));
    }
    Ok(version.unwrap_or_else(|| contract::VERSION.to_string()))
}

/// Semver compatibility as wasmtime's linker applies it: `0.x.*` with equal `x`, or equal major.
fn same_contract_line(a: &str, b: &str) -> bool {
    let line = |v: &str| {
        let mut parts = v.split('.');
        let major = parts.next().unwrap_or_default().to_string();
        let minor = parts.next().unwrap_or_default().to_string();
        if major == "0" { format!("0.{minor}") } else { major }
    };
    line(a) == line(b)
}

/// The first line of an error chain, without wasm backtraces.
pub(super) fn one_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    text.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions_compare_like_semver() {
        assert!(same_contract_line("0.1.0", "0.1.0"));
        assert!(same_contract_line("0.1.3", "0.1.0"));
        assert!(!same_contract_line("0.2.0", "0.1.0"));
        assert!(same_contract_line("1.4.0", "1.0.0"));
        assert!(!same_contract_line("2.0.0", "1.0.0"));
    }

    #[test]
    fn headers_tell_text_core_modules_and_components_apart() {
        assert!(matches!(check_header(b"hello world"), Err(LoadError::NotWasm)));
        assert!(matches!(check_header(b"\0asm\x01\0\0\0"), Err(LoadError::CoreModule)));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn digests_print_as_sha256_and_shorten_to_twelve_digits() {
        let d = Digest::of(b"");
        assert_eq!(d.to_string(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(d.short(), "e3b0c44298fc");
    }
}
