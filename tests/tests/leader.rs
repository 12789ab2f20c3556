//! Leader election (`host::leader`) on a real API server: acquiring, exclusive leadership among candidates, hand-over on release, take-over after a crash only once the lease has expired, and giving up leadership within the renew deadline when renewals fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use host::leader::{LeaderElectionConfig, LeaderElector, LeaderHandle};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use tests::{TestNamespace, consistently, eventually, ns};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const LEASE: &str = "replicaset-controller";
const LEASE_DURATION: Duration = Duration::from_secs(2);
const RENEW_DEADLINE: Duration = Duration::from_millis(1500);
const RETRY_PERIOD: Duration = Duration::from_millis(300);
/// Timers and a loaded test machine may run a little late.
const SCHEDULING_SLACK: Duration = Duration::from_millis(250);
/// Generous bound for anything expected to happen "soon" (a few retry periods plus API latency).
const SOON: Duration = Duration::from_secs(10);

fn config(ns: &TestNamespace, identity: &str) -> LeaderElectionConfig {
    LeaderElectionConfig {
        lease_duration: LEASE_DURATION,
        renew_deadline: RENEW_DEADLINE,
        retry_period: RETRY_PERIOD,
        release_on_cancel: true,
        ..LeaderElectionConfig::new(ns.name(), LEASE, identity)
    }
}

/// A running elector: its stop switch, its `leading` channel and handle, and its task (aborted on
/// drop so a failing test leaves nothing running).
struct Candidate {
    identity: String,
    stop: watch::Sender<bool>,
    leading: watch::Receiver<bool>,
    handle: LeaderHandle,
    task: JoinHandle<()>,
}

impl Drop for Candidate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Candidate {
    fn start(client: kube::Client, config: LeaderElectionConfig) -> Result<Self> {
        if std::env::var_os("RUST_LOG").is_some() {
            host::telemetry::init(host::telemetry::LogFormat::Text);
        }
        let identity = config.identity.clone();
        let elector = LeaderElector::new(client, config)?;
        let handle = elector.handle();
        let (stop, stop_rx) = watch::channel(false);
        let (leading_tx, leading) = watch::channel(false);
        let task = tokio::spawn(elector.run(stop_rx, leading_tx));
        Ok(Self { identity, stop, leading, handle, task })
    }

    fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Waits until `leading` is `value`, returning how long that took.
    async fn wait_leading(&mut self, value: bool, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        tokio::time::timeout(timeout, self.leading.wait_for(|&l| l == value))
            .await
            .with_context(|| format!("{} did not report leading={value} within {timeout:?}", self.identity))?
            .context("the elector dropped its leading channel")?;
        Ok(started.elapsed())
    }

    /// Stops the elector and waits for `run` to return.
    async fn stop(&mut self) -> Result<()> {
        self.stop.send(true)?;
        tokio::time::timeout(SOON, &mut self.task).await.context("run did not return after stop")??;
        ensure!(!self.is_leading(), "{} still reports leading after run returned", self.identity);
        Ok(())
    }
}

async fn lease_spec(ns: &TestNamespace) -> Result<LeaseSpec> {
    ns.api::<Lease>().get(LEASE).await?.spec.context("the Lease has no spec")
}

async fn holder(ns: &TestNamespace) -> Result<Option<String>> {
    Ok(lease_spec(ns).await?.holder_identity.filter(|h| !h.is_empty()))
}

/// Watches candidates every 10 ms in the background and records whether two ever led at once.
fn watch_exclusive(candidates: Vec<watch::Receiver<bool>>) -> (Arc<AtomicBool>, JoinHandle<()>) {
    let overlap = Arc::new(AtomicBool::new(false));
    let seen = overlap.clone();
    let task = tokio::spawn(async move {
        loop {
            if candidates.iter().filter(|c| *c.borrow()).count() > 1 {
                seen.store(true, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    (overlap, task)
}

#[tokio::test]
async fn a_single_candidate_becomes_leader_renews_and_releases_on_stop() -> Result<()> {
    let ns = ns().await?;
    let mut a = Candidate::start(ns.client().clone(), config(&ns, "a"))?;
    let took = a.wait_leading(true, SOON).await?;
    ensure!(a.handle.is_leader() && a.handle.holder().as_deref() == Some("a"), "handle: {:?}", a.handle.holder());

    let spec = lease_spec(&ns).await?;
    ensure!(spec.holder_identity.as_deref() == Some("a"), "holder: {:?}", spec.holder_identity);
    ensure!(spec.lease_duration_seconds == Some(2), "leaseDurationSeconds: {:?}", spec.lease_duration_seconds);
    ensure!(spec.lease_transitions == Some(0), "leaseTransitions: {:?}", spec.lease_transitions);
    let acquired = spec.acquire_time.context("no acquireTime")?.0;
    let first_renew = spec.renew_time.context("no renewTime")?.0;

    // Renewals move renewTime every retry period and keep acquireTime.
    let renewed = eventually("renewTime to advance", SOON, || async {
        let spec = lease_spec(&ns).await?;
        Ok(spec.renew_time.as_ref().is_some_and(|t| t.0 > first_renew).then_some(spec))
    })
    .await?;
    ensure!(renewed.acquire_time.map(|t| t.0) == Some(acquired), "acquireTime changed on renewal");
    ensure!(renewed.holder_identity.as_deref() == Some("a"));

    a.stop().await?;
    let released = lease_spec(&ns).await?;
    ensure!(released.holder_identity.as_deref() == Some(""), "not released: {:?}", released.holder_identity);
    ensure!(released.lease_duration_seconds == Some(1), "{:?}", released.lease_duration_seconds);
    ensure!(released.lease_transitions == Some(0), "release must keep transitions: {:?}", released.lease_transitions);
    ensure!(!a.handle.is_leader() && a.handle.holder().is_none(), "handle after release: {:?}", a.handle.holder());
    eprintln!("acquired in {took:?}");
    Ok(())
}

#[tokio::test]
async fn two_candidates_never_lead_together_and_a_release_hands_over_quickly() -> Result<()> {
    let ns = ns().await?;
    let mut a = Candidate::start(ns.client().clone(), config(&ns, "a"))?;
    let mut b = Candidate::start(ns.client().clone(), config(&ns, "b"))?;
    let (overlap, monitor) = watch_exclusive(vec![a.leading.clone(), b.leading.clone()]);

    eventually("a leader", SOON, || async { Ok((a.is_leading() || b.is_leading()).then_some(())) }).await?;
    consistently("exactly one leader, named in the Lease", Duration::from_secs(3), || async {
        let leaders: Vec<&str> = [&a, &b].into_iter().filter(|c| c.is_leading()).map(|c| c.identity.as_str()).collect();
        Ok(leaders.len() == 1 && holder(&ns).await?.as_deref() == Some(leaders[0]))
    })
    .await?;

    let (leader, follower) = if a.is_leading() { (&mut a, &mut b) } else { (&mut b, &mut a) };
    ensure!(
        leader.is_leading() && !follower.is_leading(),
        "leadership changed right after the check: {} leading={}, {} leading={}",
        leader.identity,
        leader.is_leading(),
        follower.identity,
        follower.is_leading()
    );
    ensure!(
        follower.handle.holder().as_deref() == Some(leader.identity.as_str()),
        "{} sees holder {:?}, not {}",
        follower.identity,
        follower.handle.holder(),
        leader.identity
    );
    let stopped_at = Instant::now();
    leader.stop().await?;
    follower.wait_leading(true, SOON).await?;
    let handover = stopped_at.elapsed();
    // A released lease is free at once: the follower's next (jittered) retry takes it.
    ensure!(handover < LEASE_DURATION, "hand-over took {handover:?}, not faster than the lease duration");

    let spec = lease_spec(&ns).await?;
    ensure!(spec.holder_identity.as_deref() == Some(follower.identity.as_str()), "holder: {:?}", spec.holder_identity);
    ensure!(spec.lease_transitions == Some(1), "leaseTransitions: {:?}", spec.lease_transitions);
    monitor.abort();
    ensure!(!overlap.load(Ordering::SeqCst), "two candidates reported leading at the same time");
    eprintln!("hand-over after release took {handover:?}");
    Ok(())
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_only_after_the_lease_duration() -> Result<()> {
    let ns = ns().await?;
    let mut a = Candidate::start(ns.client().clone(), config(&ns, "a"))?;
    a.wait_leading(true, SOON).await?;
    let mut b = Candidate::start(ns.client().clone(), config(&ns, "b"))?;
    eventually("b to see a as the holder", SOON, || async {
        Ok((b.handle.holder().as_deref() == Some("a")).then_some(()))
    })
    .await?;

    // Crash: no release, no last renewal.
    a.task.abort();
    let crashed_at = Instant::now();
    let _ = (&mut a.task).await;
    let last_renewal = lease_spec(&ns).await?.renew_time.context("no renewTime")?.0;

    // b counts the lease duration from when it saw a's last renewal, which is after a stamped it
    // (same host, same wall clock): b must not lead before then.
    let expires = last_renewal + LEASE_DURATION;
    let until_expiry = Duration::try_from(expires.duration_since(Timestamp::now())).unwrap_or_default();
    consistently(
        "b not leading before a's lease expires",
        until_expiry.saturating_sub(Duration::from_millis(50)),
        || async { Ok(!b.is_leading()) },
    )
    .await?;
    b.wait_leading(true, SOON).await?;
    let replaced_after = crashed_at.elapsed();

    let spec = lease_spec(&ns).await?;
    ensure!(spec.holder_identity.as_deref() == Some("b"), "holder: {:?}", spec.holder_identity);
    ensure!(spec.lease_transitions == Some(1), "leaseTransitions: {:?}", spec.lease_transitions);
    // Same host, same wall clock: b took it a full lease duration after a's last renewal.
    let acquired = spec.acquire_time.context("no acquireTime")?.0;
    let gap = acquired.duration_since(last_renewal);
    ensure!(
        gap >= SignedDuration::try_from(LEASE_DURATION)?,
        "b acquired {gap:?} after a's last renewal, less than the lease duration"
    );
    eprintln!("replaced {replaced_after:?} after the crash, {gap:?} after the last renewal");
    Ok(())
}

/// Writes `intruder` into the Lease as a freshly renewed holder, as another candidate would;
/// returns the renewTime written.
async fn hijack(ns: &TestNamespace, intruder: &str) -> Result<Timestamp> {
    let leases = ns.api::<Lease>();
    eventually("the Lease to be overwritten", SOON, || async {
        let mut lease = leases.get(LEASE).await?;
        let stamp = Timestamp::now();
        let now = MicroTime(stamp);
        let spec = lease.spec.get_or_insert_default();
        spec.holder_identity = Some(intruder.to_string());
        spec.lease_duration_seconds = Some(2);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        // A 409 (the leader renewed in between) is retried by `eventually`.
        leases.replace(LEASE, &PostParams::default(), &lease).await?;
        Ok(Some(stamp))
    })
    .await
}

#[tokio::test]
async fn a_leader_whose_lease_is_overwritten_steps_down_at_once_and_reacquires_after_expiry() -> Result<()> {
    let ns = ns().await?;
    let mut a = Candidate::start(ns.client().clone(), config(&ns, "a"))?;
    a.wait_leading(true, SOON).await?;

    let hijacked = hijack(&ns, "intruder").await?;
    // a's last successful renewal started before the overwrite landed, so its deadline falls
    // within RENEW_DEADLINE of now; in practice it steps down at its next renewal.
    let lost_in = a.wait_leading(false, RENEW_DEADLINE + SCHEDULING_SLACK).await?;
    ensure!(a.handle.holder().as_deref() == Some("intruder"), "observed holder: {:?}", a.handle.holder());
    ensure!(!a.handle.is_leader());

    // The intruder never renews: a takes the lease back once it has expired on a's clock.
    let back_in = a.wait_leading(true, LEASE_DURATION + SOON).await?;
    let spec = lease_spec(&ns).await?;
    ensure!(spec.holder_identity.as_deref() == Some("a"), "holder: {:?}", spec.holder_identity);
    ensure!(spec.lease_transitions == Some(2), "leaseTransitions: {:?}", spec.lease_transitions);
    let gap = spec.acquire_time.context("no acquireTime")?.0.duration_since(hijacked);
    ensure!(
        gap >= SignedDuration::try_from(LEASE_DURATION)?,
        "a took the lease back {gap:?} after the intruder's renewal, before it expired"
    );
    a.stop().await?;
    eprintln!("stepped down {lost_in:?} after the overwrite, re-acquired {back_in:?} later");
    Ok(())
}

#[tokio::test]
async fn a_leader_whose_lease_is_deleted_and_recreated_by_another_steps_down() -> Result<()> {
    let ns = ns().await?;
    let mut a = Candidate::start(ns.client().clone(), config(&ns, "a"))?;
    a.wait_leading(true, SOON).await?;

    let leases = ns.api::<Lease>();
    eventually("the Lease to be re-created by another holder", SOON, || async {
        leases.delete(LEASE, &DeleteParams::default()).await?;
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta { name: Some(LEASE.to_string()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some("intruder".to_string()),
                lease_duration_seconds: Some(2),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        // If a re-created it first (it may: a missing Lease is created by whoever comes), this
        // fails with 409 AlreadyExists and `eventually` tries again.
        leases.create(&PostParams::default(), &lease).await?;
        Ok(Some(()))
    })
    .await?;
    let lost_in = a.wait_leading(false, RENEW_DEADLINE + SCHEDULING_SLACK).await?;
    ensure!(holder(&ns).await?.as_deref() == Some("intruder"));
    a.stop().await?;
    ensure!(holder(&ns).await?.as_deref() == Some("intruder"), "a stopping must not release someone else's lease");
    eprintln!("stepped down {lost_in:?} after the re-creation");
    Ok(())
}

#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down_within_the_renew_deadline_and_recovers() -> Result<()> {
    let ns = ns().await?;
    // The elector acts as user `elector`, allowed to manage Leases only through a RoleBinding
    // that the test then deletes: every renewal fails with 403 while the record stays as it was.
    let role = Role {
        metadata: ObjectMeta { name: Some("elector".into()), ..Default::default() },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".into()]),
            resources: Some(vec!["leases".into()]),
            verbs: vec!["get".into(), "create".into(), "update".into()],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some("elector".into()), ..Default::default() },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "elector".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: "elector".into(),
            ..Default::default()
        }]),
    };
    ns.api::<Role>().create(&PostParams::default(), &role).await?;
    let bindings = ns.api::<RoleBinding>();
    bindings.create(&PostParams::default(), &binding).await?;
    let mut impersonating = tests::shared().await?.config().clone();
    impersonating.auth_info.impersonate = Some("elector".into());
    let client = kube::Client::try_from(impersonating)?;
    let leases_as_elector: Api<Lease> = Api::namespaced(client.clone(), ns.name());
    eventually("the RoleBinding to take effect", SOON, || async { Ok(leases_as_elector.get_opt(LEASE).await.ok()) })
        .await?;

    let mut a = Candidate::start(client, config(&ns, "a"))?;
    a.wait_leading(true, SOON).await?;

    bindings.delete("elector", &DeleteParams::default()).await?;
    // RBAC's cache may take a moment to see the deletion, hence a little more slack here.
    let lost_in = a.wait_leading(false, RENEW_DEADLINE + SCHEDULING_SLACK * 2).await?;
    let stepped_down_at = Timestamp::now();
    ensure!(!a.handle.is_leader());
    let spec = lease_spec(&ns).await?;
    ensure!(spec.holder_identity.as_deref() == Some("a"), "the record still names a: {:?}", spec.holder_identity);
    // Not at the first failure but at the deadline: a kept leading through failed renewals for
    // RENEW_DEADLINE after starting its last successful one (stamped with renewTime just after).
    let held = stepped_down_at.duration_since(spec.renew_time.context("no renewTime")?.0);
    ensure!(
        held >= SignedDuration::try_from(RENEW_DEADLINE - SCHEDULING_SLACK)?,
        "stepped down {held:?} after the last successful renewal, before the renew deadline"
    );

    // Access restored: a is still the holder in the record, so it renews it without a transition.
    bindings.create(&PostParams::default(), &binding).await?;
    a.wait_leading(true, SOON).await?;
    let spec = lease_spec(&ns).await?;
    ensure!(spec.holder_identity.as_deref() == Some("a") && spec.lease_transitions == Some(0), "{spec:?}");
    a.stop().await?;
    eprintln!("stepped down {lost_in:?} after renewals started failing, {held:?} after the last success");
    Ok(())
}
