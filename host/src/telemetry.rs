//! Logging: readable lines by default, JSON with `--log-format json`; `RUST_LOG` filters.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, with every span field (key, module) flattened in.
    Json,
}

/// Installs the global subscriber (once; later calls are no-ops). kube-runtime's watcher errors
/// are left out by default: the informers log each one once, with what they will do about it.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube=warn,kube_runtime::watcher=off,tower=warn,hyper=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry.with(fmt::layer().with_target(false)).try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false))
            .try_init(),
    };
}

/// Spaces out a warning that repeats while a condition lasts (a watch that keeps failing, a
/// lease that cannot be acquired): the first occurrence is logged at once, later ones at most
/// once per backoff step (1 s, 2 s, 4 s, ... up to 5 min), saying how many were left out.
#[derive(Debug)]
pub struct Throttle {
    /// When the next occurrence may be logged; `None` while the condition is not present.
    next: Option<tokio::time::Instant>,
    step: std::time::Duration,
    suppressed: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self { next: None, step: Self::FIRST_STEP, suppressed: 0 }
    }
}

impl Throttle {
    const FIRST_STEP: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX_STEP: std::time::Duration = std::time::Duration::from_secs(300);

    /// The condition occurred again: `Some(left out since the last line)` if this occurrence
    /// should be logged, `None` if it should not.
    pub fn allow(&mut self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        match self.next {
            Some(next) if now < next => {
                self.suppressed += 1;
                None
            }
            Some(_) => {
                self.next = Some(now + self.step);
                self.step = (self.step * 2).min(Self::MAX_STEP);
                Some(std::mem::take(&mut self.suppressed))
            }
            None => {
                self.next = Some(now + self.step);
                self.step *= 2;
                Some(0)
            }
        }
    }

    /// The condition is over: the next occurrence is logged at once again. Returns whether it
    /// had occurred (so the caller can say it recovered).
    pub fn clear(&mut self) -> bool {
        let was_on = self.next.is_some();
        *self = Self::default();
        was_on
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_repeated_warning_is_logged_once_per_doubling_step() {
        let mut throttle = Throttle::default();
        let mut logged = Vec::new();
        // One occurrence every 100 ms for 16 s.
        for tick in 0..160 {
            if let Some(left_out) = throttle.allow() {
                logged.push((tick, left_out));
            }
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        // At 0 s, 1 s, 3 s, 7 s, 15 s: 1, 2, 4 and 8 s apart.
        assert_eq!(logged, [(0, 0), (10, 9), (30, 19), (70, 39), (150, 79)]);
    }

    #[tokio::test(start_paused = true)]
    async fn clearing_logs_the_next_occurrence_at_once() {
        let mut throttle = Throttle::default();
        assert!(!throttle.clear(), "nothing occurred yet");
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert!(throttle.clear());
        assert_eq!(throttle.allow(), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_step_stops_growing_at_five_minutes() {
        let mut throttle = Throttle::default();
        for _ in 0..20 {
            throttle.allow();
            tokio::time::advance(Duration::from_secs(3_600)).await;
        }
        assert_eq!(throttle.step, Duration::from_secs(300));
    }
}
