//! Recording live syncs as fixtures: a shadow difference recorded by the running binary, replayed
//! with `dry-run` for both modules; the one-shot `record` command; and a recording directory that
//! cannot be written.

use std::{collections::BTreeMap, path::Path, process::Output, time::Duration};

use anyhow::{Context, Result, ensure};
use host::modules::resource::{Mode, Phase};
use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::EnvVar};
use kube::api::PostParams;
use tests::{
    TestNamespace,
    controller::replica_set,
    eventually,
    host_process::HostProcess,
    modules::{install_crd, push, wait_phase},
    ns,
    scenes::{scale, three_pods_oldest_ready_last, wait_live_pods},
    shared,
    workdir::WorkDir,
};

/// The binary's own `main`.
const BINARY: &str = env!("CARGO_BIN_EXE_host-process");
const START: Duration = Duration::from_secs(60);
const SOON: Duration = Duration::from_secs(30);
/// What must never reach a fixture: it is in every pod's environment and annotations.
const SECRET: &str = "hunter2-not-for-fixtures";

/// `web`, whose pods carry a secret in their environment and in an annotation.
fn web_with_secrets() -> ReplicaSet {
    let mut rs = replica_set("web", 1);
    let template = rs.spec.template.as_mut().expect("testkit sets a template");
    let meta = template.metadata.get_or_insert_default();
    meta.annotations = Some(BTreeMap::from([("example.com/token".to_string(), SECRET.to_string())]));
    let container = &mut template.spec.as_mut().expect("a pod spec").containers[0];
    container.env = Some(vec![EnvVar { name: "TOKEN".into(), value: Some(SECRET.into()), ..Default::default() }]);
    rs
}

/// Runs the binary with `args` to completion.
fn binary(args: &[&str]) -> Result<Output> {
    std::process::Command::new(BINARY).args(args).output().with_context(|| format!("running {BINARY} {args:?}"))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

async fn start(ns: &TestNamespace, dir: &WorkDir, name: &str, record: &[&str]) -> Result<HostProcess> {
    let kubeconfig = shared().await?.kubeconfig_path().to_path_buf();
    let mut flags = vec!["--namespace", ns.name(), "--module-namespace", ns.name(), "--leader-elect=false"];
    flags.extend_from_slice(record);
    let host = HostProcess::spawn(name, BINARY.as_ref(), &kubeconfig, &flags, &dir.path().join(format!("{name}.log")))?;
    host.wait_readyz(200, "no leader election", START).await?;
    Ok(host)
}

fn recordings(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

#[tokio::test]
async fn a_recorded_shadow_difference_replays_with_dry_run_for_both_modules() -> Result<()> {
    let ns = ns().await?;
    install_crd(ns.client()).await?;
    let dir = WorkDir::create("record")?;
    let fixtures = dir.path().join("fixtures");
    let record = ["--record-dir", fixtures.to_str().context("UTF-8 path")?, "--record-on", "shadow-diff"];
    let host = start(&ns, &dir, "recorder", &record).await?;
    three_pods_oldest_ready_last(&ns, web_with_secrets()).await?;
    push(&ns, "newest-first", test_guests::NEWEST_FIRST, Mode::Shadow).await?;
    wait_phase(&ns, "newest-first", Phase::Shadow, SOON).await?;

    // The scale-down is where the two rankings disagree.
    scale(&ns, "web", 1).await?;
    wait_live_pods(&ns, 1).await?;
    let recorded = eventually("a recorded shadow difference", SOON, || async {
        Ok(recordings(&fixtures)?.into_iter().find(|p| p.to_string_lossy().contains("-shadow-diff-")))
    })
    .await?;
    let file = std::fs::read_to_string(&recorded)?;
    ensure!(file.contains("# Why: shadow-diff: delete: active ["), "{file}");
    ensure!(!file.contains(SECRET) && !file.contains("TOKEN") && !file.contains("example.com/token"), "{file}");

    // The serving (embedded) module reproduces its own plan from the file...
    let serving = binary(&["dry-run", "--fixture", recorded.to_str().unwrap()])?;
    ensure!(serving.status.success() && text_of(&serving).contains("expect:  matches"), "{}", text(&serving));
    // ...the candidate does not: it is the recorded difference...
    let candidate = dir.path().join("newest-first.wasm");
    std::fs::write(&candidate, test_guests::NEWEST_FIRST)?;
    let differs =
        binary(&["dry-run", "--module", candidate.to_str().unwrap(), "--fixture", recorded.to_str().unwrap()])?;
    ensure!(!differs.status.success() && text(&differs).contains("delete: expected"), "{}", text(&differs));
    // ...and meets the shadow plan recorded in the comment.
    let variant = dir.path().join("as-shadow.yaml");
    std::fs::write(&variant, policy_kit::record::shadow_variant(&file)?)?;
    let shadow = binary(&["dry-run", "--module", candidate.to_str().unwrap(), "--fixture", variant.to_str().unwrap()])?;
    ensure!(shadow.status.success() && text_of(&shadow).contains("expect:  matches"), "{}", text(&shadow));
    host.terminate()?;
    Ok(())
}

fn text_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_record_command_writes_the_current_state_and_the_serving_plan() -> Result<()> {
    let ns = ns().await?;
    let dir = WorkDir::create("record")?;
    let host = start(&ns, &dir, "serving", &[]).await?;
    ns.api::<ReplicaSet>().create(&PostParams::default(), &web_with_secrets()).await?;
    wait_live_pods(&ns, 1).await?;
    host.terminate()?;

    let out = dir.path().join("web.yaml");
    let kubeconfig = shared().await?.kubeconfig_path().display().to_string();
    let key = format!("{}/web", ns.name());
    let args =
        ["record", &key, "--out", out.to_str().unwrap(), "--kubeconfig", &kubeconfig, "--module-namespace", ns.name()];
    let recorded = binary(&args)?;
    ensure!(recorded.status.success(), "{}", text(&recorded));
    ensure!(text_of(&recorded).contains("1 candidate pods, expectation from "), "{}", text(&recorded));
    let fixture = std::fs::read_to_string(&out)?;
    ensure!(fixture.contains("# Why: snapshot: the state read from the cluster"), "{fixture}");
    ensure!(!fixture.contains(SECRET), "{fixture}");
    let replay = binary(&["dry-run", "--fixture", out.to_str().unwrap()])?;
    ensure!(replay.status.success(), "{}", text(&replay));

    let missing =
        binary(&["record", &format!("{}/nope", ns.name()), "--out", "/dev/null", "--kubeconfig", &kubeconfig])?;
    ensure!(!missing.status.success(), "{}", text(&missing));
    ensure!(text(&missing).trim() == format!("error: ReplicaSet {}/nope not found", ns.name()), "{}", text(&missing));
    Ok(())
}

#[tokio::test]
async fn recording_to_an_unwritable_directory_logs_one_error_and_keeps_reconciling() -> Result<()> {
    let ns = ns().await?;
    let dir = WorkDir::create("record")?;
    // A file where the directory should be: nothing can be created under it, not even by root.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, "not a directory")?;
    let unwritable = blocked.join("fixtures");
    let record = ["--record-dir", unwritable.to_str().unwrap(), "--record-on", "all"];
    let host = start(&ns, &dir, "unwritable", &record).await?;
    ns.api::<ReplicaSet>().create(&PostParams::default(), &replica_set("web", 2)).await?;
    wait_live_pods(&ns, 2).await?;
    scale(&ns, "web", 3).await?;
    wait_live_pods(&ns, 3).await?;
    let log = std::fs::read_to_string(host.process().log_path())?;
    let errors = log.lines().filter(|l| l.contains("recording a fixture failed")).count();
    ensure!(errors == 1, "one error expected, got {errors}:\n{log}");
    ensure!(log.contains(&format!("creating {}", unwritable.display())), "{log}");
    host.terminate()?;
    Ok(())
}
