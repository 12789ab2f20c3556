//! A probe of what the API client costs: slow-start batches of creates with kube-rs's default
//! client (Nagle's algorithm on) and with the host's (`host::client::build_client`,
//! `TCP_NODELAY`); see that function for why it matters.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

use super::progress;
use super::report::{num, stat};
use super::scenarios::pod_like_controllers;
use crate::ControlPlane;

/// The host's client, unthrottled, counting its non-watch requests: what the bench and the raw
/// limit use.
pub fn fast_client(config: &kube::Config) -> Result<(kube::Client, host::client::RequestStats)> {
    Ok(host::client::build_client(config.clone(), 0.0, 0)?)
}

/// One probe result: a client variant and its slow-start sequences.
#[derive(Debug, Clone)]
pub struct ProbeRow {
    /// Which client.
    pub variant: &'static str,
    /// Total seconds per sequence.
    pub totals: Vec<f64>,
    /// Per batch (1, 2, 4, …) the slowest request's seconds, per sequence.
    pub batches: Vec<Vec<f64>>,
    /// Requests over 35 ms, per sequence.
    pub stalled: Vec<usize>,
    /// Requests per sequence.
    pub requests: usize,
}

/// Creates `total` pods in slow-start batches (1, 2, 4, …) as a ReplicaSet controller does, with a
/// fresh client of each variant per sequence, alternating variants, `reps` times.
pub async fn probe(cp: &ControlPlane, total: usize, reps: usize) -> Result<Vec<ProbeRow>> {
    let variants: [&'static str; 2] = ["kube-rs default: HTTP/1.1, Nagle on", "the host's: HTTP/2, TCP_NODELAY"];
    let mut rows: Vec<ProbeRow> = variants
        .iter()
        .map(|v| ProbeRow { variant: v, totals: vec![], batches: vec![], stalled: vec![], requests: total })
        .collect();
    for rep in 0..reps {
        for (i, row) in rows.iter_mut().enumerate() {
            let client =
                if i == 0 { kube::Client::try_from(cp.config().clone())? } else { fast_client(cp.config())?.0 };
            let ns = cp.create_namespace("probe").await?;
            let pods: Api<Pod> = Api::namespaced(client, ns.name());
            let template = pod_like_controllers("probe", "00000000-0000-0000-0000-000000000001");
            let started = Instant::now();
            let mut remaining = total;
            let mut size = 1usize;
            let mut batches = Vec::new();
            let mut stalled = 0;
            while remaining > 0 {
                let n = size.min(remaining);
                let times = join_all((0..n).map(|_| {
                    let (pods, pod) = (pods.clone(), template.clone());
                    async move {
                        let t = Instant::now();
                        pods.create(&PostParams::default(), &pod).await.map(|_| t.elapsed())
                    }
                }))
                .await
                .into_iter()
                .collect::<Result<Vec<Duration>, _>>()
                .context("probe create")?;
                stalled += times.iter().filter(|t| **t > Duration::from_millis(35)).count();
                batches.push(times.iter().max().copied().unwrap_or_default().as_secs_f64());
                remaining -= n;
                size *= 2;
            }
            row.totals.push(started.elapsed().as_secs_f64());
            row.batches.push(batches);
            row.stalled.push(stalled);
            progress(&format!(
                "client probe {}/{reps} | {}: {total} creates in slow-start batches took {:.0} ms, {stalled} requests over 35 ms",
                rep + 1,
                row.variant,
                row.totals.last().unwrap() * 1000.0
            ));
        }
    }
    Ok(rows)
}

/// The probe as a Markdown section.
pub fn probe_markdown(rows: &[ProbeRow]) -> String {
    let mut md = String::from("## Diagnostic: the API client\n\n");
    md += "A plain client creates pods in slow-start batches (1, 2, 4, …, as a ReplicaSet sync does) with a fresh connection pool, alternating two clients. kube-rs uses HTTP/1.1 with one TLS connection per concurrent request and leaves Nagle's algorithm on; on a new connection the request is written right after the client's handshake flight and waits for its (delayed) ACK. client-go uses one HTTP/2 connection with `TCP_NODELAY`, and so does the host (`host::client::build_client`).\n\n";
    md += "| Client | Pods | Total (ms) | Slowest request per batch of 1 / 2 / 4 / … , median (ms) |\n|---|---:|---:|---|\n";
    for row in rows {
        let total = stat(row.totals.iter().map(|t| t * 1000.0));
        let n = row.batches.iter().map(Vec::len).max().unwrap_or(0);
        let per_batch: Vec<String> = (0..n)
            .map(|b| {
                let s = stat(row.batches.iter().filter_map(|v| v.get(b)).map(|t| t * 1000.0));
                s.map(|s| num(s.median)).unwrap_or_default()
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            row.variant,
            row.requests,
            total.map(|s| format!("{} ({}–{})", num(s.median), num(s.min), num(s.max))).unwrap_or_default(),
            per_batch.join(" / ")
        );
    }
    md + "\n"
}
