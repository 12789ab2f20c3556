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
