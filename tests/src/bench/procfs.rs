//! CPU time and memory of a process from `/proc`: `utime + stime` from `/proc/<pid>/stat`, `VmRSS`
//! and `VmHWM` (peak RSS) from `/proc/<pid>/status`, and resetting the peak through `clear_refs`.

use anyhow::{Context, Result};

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// User plus system CPU time, seconds (all threads, reaped children excluded).
    pub cpu_seconds: f64,
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size (since start or the last [`reset_peak`]), KiB.
    pub hwm_kib: u64,
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub fn clock_ticks() -> f64 {
    // SAFETY: plain libc query.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Reads `pid`'s CPU time and memory.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // "pid (comm) state ppid ..." — comm may contain spaces; fields after ')' start at field 3.
    let after = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based) of the whole line: 12 and 13 after "state".
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_seconds: (utime + stime) as f64 / clock_ticks(),
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// Resets `pid`'s peak RSS (`VmHWM`) to its current RSS (`echo 5 > /proc/<pid>/clear_refs`,
/// Linux ≥ 4.0). Returns whether it worked.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// KiB to MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// How many sockets `pid` has open (`/proc/<pid>/fd` links to `socket:[...]`): with HTTP/1.1 one
/// per concurrent API request, with HTTP/2 one per client.
pub fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| {
        dir.flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
            .count()
    })
}
