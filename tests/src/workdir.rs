//! Temporary working directories (data, certificates, logs) under one root, removed on stop or at exit, with a sweep of leftovers from killed runs.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use crate::process;

static SEQ: AtomicU64 = AtomicU64::new(0);
static SWEEP: Once = Once::new();

/// The root that holds every harness directory: `$TMPDIR/wasm-replicaset-harness`.
pub fn root() -> PathBuf {
    std::env::temp_dir().join("wasm-replicaset-harness")
}

/// A directory named `<pid>-<seq>-<label>` under [`root`], removed by [`WorkDir::remove`], on drop,
/// or at exit (unless `HARNESS_KEEP_TMP=1`). Directories of processes that no longer run (a test
/// binary killed with SIGKILL cannot clean up) are swept when the first one is created.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates a fresh directory; `label` only makes the name readable.
    pub fn create(label: &str) -> Result<Self> {
        let root = root();
        SWEEP.call_once(sweep_stale);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{}-{seq}-{label}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating work dir {}", path.display()))?;
        process::remove_dir_at_exit(&path);
        Ok(Self { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory now (unless `HARNESS_KEEP_TMP=1`). Idempotent.
    pub fn remove(&self) {
        if !process::keep_dirs() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
        process::forget_exit_dir(&self.path);
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes directories under [`root`] whose owning PID (the name's first field) is not running:
/// leftovers of test binaries that were killed. Done automatically once per process; skipped
/// with `HARNESS_KEEP_TMP` set.
pub fn sweep_stale() {
    if process::keep_dirs() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !process::pid_is_running(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
