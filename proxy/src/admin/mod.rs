//! The admin listener: liveness, readiness and Prometheus metrics.

pub mod auth;
pub mod dashboard;
pub mod logs;
pub mod metrics;
pub mod state;

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
        .route("/admin/config", get(config_in_force))
        .route("/admin/reload", axum::routing::post(reload_now))
        .route("/admin/routes", get(state::routes))
        .route("/admin/pools", get(state::pools))
        .route("/admin/rate-limits", get(state::rate_limits))
        .route("/admin/users", get(state::users))
        .route("/admin/users/{id}/api-keys", get(state::user_keys))
        .route("/admin/audit", get(state::audit))
        .route("/admin/overview", get(dashboard::overview))
        .route("/admin/login", axum::routing::post(dashboard::login))
        .route("/", get(dashboard::index))
        .route("/dashboard", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/style.css", get(dashboard::style))
        .with_state(shared.clone())
        .merge(
            Router::new()
                .route("/admin/logs", get(logs::get_logs))
                .with_state((shared.clone(), reader)),
        )
        .layer(axum::middleware::from_fn_with_state(
            shared,
            auth::open_guard,
        ))
}

pub(crate) fn json_answer(status: StatusCode, v: serde_json::Value) -> axum::response::Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The configuration in force: version, source, text, last reload error.
async fn config_in_force(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Err((status, why)) = auth::check(&shared, &headers).await {
        return json_answer(status, serde_json::json!({ "error": why }));
    }
    let st = shared
        .reload_status
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    json_answer(
        StatusCode::OK,
        serde_json::to_value(&st).unwrap_or_default(),
    )
}

/// Reload the configuration file now; 200 with the new version, or 400 with every error
/// (the previous configuration stays in force).
async fn reload_now(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    if let Err((status, why)) = auth::check(&shared, &headers).await {
        return json_answer(status, serde_json::json!({ "error": why }));
    }
    let Some(tx) = shared.control.get() else {
        return json_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "the control plane is not running yet" }),
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let msg = crate::reload::ControlMsg::Reload {
        trigger: "admin_api",
        reply: Some(reply),
    };
    if tx.send(msg).await.is_err() {
        return json_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "the control plane has stopped" }),
        );
    }
    match answer.await {
        Ok(Ok(version)) => json_answer(
            StatusCode::OK,
            serde_json::json!({ "reloaded": true, "version": version }),
        ),
        Ok(Err(errors)) => json_answer(
            StatusCode::BAD_REQUEST,
            serde_json::json!({
                "reloaded": false,
                "errors": errors.lines().collect::<Vec<_>>(),
            }),
        ),
        Err(_) => json_answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": "the reload was abandoned" }),
        ),
    }
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Ready: configuration loaded, the MCP listener accepting, not draining, and every pool
/// has a healthy worker.
async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.draining.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string());
    }
    if !shared.listening.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the MCP listener is not accepting yet\n".to_string(),
        );
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
    if let Err(e) = axum::serve(
        listener,
        router(shared).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

/// Where the admin listener comes from: bound at start (a taken port fails the start), or,
/// for a process taking over from an old one (graceful upgrade), bound once the old process
/// has let the port go.
pub enum AdminListener {
    Bound(std::net::TcpListener),
    WhenFree(std::net::SocketAddr),
}

pub async fn serve_admin(admin: AdminListener, shared: Arc<Shared>) {
    match admin {
        AdminListener::Bound(l) => serve(l, shared).await,
        AdminListener::WhenFree(addr) => {
            let mut waited = 0u32;
            loop {
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => {
                        tracing::info!(%addr, "admin listener bound");
                        if let Err(e) = axum::serve(
                            l,
                            router(shared)
                                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
                        )
                        .await
                        {
                            tracing::error!(error = %e, "admin listener failed");
                        }
                        return;
                    }
                    Err(e) => {
                        if waited.is_multiple_of(50) {
                            tracing::info!(%addr, error = %e, "admin port still taken (the old process is draining); retrying");
                        }
                        waited += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
}
