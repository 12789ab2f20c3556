//! Runs scenarios under both controllers, compares the end states and renders the results.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::end_state::{FieldDiff, diff};
use super::runner::{Controller, RunResult, run};
use super::scenario::Scenario;

/// Scenarios run at once when `DIFFERENTIAL_PARALLEL` is unset (each runs two control planes).
pub const DEFAULT_PARALLEL: usize = 3;

/// How many scenarios to run at once: `DIFFERENTIAL_PARALLEL`, else [`DEFAULT_PARALLEL`].
pub fn parallelism_from_env() -> usize {
    std::env::var("DIFFERENTIAL_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_PARALLEL)
}

/// A difference the host makes on purpose: it fixes an upstream bug. Every entry must be named,
/// with its reason, in the README; such a difference does not fail the check.
#[derive(Debug, Clone, Copy)]
pub struct Intentional {
    /// The scenario.
    pub scenario: &'static str,
    /// The end-state field (as in [`super::EndState::fields`]).
    pub field: &'static str,
    /// Why, and where the README says so.
    pub why: &'static str,
}

/// The differences the host makes on purpose. None so far: on every scenario the host must end
/// exactly as upstream does.
pub const INTENTIONAL: &[Intentional] = &[];

/// The entry allowing `field` to differ in `scenario`, if any.
pub fn intentional(scenario: &str, field: &str) -> Option<&'static Intentional> {
    INTENTIONAL.iter().find(|i| i.scenario == scenario && i.field == field)
}

/// One scenario's two runs.
#[derive(Debug)]
pub struct Outcome {
    /// The scenario.
    pub scenario: Scenario,
    /// Under kube-controller-manager.
    pub upstream: RunResult,
    /// Under the host.
    pub host: RunResult,
}

/// How a scenario came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Same end state.
    Match,
    /// Different end states.
    Differ(Vec<FieldDiff>),
    /// Upstream's end state is not what the scenario was built to produce
    /// ([`Scenario::expect`]): the scenario is wrong or not deterministic. Lists the misses, and
    /// any differences from the host.
    Unexpected(Vec<String>, Vec<FieldDiff>),
    /// A run failed (timeout, precondition, startup): nothing to compare.
    Error,
}

impl Outcome {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        match (&self.upstream.end_state, &self.host.end_state) {
            (Ok(u), Ok(h)) => {
                let d: Vec<FieldDiff> =
                    diff(u, h).into_iter().filter(|d| intentional(self.scenario.name, &d.field).is_none()).collect();
                let fields = u.fields();
                let misses: Vec<String> = self
                    .scenario
                    .expect
                    .iter()
                    .filter_map(|(field, want)| {
                        let got = fields.iter().find(|(k, _)| k == field).map(|(_, v)| v.as_str());
                        (got != Some(*want))
                            .then(|| format!("{field}: expected {want}, upstream has {}", got.unwrap_or("nothing")))
                    })
                    .collect();
                if !misses.is_empty() {
                    Verdict::Unexpected(misses, d)
                } else if d.is_empty() {
                    Verdict::Match
                } else {
                    Verdict::Differ(d)
                }
            }
            _ => Verdict::Error,
        }
    }

    /// Whether both runs ended in the same state.
    pub fn matches(&self) -> bool {
        self.verdict() == Verdict::Match
    }

    /// A readable account of a mismatch or failure (empty when it matches).
    pub fn explain(&self) -> String {
        let mut out = String::new();
        match self.verdict() {
            Verdict::Match => {}
            Verdict::Differ(diffs) => {
                let _ = writeln!(out, "scenario {} ({}): end states differ", self.scenario.name, self.scenario.purpose);
                write_diffs(&mut out, &diffs);
            }
            Verdict::Unexpected(misses, diffs) => {
                let _ = writeln!(
                    out,
                    "scenario {} ({}): upstream did not end as the scenario expects (the scenario is wrong or \
                     not deterministic)",
                    self.scenario.name, self.scenario.purpose
                );
                for miss in misses {
                    let _ = writeln!(out, "  {miss}");
                }
                if !diffs.is_empty() {
                    let _ = writeln!(out, "  and the end states differ:");
                    write_diffs(&mut out, &diffs);
                }
            }
            Verdict::Error => {
                let _ = writeln!(out, "scenario {} ({}): a run failed", self.scenario.name, self.scenario.purpose);
                for (who, run) in [("upstream", &self.upstream), ("host", &self.host)] {
                    if let Err(e) = &run.end_state {
                        let _ = writeln!(out, "  {who}: {}", e.replace('\n', "\n    "));
                    }
                }
            }
        }
        out
    }
}

fn write_diffs(out: &mut String, diffs: &[FieldDiff]) {
    let width = diffs.iter().map(|d| d.field.len()).max().unwrap_or(0);
    for d in diffs {
        let _ = writeln!(out, "  {:width$}  upstream: {}", d.field, d.upstream);
        let _ = writeln!(out, "  {:width$}  host:     {}", "", d.host);
    }
}

/// Runs each scenario under both controllers (the two runs of a scenario at the same time, each
/// on its own fresh control plane), `parallel` scenarios at once. Unless `keep_going`, no new
/// scenario starts after one did not match. Returns the outcomes in the order given.
pub async fn run_all(scenarios: Vec<Scenario>, parallel: usize, keep_going: bool) -> Vec<Outcome> {
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let failed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for scenario in scenarios {
        let (permits, failed) = (permits.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("the semaphore is never closed");
            if failed.load(Ordering::SeqCst) && !keep_going {
                return None;
            }
            let (upstream, host) = tokio::join!(run(&scenario, Controller::Upstream), run(&scenario, Controller::Host));
            let outcome = Outcome { scenario, upstream, host };
            if !outcome.matches() {
                failed.store(true, Ordering::SeqCst);
            }
            Some(outcome)
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Some(outcome)) => outcomes.push(outcome),
            Ok(None) => {}
            Err(e) => panic!("a scenario task panicked: {e}"),
        }
    }
    outcomes
}

/// A table: scenario | upstream end state | host end state | match, one block of lines per
/// scenario (one line per compared field), then the explanation of every mismatch.
pub fn render_table(outcomes: &[Outcome]) -> String {
    struct Row {
        cells: [Vec<String>; 4],
    }
    let lines = |run: &RunResult| -> Vec<String> {
        match &run.end_state {
            Ok(state) => state.fields().into_iter().map(|(k, v)| format!("{k}: {v}")).collect(),
            Err(e) => {
                let first = e.lines().next().unwrap_or_default();
                vec![format!("ERROR: {}", truncate(first, 100))]
            }
        }
    };
    let rows: Vec<Row> = outcomes
        .iter()
        .map(|o| {
            let verdict = match o.verdict() {
                Verdict::Match => match (&o.upstream.end_state, &o.host.end_state) {
                    (Ok(u), Ok(h)) if !diff(u, h).is_empty() => "yes (intentional difference)".to_string(),
                    _ => "yes".to_string(),
                },
                Verdict::Differ(d) => format!("NO ({} fields)", d.len()),
                Verdict::Unexpected(..) => "UNEXPECTED".to_string(),
                Verdict::Error => "ERROR".to_string(),
            };
            Row {
                cells: [
                    vec![
                        o.scenario.name.to_string(),
                        format!("upstream {}", timing(&o.upstream)),
                        format!("host     {}", timing(&o.host)),
                    ],
                    lines(&o.upstream),
                    lines(&o.host),
                    vec![verdict],
                ],
            }
        })
        .collect();
    let headers = ["scenario", "upstream end state", "host end state", "match"];
    let mut widths: [usize; 4] = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(&row.cells) {
            *w = (*w).max(cell.iter().map(|l| l.chars().count()).max().unwrap_or(0));
        }
    }
    let mut out = String::new();
    let rule = |out: &mut String| {
        let parts: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let _ = writeln!(out, "{}", parts.join("-+-"));
    };
    let line = |out: &mut String, cells: [&str; 4]| {
        let parts: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:w$}")).collect();
        let _ = writeln!(out, "{}", parts.join(" | ").trim_end());
    };
    line(&mut out, headers);
    for row in &rows {
        rule(&mut out);
        let height = row.cells.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..height {
            let cell = |c: usize| row.cells[c].get(i).map_or("", String::as_str);
            line(&mut out, [cell(0), cell(1), cell(2), cell(3)]);
        }
    }
    rule(&mut out);
    let matched = outcomes.iter().filter(|o| o.matches()).count();
    let _ = writeln!(out, "{matched}/{} scenarios match", outcomes.len());
    for o in outcomes.iter().filter(|o| !o.matches()) {
        let _ = write!(out, "\n{}", o.explain());
    }
    out
}

fn timing(run: &RunResult) -> String {
    match run.setup {
        Some(setup) => format!("{} (setup {})", secs(run.elapsed), secs(setup)),
        None => secs(run.elapsed),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { format!("{}...", s.chars().take(max).collect::<String>()) }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::super::end_state::{EndState, PodFacts, ReplicaSetState, StatusFields};
    use super::super::scenario::Scenario;
    use super::*;

    fn pod(id: Option<u32>) -> PodFacts {
        PodFacts { id, app: "web".into(), phase: "Pending".into(), terminating: false, owned: true }
    }

    fn state(ids: &[Option<u32>], ready: i32) -> EndState {
        EndState::new(
            Vec::new(),
            vec![ReplicaSetState {
                name: "web".into(),
                spec_replicas: ids.len() as i32,
                generation: 2,
                pods: ids.iter().map(|id| pod(*id)).collect(),
                status: StatusFields { replicas: ids.len() as i32, ready, ..StatusFields::default() },
                events: BTreeSet::from(["Normal/SuccessfulDelete".to_string()]),
            }],
            Vec::new(),
        )
    }

    fn outcome(upstream: EndState, host: std::result::Result<EndState, String>) -> Outcome {
        let run = |end_state| RunResult { end_state, elapsed: Duration::from_secs(3), setup: None };
        Outcome {
            scenario: Scenario {
                live: false,
                name: "s",
                purpose: "p",
                steps: Vec::new(),
                expect: vec![("web.pods.active", "2 [0 1]")],
            },
            upstream: run(Ok(upstream)),
            host: run(host),
        }
    }

    #[test]
    fn pods_show_ids_in_order_then_the_new_ones() {
        let fields = state(&[None, Some(2), Some(0)], 0).fields();
        assert!(fields.contains(&("web.pods.active".to_string(), "3 [0 2 new]".to_string())), "{fields:?}");
    }

    #[test]
    fn equal_end_states_match_and_different_ones_name_each_field() {
        assert!(outcome(state(&[Some(1), Some(0)], 0), Ok(state(&[Some(0), Some(1)], 0))).matches());
        let o = outcome(state(&[Some(0), Some(1)], 0), Ok(state(&[Some(0), Some(2)], 1)));
        let Verdict::Differ(diffs) = o.verdict() else { panic!("{:?}", o.verdict()) };
        let fields: Vec<&str> = diffs.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["web.pods.active", "web.status.readyReplicas"]);
        let text = o.explain();
        assert!(text.contains("upstream: 2 [0 1]") && text.contains("host:     2 [0 2]"), "{text}");
        assert!(render_table(&[o]).contains("NO (2 fields)"));
    }

    #[test]
    fn upstream_missing_the_expectation_blames_the_scenario_and_errors_are_reported() {
        let o = outcome(state(&[Some(0), Some(3)], 0), Ok(state(&[Some(0), Some(3)], 0)));
        assert!(matches!(o.verdict(), Verdict::Unexpected(..)), "{:?}", o.verdict());
        assert!(o.explain().contains("web.pods.active: expected 2 [0 1], upstream has 2 [0 3]"), "{}", o.explain());
        let o = outcome(state(&[Some(0), Some(1)], 0), Err("step 3 Scale: timed out".into()));
        assert_eq!(o.verdict(), Verdict::Error);
        assert!(o.explain().contains("host: step 3 Scale: timed out"), "{}", o.explain());
        assert!(render_table(&[o]).contains("ERROR: step 3 Scale: timed out"));
    }
}
