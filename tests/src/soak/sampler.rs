//! The host process's resources over a soak: RSS, open file descriptors and threads from `/proc`,
//! sampled every 10 s, and the RSS trend after warm-up as a least-squares slope.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// One reading.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the soak started.
    pub at: f64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// Threads (`/proc/<pid>/task`).
    pub threads: usize,
}

/// Reads `pid`'s RSS, descriptors and threads, `started` being the soak's start.
pub fn sample(pid: u32, started: Instant) -> Result<Sample> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    let count = |dir: &str| std::fs::read_dir(format!("/proc/{pid}/{dir}")).map(Iterator::count);
    Ok(Sample {
        at: started.elapsed().as_secs_f64(),
        rss_kib,
        fds: count("fd").context("counting fds")?,
        threads: count("task").context("counting threads")?,
    })
}

/// The RSS trend of `samples` taken after `warm_up`: (slope in MiB per minute, first and last
/// RSS in MiB of that window). `None` with fewer than three samples.
pub fn rss_trend(samples: &[Sample], warm_up: Duration) -> Option<(f64, f64, f64)> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm_up.as_secs_f64()).collect();
    if after.len() < 3 {
        return None;
    }
    let n = after.len() as f64;
    let mean_x = after.iter().map(|s| s.at).sum::<f64>() / n;
    let mean_y = after.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let cov: f64 = after.iter().map(|s| (s.at - mean_x) * (s.rss_kib as f64 - mean_y)).sum();
    let var: f64 = after.iter().map(|s| (s.at - mean_x).powi(2)).sum();
    let kib_per_second = if var > 0.0 { cov / var } else { 0.0 };
    let mib = |kib: u64| kib as f64 / 1024.0;
    Some((kib_per_second * 60.0 / 1024.0, mib(after[0].rss_kib), mib(after[after.len() - 1].rss_kib)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at: f64, rss_kib: u64) -> Sample {
        Sample { at, rss_kib, fds: 0, threads: 0 }
    }

    #[test]
    fn the_slope_is_fitted_after_the_warm_up_only() {
        // Growing fast while warming up, then 1 MiB a minute.
        let samples = [at(0.0, 1000), at(10.0, 50_000), at(60.0, 51_200), at(120.0, 52_224), at(180.0, 53_248)];
        let (slope, first, last) = rss_trend(&samples, Duration::from_secs(30)).unwrap();
        assert!((slope - 1.0).abs() < 1e-9, "{slope}");
        assert!((first - 50.0).abs() < 1e-9 && (last - 52.0).abs() < 1e-9);
        assert!(rss_trend(&samples[..3], Duration::from_secs(30)).is_none());
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id(), Instant::now()).unwrap();
        assert!(s.rss_kib > 0 && s.fds > 0 && s.threads > 0, "{s:?}");
    }
}
