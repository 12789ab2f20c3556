//! The differential check: every scenario under kube-controller-manager and under the host, each
//! on a fresh private control plane; any difference in end state fails with a readable diff.
//! `DIFFERENTIAL_PARALLEL` sets how many scenarios run at once.

use tests::differential::{parallelism_from_env, render_table, run_all, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_scenario_ends_the_same_under_upstream_and_the_host() {
    let started = std::time::Instant::now();
    let outcomes = run_all(scenarios::all(), parallelism_from_env(), true).await;
    let table = render_table(&outcomes);
    println!("{table}\ntotal {:.1} s", started.elapsed().as_secs_f64());
    let failing: Vec<String> =
        outcomes.iter().filter(|o| !o.matches()).map(tests::differential::Outcome::explain).collect();
    assert!(failing.is_empty(), "{} scenario(s) differ or failed:\n\n{}", failing.len(), failing.join("\n"));
}
