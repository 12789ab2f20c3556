//! Compiled policy modules on disk, keyed by the module's digest and the engine's settings, so
//! a restart (or a module pushed again) loads machine code instead of compiling it.
//!
//! Loading machine code from a file trusts that file as much as the binary itself: the directory
//! must be writable only by the controller (it is created `0700`). wasmtime refuses a file made
//! by another wasmtime version or for another CPU or engine configuration; such a file, or one
//! that is unreadable or damaged, is compiled again and replaced, so the cache can only save
//! time, never change behaviour.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
};

use wasmtime::{Engine, component::Component};

use super::Digest;

/// A directory of compiled components (see the module doc).
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
}

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled from its bytes (and, with a cache, written to it).
    Fresh,
    /// Loaded from the cache.
    Cached,
}

impl ModuleCache {
    /// Uses `dir`, creating it (private to this user) when missing.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        std::fs::create_dir_all(dir).with_context(|| format!("creating the module cache {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("making the module cache {} private", dir.display()))?;
        }
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// The component for `bytes`: from the cache when a usable copy is there, else compiled
    /// (and stored for next time, best effort).
    pub(super) fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: Digest,
    ) -> wasmtime::Result<(Component, Compiled)> {
        let path = self.path(engine, digest);
        // Read, not mapped: a file changed under a mapping would crash the process (SIGBUS).
        if let Ok(code) = std::fs::read(&path) {
            // SAFETY: the file is one this cache wrote with `Component::serialize` (the directory
            // is private, see the module doc); wasmtime checks its version and engine settings.
            match unsafe { Component::deserialize(engine, &code) } {
                Ok(component) => return Ok((component, Compiled::Cached)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cached module unusable, compiling it again");
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(error) =
            component.serialize().map_err(anyhow::Error::from).and_then(|code| Self::store(&path, &code))
        {
            tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "could not cache the compiled module");
        }
        Ok((component, Compiled::Fresh))
    }

    /// `<digest>-<engine hash>.cwasm`: another engine configuration gets another file.
    fn path(&self, engine: &Engine, digest: Digest) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir.join(format!("{}-{:016x}.cwasm", hex::encode(digest.bytes()), hasher.finish()))
    }

    /// Writes `code` next to `path` and renames it into place, so a reader never sees half a file.
    fn store(path: &Path, code: &[u8]) -> anyhow::Result<()> {
        let partial = path.with_extension(format!("partial-{}", std::process::id()));
        std::fs::write(&partial, code)?;
        std::fs::rename(&partial, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        embedded::DEFAULT_POLICY,
        sandbox::{Sandbox, SandboxLimits},
    };

    /// A fresh directory under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("module-cache-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_module_compiled_once_is_loaded_from_the_cache_and_a_damaged_file_is_replaced() {
        let dir = TempDir::new("reuse");
        let cache_dir = dir.0.join("modules");
        let sandbox = Sandbox::with_module_cache(SandboxLimits::default(), &cache_dir).unwrap();
        let first = sandbox.compile(DEFAULT_POLICY).unwrap();
        assert_eq!(first.compiled, Compiled::Fresh);
        let files: Vec<_> = std::fs::read_dir(&cache_dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].to_string_lossy().contains(&hex::encode(first.digest.bytes())), "{files:?}");

        let again = sandbox.compile(DEFAULT_POLICY).unwrap();
        assert_eq!(again.compiled, Compiled::Cached);
        assert_eq!(again.digest, first.digest);

        std::fs::write(&files[0], b"not machine code").unwrap();
        let repaired = sandbox.compile(DEFAULT_POLICY).unwrap();
        assert_eq!(repaired.compiled, Compiled::Fresh, "a damaged file is compiled again");
        assert_eq!(sandbox.compile(DEFAULT_POLICY).unwrap().compiled, Compiled::Cached, "and replaced");
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_an_error_naming_it() {
        let dir = TempDir::new("blocked");
        std::fs::write(&dir.0, b"a file, not a directory").unwrap();
        let wanted = dir.0.join("modules");
        let error = format!("{:#}", ModuleCache::open(&wanted).unwrap_err());
        assert!(error.starts_with(&format!("creating the module cache {}", wanted.display())), "{error}");
        std::fs::remove_file(&dir.0).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_cache_directory_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = TempDir::new("private");
        ModuleCache::open(&dir.0).unwrap();
        assert_eq!(std::fs::metadata(&dir.0).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
