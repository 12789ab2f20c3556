//! Scenario 5: split brain. Two replicas elect a leader; the leader is cut off from the API server
//! in the middle of a scale-up, for longer than the lease. The audit log proves who wrote what
//! and when: the old leader writes nothing once the new leader has written (client-go's rule: a
//! leader stops acting at its renew deadline, before anyone may take over at the lease
//! duration), the new leader takes over within the lease duration plus a retry period, and after
//! the heal the old leader stands by. Not one pod too many.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use jiff::Timestamp;
use tests::audit::AuditEvent;
use tests::faults::{FaultCluster, FaultOptions, Replica};
use tests::invariants::Invariants;
use tests::{consistently, eventually};

use crate::{SOON, create_rs, host_bin, seconds, serial};

const REPLICAS: i32 = 300;
/// Short election timings (the Deployment's are 15 s / 10 s / 2 s), so the scenario fits in CI.
const LEASE: Duration = Duration::from_secs(4);
const RETRY: Duration = Duration::from_millis(500);
const FLAGS: [&str; 4] = [
    "--leader-elect=true",
    "--leader-elect-lease-duration=4s",
    "--leader-elect-renew-deadline=3s",
    "--leader-elect-retry-period=500ms",
];
/// Three lease durations: the new leader has long taken over when the old one comes back.
const PARTITION: Duration = Duration::from_secs(12);

#[tokio::test]
async fn a_partitioned_leader_stops_writing_before_its_successor_starts_and_stands_by_after_the_heal() -> Result<()> {
    let _serial = serial().await;
    let cluster = FaultCluster::start(FaultOptions { audit: true, ..FaultOptions::default() }).await?;
    let ns = cluster.ns();
    let a = cluster.start_replica(host_bin(), "host-a", &FLAGS).await?;
    let b = cluster.start_replica(host_bin(), "host-b", &FLAGS).await?;
    let (old, new) = roles(&a, &b).await?;
    let invariants = Invariants::start(ns.client(), ns.name()).await?;
    create_rs(ns, "big", REPLICAS).await?;
    eventually("the leader to be creating pods", SOON, || async { Ok((invariants.active("big") >= 30).then_some(())) })
        .await?;

    cluster.partition(&old.proxy).await?;
    let (cut, cut_at) = (Instant::now(), Timestamp::now());
    let took_over = new.host.wait_readyz(200, "; leading", LEASE + Duration::from_secs(10)).await;
    let noticed = cut.elapsed();
    took_over?;
    tokio::time::sleep(PARTITION.saturating_sub(cut.elapsed())).await;
    let at_heal = invariants.active("big");
    cluster.heal(&old.proxy).await?;
    let healed_at = Timestamp::now();

    invariants.wait_converged(Duration::from_secs(120)).await?;
    let new_name = new.host.process().name().to_string();
    let standing_by = format!("standing by (leader: {new_name}_");
    old.host.wait_readyz(200, &standing_by, SOON).await?;
    consistently("the old leader standing by", Duration::from_secs(3), || async {
        Ok(old.host.readyz().await?.1.contains(&standing_by))
    })
    .await?;
    invariants.check()?;
    let created = invariants.became_active();
    ensure!(created == REPLICAS as u64, "{created} pods were created for a ReplicaSet of {REPLICAS}");

    let report = check_audit(&cluster.audit()?, old, new, cut_at, healed_at)?;
    eprintln!(
        "split brain: the standby led {noticed:.1?} after the cut; {at_heal} pods at the heal, {created} created in \
         all, converged to {REPLICAS}; {report}"
    );
    Ok(())
}

/// The two replicas once exactly one leads: (leader, standby).
async fn roles<'a>(a: &'a Replica, b: &'a Replica) -> Result<(&'a Replica, &'a Replica)> {
    eventually("exactly one host leading, the other standing by", SOON, || async {
        let (sa, ba) = a.host.readyz().await?;
        let (sb, bb) = b.host.readyz().await?;
        if sa != 200 || sb != 200 {
            return Ok(None);
        }
        Ok(match (ba.contains("; leading"), bb.contains("; leading")) {
            (true, false) if bb.contains("standing by") => Some((a, b)),
            (false, true) if ba.contains("standing by") => Some((b, a)),
            (true, true) => bail!("both lead: {ba:?} / {bb:?}"),
            _ => None,
        })
    })
    .await
}

/// The audit log's verdict: no write of the old leader at or after the new leader's first, a
/// take-over within the lease duration plus a (jittered) retry period of the old leader's last
/// renewal, and no write of the old leader after the heal.
fn check_audit(
    audit: &[AuditEvent],
    old: &Replica,
    new: &Replica,
    cut: Timestamp,
    healed: Timestamp,
) -> Result<String> {
    let writes_of = |r: &Replica| {
        let agent = format!(" {}_", r.host.process().name());
        audit.iter().filter(move |e| e.is_write() && e.user_agent.contains(&agent)).collect::<Vec<_>>()
    };
    let (old_writes, new_writes) = (writes_of(old), writes_of(new));
    let first_new = new_writes
        .iter()
        .filter(|e| e.received >= cut && e.succeeded())
        .min_by_key(|e| e.received)
        .context("the new leader never wrote")?;
    let late: Vec<String> = old_writes
        .iter()
        .filter(|e| e.received >= first_new.received)
        .map(|e| format!("{} {} {:?} at +{:.3}s", e.verb, e.target(), e.name, seconds(first_new.received, e.received)))
        .collect();
    ensure!(late.is_empty(), "the old leader wrote after the new leader's first write: {late:?}");
    let last_renewal = old_writes
        .iter()
        .filter(|e| e.target() == "leases" && e.succeeded() && e.received < cut)
        .max_by_key(|e| e.received)
        .context("the old leader never renewed its lease")?;
    let takeover = seconds(last_renewal.received, first_new.received);
    // client-go: a candidate sees the lease expire `lease` after the last renewal it observed,
    // which it reads every retry period (jittered by up to 1.2); then its next attempt takes it.
    let bound = LEASE.as_secs_f64() + 2.0 * RETRY.as_secs_f64() * 2.2 + 0.5;
    ensure!(takeover <= bound, "took over {takeover:.2}s after the last renewal, more than {bound:.2}s");
    let after_heal = old_writes.iter().filter(|e| e.received >= healed).count();
    ensure!(after_heal == 0, "the old leader wrote {after_heal} times after the heal");
    let last_old = old_writes.iter().map(|e| e.received).max().context("no write of the old leader")?;
    Ok(format!(
        "audit: the old leader's last write {:.2}s before the new leader's first ({} {}), which came {takeover:.2}s \
         after the old leader's last renewal (bound {bound:.2}s); {} writes of the old leader, {} of the new",
        seconds(last_old, first_new.received),
        first_new.verb,
        first_new.target(),
        old_writes.len(),
        new_writes.len()
    ))
}
