//! The HTTP endpoints: `/healthz` (the process serves), `/readyz` (caches synced and nothing
//! denied), `/metrics` (Prometheus text).

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Answers `/readyz`: `Ok` with a note, or `Err` with why not.
pub type Readiness = Box<dyn Fn() -> Result<String, String> + Send + Sync>;

struct Endpoints {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// Serves on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let state = Arc::new(Endpoints { metrics, readiness });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    axum::serve(listener, app).with_graceful_shutdown(stop).await.context("HTTP server")
}

async fn readyz(State(state): State<Arc<Endpoints>>) -> impl IntoResponse {
    match (state.readiness)() {
        Ok(note) => (StatusCode::OK, format!("ok: {note}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn metrics_text(State(state): State<Arc<Endpoints>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.encode())
}
