//! Hot-swap latency: a `ReconcileModule` object is created or updated → the host reports the new
//! generation `Active` (it swaps, then writes the status) as seen by the bench's watch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use host::modules::resource::{Base64, Mode, ModuleSource, Phase, ReconcileModule, ReconcileModuleSpec};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

use super::progress;
use super::subject::{Limits, Running, Subject};
use crate::ControlPlane;

/// `bytes` with a custom section named `name` holding `payload` appended. The component binary
/// format allows custom sections anywhere between sections, the end included, so the result is
/// the same valid component with a different digest (and size).
pub fn with_custom_section(bytes: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut out = bytes.to_vec();
    out.push(0);
    leb(content.len(), &mut out);
    out.extend(content);
    out
}

/// `base` with a unique `nonce`, padded with a custom section to about `size` bytes (never below
/// `base`'s size plus the nonce).
pub fn variant(base: &[u8], nonce: u64, size: usize) -> Vec<u8> {
    let tagged = with_custom_section(base, "bench-nonce", &nonce.to_le_bytes());
    // Section header (id, size, name) is at most ~20 bytes.
    let pad = size.saturating_sub(tagged.len() + 24);
    if pad == 0 { tagged } else { with_custom_section(&tagged, "bench-padding", &vec![0x5a; pad]) }
}

/// What the bench's watch last saw of a ReconcileModule: observed generation, phase, message.
type Observed = (i64, Option<Phase>, String);

/// One series of swaps of modules of one size.
#[derive(Debug, Clone)]
pub struct SwapSeries {
    /// Module size, bytes (the largest in the series).
    pub size: usize,
    /// Object written → new generation Active, seconds.
    pub latencies: Vec<f64>,
    /// What the host itself reported as validation time (compile + conformance), seconds.
    pub validated: Vec<f64>,
}

/// Parses a Rust `Duration` debug string (`812.5ms`, `1.2s`, `950µs`) into seconds.
pub fn parse_debug_duration(s: &str) -> Option<f64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "µs" | "us" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    };
    Some(n * scale)
}

/// Runs the host on a fresh control plane watching ReconcileModules, then for each `size` swaps
/// `swaps` times (alternating between `bases`, each variant unique) and records the latencies.
pub async fn run(bases: &[&[u8]], sizes: &[usize], swaps: usize, limits: Limits) -> Result<Vec<SwapSeries>> {
    let cp = ControlPlane::start().await?;
    let client = cp.client()?;
    crate::modules::apply_crd(&client).await?;
    let ns = cp.create_namespace("swap").await?;
    let host_args = vec!["--watch-modules=true".to_string(), format!("--module-namespace={}", ns.name())];
    let ctrl = Running::start(&cp, Subject::Host, limits, &host_args).await?;
    let outcome = async {
        let api: Api<ReconcileModule> = ns.api();
        let seen: Arc<Mutex<HashMap<String, Observed>>> = Arc::default();
        let s = seen.clone();
        let watch_api = api.clone();
        let task = tokio::spawn(async move {
            let stream = watcher(watch_api, watcher::Config::default());
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) = event {
                    let status = obj.status.clone().unwrap_or_default();
                    s.lock().unwrap().insert(
                        obj.name_any(),
                        (status.observed_generation.unwrap_or(0), status.phase, status.message.unwrap_or_default()),
                    );
                }
            }
        });
        let wait_active = |name: String, generation: i64| {
            let seen = seen.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if let Some((g, phase, message)) = seen.lock().unwrap().get(&name).cloned()
                        && g == generation
                    {
                        match phase {
                            Some(Phase::Active) => return Ok((Instant::now(), message)),
                            Some(Phase::Rejected) => bail!("module rejected: {message}"),
                            _ => {}
                        }
                    }
                    if Instant::now() > deadline {
                        bail!("generation {generation} of {name} not Active in 60 s");
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        let mut out = Vec::new();
        let mut nonce = 0u64;
        for (i, &size) in sizes.iter().enumerate() {
            let name = format!("policy-{i}");
            let mut series = SwapSeries { size: 0, latencies: Vec::new(), validated: Vec::new() };
            // One unmeasured warm-up, then `swaps` measured updates.
            for k in 0..=swaps {
                nonce += 1;
                let bytes = variant(bases[(k + i) % bases.len()], nonce, size);
                series.size = series.size.max(bytes.len());
                let source = ModuleSource { inline: Some(Base64(bytes)), config_map: None };
                let t0 = Instant::now();
                let generation = if k == 0 {
                    let obj = ReconcileModule::new(&name, ReconcileModuleSpec { module: source, mode: Mode::Active });
                    api.create(&PostParams::default(), &obj).await?.metadata.generation.unwrap_or(1)
                } else {
                    let patch = serde_json::json!({"spec": {"module": source}});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?
                        .metadata
                        .generation
                        .unwrap_or(0)
                };
                let (at, message) = wait_active(name.clone(), generation).await?;
                if k > 0 {
                    series.latencies.push(at.duration_since(t0).as_secs_f64());
                    let validated = message
                        .split("validated in ")
                        .nth(1)
                        .and_then(|rest| rest.split([',', ')']).next())
                        .and_then(parse_debug_duration);
                    series.validated.extend(validated);
                }
            }
            progress(&format!(
                "swap: {} KB modules, {} swaps: {}",
                series.size / 1024,
                series.latencies.len(),
                series.latencies.iter().map(|l| format!("{:.0} ms", l * 1000.0)).collect::<Vec<_>>().join(", ")
            ));
            out.push(series);
        }
        task.abort();
        anyhow::Ok(out)
    }
    .await;
    ctrl.stop();
    cp.stop();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_debug_format_parse() {
        assert_eq!(parse_debug_duration("1.5s"), Some(1.5));
        assert_eq!(parse_debug_duration("250ms"), Some(0.25));
        assert!((parse_debug_duration("950µs").unwrap() - 0.00095).abs() < 1e-12);
        assert_eq!(parse_debug_duration("x"), None);
    }

    #[test]
    fn padded_variants_have_the_asked_size() {
        let base = b"\0asm\x0d\0\x01\0";
        let v = variant(base, 7, 300 * 1024);
        assert!(v.len().abs_diff(300 * 1024) < 32, "{}", v.len());
        assert!(v.starts_with(base));
    }
}
