//! The admin API's views of the gateway's state: routes, pools and workers, rate limits,
//! users, API keys and audit events (docs/admin-api.md). Read-only; changes go through the
//! configuration (reload) and the identity service's `/auth/admin/*` endpoints.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{auth, json_answer};
use crate::config::{PoolSource, RateKind};
use crate::runtime::Shared;

async fn guard(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    auth::check(shared, headers)
        .await
        .map_err(|(status, why)| Box::new(json_answer(status, json!({ "error": why }))))
}

/// `limit` from the query string (1..=1000, default 100).
fn limit_of(query: Option<&str>) -> Result<i64, Box<Response>> {
    let mut limit = 100;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        if let Some(v) = pair.strip_prefix("limit=") {
            limit = v
                .parse::<i64>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or_else(|| {
                    Box::new(json_answer(
                        StatusCode::BAD_REQUEST,
                        json!({ "error": "limit must be 1 to 1000" }),
                    ))
                })?;
        }
    }
    Ok(limit)
}

pub async fn routes(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = guard(&shared, &headers).await {
        return *r;
    }
    let rt = shared.runtime.load_full();
    let mut routes: Vec<Value> = rt
        .routes
        .values()
        .map(|r| {
            json!({
                "path": r.path,
                "pool": r.pool.name,
                "upstream_path": r.upstream_path,
                "auth": r.auth.as_ref().map(|a| json!({
                    "required": a.required, "roles": a.roles, "api_keys": a.api_keys,
                })),
                "tool_rules": r.tools.is_some(),
                "credential_service": r.credential.as_ref().map(|c| c.service.clone()),
                "log_bodies": r.log_bodies.is_some(),
            })
        })
        .collect();
    routes.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    json_answer(StatusCode::OK, json!({ "routes": routes }))
}

pub async fn pools(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = guard(&shared, &headers).await {
        return *r;
    }
    let rt = shared.runtime.load_full();
    let mut pools: Vec<Value> = rt
        .pools
        .values()
        .map(|p| {
            let workers: Vec<Value> = p
                .workers
                .iter()
                .map(|w| {
                    let e = w.endpoint();
                    json!({
                        "id": w.id,
                        "address": e.addr.to_string(),
                        "instance": e.instance,
                        "healthy": w.is_healthy(),
                        "inflight": w.inflight(),
                        "restarts": w.restarts.load(Ordering::Relaxed),
                        "sessions_opened": w.sessions_opened.load(Ordering::Relaxed),
                    })
                })
                .collect();
            json!({
                "name": p.name,
                "kind": match &p.config.source {
                    PoolSource::Spawn(_) => "spawn",
                    PoolSource::Remote(_) => "remote",
                },
                "balance": format!("{:?}", p.config.balance),
                // Remote pools with `discover`: the DNS entries followed (else null).
                "discovery": p.config.discovery.as_ref().map(|d| {
                    d.targets.iter().map(ToString::to_string).collect::<Vec<_>>()
                }),
                "healthy": p.healthy_count(),
                "workers": workers,
            })
        })
        .collect();
    pools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json_answer(StatusCode::OK, json!({ "pools": pools }))
}

pub async fn rate_limits(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = guard(&shared, &headers).await {
        return *r;
    }
    let rt = shared.runtime.load_full();
    let limiter = shared.ratelimit.load_full();
    let policies: Vec<Value> = rt
        .config
        .rate_limits
        .policies
        .iter()
        .map(|p| {
            let kind = match p.kind {
                RateKind::Rate {
                    limit,
                    period,
                    burst,
                } => json!({ "rate": limit, "period_secs": period.as_secs_f64(), "burst": burst }),
                RateKind::Concurrency { max, lease } => {
                    json!({ "concurrency": max, "lease_secs": lease.as_secs() })
                }
            };
            json!({
                "name": p.name,
                "key": p.key.iter().map(|k| format!("{k:?}").to_lowercase()).collect::<Vec<_>>(),
                "limit": kind,
                "backend": format!("{:?}", p.backend).to_lowercase(),
                "on_redis_error": format!("{:?}", p.on_redis_error).to_lowercase(),
                "prefetch": p.prefetch,
                "routes": p.routes,
                "paths": p.paths,
                "tools": p.tools,
                "exempt_roles": p.exempt_roles,
                "local_keys": limiter.local_keys(&p.name),
            })
        })
        .collect();
    let redis = shared
        .ratelimit_redis
        .as_ref()
        .map(|r| json!({ "available": r.available() }));
    json_answer(
        StatusCode::OK,
        json!({ "policies": policies, "redis": redis, "replicas": rt.config.rate_limits.replicas }),
    )
}

/// A database listing as JSON under `key`, or 503 (logged) when the database fails.
fn listing<T>(
    what: &str,
    key: &str,
    rows: Result<Vec<T>, crate::store::StoreError>,
    view: impl Fn(&T) -> Value,
) -> Response {
    match rows {
        Ok(rows) => json_answer(
            StatusCode::OK,
            json!({ key: rows.iter().map(view).collect::<Vec<_>>() }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "admin: listing {what} failed");
            json_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "database unavailable" }),
            )
        }
    }
}

fn no_identity() -> Response {
    json_answer(
        StatusCode::NOT_FOUND,
        json!({ "error": "the gateway's identity service is not configured" }),
    )
}

pub async fn users(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = guard(&shared, &headers).await {
        return *r;
    }
    let limit = match limit_of(query.as_deref()) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let Some(id) = shared.identity.load_full() else {
        return no_identity();
    };
    listing("users", "users", id.store.list_users(limit, 0).await, |u| {
        json!({
            "id": u.id, "email": u.email, "roles": u.roles, "disabled": u.disabled,
            "created_at": u.created_at, "updated_at": u.updated_at,
        })
    })
}

pub async fn user_keys(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Response {
    if let Err(r) = guard(&shared, &headers).await {
        return *r;
    }
    let Some(id) = shared.identity.load_full() else {
        return no_identity();
    };
    listing(
        "API keys",
        "keys",
        id.store.list_api_keys(&user).await,
        |k| {
            json!({
                "id": k.id, "name": k.name, "prefix": k.prefix, "scopes": k.scopes,
                "created_at": k.created_at, "expires_at": k.expires_at,
                "revoked_at": k.revoked_at, "last_used_at": k.last_used_at,
            })
        },
    )
}

pub async fn audit(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = guard(&shared, &headers).await {
        return *r;
    }
    let limit = match limit_of(query.as_deref()) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let Some(id) = shared.identity.load_full() else {
        return no_identity();
    };
    listing(
        "audit events",
        "events",
        id.store.list_audit_events(None, limit).await,
        |e| {
            json!({
                "id": e.id, "at": e.at, "kind": e.kind, "user_id": e.user_id,
                "subject": e.subject, "ip": e.ip, "detail": e.detail,
            })
        },
    )
}
