//! Medians, ratios and the Markdown report (machine, versions, command, tables, targets).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

use super::charts;
use super::environment;
use super::scale::{self, ScaleMeasurement};
use super::scenarios::{HostStats, Measurement, Phase, Scenario, group};
use super::steady::SteadyMeasurement;
use super::subject::{Limits, Subject};
use super::swap::SwapSeries;
use super::{Options, Plan, Tier};

/// Reads one figure out of a run.
type MeasurementField = fn(&Measurement) -> f64;
/// Reads one figure out of a steady-state run.
type SteadyField = fn(&SteadyMeasurement) -> f64;
/// Reads one figure out of a scale-tier run.
type ScaleField = fn(&ScaleMeasurement) -> f64;

/// Median, minimum and maximum of some runs.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// The median (mean of the middle two for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

/// The median, min and max of the finite values, if any.
pub fn stat(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Some(Stat { median, min: v[0], max: v[n - 1] })
}

/// A number with about three significant digits.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "–".into()
    } else if a >= 1000.0 {
        group(x.round() as u64)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// `median (min–max)`, or `–`.
pub fn cell(s: Option<Stat>) -> String {
    match s {
        Some(s) if s.min == s.max => num(s.median),
        Some(s) => format!("{} ({}–{})", num(s.median), num(s.min), num(s.max)),
        None => "–".into(),
    }
}

/// `a / b` of the medians.
pub fn ratio(a: Option<Stat>, b: Option<Stat>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.median != 0.0 => Some(a.median / b.median),
        _ => None,
    }
}

/// A ratio with two decimals, or `–`.
pub fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}"))
}

/// All runs of one phase of one scenario at one tier.
#[derive(Debug, Clone)]
pub struct Row {
    tier: &'static str,
    limits: Limits,
    scenario: Scenario,
    phase: Phase,
    samples: BTreeMap<Subject, Vec<Measurement>>,
}

impl Row {
    fn label(&self) -> String {
        match (self.phase, self.scenario.scale_to) {
            (Phase::ScaleDown, Some(to)) => format!("{} → {to}", self.scenario.label()),
            _ => format!("{} from 0", self.scenario.label()),
        }
    }

    fn stat(&self, subject: Subject, f: impl Fn(&Measurement) -> f64) -> Option<Stat> {
        stat(self.samples.get(&subject)?.iter().map(f))
    }

    fn host_stat(&self, f: impl Fn(&HostStats, &Measurement) -> f64) -> Option<Stat> {
        stat(self.samples.get(&Subject::Host)?.iter().filter_map(|m| m.host.as_ref().map(|h| f(h, m))))
    }

    /// The run of `subject` with the median wall time (the lower middle one of an even count).
    fn median_run(&self, subject: Subject) -> Option<&Measurement> {
        let mut runs: Vec<&Measurement> = self.samples.get(&subject)?.iter().collect();
        runs.sort_by(|a, b| a.wall.total_cmp(&b.wall));
        runs.get(runs.len().saturating_sub(1) / 2).copied()
    }
}

/// The steady-state runs.
#[derive(Debug, Clone, Default)]
pub struct SteadyRow {
    /// Pods held.
    pub pods: usize,
    /// Per subject, per run.
    pub samples: BTreeMap<Subject, Vec<SteadyMeasurement>>,
}

/// The scale tier's runs.
#[derive(Debug, Clone)]
pub struct ScaleRow {
    /// ReplicaSets.
    pub rs: usize,
    /// Pods each.
    pub per: i32,
    /// Pods the scale-down removes (one each from as many ReplicaSets).
    pub scaled_away: usize,
    /// The limits both controllers ran with.
    pub limits: Limits,
    /// Per subject, per run.
    pub samples: BTreeMap<Subject, Vec<ScaleMeasurement>>,
}

impl Default for ScaleRow {
    fn default() -> Self {
        Self { rs: 0, per: 0, scaled_away: 0, limits: Limits::KCM_DEFAULTS, samples: BTreeMap::new() }
    }
}

impl ScaleRow {
    fn stat(&self, subject: Subject, f: impl Fn(&ScaleMeasurement) -> f64) -> Option<Stat> {
        stat(self.samples.get(&subject)?.iter().map(f))
    }
}

/// One swap series.
#[derive(Debug, Clone)]
pub struct SwapRow {
    /// The latencies.
    pub series: SwapSeries,
}

/// Everything measured, and how.
pub struct Results {
    command: String,
    quick: bool,
    runs: usize,
    date: String,
    started: Instant,
    tiers: Vec<Tier>,
    plan: Plan,
    rows: Vec<Row>,
    /// The steady state, if run.
    pub steady: Option<SteadyRow>,
    /// Swap latency series, if run.
    pub swap: Vec<SwapRow>,
    /// The client probe, if run.
    pub probe: Vec<super::client::ProbeRow>,
    /// The lifecycle tier, if run.
    pub lifecycle: super::lifecycle_report::LifecycleRows,
    /// The scale tier, if run.
    pub scale: Option<ScaleRow>,
    /// Charts written beside the report: alt text and path relative to the report.
    charts: Vec<(String, String)>,
}

impl Results {
    /// Empty results for `options` and `plan`.
    pub fn new(options: &Options, plan: &Plan) -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let command = if args.is_empty() {
            "cargo run --release -p tests --bin bench".to_string()
        } else {
            format!("cargo run --release -p tests --bin bench -- {}", args.join(" "))
        };
        Self {
            command,
            quick: options.quick,
            runs: options.runs.max(1),
            date: jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
            started: Instant::now(),
            tiers: plan.tiers.clone(),
            plan: plan.clone(),
            rows: Vec::new(),
            steady: None,
            swap: Vec::new(),
            probe: Vec::new(),
            lifecycle: super::lifecycle_report::LifecycleRows::default(),
            scale: None,
            charts: Vec::new(),
        }
    }

    /// Records one run.
    pub fn add(&mut self, tier: &Tier, scenario: &Scenario, phase: Phase, subject: Subject, m: Measurement) {
        let idx = if let Some(i) =
            self.rows.iter().position(|r| r.tier == tier.key && r.scenario == *scenario && r.phase == phase)
        {
            i
        } else {
            self.rows.push(Row {
                tier: tier.key,
                limits: tier.limits,
                scenario: *scenario,
                phase,
                samples: BTreeMap::new(),
            });
            self.rows.len() - 1
        };
        self.rows[idx].samples.entry(subject).or_default().push(m);
    }

    /// Draws the charts into `dir`, which the report refers to as `relative`: live pods over
    /// time in each scenario's median run per controller, and the CPU and RSS ratios.
    pub fn write_charts(&mut self, dir: &Path, relative: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut charts = Vec::new();
        for row in &self.rows {
            let (Some(upstream), Some(host)) = (row.median_run(Subject::Upstream), row.median_run(Subject::Host))
            else {
                continue;
            };
            let caption = format!("{}, {}: live pods", row.label(), row.limits.label());
            let file = format!("pods-{}-{}.svg", row.tier, file_name(&row.label()));
            let series = [
                charts::Series { name: "upstream", host: false, points: &upstream.timeline },
                charts::Series { name: "host", host: true, points: &host.timeline },
            ];
            charts::pods_over_time(&dir.join(&file), &caption, &series)?;
            charts.push((caption, format!("{relative}/{file}")));
        }
        let mut bars: Vec<charts::RatioBars> = self
            .rows
            .iter()
            .map(|row| charts::RatioBars {
                label: format!("{}, {}", row.label(), row.tier),
                cpu: ratio(row.stat(Subject::Host, |m| m.cpu), row.stat(Subject::Upstream, |m| m.cpu)),
                rss: ratio(
                    row.stat(Subject::Host, |m| m.peak_rss_mib),
                    row.stat(Subject::Upstream, |m| m.peak_rss_mib),
                ),
            })
            .collect();
        if let Some(steady) = &self.steady {
            let f = |s: Subject, f: SteadyField| stat(steady.samples.get(&s).into_iter().flatten().map(f));
            bars.push(charts::RatioBars {
                label: format!("steady, {} pods", group(steady.pods as u64)),
                cpu: ratio(f(Subject::Host, |m| m.startup_cpu), f(Subject::Upstream, |m| m.startup_cpu)),
                rss: ratio(f(Subject::Host, |m| m.rss_mib), f(Subject::Upstream, |m| m.rss_mib)),
            });
        }
        if let Some(scale) = &self.scale {
            let f = |s: Subject, f: ScaleField| scale.stat(s, f);
            bars.push(charts::RatioBars {
                label: format!("scale, {} pods", group((scale.rs * scale.per as usize) as u64)),
                cpu: ratio(f(Subject::Host, |m| m.start.startup_cpu), f(Subject::Upstream, |m| m.start.startup_cpu)),
                rss: ratio(f(Subject::Host, |m| m.start.rss_mib), f(Subject::Upstream, |m| m.start.rss_mib)),
            });
        }
        if !bars.is_empty() {
            let caption = "CPU and peak RSS, host / upstream".to_string();
            charts::ratio_bars(&dir.join("ratios.svg"), &caption, &bars, 0.5, 0.4)?;
            charts.push((caption, format!("{relative}/ratios.svg")));
        }
        self.charts = charts;
        Ok(())
    }

    /// The whole report.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = self.write(&mut md);
        md
    }

    fn write(&self, md: &mut String) -> std::fmt::Result {
        writeln!(md, "# Benchmarks: the host vs kube-controller-manager's ReplicaSet controller\n")?;
        if self.quick {
            writeln!(
                md,
                "> **--quick run**: small scenarios, a smoke test of the method; see the full run for the numbers that count.\n"
            )?;
        }
        writeln!(md, "- Command: `{}` (from the workspace root)", self.command)?;
        writeln!(md, "- Date: {}; the run took {:.1} min", self.date, self.started.elapsed().as_secs_f64() / 60.0)?;
        for line in environment::machine() {
            writeln!(md, "- {line}")?;
        }
        for line in environment::versions() {
            writeln!(md, "- {line}")?;
        }
        writeln!(
            md,
            "- Each figure: median (min–max) of {} alternating runs (upstream, host[, raw limit], upstream, host, …), every run on a fresh control plane.\n",
            self.runs
        )?;

        self.write_main(md)?;
        self.write_guest(md)?;
        self.write_steady(md)?;
        if let Some(lifecycle) = &self.plan.lifecycle {
            let limits = self
                .tiers
                .iter()
                .find(|t| t.key == "raised")
                .map_or_else(|| "raised limits".to_string(), |t| t.limits.label());
            md.push_str(&self.lifecycle.markdown(lifecycle, &limits)?);
        }
        self.write_scale(md)?;
        self.write_swap(md)?;
        if !self.probe.is_empty() {
            md.push_str(&super::client::probe_markdown(&self.probe));
        }
        self.write_charts_section(md)?;
        self.write_targets(md)?;
        Self::write_method(md)?;
        Ok(())
    }

    fn write_main(&self, md: &mut String) -> std::fmt::Result {
        if self.rows.is_empty() {
            return Ok(());
        }
        writeln!(md, "## Convergence, CPU, memory and API requests\n")?;
        writeln!(
            md,
            "| Scenario | Limits (QPS/burst, workers) | Metric | Upstream | Host | Host/upstream | Raw limit | Host/limit |"
        )?;
        writeln!(md, "|---|---|---|---:|---:|---:|---:|---:|")?;
        for row in &self.rows {
            let lim = row.limits.label();
            let rate_word = if row.phase == Phase::Create { "Pods created/s" } else { "Pods deleted/s" };
            let metrics: [(&str, MeasurementField, bool); 5] = [
                ("Wall time to convergence (s)", |m| m.wall, true),
                ("Controller CPU (s)", |m| m.cpu, false),
                ("Controller peak RSS (MiB)", |m| m.peak_rss_mib, false),
                ("API requests (apiserver count)", |m| m.requests, false),
                (rate_word, |m| m.pod_rate, true),
            ];
            for (i, (name, f, raw)) in metrics.iter().enumerate() {
                let u = row.stat(Subject::Upstream, f);
                let h = row.stat(Subject::Host, f);
                let l = if *raw { row.stat(Subject::Limit, f) } else { None };
                let host_limit = if i == 4 { ratio(h, l) } else { None };
                writeln!(
                    md,
                    "| {} | {} | {name} | {} | {} | {} | {} | {} |",
                    if i == 0 { row.label() } else { String::new() },
                    if i == 0 { lim.clone() } else { String::new() },
                    cell(u),
                    cell(h),
                    ratio_cell(ratio(h, u)),
                    if l.is_some() { cell(l) } else { String::new() },
                    if host_limit.is_some() { ratio_cell(host_limit) } else { String::new() },
                )?;
            }
        }
        writeln!(md)?;
        writeln!(
            md,
            "Raw limit: no controller; one unthrottled client creates the same pods (then deletes as many as the scale-down does), {} requests in flight. Pods/s for the controllers: pods / (first ReplicaSet write → last pod seen by the bench's watch). Wall time for the raw limit: first request → last response.\n",
            super::scenarios::BENCH_CONCURRENCY
        )?;
        writeln!(
            md,
            "Cross-check, the controllers' own request counters over the same windows (host: `wasm_replicaset_api_requests_total`, watches excluded; upstream: `rest_client_requests_total`, every request of the process):\n"
        )?;
        writeln!(md, "| Scenario | Limits | Upstream own count | Host own count |")?;
        writeln!(md, "|---|---|---:|---:|")?;
        for row in &self.rows {
            writeln!(
                md,
                "| {} | {} | {} | {} |",
                row.label(),
                row.limits.label(),
                cell(row.stat(Subject::Upstream, |m| m.own_requests)),
                cell(row.stat(Subject::Host, |m| m.own_requests))
            )?;
        }
        for tier in &self.tiers {
            if let Some(note) = &tier.note {
                writeln!(md, "\nSizes at {}: {note}", tier.limits.label())?;
            }
        }
        writeln!(md)
    }

    fn write_guest(&self, md: &mut String) -> std::fmt::Result {
        if self.rows.is_empty() {
            return Ok(());
        }
        writeln!(md, "## The host's guest calls\n")?;
        writeln!(
            md,
            "| Scenario | Limits | Guest time / sync time | Guest time / host CPU | Guest calls per sync | Mean guest call (µs) | Fuel per sync | Syncs |"
        )?;
        writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|")?;
        for row in &self.rows {
            let pct = |s: Option<Stat>| s.map_or_else(|| "–".into(), |s| format!("{:.1} %", s.median * 100.0));
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                row.label(),
                row.limits.label(),
                pct(row.host_stat(|h, _| h.guest_seconds / h.sync_seconds)),
                pct(row.host_stat(|h, m| h.guest_seconds / m.cpu)),
                cell(row.host_stat(|h, _| h.guest_calls / h.syncs)),
                cell(row.host_stat(|h, _| 1e6 * h.guest_seconds / h.guest_calls)),
                cell(row.host_stat(|h, _| h.fuel / h.syncs)),
                cell(row.host_stat(|h, _| h.syncs)),
            )?;
        }
        writeln!(
            md,
            "\nSync time is wall time of whole syncs (API writes included); guest time is `wasm_replicaset_guest_call_duration_seconds` (fresh instance, call, guard rails); fuel from `wasm_replicaset_guest_fuel_per_call`.\n"
        )
    }

    fn write_steady(&self, md: &mut String) -> std::fmt::Result {
        let Some(steady) = &self.steady else { return Ok(()) };
        writeln!(md, "## Steady state: {} pods in the cache\n", group(steady.pods as u64))?;
        writeln!(
            md,
            "The pods are created directly by the bench (owned by ReplicaSets that already want exactly that many, statuses reset before each run), then each controller is started at {} on the same control plane. The host starts as a restarted controller does: its policy is loaded from the compiled-module cache (`--module-cache-dir`), not compiled; its informers stream their initial lists (WatchList), as kube-controller-manager's do.\n",
            Limits::KCM_DEFAULTS.label()
        )?;
        writeln!(md, "| Metric | Upstream | Host | Host/upstream |")?;
        writeln!(md, "|---|---:|---:|---:|")?;
        let metrics: [(String, SteadyField); 7] = [
            ("Start → caches synced and statuses current (s)".into(), |m| m.startup),
            ("CPU to get there (s)".into(), |m| m.startup_cpu),
            (format!("RSS holding {} pods, settled (MiB)", group(steady.pods as u64)), |m| m.rss_mib),
            ("Peak RSS (MiB)".into(), |m| m.peak_rss_mib),
            (format!("Idle CPU over {:?} (% of a core)", self.plan.steady_idle), |m| m.idle_cpu_pct),
            ("API requests, start → quiet (lists included)".into(), |m| m.requests),
            ("kube-apiserver CPU over that window (s)".into(), |m| m.apiserver_cpu),
        ];
        for (name, f) in &metrics {
            let of = |s: Subject| stat(steady.samples.get(&s).into_iter().flatten().map(f));
            comparison_row(md, name, of(Subject::Upstream), of(Subject::Host))?;
        }
        writeln!(md)
    }

    fn write_scale(&self, md: &mut String) -> std::fmt::Result {
        let Some(row) = &self.scale else { return Ok(()) };
        let pods = group((row.rs * row.per as usize) as u64);
        writeln!(md, "## Scale: {pods} pods in {} ReplicaSets\n", group(row.rs as u64))?;
        writeln!(
            md,
            "As the steady state, at {pods} pods and {}: the bench creates the ReplicaSets and their pods directly, resets every status, then starts each controller on the same control plane and waits until every status is current. Then it takes one replica from {} ReplicaSets spread over the namespace ({} % of the pods) and waits until all converged; then it scales them back (unmeasured) for the next run. kube-apiserver runs with `{}` and etcd with `{}` (see `tests/src/bench/scale.rs` for why).\n",
            row.limits.label(),
            group(row.scaled_away as u64),
            scale::SCALE_DOWN_SHARE * 100.0,
            scale::APISERVER_FLAGS.join(" "),
            scale::ETCD_FLAGS.join(" "),
        )?;
        writeln!(md, "| Metric | Upstream | Host | Host/upstream |")?;
        writeln!(md, "|---|---:|---:|---:|")?;
        let metrics: [(String, ScaleField); 10] = [
            ("Start → caches synced and statuses current (s)".into(), |m| m.start.startup),
            ("CPU to get there (s)".into(), |m| m.start.startup_cpu),
            (format!("RSS holding {pods} pods, settled (MiB)"), |m| m.start.rss_mib),
            ("Peak RSS (MiB)".into(), |m| m.start.peak_rss_mib),
            (format!("Idle CPU over {:?} (% of a core)", self.plan.steady_idle), |m| m.start.idle_cpu_pct),
            ("API requests, start → quiet (lists included)".into(), |m| m.start.requests),
            ("kube-apiserver CPU over that window (s)".into(), |m| m.start.apiserver_cpu),
            (format!("Scale-down of {} pods: time to converged (s)", group(row.scaled_away as u64)), |m| m.scale_down),
            ("Scale-down: CPU (s)".into(), |m| m.scale_down_cpu),
            ("Scale-down: API requests".into(), |m| m.scale_down_requests),
        ];
        for (name, f) in &metrics {
            comparison_row(md, name, row.stat(Subject::Upstream, f), row.stat(Subject::Host, f))?;
        }
        writeln!(md)
    }

    fn write_swap(&self, md: &mut String) -> std::fmt::Result {
        if self.swap.is_empty() {
            return Ok(());
        }
        writeln!(md, "## Hot swap latency\n")?;
        writeln!(
            md,
            "ReconcileModule object written (created or `spec.module` updated) → the bench's watch sees `status.phase: Active` for that generation (the host swaps before it writes the status, so this is an upper bound). Each swap is a distinct component (a nonce custom section), so nothing is cached; bases alternate between `examples/guest-newest-first` and the embedded default policy; one unmeasured warm-up per size.\n"
        )?;
        writeln!(
            md,
            "| Module size | Swaps | Latency (ms) | Host-reported validation (compile + conformance, ms) | Target < 1 s |"
        )?;
        writeln!(md, "|---|---:|---:|---:|---|")?;
        for row in &self.swap {
            let s = &row.series;
            let lat = stat(s.latencies.iter().map(|x| x * 1000.0));
            let val = stat(s.validated.iter().map(|x| x * 1000.0));
            let met = lat.map(|l| {
                if l.max < 1000.0 {
                    "met (max)"
                } else if l.median < 1000.0 {
                    "met (median), not max"
                } else {
                    "missed"
                }
            });
            writeln!(
                md,
                "| {} KB | {} | {} | {} | {} |",
                s.size / 1024,
                s.latencies.len(),
                cell(lat),
                cell(val),
                met.unwrap_or("–")
            )?;
        }
        writeln!(md)
    }

    fn write_charts_section(&self, md: &mut String) -> std::fmt::Result {
        if self.charts.is_empty() {
            return Ok(());
        }
        writeln!(md, "## Charts\n")?;
        writeln!(
            md,
            "Live pods as the bench's watch saw them, from the bench's first write of the phase, in each controller's median run; then the CPU (over the whole window) and peak-RSS ratios of every scenario, with the targets dashed.\n"
        )?;
        for (alt, path) in &self.charts {
            writeln!(md, "![{alt}]({path})\n")?;
        }
        Ok(())
    }

    fn write_targets(&self, md: &mut String) -> std::fmt::Result {
        writeln!(md, "## Targets\n")?;
        let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
        for row in &self.rows {
            let u = |f: fn(&Measurement) -> f64| row.stat(Subject::Upstream, f);
            let h = |f: fn(&Measurement) -> f64| row.stat(Subject::Host, f);
            let mut parts = Vec::new();
            if let Some(r) = ratio(h(|m| m.wall), u(|m| m.wall)) {
                parts.push(format!("time {r:.2} ≤ 1.0 {}", verdict(r <= 1.0)));
            }
            if let Some(r) = ratio(h(|m| m.cpu), u(|m| m.cpu)) {
                parts.push(format!("CPU {r:.2} ≤ 0.5 {}", verdict(r <= 0.5)));
            }
            if let Some(r) = ratio(h(|m| m.peak_rss_mib), u(|m| m.peak_rss_mib)) {
                parts.push(format!("RSS {r:.2} ≤ 0.5 {}", verdict(r <= 0.5)));
            }
            if row.tier == "raised"
                && let Some(r) = ratio(h(|m| m.pod_rate), row.stat(Subject::Limit, |m| m.pod_rate))
            {
                let what = if row.phase == Phase::Create { "creation" } else { "deletion" };
                parts.push(format!("{what} rate {:.0} % of the raw limit ≥ 90 % {}", r * 100.0, verdict(r >= 0.9)));
            }
            if !parts.is_empty() {
                writeln!(md, "- {} at {}: {}", row.label(), row.limits.label(), parts.join("; "))?;
            }
        }
        if let Some(steady) = &self.steady {
            let f = |s: Subject| stat(steady.samples.get(&s).into_iter().flatten().map(|m| m.rss_mib));
            if let Some(r) = ratio(f(Subject::Host), f(Subject::Upstream)) {
                writeln!(
                    md,
                    "- Steady state, {} pods: RSS {r:.2} ≤ 0.5 {}",
                    group(steady.pods as u64),
                    verdict(r <= 0.5)
                )?;
            }
            let c = |s: Subject| stat(steady.samples.get(&s).into_iter().flatten().map(|m| m.startup_cpu));
            if let Some(r) = ratio(c(Subject::Host), c(Subject::Upstream)) {
                writeln!(md, "- Steady state, CPU to sync and converge: {r:.2} ≤ 0.5 {}", verdict(r <= 0.5))?;
            }
        }
        if let Some(row) = &self.scale {
            let pods = group((row.rs * row.per as usize) as u64);
            let pairs: [(&str, ScaleField, f64); 4] = [
                ("time to current", |m| m.start.startup, 1.0),
                ("CPU to get there", |m| m.start.startup_cpu, 0.5),
                ("settled RSS", |m| m.start.rss_mib, 0.5),
                ("1 % scale-down time", |m| m.scale_down, 1.0),
            ];
            for (what, f, target) in pairs {
                if let Some(r) = ratio(row.stat(Subject::Host, f), row.stat(Subject::Upstream, f)) {
                    writeln!(md, "- Scale, {pods} pods, {what}: {r:.2} ≤ {target} {}", verdict(r <= target))?;
                }
            }
        }
        for row in &self.swap {
            if let Some(l) = stat(row.series.latencies.iter().copied()) {
                writeln!(
                    md,
                    "- Swap latency, {} KB module: median {:.0} ms, max {:.0} ms < 1 s {}",
                    row.series.size / 1024,
                    l.median * 1000.0,
                    l.max * 1000.0,
                    verdict(l.max < 1.0)
                )?;
            }
        }
        writeln!(md)
    }

    fn write_method(md: &mut String) -> std::fmt::Result {
        writeln!(md, "## Method\n")?;
        let lines = [
            "Every run (one scenario, one controller) gets a fresh etcd + kube-apiserver: no cache, watch or etcd history carries over, and the apiserver's request counter belongs to that run. Control plane startup (~3 s) is outside the measured windows.",
            "The controllers are separate processes with the same `--kube-api-qps`, `--kube-api-burst` and workers: kube-controller-manager `--controllers=replicaset-controller` and the release `host-process run` (the host's exact `main`, embedded policy). Both use the admin kubeconfig (exempt from API Priority and Fairness).",
            "Window: after the controller reports its caches synced, 1 s idle, then the bench writes the ReplicaSets (64 in flight) and watches pods (metadata) and ReplicaSets. Convergence: every ReplicaSet has exactly its replicas as live pods, `status.replicas` equal and `status.observedGeneration` current, at the time of the last watch event. The window for CPU and requests then extends until the apiserver's request count stays unchanged for 1 s (trailing status and event writes), at most 30 s.",
            "CPU: `utime + stime` of the controller process from `/proc/<pid>/stat`. Peak RSS: `VmHWM` from `/proc/<pid>/status`, reset to the current RSS at the start of each window through `/proc/<pid>/clear_refs`.",
            "API requests: `apiserver_request_total` on pods, replicasets (status included) and events, watches excluded, before/after the window, minus the bench's own requests (counted by its client). Each controller runs alone on its own control plane, so the difference is that controller's requests; the apiserver's own background requests touch other resources. KCM's own counter (`rest_client_requests_total`) includes its informers, so the apiserver count is the one compared.",
            "Steady state: one control plane filled once; each run starts the controller on it, waits for convergence (status writes) and quiet, lets it settle, reads `VmRSS`, then measures idle CPU.",
        ];
        for l in lines {
            writeln!(md, "- {l}")?;
        }
        Ok(())
    }
}

/// `| name | upstream | host | host/upstream |`.
fn comparison_row(md: &mut String, name: &str, upstream: Option<Stat>, host: Option<Stat>) -> std::fmt::Result {
    writeln!(md, "| {name} | {} | {} | {} |", cell(upstream), cell(host), ratio_cell(ratio(host, upstream)))
}

/// `10×20 → 5` → `10x20-to-5`: a scenario label as a file name.
fn file_name(label: &str) -> String {
    let replaced = label.replace('×', "x").replace(" → ", "-to-").replace(' ', "-");
    replaced.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).collect()
}
