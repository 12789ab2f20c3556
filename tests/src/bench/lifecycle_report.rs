//! The lifecycle tier's section of the report: ramp and churn, upstream vs host, with ratios and
//! the controllers' requests by verb and resource.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::lifecycle::{ChurnMeasurement, LifecyclePlan, RampMeasurement};
use super::report::{Stat, cell, ratio, ratio_cell, stat};
use super::scenarios::group;
use super::subject::Subject;

/// Reads one figure out of a ramp run.
type RampField = fn(&RampMeasurement) -> f64;
/// Reads one figure out of a churn run.
type ChurnField = fn(&ChurnMeasurement) -> f64;

/// Every lifecycle run, per subject.
#[derive(Debug, Clone, Default)]
pub struct LifecycleRows {
    /// Ramp runs.
    pub ramp: BTreeMap<Subject, Vec<RampMeasurement>>,
    /// Churn runs.
    pub churn: BTreeMap<Subject, Vec<ChurnMeasurement>>,
}

/// `upstream | host | host/upstream` cells.
fn cells(upstream: Option<Stat>, host: Option<Stat>) -> String {
    format!("{} | {} | {}", cell(upstream), cell(host), ratio_cell(ratio(host, upstream)))
}

impl LifecycleRows {
    fn ramp_stat(&self, subject: Subject, f: impl Fn(&RampMeasurement) -> f64) -> Option<Stat> {
        stat(self.ramp.get(&subject)?.iter().map(f))
    }

    fn churn_stat(&self, subject: Subject, f: impl Fn(&ChurnMeasurement) -> f64) -> Option<Stat> {
        stat(self.churn.get(&subject)?.iter().map(f))
    }

    /// The section, empty when nothing ran.
    pub fn markdown(&self, plan: &LifecyclePlan, limits: &str) -> Result<String, std::fmt::Error> {
        let mut md = String::new();
        if self.ramp.is_empty() && self.churn.is_empty() {
            return Ok(md);
        }
        writeln!(md, "## Lifecycle tier: a live cluster (kube-scheduler, kwok fake nodes)\n")?;
        writeln!(
            md,
            "Both controllers at {limits}, each run on a fresh live cluster. The controller's requests are the API server's count of what only a ReplicaSet controller does (pods create/delete/patch, ReplicaSet get and status update, core/v1 events); kube-scheduler, kwok and the node lifecycle controller write other resources.\n"
        )?;
        if !self.ramp.is_empty() {
            self.write_ramp(&mut md, plan)?;
        }
        if !self.churn.is_empty() {
            self.write_churn(&mut md, plan)?;
        }
        Ok(md)
    }

    fn write_ramp(&self, md: &mut String, plan: &LifecyclePlan) -> std::fmt::Result {
        let (rs, per) = plan.ramp;
        writeln!(
            md,
            "**Ramp**: {rs} ReplicaSets × {per} pods from 0 until all are available; kube-scheduler places them, kwok starts them and turns each Ready 1–3 s later.\n"
        )?;
        writeln!(md, "| Metric | Upstream | Host | Host/upstream |\n|---|---:|---:|---:|")?;
        let rows: [(&str, RampField); 4] = [
            ("Wall time to all available (s)", |m| m.wall),
            ("Controller CPU (s)", |m| m.cpu),
            ("Controller peak RSS (MiB)", |m| m.peak_rss_mib),
            ("API requests, total", |m| m.requests.values().sum()),
        ];
        for (name, f) in rows {
            writeln!(
                md,
                "| {name} | {} |",
                cells(self.ramp_stat(Subject::Upstream, f), self.ramp_stat(Subject::Host, f))
            )?;
        }
        let kinds: BTreeSet<String> = self.ramp.values().flatten().flat_map(|m| m.requests.keys().cloned()).collect();
        for kind in kinds {
            let f = |m: &RampMeasurement| m.requests.get(&kind).copied().unwrap_or(0.0);
            writeln!(
                md,
                "| `{kind}` | {} |",
                cells(self.ramp_stat(Subject::Upstream, f), self.ramp_stat(Subject::Host, f))
            )?;
        }
        writeln!(md)
    }

    fn write_churn(&self, md: &mut String, plan: &LifecyclePlan) -> std::fmt::Result {
        let (rs, per) = plan.churn;
        writeln!(
            md,
            "**Churn**: {} Running pods ({rs} ReplicaSets × {per}); every second {:.0} % of them restart (restart count up, Ready false; kwok makes them Ready again 0.5 s later), for {} s.\n",
            group(rs as u64 * per as u64),
            plan.churn_share * 100.0,
            plan.churn_for.as_secs()
        )?;
        writeln!(md, "| Metric | Upstream | Host | Host/upstream |\n|---|---:|---:|---:|")?;
        let rows: [(&str, ChurnField); 7] = [
            ("Pod updates", |m| m.pod_updates),
            ("Controller CPU (s)", |m| m.cpu),
            ("Controller CPU per 1,000 pod updates (ms)", ChurnMeasurement::cpu_ms_per_1000_updates),
            ("Status writes", |m| m.status_writes),
            ("Pod update → its ReplicaSet's next status write, p50 (ms)", |m| m.latency_p50 * 1000.0),
            ("Pod update → its ReplicaSet's next status write, p99 (ms)", |m| m.latency_p99 * 1000.0),
            ("Controller peak RSS (MiB)", |m| m.peak_rss_mib),
        ];
        for (name, f) in rows {
            writeln!(
                md,
                "| {name} | {} |",
                cells(self.churn_stat(Subject::Upstream, f), self.churn_stat(Subject::Host, f))
            )?;
        }
        writeln!(md)
    }
}
