//! Swapping the policy of a running controller through ReconcileModule objects, on a real API server.

use std::time::Duration;

use anyhow::Result;
use host::{
    modules::resource::{Mode, Phase, ReconcileModule},
    policy::Source,
};
use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use kube::api::{DeleteParams, PostParams};
use tests::{
    TestNamespace,
    controller::{replica_set, start_controller},
    eventually,
    modules::{install_crd, push, push_via_config_map, wait_phase},
    ns,
    scenes::{scale, three_pods_oldest_ready_last, wait_live_pods},
};
use wasm_replicaset::module::{ModuleCommand, Target};

const VERDICT: Duration = Duration::from_secs(30);

async fn setup() -> Result<(TestNamespace, host::run::Controller)> {
    let ns = ns().await?;
    install_crd(ns.client()).await?;
    let controller = start_controller(&ns, &["--module-namespace", ns.name()]).await?;
    controller.engine.wait_synced().await;
    Ok((ns, controller))
}

#[tokio::test]
async fn a_pushed_policy_decides_the_next_scale_down_without_a_restart() -> Result<()> {
    let (ns, controller) = setup().await?;
    let oldest = three_pods_oldest_ready_last(&ns, replica_set("web", 1)).await?;
    push(&ns, "newest-first", test_guests::NEWEST_FIRST, Mode::Active).await?;
    let status = wait_phase(&ns, "newest-first", Phase::Active, VERDICT).await?;
    assert_eq!(status.world_version.as_deref(), Some("0.1.0"));
    assert!(status.digest.unwrap().starts_with("sha256:"));

    scale(&ns, "web", 1).await?;
    let survivors = wait_live_pods(&ns, 1).await?;
    // Upstream would have deleted the most recently ready pod, the oldest one; the new policy
    // deleted the two newest.
    assert_eq!(survivors, [oldest]);
    eventually("status caught up with the scale-down", Duration::from_secs(30), || async {
        let rs = ns.api::<ReplicaSet>().get("web").await?;
        let status = rs.status.unwrap_or_default();
        Ok((status.replicas == 1 && status.observed_generation == rs.metadata.generation).then_some(()))
    })
    .await?;
    controller.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn broken_modules_are_rejected_and_the_serving_policy_keeps_working() -> Result<()> {
    let (ns, controller) = setup().await?;
    let cases: [(&str, &[u8], &str); 7] = [
        ("not-wasm", b"#!/bin/sh\necho hello\n", "not a WebAssembly file"),
        ("other-world", test_guests::OTHER_WORLD, "does not implement world"),
        ("wasi", test_guests::WASI, "wasi:clocks/wall-clock"),
        ("traps", test_guests::PANIC, "trapped"),
        ("spins", test_guests::SPIN, "ran out of fuel"),
        ("hoards", test_guests::OOM, "memory limit"),
        ("bad-plan", test_guests::BAD_PLAN, "guard rail"),
    ];
    for (name, bytes, _) in cases {
        push(&ns, name, bytes, Mode::Active).await?;
    }
    for (name, _, reason) in cases {
        let status = wait_phase(&ns, name, Phase::Rejected, VERDICT).await?;
        let message = status.message.unwrap_or_default();
        assert!(message.contains(reason), "{name}: {message}");
        assert_eq!(message.lines().count(), 1, "{name}: {message}");
    }
    assert_eq!(controller.engine.shared.policy.serving().source, Source::Embedded);
    // The embedded policy still serves: a new ReplicaSet gets its pods.
    ns.api::<ReplicaSet>().create(&PostParams::default(), &replica_set("after", 2)).await?;
    wait_live_pods(&ns, 2).await?;
    controller.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_module_that_fails_in_production_is_rolled_back() -> Result<()> {
    let (ns, controller) = setup().await?;
    push(&ns, "fragile", test_guests::TRAP_ON_BOOM, Mode::Active).await?;
    wait_phase(&ns, "fragile", Phase::Active, VERDICT).await?;
    // It passed validation; it only fails for ReplicaSets named boom*.
    ns.api::<ReplicaSet>().create(&PostParams::default(), &replica_set("boom-web", 2)).await?;
    let status = wait_phase(&ns, "fragile", Phase::RolledBack, VERDICT).await?;
    assert_eq!(status.failing_key, Some(format!("{}/boom-web", ns.name())));
    let message = status.message.unwrap_or_default();
    assert!(message.contains("failed 3 syncs in a row") && message.contains("trapped"), "{message}");
    assert_eq!(controller.engine.shared.policy.serving().source, Source::Embedded);
    // Back on the embedded policy, the ReplicaSet converges.
    wait_live_pods(&ns, 2).await?;
    controller.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_shadow_module_reports_differences_and_applies_nothing() -> Result<()> {
    let (ns, controller) = setup().await?;
    let oldest = three_pods_oldest_ready_last(&ns, replica_set("web", 1)).await?;
    push(&ns, "candidate", test_guests::NEWEST_FIRST, Mode::Shadow).await?;
    wait_phase(&ns, "candidate", Phase::Shadow, VERDICT).await?;

    scale(&ns, "web", 1).await?;
    let survivors = wait_live_pods(&ns, 1).await?;
    // The serving (upstream) policy decided: the most recently ready pod went first.
    assert!(!survivors.contains(&oldest), "the shadow's plan was applied: {survivors:?}");
    let summary = eventually("a shadow difference in the status", Duration::from_secs(30), || async {
        let status = ns.api::<ReconcileModule>().get("candidate").await?.status.unwrap_or_default();
        Ok(status.shadow.filter(|s| s.differences > 0))
    })
    .await?;
    assert_eq!(summary.example_key, Some(format!("{}/web", ns.name())));
    assert!(
        summary.example_difference.unwrap_or_default().starts_with("delete: active ["),
        "the difference names the victims"
    );

    // Promote it: the next scale-down follows it.
    controller_module_cli(&ns, ModuleCommand::Promote { name: "candidate".into() }).await?;
    wait_phase(&ns, "candidate", Phase::Active, VERDICT).await?;
    assert!(controller.engine.shared.policy.shadow().is_none());
    controller.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn deleting_the_serving_object_returns_to_the_embedded_policy() -> Result<()> {
    let (ns, controller) = setup().await?;
    push(&ns, "newest-first", test_guests::NEWEST_FIRST, Mode::Active).await?;
    wait_phase(&ns, "newest-first", Phase::Active, VERDICT).await?;
    assert!(matches!(controller.engine.shared.policy.serving().source, Source::Object { .. }));
    ns.api::<ReconcileModule>().delete("newest-first", &DeleteParams::default()).await?;
    let policy = controller.engine.shared.policy.clone();
    eventually("the embedded policy to serve again", VERDICT, || async {
        Ok((policy.serving().source == Source::Embedded).then_some(()))
    })
    .await?;
    controller.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_rollback_can_be_requested_by_hand() -> Result<()> {
    let (ns, controller) = setup().await?;
    push(&ns, "newest-first", test_guests::NEWEST_FIRST, Mode::Active).await?;
    wait_phase(&ns, "newest-first", Phase::Active, VERDICT).await?;
    controller_module_cli(&ns, ModuleCommand::Rollback { name: None }).await?;
    let status = wait_phase(&ns, "newest-first", Phase::RolledBack, VERDICT).await?;
    assert!(status.message.unwrap_or_default().contains("rollback requested"));
    assert_eq!(controller.engine.shared.policy.serving().source, Source::Embedded);
    controller.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_cli_validates_locally_before_pushing_and_waits_for_the_verdict() -> Result<()> {
    let (ns, controller) = setup().await?;
    let dir = std::env::temp_dir().join(format!("hot-swap-{}", ns.name()));
    std::fs::create_dir_all(&dir)?;
    let good = dir.join("newest-first.wasm");
    std::fs::write(&good, test_guests::NEWEST_FIRST)?;
    controller_module_cli(
        &ns,
        ModuleCommand::Push { file: good, name: "cli".into(), shadow: false, wait: true, timeout: 30 },
    )
    .await?;
    wait_phase(&ns, "cli", Phase::Active, VERDICT).await?;

    // A broken file never reaches the cluster: one line saying why, no object.
    let bad = dir.join("traps.wasm");
    std::fs::write(&bad, test_guests::PANIC)?;
    let err = controller_module_cli(
        &ns,
        ModuleCommand::Push { file: bad, name: "bad".into(), shadow: false, wait: false, timeout: 5 },
    )
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("conformance case") && text.contains("trapped"), "{text}");
    assert!(ns.api::<ReconcileModule>().get_opt("bad").await?.is_none());
    std::fs::remove_dir_all(&dir)?;
    controller.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_module_can_come_from_a_config_map() -> Result<()> {
    let (ns, controller) = setup().await?;
    push_via_config_map(&ns, "from-cm", "policy-bytes", test_guests::NEWEST_FIRST, Mode::Active).await?;
    wait_phase(&ns, "from-cm", Phase::Active, VERDICT).await?;
    controller.shutdown().await;
    Ok(())
}

async fn controller_module_cli(ns: &TestNamespace, command: ModuleCommand) -> Result<()> {
    let kubeconfig = tests::shared().await?.kubeconfig_path().to_path_buf();
    let target = Target { kubeconfig: Some(kubeconfig), namespace: ns.name().to_string() };
    wasm_replicaset::module::run(&target, &command).await
}

#[tokio::test]
async fn junk_orphans_with_many_labels_neither_stall_syncs_nor_roll_back_the_module() -> Result<()> {
    // Found trying the product as an attacker would: eight orphans no ReplicaSet selects, each
    // with 10,000 labels, made every sync of their namespace run out of fuel, and after three
    // such syncs the operator's good module was rolled back. They must cost nothing now.
    let (ns, controller) = setup().await?;
    push(&ns, "operators-choice", test_guests::NEWEST_FIRST, Mode::Active).await?;
    wait_phase(&ns, "operators-choice", Phase::Active, VERDICT).await?;
    ns.api::<ReplicaSet>().create(&PostParams::default(), &replica_set("web", 2)).await?;
    wait_live_pods(&ns, 2).await?;

    let junk: std::collections::BTreeMap<String, String> =
        (0..10_000).map(|i| (format!("junk-{i}"), "x".to_string())).chain([("app".into(), "junk".into())]).collect();
    for i in 0..8 {
        let pod = host::testkit::pod(&format!("junk-{i}")).unsaved().labels(&junk).build();
        ns.api::<Pod>().create(&PostParams::default(), &pod).await?;
    }
    scale(&ns, "web", 3).await?;
    ns.api::<ReplicaSet>().create(&PostParams::default(), &replica_set("api", 2)).await?;
    wait_live_pods(&ns, 8 + 3 + 2).await?;
    for (name, replicas) in [("web", 3), ("api", 2)] {
        eventually(&format!("{name}'s status at {replicas}"), Duration::from_secs(30), || async {
            let status = ns.api::<ReplicaSet>().get(name).await?.status.unwrap_or_default();
            Ok((status.replicas == replicas).then_some(()))
        })
        .await?;
    }

    let module = ns.api::<ReconcileModule>().get("operators-choice").await?;
    assert_eq!(module.status.and_then(|s| s.phase), Some(Phase::Active), "the operator's module still serves");
    assert!(
        matches!(controller.engine.shared.policy.serving().source, Source::Object { ref name, .. } if name == "operators-choice")
    );
    let port = controller.http_addr().expect("the test controller serves /metrics").port();
    let (_, metrics) = tests::host_process::http_get(port, "/metrics").await?;
    let failures = tests::prometheus::metric_sum(&metrics, "wasm_replicaset_guest_failures_total", |_| true);
    assert_eq!(failures, 0.0, "no guest call failed:\n{metrics}");
    // The junk never reached the guest: a call reading 80,000 labels costs ~40 M fuel.
    let fuel = tests::prometheus::metric_sum(&metrics, "wasm_replicaset_guest_fuel_total", |_| true);
    let calls = tests::prometheus::metric_sum(&metrics, "wasm_replicaset_guest_call_duration_seconds_count", |_| true);
    assert!(calls > 0.0 && fuel / calls < 1_000_000.0, "{fuel} fuel in {calls} calls:\n{metrics}");
    controller.shutdown().await;
    Ok(())
}
