//! Child processes of the harness: spawning from one long-lived thread, the process-wide PID registry, log capture, and termination by PID on drop, at exit, on panic and when the test binary is killed.
//!
//! How each way out is covered:
//! - **drop / explicit stop**: [`ManagedProcess`] terminates its PID (SIGTERM, wait up to a grace
//!   period, then SIGKILL) and reaps it.
//! - **normal exit, including after panicking tests**: libtest's `main` returns (or calls
//!   `process::exit`) after all tests ran, which runs `atexit` handlers. Rust never drops `static`s
//!   (the shared control plane lives in one), so a `libc::atexit` handler terminates every PID still
//!   in the registry.
//! - **SIGKILL / abort of the test binary**: every child gets `prctl(PR_SET_PDEATHSIG, SIGKILL)`.
//!   The kernel sends it when the *thread* that forked the child exits, and libtest runs each test
//!   on its own short-lived thread, so all children are forked by one spawner thread that lives as
//!   long as the process.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

/// How long a process gets between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Every child PID started by this process and not reaped yet, with its start sequence number
/// (stopping goes in reverse start order) and a short name.
static REGISTRY: Mutex<BTreeMap<u32, (u64, String)>> = Mutex::new(BTreeMap::new());

/// Start sequence numbers for [`REGISTRY`].
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

/// Directories removed at exit, after the processes that used them are gone.
static EXIT_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

static ATEXIT: Once = Once::new();

type SpawnReply = mpsc::Sender<io::Result<u32>>;

/// The sending side of the spawner thread's request channel.
static SPAWNER: OnceLock<Mutex<mpsc::Sender<(Command, SpawnReply)>>> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data behind (plain inserts and
    // removes), so a poisoned lock is still usable; cleanup must never be skipped because of it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The PIDs of all children this process started that are still running (not yet reaped), in
/// start order.
pub fn running_pids() -> Vec<u32> {
    let registry = lock(&REGISTRY);
    let mut by_start: Vec<(u64, u32)> = registry.iter().map(|(&pid, (seq, _))| (*seq, pid)).collect();
    by_start.sort_unstable();
    by_start.into_iter().map(|(_, pid)| pid).collect()
}

/// Whether `pid` names a live process: `/proc/<pid>` exists and is not a zombie.
///
/// A child of a killed test binary is re-parented to PID 1, which in a container may never reap
/// it, so a zombie counts as not running.
pub fn pid_is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // Format: "pid (comm) S ..."; comm may contain spaces and parentheses.
            let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z" | "X") | None)
        }
        Err(_) => false,
    }
}

/// Registers `dir` to be removed at process exit (after all children are stopped).
pub(crate) fn remove_dir_at_exit(dir: &Path) {
    install_atexit();
    lock(&EXIT_DIRS).push(dir.to_path_buf());
}

/// Removes `dir` from the exit list (it was cleaned up already).
pub(crate) fn forget_exit_dir(dir: &Path) {
    lock(&EXIT_DIRS).retain(|d| d != dir);
}

fn install_atexit() {
    ATEXIT.call_once(|| {
        // SAFETY: registering a plain `extern "C" fn()` that never unwinds.
        let rc = unsafe { libc::atexit(cleanup_at_exit) };
        if rc != 0 {
            eprintln!("harness: atexit registration failed; children rely on PDEATHSIG only");
        }
    });
}

extern "C" fn cleanup_at_exit() {
    // Never unwind out of an `extern "C"` function: that aborts the process before cleanup ends.
    let _ = std::panic::catch_unwind(|| {
        // One at a time, newest first: kube-controller-manager and kube-apiserver shut down
        // quickly while etcd still runs, but a kube-apiserver whose etcd is gone waits out the
        // whole grace period.
        for pid in running_pids().into_iter().rev() {
            terminate_all(&[pid], DEFAULT_GRACE);
        }
        if !keep_dirs() {
            for dir in lock(&EXIT_DIRS).drain(..) {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    });
}

/// Whether `HARNESS_KEEP_TMP` is set (non-empty, not `0`): temp dirs (data, certificates, logs)
/// are then kept, not removed on stop, at exit or by the sweep, for post-mortem debugging.
pub fn keep_dirs() -> bool {
    std::env::var_os("HARNESS_KEEP_TMP").is_some_and(|v| !v.is_empty() && v != "0")
}

fn spawner() -> &'static Mutex<mpsc::Sender<(Command, SpawnReply)>> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, SpawnReply)>();
        std::thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                // This thread is the parent (for PR_SET_PDEATHSIG) of every child, so it must live
                // until the process exits; the sender sits in a static and is never dropped, so
                // `recv` never fails and the loop never ends.
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let result = cmd.spawn().map(|child| {
                        let pid = child.id();
                        // Reaping goes through `waitpid` by PID (see `try_reap`); dropping the
                        // `Child` neither kills nor waits.
                        drop(child);
                        pid
                    });
                    let _ = reply.send(result);
                }
            })
            .expect("the harness cannot run without its spawner thread");
        Mutex::new(tx)
    })
}

/// A process started by the harness; terminated (SIGTERM, grace period, SIGKILL) and reaped when
/// stopped or dropped.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    pid: u32,
    log: PathBuf,
    exit: Mutex<Option<String>>,
}

impl ManagedProcess {
    /// Starts `program args...` with stdout and stderr written to `log`, from the spawner thread,
    /// with `PR_SET_PDEATHSIG=SIGKILL`, and records its PID in the registry.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::spawn_command(name, cmd, log)
    }

    /// Like [`ManagedProcess::spawn`] for a prepared command (arguments, environment, working
    /// directory): use it for any long-running process a test starts, e.g. the controller under
    /// test, to get the same cleanup guarantees. Its stdin, stdout and stderr are replaced.
    pub fn spawn_command(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        install_atexit();
        let out = File::create(log).with_context(|| format!("creating log {}", log.display()))?;
        let err = out.try_clone().with_context(|| format!("duplicating log {}", log.display()))?;
        let program = PathBuf::from(cmd.get_program());
        cmd.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err));
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe libc
        // functions (prctl, getppid).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody would signal us.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::other("parent exited during spawn"));
                }
                Ok(())
            });
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        // Hold the registry lock across the spawn so an exit-time cleanup cannot miss this PID.
        let mut registry = lock(&REGISTRY);
        lock(spawner()).send((cmd, reply_tx)).map_err(|_| anyhow!("the harness spawner thread is gone"))?;
        let pid = reply_rx
            .recv()
            .map_err(|_| anyhow!("the harness spawner thread is gone"))?
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        registry.insert(pid, (seq, name.to_string()));
        drop(registry);
        tracing::debug!(name, pid, log = %log.display(), "started");
        Ok(Self { name: name.to_string(), pid, log: log.to_path_buf(), exit: Mutex::new(None) })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The short name given at spawn time (e.g. `etcd`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file that receives the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `max_lines` lines of the log (lossily decoded).
    pub fn log_tail(&self, max_lines: usize) -> String {
        log_tail(&self.log, max_lines)
    }

    /// `Some(description)` once the process has exited (reaping it if needed), else `None`.
    pub fn exit_status(&self) -> Option<String> {
        let mut exit = lock(&self.exit);
        if exit.is_none() {
            *exit = try_reap(self.pid);
        }
        exit.clone()
    }

    /// An error naming the process, its exit status if any, `what` went wrong, and its log tail.
    pub fn error_with_log(&self, what: &str) -> anyhow::Error {
        let status = self.exit_status().map(|s| format!(" ({s})")).unwrap_or_default();
        let tail = self.log_tail(400);
        // klog error/fatal lines ("E1129 ...", "F1129 ...") can be far from the end of a log
        // that interleaves stderr buffers, so they are repeated first.
        let errors: Vec<&str> = tail
            .lines()
            .filter(|l| {
                let b = l.as_bytes();
                b.len() > 5 && matches!(b[0], b'E' | b'F') && b[1..5].iter().all(u8::is_ascii_digit)
            })
            .collect();
        let errors = if errors.is_empty() {
            String::new()
        } else {
            format!("\nerror lines:\n{}", errors[errors.len().saturating_sub(10)..].join("\n"))
        };
        let last: Vec<&str> = tail.lines().collect();
        let keep = if keep_dirs() { "" } else { " (removed on cleanup; set HARNESS_KEEP_TMP=1 to keep it)" };
        anyhow!(
            "{} (pid {}){status}: {what}{errors}\nlast lines of {}{keep}:\n{}",
            self.name,
            self.pid,
            self.log.display(),
            last[last.len().saturating_sub(30)..].join("\n")
        )
    }

    /// Terminates the process: SIGTERM, wait up to `grace`, then SIGKILL; reaps it. Idempotent.
    pub fn stop(&self, grace: Duration) {
        if self.exit_status().is_some() {
            return;
        }
        terminate_all(&[self.pid], grace);
        let mut exit = lock(&self.exit);
        if exit.is_none() {
            *exit = Some("stopped".to_string());
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop(DEFAULT_GRACE);
    }
}

/// Reaps `pid` if it has exited. Returns a description of how it ended, or `None` if it still runs.
/// A PID not in the registry was reaped already.
fn try_reap(pid: u32) -> Option<String> {
    // Reap under the lock so no other thread signals a PID that was just freed for reuse.
    let mut registry = lock(&REGISTRY);
    if !registry.contains_key(&pid) {
        return Some("exited".to_string());
    }
    let mut status: libc::c_int = 0;
    // SAFETY: plain syscall on our own child.
    let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    let described = match rc {
        0 => return None,
        r if r == pid as libc::pid_t => describe_status(status),
        _ => "exited (reaped elsewhere)".to_string(),
    };
    registry.remove(&pid);
    Some(described)
}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    let registry = lock(&REGISTRY);
    if registry.contains_key(&pid) {
        // SAFETY: plain syscall; the PID is an unreaped child of ours, so it cannot be reused.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

/// Sends SIGTERM to all `pids`, waits up to `grace` for them to exit, SIGKILLs the rest and reaps
/// everything. PIDs that are not (or no longer) our children are ignored.
pub fn terminate_all(pids: &[u32], grace: Duration) {
    for &pid in pids {
        signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let mut left: Vec<u32> = pids.to_vec();
    loop {
        left.retain(|&pid| try_reap(pid).is_none());
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for &pid in &left {
        tracing::warn!(pid, "did not exit within {grace:?} of SIGTERM; sending SIGKILL");
        signal(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&pid| try_reap(pid).is_none());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The last `max_lines` lines of the file at `path`, reading at most its last 64 KiB.
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(max_lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spawned_process_is_registered_stopped_and_reaped() {
        let dir = std::env::temp_dir().join(format!("harness-process-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("sleep.log");
        let p = ManagedProcess::spawn(
            "sh",
            Path::new("/bin/sh"),
            &["-c".to_string(), "echo hello; exec sleep 60".to_string()],
            &log,
        )
        .unwrap();
        assert!(pid_is_running(p.pid()));
        assert!(running_pids().contains(&p.pid()));
        assert_eq!(p.exit_status(), None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !p.log_tail(5).contains("hello") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(p.log_tail(5), "hello");
        let started = Instant::now();
        p.stop(DEFAULT_GRACE);
        assert!(started.elapsed() < Duration::from_secs(2), "sleep obeys SIGTERM");
        assert!(!pid_is_running(p.pid()));
        assert!(!running_pids().contains(&p.pid()));
        let error = format!("{:#}", p.error_with_log("test"));
        assert!(error.contains("sh (pid"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_process_that_ignores_sigterm_is_killed_after_the_grace_period() {
        let dir = std::env::temp_dir().join(format!("harness-process-test2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = ManagedProcess::spawn(
            "stubborn",
            Path::new("/bin/sh"),
            &["-c".to_string(), "trap '' TERM; echo ready; while :; do sleep 0.05; done".to_string()],
            &dir.join("log"),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !p.log_tail(1).contains("ready") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        p.stop(Duration::from_millis(300));
        assert_eq!(p.exit_status().as_deref(), Some("stopped"));
        assert!(!pid_is_running(p.pid()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
