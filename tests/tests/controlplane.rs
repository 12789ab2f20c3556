//! Tests of the control-plane harness itself: starting and stopping real etcd + kube-apiserver, API round trips, kube-controller-manager, and that no process outlives its owner (stop, drop, exit after a panic, SIGKILL).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use host::testkit;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tests::workdir::WorkDir;
use tests::{ControlPlane, ControlPlaneOptions, KcmOptions, consistently, eventually, pid_is_running, pods};

/// Env var naming the file where the helper test writes the PIDs of the shared control plane.
const PID_FILE_ENV: &str = "HARNESS_TEST_PID_FILE";
/// Env var telling the helper test what to do after writing the PIDs: `panic` or `hang`.
const MODE_ENV: &str = "HARNESS_TEST_HELPER_MODE";
const HELPER: &str = "helper_starts_the_shared_control_plane_then_panics_or_hangs";

fn assert_not_running(pids: &[u32], context: &str) {
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| pid_is_running(p)).collect();
    assert!(alive.is_empty(), "{context}: PIDs still running: {alive:?}");
}

fn pod(name: &str, app: &str) -> Pod {
    testkit::pod(name).unsaved().labels(&testkit::labels(&[("app", app)])).build()
}

fn replica_set(name: &str, app: &str, replicas: i32) -> ReplicaSet {
    testkit::rs(name).without_namespace().replicas(replicas).labels(&testkit::labels(&[("app", app)])).build()
}

/// Creates a ConfigMap in a fresh namespace and reads it back: the control plane serves writes.
async fn round_trip(cp: &ControlPlane) -> Result<()> {
    let ns = cp.create_namespace("round-trip").await?;
    let maps: Api<ConfigMap> = ns.api();
    let map = ConfigMap {
        metadata: ObjectMeta { name: Some("probe".to_string()), ..Default::default() },
        data: Some([("k".to_string(), cp.server_url().to_string())].into()),
        ..Default::default()
    };
    maps.create(&PostParams::default(), &map).await?;
    let read = maps.get("probe").await?;
    ensure!(read.data == map.data, "read back {:?}", read.data);
    Ok(())
}

#[tokio::test]
async fn the_harness_starts_serves_and_stops_cleanly_three_times_in_a_row() -> Result<()> {
    for round in 1..=3 {
        let cp = ControlPlane::start().await?;
        eprintln!("round {round}: control plane at {} ready in {:?}", cp.server_url(), cp.startup_duration());
        round_trip(&cp).await?;
        let pids = cp.pids();
        let dir = cp.dir().to_path_buf();
        assert!(pids.iter().all(|&p| pid_is_running(p)));
        let stopping = Instant::now();
        if round == 3 {
            drop(cp); // the drop path
        } else {
            cp.stop();
        }
        eprintln!("round {round}: stopped in {:?}", stopping.elapsed());
        assert_not_running(&pids, &format!("round {round}"));
        assert!(!dir.exists(), "round {round}: {} left behind", dir.display());
        assert!(pids.iter().all(|p| !tests::running_pids().contains(p)), "round {round}: PIDs still registered");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_harness_runs_in_parallel_on_other_ports() -> Result<()> {
    let (a, b) = tokio::join!(ControlPlane::start(), ControlPlane::start());
    let (a, b) = (a?, b?);
    assert_ne!(a.server_url(), b.server_url());
    assert_ne!(a.etcd_url(), b.etcd_url());
    round_trip(&a).await?;
    round_trip(&b).await?;
    // Separate etcds: a namespace made in one does not exist in the other.
    let only_in_a = a.create_namespace("only-in-a").await?;
    let in_b = Api::<Namespace>::all(b.client()?).get_opt(only_in_a.name()).await?;
    assert!(in_b.is_none(), "{} leaked into b", only_in_a.name());
    Ok(())
}

#[tokio::test]
async fn a_missing_binary_is_a_clear_error_that_names_the_build_script() -> Result<()> {
    let empty = WorkDir::create("empty-bin")?;
    let options = ControlPlaneOptions { bin_dir: Some(empty.path().to_path_buf()), ..Default::default() };
    let error = ControlPlane::start_with(options).await.expect_err("started without binaries");
    assert_eq!(
        format!("{error:#}"),
        format!(
            "kube-apiserver not found in {}; build the control plane with `tests/controlplane/build.sh`",
            empty.path().display()
        )
    );
    Ok(())
}

#[tokio::test]
async fn a_pod_and_a_replicaset_are_listed_watched_and_patched_through_the_status_subresource() -> Result<()> {
    let ns = tests::ns().await?;
    let client = ns.client().clone();
    let pods_api: Api<Pod> = ns.api();
    let rs_api: Api<ReplicaSet> = ns.api();

    // Pods: raw watch from the list's resourceVersion sees the add and the delete.
    let rv = pods_api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("list has no resourceVersion")?;
    let mut pod_events = pods_api.watch(&WatchParams::default().timeout(60), &rv).await?.boxed();
    pods_api.create(&PostParams::default(), &pod("web-1", "web")).await?;
    expect_event(&mut pod_events, "ADDED web-1", |e| matches!(e, WatchEvent::Added(p) if p.name_any() == "web-1"))
        .await?;
    let listed = pods_api.list(&ListParams::default().labels("app=web")).await?;
    assert_eq!(names(&listed.items), ["web-1"]);

    // Scheduler and kubelet stand-ins.
    pods::bind_pod(&client, ns.name(), "web-1", "node-a").await?;
    let since = Time(Timestamp::from_second(1_700_000_000)?);
    let running = pods::set_pod_running(&client, ns.name(), "web-1", true, since.clone()).await?;
    let status = running.status.clone().context("no status")?;
    assert_eq!(running.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("node-a"));
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ready =
        status.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "Ready").context("no Ready condition")?;
    assert_eq!(ready.status, "True");
    assert_eq!(ready.last_transition_time, Some(since));
    let restarted = pods::set_container_restarts(&client, ns.name(), "web-1", 4).await?;
    let containers: Vec<(i32, bool)> = restarted
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .map(|c| (c.restart_count, c.ready))
        .collect();
    assert_eq!(containers, [(4, true)], "restart count set, readiness kept");
    let failed = pods::set_pod_phase(&client, ns.name(), "web-1", "Failed").await?;
    assert_eq!(failed.status.and_then(|s| s.phase).as_deref(), Some("Failed"));

    // A bound pod is deleted gracefully by its kubelet; none runs, so delete immediately.
    pods_api.delete("web-1", &DeleteParams::default().grace_period(0)).await?;
    expect_event(&mut pod_events, "DELETED web-1", |e| matches!(e, WatchEvent::Deleted(p) if p.name_any() == "web-1"))
        .await?;

    // ReplicaSets: kube-runtime's watcher sees the add and the delete; status is patched through
    // the status subresource (no controller runs here, so nothing else writes it).
    let mut rs_events = watcher(rs_api.clone(), watcher::Config::default()).boxed();
    expect_rs_event(&mut rs_events, "initial list", |e| matches!(e, watcher::Event::InitDone)).await?;
    rs_api.create(&PostParams::default(), &replica_set("web", "web", 2)).await?;
    expect_rs_event(&mut rs_events, "Apply web", |e| matches!(e, watcher::Event::Apply(rs) if rs.name_any() == "web"))
        .await?;
    assert_eq!(names(&rs_api.list(&ListParams::default()).await?.items), ["web"]);
    let status =
        ReplicaSetStatus { replicas: 2, ready_replicas: Some(1), observed_generation: Some(1), ..Default::default() };
    let patched = rs_api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(serde_json::json!({ "status": status })))
        .await?;
    assert_eq!(patched.status, Some(status.clone()));
    assert_eq!(rs_api.get_status("web").await?.status, Some(status));
    rs_api.delete("web", &DeleteParams::default()).await?;
    expect_rs_event(
        &mut rs_events,
        "Delete web",
        |e| matches!(e, watcher::Event::Delete(rs) if rs.name_any() == "web"),
    )
    .await?;
    Ok(())
}

fn names<K: Resource>(items: &[K]) -> Vec<String> {
    items.iter().map(|o| o.meta().name.clone().unwrap_or_default()).collect()
}

async fn expect_event<S>(events: &mut S, what: &str, matches: impl Fn(&WatchEvent<Pod>) -> bool) -> Result<()>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<Pod>>> + Unpin,
{
    let found = async {
        while let Some(event) = events.try_next().await? {
            if matches(&event) {
                return Ok(());
            }
        }
        bail!("watch ended before {what}")
    };
    tokio::time::timeout(Duration::from_secs(20), found).await.with_context(|| format!("no {what} within 20 s"))?
}

async fn expect_rs_event<S>(
    events: &mut S,
    what: &str,
    matches: impl Fn(&watcher::Event<ReplicaSet>) -> bool,
) -> Result<()>
where
    S: futures::Stream<Item = watcher::Result<watcher::Event<ReplicaSet>>> + Unpin,
{
    let found = async {
        while let Some(event) = events.try_next().await? {
            if matches(&event) {
                return Ok(());
            }
        }
        bail!("watcher ended before {what}")
    };
    tokio::time::timeout(Duration::from_secs(20), found).await.with_context(|| format!("no {what} within 20 s"))?
}

#[tokio::test]
async fn a_service_account_token_kubeconfig_authenticates_as_the_service_account_under_rbac() -> Result<()> {
    let cp = tests::shared().await?;
    let ns = tests::ns().await?;
    let token = ns.service_account_token("controller", 3600).await?;
    let kubeconfig = cp.dir().join(format!("{}-controller.kubeconfig", ns.name()));
    cp.write_token_kubeconfig(&kubeconfig, &token, ns.name())?;

    let client = tests::kubeconfig::client_from_file(&kubeconfig).await?;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let username = review.status.and_then(|s| s.user_info).and_then(|u| u.username);
    let expected = format!("system:serviceaccount:{}:controller", ns.name());
    assert_eq!(username.as_deref(), Some(expected.as_str()));
    // RBAC is on and nothing grants this account anything.
    let denied = Api::<Pod>::namespaced(client, ns.name())
        .list(&ListParams::default())
        .await
        .expect_err("an unbound service account listed pods");
    assert!(format!("{denied}").contains("forbidden"), "{denied}");

    // The same kubeconfig works for kubectl, and so does the admin one.
    let kubectl = cp.kubectl()?;
    let whoami = kubectl
        .with_kubeconfig(&kubeconfig)
        .run(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .await?;
    assert_eq!(whoami, expected);
    let got = kubectl.run(&["get", "namespace", ns.name(), "-o", "name"]).await?;
    assert_eq!(got.trim(), format!("namespace/{}", ns.name()));
    std::fs::remove_file(&kubeconfig)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_controller_manager_gives_a_replicaset_of_three_three_pods_does_nothing_once_stopped_and_resumes_when_restarted()
-> Result<()> {
    // A private control plane: KCM acts on every namespace and would disturb other tests.
    let cp = ControlPlane::start().await?;
    let started = Instant::now();
    let kcm = cp.start_kube_controller_manager(KcmOptions::default()).await?;
    eprintln!("kube-controller-manager ready in {:?}", started.elapsed());
    let ns = cp.create_namespace("kcm").await?;
    let pods_api: Api<Pod> = ns.api();
    let rs_api: Api<ReplicaSet> = ns.api();
    rs_api.create(&PostParams::default(), &replica_set("web", "web", 3)).await?;
    let owned = eventually("3 pods owned by ReplicaSet web", Duration::from_secs(60), || {
        let pods_api = pods_api.clone();
        async move {
            let pods = pods_api.list(&ListParams::default().labels("app=web")).await?;
            let owned: Vec<Pod> =
                pods.items.into_iter().filter(|p| p.owner_references().iter().any(|o| o.name == "web")).collect();
            Ok((owned.len() == 3).then_some(owned))
        }
    })
    .await?;

    let metrics = kcm.metrics().await?;
    assert!(
        metrics.contains("workqueue_adds_total{name=\"replicaset\"}"),
        "KCM /metrics has no replicaset workqueue metrics"
    );

    let pid = kcm.pid();
    assert!(pid_is_running(pid));
    kcm.stop();
    assert_not_running(&[pid], "stopped kube-controller-manager");

    // Nothing replaces a deleted pod or reacts to a scale-up now.
    pods_api.delete(&owned[0].name_any(), &DeleteParams::default()).await?;
    rs_api
        .patch("web", &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": { "replicas": 5 } })))
        .await?;
    consistently("2 pods and no replacement", Duration::from_secs(3), || {
        let pods_api = pods_api.clone();
        async move { Ok(pods_api.list(&ListParams::default()).await?.items.len() == 2) }
    })
    .await?;

    // A new KCM (this time without HTTPS) picks the work up: 5 pods.
    let restarted = cp.start_kube_controller_manager(KcmOptions { secure_port: false, ..Default::default() }).await?;
    assert_eq!(restarted.port(), None);
    eventually("5 pods after KCM restarted", Duration::from_secs(60), || {
        let pods_api = pods_api.clone();
        async move {
            let n = pods_api.list(&ListParams::default()).await?.items.len();
            Ok((n == 5).then_some(()))
        }
    })
    .await?;

    let mut pids = cp.pids();
    pids.push(restarted.pid());
    drop(kcm);
    drop(restarted);
    drop(cp);
    assert_not_running(&pids, "dropped control plane and KCM");
    Ok(())
}

// --- cleanup when the test binary itself dies --------------------------------------------------

/// Not a test on its own: run by the two tests below in a child copy of this test binary. It
/// starts the shared control plane (kept alive only by the `static`, so only the exit-time cleanup
/// or PDEATHSIG can stop it), writes its PIDs, then panics or hangs until killed.
#[tokio::test]
#[ignore = "helper: run in a child process by the cleanup tests"]
async fn helper_starts_the_shared_control_plane_then_panics_or_hangs() {
    let (Some(pid_file), Ok(mode)) = (std::env::var_os(PID_FILE_ENV), std::env::var(MODE_ENV)) else {
        return; // run by hand with --ignored: nothing to do
    };
    let cp = tests::shared().await.expect("shared control plane");
    let mut pids = cp.pids();
    let kcm = cp.start_kube_controller_manager(KcmOptions::default()).await.expect("kube-controller-manager");
    pids.push(kcm.pid());
    // Leaked, like a static: never dropped, so unwinding does not stop it.
    std::mem::forget(kcm);
    let text: Vec<String> = pids.iter().map(u32::to_string).collect();
    let tmp = PathBuf::from(&pid_file).with_extension("tmp");
    std::fs::write(&tmp, text.join("\n")).expect("write PID file");
    std::fs::rename(&tmp, &pid_file).expect("publish PID file");
    match mode.as_str() {
        "panic" => panic!("deliberate panic with the shared control plane running"),
        _ => tokio::time::sleep(Duration::from_secs(300)).await,
    }
}

/// Runs [`HELPER`] in a child copy of this test binary with its output in `dir`; returns the child,
/// the PID file path and the log path.
fn spawn_helper(mode: &str, dir: &WorkDir) -> Result<(std::process::Child, PathBuf, PathBuf)> {
    let pid_file = dir.path().join("pids");
    let log = dir.path().join("helper.log");
    let out = std::fs::File::create(&log)?;
    let child = Command::new(std::env::current_exe()?)
        .args([HELPER, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(PID_FILE_ENV, &pid_file)
        .env(MODE_ENV, mode)
        .env_remove("HARNESS_KEEP_TMP")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .spawn()
        .context("re-running this test binary")?;
    Ok((child, pid_file, log))
}

/// The harness work dirs owned by process `pid`.
fn helper_dirs(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("{pid}-");
    std::fs::read_dir(tests::workdir::root())
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn read_pids(pid_file: &Path) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(pid_file)?;
    let pids = text.lines().map(str::parse::<u32>).collect::<std::result::Result<Vec<_>, _>>()?;
    ensure!(pids.len() == 3, "expected 3 PIDs, got {pids:?}");
    Ok(pids)
}

fn wait_child(child: &mut std::process::Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!("helper did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_test_binary_that_panics_leaves_no_control_plane_process_behind() -> Result<()> {
    let dir = WorkDir::create("panic-helper")?;
    let (mut child, pid_file, log) = spawn_helper("panic", &dir)?;
    let status = wait_child(&mut child, Duration::from_secs(180));
    let output = tests::process::log_tail(&log, 200);
    let status = status.with_context(|| output.clone())?;
    assert!(!status.success(), "the helper should fail:\n{output}");
    assert!(output.contains("deliberate panic"), "{output}");
    let pids = read_pids(&pid_file).with_context(|| output.clone())?;
    // The exit-time cleanup reaped them before the helper exited: no waiting needed.
    assert_not_running(&pids, "after the helper panicked and exited");
    assert_eq!(helper_dirs(child.id()), Vec::<PathBuf>::new(), "removed at exit");
    Ok(())
}

#[test]
fn a_test_binary_killed_with_sigkill_leaves_no_control_plane_process_behind() -> Result<()> {
    let dir = WorkDir::create("hang-helper")?;
    let (mut child, pid_file, log) = spawn_helper("hang", &dir)?;
    let deadline = Instant::now() + Duration::from_secs(180);
    while !pid_file.exists() {
        if let Some(status) = child.try_wait()? {
            bail!("helper exited early ({status}):\n{}", tests::process::log_tail(&log, 40));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!("helper wrote no PIDs:\n{}", tests::process::log_tail(&log, 40));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids = read_pids(&pid_file)?;
    assert!(pids.iter().all(|&p| pid_is_running(p)));
    child.kill()?; // SIGKILL: no atexit, no unwinding; only PDEATHSIG is left
    child.wait()?;
    // PDEATHSIG is delivered at once, but the kernel needs a moment to tear the processes down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| pid_is_running(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_not_running(&pids, "after the helper was killed");
    // A killed binary cannot remove its temp dirs; the next harness user sweeps them.
    assert!(!helper_dirs(child.id()).is_empty());
    if !tests::process::keep_dirs() {
        tests::workdir::sweep_stale();
        assert_eq!(helper_dirs(child.id()), Vec::<PathBuf>::new(), "swept");
    }
    Ok(())
}
