//! The soak: the host (the deployed ServiceAccount, leader election on, defaults everywhere else)
//! on a live cluster for N minutes while ReplicaSets are scaled at random, pods deleted, nodes
//! drained and readiness flaps, with a network fault between the host and the API server toggled
//! every 30 s. Invariants are checked on every revision a watch delivers; at the end the
//! ReplicaSets must converge within 30 s of the last change with a right status, the host's RSS
//! must not grow after warm-up, and its descriptors and threads must stay bounded.
//!
//! `cargo run -p tests --bin soak -- --minutes 10` runs it; a 2-minute run is a test of the
//! `faults` binary.

pub mod chaos;
pub mod sampler;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::PostParams;

use self::chaos::{Dice, FLAP, Fault, STEADY};
use self::sampler::Sample;
use crate::controller::replica_set;
use crate::faults::{FaultCluster, Replica};
use crate::invariants::Invariants;
use crate::live::{LiveOptions, with_behaviour};
use crate::stages::{Behaviour, Lifecycle};
use crate::toxiproxy::PeriodicResets;

/// How long the soak takes and what it drives.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long the chaos lasts.
    pub duration: Duration,
    /// ReplicaSets.
    pub sets: usize,
    /// The host binary (`host-process`).
    pub host_bin: PathBuf,
    /// Seeds the chaos's choices.
    pub seed: u64,
}

/// The most pods a ReplicaSet is scaled to.
const MAX_REPLICAS: usize = 8;
/// Final convergence must come this soon after the last change.
pub const CONVERGENCE: Duration = Duration::from_secs(30);
/// Sampling period of the host's RSS, descriptors and threads.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Open descriptors and threads the host may never exceed (measured: about 25 and 8).
const MAX_FDS: usize = 64;
const MAX_THREADS: usize = 32;

/// What a soak measured.
#[derive(Debug, Default)]
pub struct SoakReport {
    /// Actions taken, by kind.
    pub actions: BTreeMap<&'static str, usize>,
    /// Fault slots, in order.
    pub faults: Vec<Fault>,
    /// Revisions the invariants were checked on.
    pub revisions: u64,
    /// Pods that became active pods of a ReplicaSet.
    pub created: u64,
    /// From the last change to convergence.
    pub convergence: Duration,
    /// The host's samples.
    pub samples: Vec<Sample>,
    /// RSS after warm-up: MiB per minute, first and last MiB.
    pub rss_trend: Option<(f64, f64, f64)>,
    /// Seconds treated as warm-up.
    pub warm_up: Duration,
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = |g: fn(&Sample) -> usize| self.samples.iter().map(g).max().unwrap_or(0);
        write!(f, "actions {:?}; faults {:?}; ", self.actions, self.faults)?;
        write!(f, "{} revisions checked, 0 violations; {} pods created; ", self.revisions, self.created)?;
        write!(f, "converged {:.1?} after the last change; ", self.convergence)?;
        if let Some((slope, first, last)) = self.rss_trend {
            write!(f, "RSS after {:?} warm-up {first:.1} → {last:.1} MiB, slope {slope:+.2} MiB/min; ", self.warm_up)?;
        }
        write!(f, "max fds {}, max threads {}", max(|s| s.fds), max(|s| s.threads))
    }
}

/// Runs the soak on a private live cluster; fails on the first broken invariant.
pub async fn run(options: &SoakOptions) -> Result<SoakReport> {
    let ms = Duration::from_millis;
    let live = LiveOptions { nodes: 4, audit: true, ..LiveOptions::default() }
        .with_behaviour(FLAP, Behaviour::new(Lifecycle::CrashLoop { ready_for: ms(6000), crashed_for: ms(3000) }))
        .with_behaviour(STEADY, Behaviour::ready_after(Duration::ZERO));
    let cluster = FaultCluster::start_live(live).await?;
    let replica = cluster.start_replica(&options.host_bin, "host-soak", &[]).await?;
    replica.host.wait_readyz(200, "; leading", Duration::from_secs(60)).await?;
    let ns = cluster.ns();
    let invariants = Invariants::start(ns.client(), ns.name()).await?;
    let decoys = crate::faults::create_decoys(ns, &invariants, "rs-0").await?;
    for i in 0..options.sets {
        let rs = with_behaviour(replica_set(&format!("rs-{i}"), (i % 4) as i32 + 1), STEADY);
        ns.api::<ReplicaSet>().create(&PostParams::default(), &rs).await?;
    }
    invariants.wait_converged(Duration::from_secs(120)).await?;

    let mut soak = Soak {
        cluster: &cluster,
        replica: &replica,
        invariants: &invariants,
        decoys,
        resets: None,
        report: SoakReport::default(),
    };
    soak.chaos(options).await?;
    soak.finish().await?;
    crate::faults::check_host_deletes(&cluster, &invariants, "host-soak")?;
    Ok(soak.report)
}

/// A soak in progress.
struct Soak<'a> {
    cluster: &'a FaultCluster,
    replica: &'a Replica,
    invariants: &'a Invariants,
    decoys: Vec<String>,
    /// Running while the fault is [`Fault::Resets`].
    resets: Option<PeriodicResets>,
    report: SoakReport,
}

impl Soak<'_> {
    /// Acts once a second and changes the fault every 30 s, sampling the host every 10 s.
    async fn chaos(&mut self, options: &SoakOptions) -> Result<()> {
        let mut dice = Dice::new(options.seed);
        let started = Instant::now();
        let (mut next_sample, mut slot) = (Duration::ZERO, None);
        let nodes: Vec<String> = self.cluster.live().map(|l| l.nodes().to_vec()).unwrap_or_default();
        let mut drained: Option<(String, Instant)> = None;
        while started.elapsed() < options.duration {
            let elapsed = started.elapsed();
            if elapsed >= next_sample {
                self.report.samples.push(sampler::sample(self.replica.host.process().pid(), started)?);
                next_sample += SAMPLE_EVERY;
            }
            let current = (elapsed.as_secs() / 30) as usize;
            if slot != Some(current) {
                slot = Some(current);
                self.set_fault(Fault::CYCLE[current % Fault::CYCLE.len()]).await?;
            }
            if self.report.faults.last() == Some(&Fault::Partition)
                && elapsed.as_secs() % 30 >= Fault::PARTITION.as_secs()
            {
                Fault::clear(self.cluster.toxiproxy(), &self.replica.proxy).await?;
            }
            if let Some((node, at)) = &drained
                && at.elapsed() > Duration::from_secs(15)
            {
                chaos::cordon(self.cluster.ns().client(), node, false).await?;
                drained = None;
            }
            self.act(&mut dice, options.sets, &nodes, &mut drained).await?;
            self.invariants.check()?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if let Some((node, _)) = drained {
            chaos::cordon(self.cluster.ns().client(), &node, false).await?;
        }
        Ok(())
    }

    async fn set_fault(&mut self, fault: Fault) -> Result<()> {
        self.clear_fault().await?;
        self.resets = fault.apply(self.cluster.toxiproxy(), &self.replica.proxy).await?;
        self.report.faults.push(fault);
        Ok(())
    }

    /// One random action.
    async fn act(
        &mut self,
        dice: &mut Dice,
        sets: usize,
        nodes: &[String],
        drained: &mut Option<(String, Instant)>,
    ) -> Result<()> {
        let ns = self.cluster.ns();
        let kind = match dice.below(20) {
            0..=7 => {
                let to = dice.below(MAX_REPLICAS + 1) as i32;
                crate::faults::scale(ns, &format!("rs-{}", dice.below(sets)), to).await?;
                "scale"
            }
            8..=13 => {
                chaos::delete_random_pod(ns, dice, &self.decoys).await?;
                "delete pod"
            }
            14..=18 => {
                chaos::flap_random_pod(ns, dice, &self.decoys).await?;
                "flip readiness behaviour"
            }
            _ if drained.is_none() && !nodes.is_empty() => {
                let node = nodes[dice.below(nodes.len())].clone();
                chaos::drain(ns, &node).await?;
                *drained = Some((node, Instant::now()));
                "drain node"
            }
            _ => "rest",
        };
        *self.report.actions.entry(kind).or_default() += 1;
        Ok(())
    }

    /// Clears the fault, steadies every pod, and waits for convergence; then reads the samples.
    /// Stops the resets, if on, and removes every toxic.
    async fn clear_fault(&mut self) -> Result<()> {
        if let Some(resets) = self.resets.take() {
            resets.stop().await?;
        }
        Fault::clear(self.cluster.toxiproxy(), &self.replica.proxy).await
    }

    async fn finish(&mut self) -> Result<()> {
        self.clear_fault().await?;
        let ns = self.cluster.ns();
        for pod in chaos::live_pods(ns, &self.decoys).await? {
            crate::live::switch_behaviour(&ns.api(), pod.metadata.name.as_deref().unwrap_or_default(), STEADY).await?;
        }
        let last_change = Instant::now();
        self.invariants.wait_converged(CONVERGENCE).await?;
        self.report.convergence = last_change.elapsed();
        self.invariants.check()?;
        self.report.revisions = self.invariants.revisions();
        self.report.created = self.invariants.became_active();
        let samples = &self.report.samples;
        let duration = samples.last().map_or(0.0, |s| s.at);
        // The first quarter (at least 30 s) fills caches, pools and the allocator's arenas.
        self.report.warm_up = Duration::from_secs_f64((duration / 4.0).max(30.0));
        self.report.rss_trend = sampler::rss_trend(samples, self.report.warm_up);
        let (fds, threads) = (samples.iter().map(|s| s.fds).max(), samples.iter().map(|s| s.threads).max());
        ensure!(fds.unwrap_or(0) <= MAX_FDS, "the host had {fds:?} descriptors open, more than {MAX_FDS}");
        ensure!(threads.unwrap_or(0) <= MAX_THREADS, "the host ran {threads:?} threads, more than {MAX_THREADS}");
        Ok(())
    }
}
