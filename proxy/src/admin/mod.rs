//! The admin listener: liveness, readiness and Prometheus metrics.

pub mod logs;
pub mod metrics;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::runtime::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    let reader = Arc::new(logs::LogReader::new(&shared));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(shared.clone())
        .merge(
            Router::new()
                .route("/admin/logs", get(logs::get_logs))
                .with_state((shared, reader)),
        )
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Ready: configuration loaded, not draining, and every pool has a healthy worker.
async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.draining.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string());
    }
    let rt = shared.runtime.load();
    let mut waiting = Vec::new();
    for pool in rt.pools.values() {
        if pool.healthy_count() == 0 {
            waiting.push(pool.name.clone());
        }
    }
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no healthy worker in: {}\n", waiting.join(", ")),
        )
    }
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let rt = shared.runtime.load();
    shared
        .metrics
        .log
        .queue_depth
        .set(i64::try_from(shared.logship.depth()).unwrap_or(i64::MAX));
    let body = shared.metrics.render(rt.pools.values().map(|p| p.as_ref()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Serve until the process exits.
pub async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|_| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener unusable");
            return;
        }
    };
    if let Err(e) = axum::serve(listener, router(shared)).await {
        tracing::error!(error = %e, "admin listener failed");
    }
}
