//! The benchmark suite: every scenario under kube-controller-manager (ReplicaSet controller only)
//! and under the host, alternating, each run on a fresh control plane, at kube-controller-manager's
//! default client limits and with limits raised so the API server is the bottleneck; plus the raw
//! limit (a plain client creating the pods), a steady state holding many pods, and hot-swap
//! latency. Prints progress, then a table, and writes `BENCHMARKS.md`.
//!
//! Run: `cargo run --release -p tests --bin bench` (full, < 20 min on 2 cores) or with `--quick`
//! (< 3 min). See [`Options`].

pub mod charts;
pub mod client;
pub mod environment;
pub mod lifecycle;
pub mod lifecycle_report;
pub mod procfs;
pub mod raw;
pub mod report;
pub mod scale;
pub mod scenarios;
pub mod steady;
pub mod subject;
pub mod swap;
pub mod tracker;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::workdir::WorkDir;
use lifecycle::LifecyclePlan;
use lifecycle_report::LifecycleRows;
use report::{Results, ScaleRow, SteadyRow, SwapRow};
use scenarios::{Phase, Scenario};
use steady::SteadyPlane;
use subject::{Limits, Subject};

/// Command-line options of `bench`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "bench", about = "Benchmarks the host against kube-controller-manager's ReplicaSet controller")]
pub struct Options {
    /// One small scenario per tier, a small steady state, a short lifecycle run and one swap size
    /// (~8 minutes on 2 cores): a smoke test of the method, not the report.
    #[arg(long)]
    pub quick: bool,
    /// Alternating runs per scenario and controller (the median of these is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Where to write the report, its charts beside it in `<name>-charts/` [default: BENCHMARKS.md
    /// at the workspace root; with --quick or --only, under target/].
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print the report only.
    #[arg(long)]
    pub no_write: bool,
    /// Raised limits: QPS.
    #[arg(long, default_value_t = 1000.0)]
    pub raised_qps: f32,
    /// Raised limits: burst.
    #[arg(long, default_value_t = 1000)]
    pub raised_burst: u32,
    /// Raised limits: workers (both controllers).
    #[arg(long, default_value_t = 5)]
    pub raised_workers: u32,
    /// Also run the full scenario sizes at kube-controller-manager's default limits (20/30). They
    /// are bound by the 20 requests/s token bucket, so this alone takes about 45 minutes.
    #[arg(long)]
    pub full_size_at_default_limits: bool,
    /// Do not (re)build `host-process` first; use the one next to this binary as it is.
    #[arg(long)]
    pub no_build: bool,
    /// Run only these parts (comma-separated): default, raised, steady, lifecycle, swap, probe,
    /// scale. `scale` runs only when named here (it needs ~10 GiB and most of an hour).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// The scale tier's size: ReplicaSets x pods each.
    #[arg(long, default_value = "5000x20", value_parser = parse_size)]
    pub scale_size: (usize, i32),
}

/// `5000x20` → (5000, 20).
fn parse_size(text: &str) -> Result<(usize, i32), String> {
    let (rs, per) =
        text.split_once(['x', '×']).ok_or_else(|| format!("{text:?} is not REPLICASETSxPODS (e.g. 5000x20)"))?;
    let rs: usize = rs.trim().parse().map_err(|e| format!("ReplicaSets in {text:?}: {e}"))?;
    let per: i32 = per.trim().parse().map_err(|e| format!("pods per ReplicaSet in {text:?}: {e}"))?;
    Ok((rs, per))
}

static START: OnceLock<Instant> = OnceLock::new();

/// Prints `[mm:ss] message` (time since the bench started) to stderr.
pub fn progress(message: &str) {
    let elapsed = START.get_or_init(Instant::now).elapsed().as_secs();
    eprintln!("[{:02}:{:02}] {message}", elapsed / 60, elapsed % 60);
}

/// One tier of client limits and the scenarios run at it.
#[derive(Debug, Clone)]
pub struct Tier {
    /// `default` or `raised`.
    pub key: &'static str,
    /// The limits, the same for both controllers.
    pub limits: Limits,
    /// The scenarios.
    pub scenarios: Vec<Scenario>,
    /// Whether the raw limit runs alongside.
    pub raw_limit: bool,
    /// Why the sizes differ from the issue's, if they do.
    pub note: Option<String>,
}

/// Everything one invocation runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The limit tiers.
    pub tiers: Vec<Tier>,
    /// Steady state: ReplicaSets × pods each.
    pub steady: Option<(usize, i32)>,
    /// Steady state: settle time before reading RSS, and the idle CPU window.
    pub steady_settle: Duration,
    /// See `steady_settle`.
    pub steady_idle: Duration,
    /// Swap: module sizes (bytes; 0 = unpadded) and measured swaps per size.
    pub swap_sizes: Vec<usize>,
    /// See `swap_sizes`.
    pub swaps: usize,
    /// Client probe: pods per slow-start sequence (0: skip).
    pub probe_pods: usize,
    /// The lifecycle tier on a live cluster, if run (at the raised limits).
    pub lifecycle: Option<LifecyclePlan>,
    /// The scale tier: ReplicaSets × pods each, if run (at the raised limits).
    pub scale: Option<(usize, i32)>,
}

const fn sc(rs: usize, replicas: i32, scale_to: Option<i32>) -> Scenario {
    Scenario { rs, replicas, scale_to }
}

impl Plan {
    /// The plan for `options`.
    pub fn new(options: &Options) -> Self {
        let raised = Limits { qps: options.raised_qps, burst: options.raised_burst, workers: options.raised_workers };
        let wants = |part: &str| options.only.is_empty() || options.only.iter().any(|p| p == part);
        let mut tiers = Vec::new();
        let mut plan = if options.quick {
            if wants("default") {
                tiers.push(Tier {
                    key: "default",
                    limits: Limits::KCM_DEFAULTS,
                    scenarios: vec![sc(1, 60, None)],
                    raw_limit: false,
                    note: None,
                });
            }
            if wants("raised") {
                tiers.push(Tier {
                    key: "raised",
                    limits: raised,
                    scenarios: vec![sc(20, 5, Some(2))],
                    raw_limit: true,
                    note: None,
                });
            }
            Plan {
                tiers,
                steady: wants("steady").then_some((10, 10)),
                steady_settle: Duration::from_secs(1),
                steady_idle: Duration::from_secs(2),
                swap_sizes: if wants("swap") { vec![0] } else { vec![] },
                swaps: 3,
                // A diagnostic, not a figure of the report: only when asked for.
                probe_pods: if options.only.iter().any(|p| p == "probe") { 255 } else { 0 },
                lifecycle: wants("lifecycle").then_some(LifecyclePlan {
                    ramp: (10, 5),
                    churn: (25, 20),
                    churn_share: 0.02,
                    churn_for: Duration::from_secs(10),
                }),
                scale: None,
            }
        } else {
            let full = vec![sc(1, 500, None), sc(100, 20, Some(5)), sc(1000, 1, None)];
            if wants("raised") {
                tiers.push(Tier {
                    key: "raised",
                    limits: raised,
                    scenarios: full.clone(),
                    raw_limit: true,
                    note: None,
                });
            }
            if wants("default") {
                let (scenarios, note) = if options.full_size_at_default_limits {
                    (full, None)
                } else {
                    (
                        vec![sc(1, 300, None), sc(10, 20, Some(5)), sc(100, 1, None)],
                        Some(
                            "At 20 QPS every controller is bound by its token bucket (the wall times are the \
                             bucket's), so the full sizes would take ~45 min for 3×2 runs: 100×20 alone is ~2,000 \
                             pod creations plus their events and status writes, ~200 s per run. This tier runs \
                             1×300, 10×20 (→5) and 100×1: the same code paths and request mix, smaller; `--full-size-at-default-limits` runs the full sizes."
                                .to_string(),
                        ),
                    )
                };
                tiers.push(Tier { key: "default", limits: Limits::KCM_DEFAULTS, scenarios, raw_limit: false, note });
            }
            Plan {
                tiers,
                steady: wants("steady").then_some((100, 100)),
                steady_settle: Duration::from_secs(5),
                steady_idle: Duration::from_secs(10),
                swap_sizes: if wants("swap") { vec![0, 300 * 1024] } else { vec![] },
                swaps: 5,
                probe_pods: if wants("probe") { 511 } else { 0 },
                lifecycle: wants("lifecycle").then_some(LifecyclePlan {
                    ramp: (100, 20),
                    churn: (250, 20),
                    churn_share: 0.02,
                    churn_for: Duration::from_secs(60),
                }),
                scale: options.only.iter().any(|p| p == "scale").then_some(options.scale_size),
            }
        };
        plan.tiers.sort_by_key(|t| if t.key == "default" { 0 } else { 1 });
        plan
    }
}

/// The lifecycle tier: ramp, then churn, alternating subjects, `runs` times each.
async fn run_lifecycle(plan: &LifecyclePlan, limits: Limits, runs: usize) -> Result<LifecycleRows> {
    let mut rows = LifecycleRows::default();
    let (rs, per) = plan.ramp;
    for run in 1..=runs {
        for subject in [Subject::Upstream, Subject::Host] {
            let m = lifecycle::ramp(subject, limits, rs, per)
                .await
                .with_context(|| format!("lifecycle ramp, {}, run {run}", subject.name()))?;
            progress(&format!(
                "lifecycle ramp {rs}×{per} | run {run}/{runs} | {}: all available in {:.2} s, cpu {:.2} s, peak {:.0} MiB, {:.0} requests",
                subject.name(),
                m.wall,
                m.cpu,
                m.peak_rss_mib,
                m.requests.values().sum::<f64>()
            ));
            rows.ramp.entry(subject).or_default().push(m);
        }
    }
    for run in 1..=runs {
        for subject in [Subject::Upstream, Subject::Host] {
            let m = lifecycle::churn(subject, limits, plan.churn, plan.churn_share, plan.churn_for)
                .await
                .with_context(|| format!("lifecycle churn, {}, run {run}", subject.name()))?;
            progress(&format!(
                "lifecycle churn {}×{} | run {run}/{runs} | {}: {:.0} pod updates, cpu {:.2} s ({:.1} ms/1k updates), {:.0} status writes, p50 {:.0} ms, p99 {:.0} ms",
                plan.churn.0,
                plan.churn.1,
                subject.name(),
                m.pod_updates,
                m.cpu,
                m.cpu_ms_per_1000_updates(),
                m.status_writes,
                m.latency_p50 * 1000.0,
                m.latency_p99 * 1000.0
            ));
            rows.churn.entry(subject).or_default().push(m);
        }
    }
    Ok(rows)
}

/// The scale tier: one control plane filled once, each controller started on it `runs` times.
async fn run_scale(rs: usize, per: i32, limits: Limits, plan: &Plan, runs: usize) -> Result<ScaleRow> {
    let pods = rs * per as usize;
    progress(&format!(
        "scale: filling a control plane with {} pods in {} ReplicaSets",
        scenarios::group(pods as u64),
        scenarios::group(rs as u64)
    ));
    let plane = scale::ScalePlane::prepare(rs, per).await?;
    let mut row = ScaleRow { rs, per, scaled_away: plane.scaled_away(), limits, ..ScaleRow::default() };
    for run in 1..=runs {
        for subject in [Subject::Upstream, Subject::Host] {
            let m = plane
                .run(subject, limits, plan.steady_settle, plan.steady_idle)
                .await
                .with_context(|| format!("scale, {}, run {run}", subject.name()))?;
            progress(&format!(
                "scale {} pods | run {run}/{runs} | {}: synced+converged {:.1} s, cpu {:.1} s, RSS {:.0} MiB (peak {:.0}), idle cpu {:.2} %, {:.0} requests; 1 % scale-down {:.1} s, cpu {:.2} s, {:.0} requests",
                scenarios::group(pods as u64),
                subject.name(),
                m.start.startup,
                m.start.startup_cpu,
                m.start.rss_mib,
                m.start.peak_rss_mib,
                m.start.idle_cpu_pct,
                m.start.requests,
                m.scale_down,
                m.scale_down_cpu,
                m.scale_down_requests,
            ));
            row.samples.entry(subject).or_default().push(m);
        }
    }
    plane.stop();
    Ok(row)
}

/// Where the report goes without `--output`: BENCHMARKS.md at the workspace root for a full run
/// of every part; a quick or partial run goes to target/, so it never replaces the full report.
fn default_output(options: &Options) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if options.quick {
        root.join("target").join("BENCHMARKS-quick.md")
    } else if !options.only.is_empty() {
        root.join("target").join(format!("BENCHMARKS-{}.md", options.only.join("-")))
    } else {
        root.join("BENCHMARKS.md")
    }
}

/// Runs the benchmark and writes the report.
pub async fn main(options: Options) -> Result<()> {
    START.get_or_init(Instant::now);
    let plan = Plan::new(&options);
    if options.no_build {
        anyhow::ensure!(
            subject::host_process_path()?.exists(),
            "{} is missing",
            subject::host_process_path()?.display()
        );
    } else {
        progress("building host-process (same profile) if needed");
        subject::ensure_host_process()?;
    }
    let module_cache = WorkDir::create("bench-module-cache")?;
    let compile = subject::warm_module_cache(module_cache.path())?;
    progress(&format!(
        "embedded policy compiled into the module cache in {compile:.0?}; every host start loads it from there"
    ));
    let mut results = Results::new(&options, &plan);
    let runs = options.runs.max(1);

    for tier in &plan.tiers {
        for scenario in &tier.scenarios {
            for run in 1..=runs {
                let mut subjects = vec![Subject::Upstream, Subject::Host];
                if tier.raw_limit {
                    subjects.push(Subject::Limit);
                }
                for subject in subjects {
                    let label = format!(
                        "{} {} | {} | run {run}/{runs} | {}",
                        tier.key,
                        tier.limits.label(),
                        scenario.label(),
                        subject.name()
                    );
                    let measured = scenarios::run(subject, tier.limits, *scenario)
                        .await
                        .with_context(|| format!("{label} failed"))?;
                    let mut line = format!("{label}:");
                    for (phase, m) in &measured {
                        let what = match phase {
                            Phase::Create => "create",
                            Phase::ScaleDown => "scale-down",
                        };
                        if subject == Subject::Limit {
                            let _ = write!(line, " {what} {} pods in {:.2} s ({:.0}/s);", m.pods, m.wall, m.pod_rate);
                        } else {
                            let _ = write!(
                                line,
                                " {what} {:.2} s, cpu {:.2} s, peak {:.0} MiB, {:.0} requests, {:.0} pods/s{};",
                                m.wall,
                                m.cpu,
                                m.peak_rss_mib,
                                m.requests,
                                m.pod_rate,
                                if m.quiet_timeout { " (writes still trailing after 30 s)" } else { "" }
                            );
                        }
                    }
                    progress(line.trim_end_matches(';'));
                    for (phase, m) in measured {
                        results.add(tier, scenario, phase, subject, m);
                    }
                }
            }
        }
    }

    if let Some((rs, per)) = plan.steady {
        let pods = rs * per as usize;
        progress(&format!(
            "steady state: filling a control plane with {} pods ({rs} ReplicaSets)",
            scenarios::group(pods as u64)
        ));
        let plane = SteadyPlane::prepare(rs, per).await?;
        let mut row = SteadyRow { pods, ..SteadyRow::default() };
        for run in 1..=runs {
            for subject in [Subject::Upstream, Subject::Host] {
                let m = plane
                    .run(subject, Limits::KCM_DEFAULTS, plan.steady_settle, plan.steady_idle)
                    .await
                    .with_context(|| format!("steady state, {}, run {run}", subject.name()))?;
                progress(&format!(
                    "steady {} pods | run {run}/{runs} | {}: synced+converged {:.2} s, cpu {:.2} s, RSS {:.0} MiB (peak {:.0}), idle cpu {:.2} %, {:.0} requests",
                    scenarios::group(pods as u64),
                    subject.name(),
                    m.startup,
                    m.startup_cpu,
                    m.rss_mib,
                    m.peak_rss_mib,
                    m.idle_cpu_pct,
                    m.requests
                ));
                row.samples.entry(subject).or_default().push(m);
            }
        }
        plane.cp.stop();
        results.steady = Some(row);
    }

    if let Some(lifecycle) = plan.lifecycle {
        let raised = Limits { qps: options.raised_qps, burst: options.raised_burst, workers: options.raised_workers };
        results.lifecycle = run_lifecycle(&lifecycle, raised, runs).await?;
    }

    if let Some((rs, per)) = plan.scale {
        let raised = Limits { qps: options.raised_qps, burst: options.raised_burst, workers: options.raised_workers };
        results.scale = Some(run_scale(rs, per, raised, &plan, runs).await?);
    }

    if !plan.swap_sizes.is_empty() {
        progress("swap latency: host watching ReconcileModules");
        let bases: [&[u8]; 2] = [test_guests::NEWEST_FIRST, host::embedded::DEFAULT_POLICY];
        let series = swap::run(&bases, &plan.swap_sizes, plan.swaps, Limits::KCM_DEFAULTS).await?;
        results.swap = series.into_iter().map(|s| SwapRow { series: s }).collect();
    }

    if plan.probe_pods > 0 {
        progress("client probe: slow-start batches with kube-rs's default client and with TCP_NODELAY");
        let cp = crate::ControlPlane::start().await?;
        results.probe = client::probe(&cp, plan.probe_pods, 3).await?;
        cp.stop();
    }

    let path = options.output.clone().unwrap_or_else(|| default_output(&options));
    let stem = path.file_stem().map_or_else(|| "BENCHMARKS".into(), |s| s.to_string_lossy().into_owned());
    let charts = format!("{stem}-charts");
    if !options.no_write {
        let dir = path.parent().unwrap_or(std::path::Path::new(".")).join(&charts);
        results.write_charts(&dir, &charts)?;
    }
    let markdown = results.markdown();
    println!("\n{markdown}");
    if !options.no_write {
        std::fs::write(&path, &markdown).with_context(|| format!("writing {}", path.display()))?;
        progress(&format!("wrote {} and its charts in {charts}/", path.display()));
    }
    progress("done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_size_is_replica_sets_times_pods_and_bad_input_names_what_is_wrong() {
        assert_eq!(parse_size("5000x20"), Ok((5000, 20)));
        assert_eq!(parse_size("10 × 3"), Ok((10, 3)));
        assert!(parse_size("5000").unwrap_err().contains("is not REPLICASETSxPODS"));
        assert!(parse_size("ax20").unwrap_err().starts_with("ReplicaSets in \"ax20\""));
        assert!(parse_size("5x-").unwrap_err().starts_with("pods per ReplicaSet in \"5x-\""));
    }
}
