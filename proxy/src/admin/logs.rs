//! `GET /admin/logs`: stored request records for operators, newest first.
//!
//! Needs the admin role: `Authorization: Bearer <token>` where the token is either a JWT the
//! gateway's verifier accepts carrying the role `admin`, or the static token in
//! `$MCP_GATEWAY_ADMIN_TOKEN` (at least 32 characters). No or a bad token: 401; a valid
//! token without the role: 403.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};

use crate::logship::db::{self, LogDb, LogQuery};
use crate::runtime::Shared;

/// Environment variable holding a static admin token.
pub const ADMIN_TOKEN_ENV: &str = "MCP_GATEWAY_ADMIN_TOKEN";
/// The role a token needs.
pub const ADMIN_ROLE: &str = "admin";
const MIN_STATIC_TOKEN: usize = 32;

/// The admin listener's database connection for reading logs, opened on first use.
pub struct LogReader {
    db: Option<tokio::sync::Mutex<LogDb>>,
}

impl LogReader {
    pub fn new(shared: &Shared) -> LogReader {
        let cfg = shared.runtime.load();
        LogReader {
            db: cfg
                .config
                .database
                .as_ref()
                .map(|d| tokio::sync::Mutex::new(LogDb::new(&d.url, d.migrate))),
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Does `presented` equal `$MCP_GATEWAY_ADMIN_TOKEN` (set, at least 32 characters)?
pub(crate) fn static_token_matches(presented: &str) -> bool {
    let Ok(expected) = std::env::var(ADMIN_TOKEN_ENV) else {
        return false;
    };
    if expected.len() < MIN_STATIC_TOKEN {
        return false;
    }
    // Compare digests: equal-length values, so the comparison time says nothing useful.
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `Ok(())` for an admin; otherwise the 401/403 answer.
pub async fn require_admin(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "a bearer token with the admin role is required",
        ));
    };
    if static_token_matches(token) {
        return Ok(());
    }
    let rt = shared.runtime.load_full();
    match rt.verifier.verify_refreshing(token).await {
        Ok(id) if id.roles.iter().any(|r| r == ADMIN_ROLE) => Ok(()),
        Ok(_) => Err(error(StatusCode::FORBIDDEN, "the admin role is required")),
        Err(e) => Err(error(
            StatusCode::UNAUTHORIZED,
            format!("invalid token: {e}"),
        )),
    }
}

/// Turn the query string into a `LogQuery`, or say what is wrong.
pub fn parse_query(params: &HashMap<String, String>, now_ms: i64) -> Result<LogQuery, String> {
    let mut q = LogQuery {
        limit: 100,
        ..Default::default()
    };
    for (k, v) in params {
        match k.as_str() {
            "user" => q.user = Some(v.clone()),
            "route" => q.route = Some(v.clone()),
            "tool" => q.tool = Some(v.clone()),
            "status" => {
                q.status = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|s| (100..=599).contains(s))
                        .ok_or_else(|| format!("status: expected an HTTP status, got {v:?}"))?,
                )
            }
            "since" => q.since = Some(db::parse_since(v, now_ms)?),
            "limit" => {
                q.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|l| (1..=db::MAX_LIMIT).contains(l))
                    .ok_or_else(|| format!("limit: expected 1–{}, got {v:?}", db::MAX_LIMIT))?
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (known: user, route, tool, status, since, limit)"
                ))
            }
        }
    }
    Ok(q)
}

pub async fn get_logs(
    State((shared, reader)): State<(Arc<Shared>, Arc<LogReader>)>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = require_admin(&shared, &headers).await {
        return r;
    }
    let q = match parse_query(&params, crate::logship::record::now_ms()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(db) = &reader.db else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no database configured: request records go to the tracing log only",
        );
    };
    let pool = match db.lock().await.pool().await {
        Ok(p) => p,
        Err(e) => {
            shared
                .metrics
                .database_errors
                .with_label_values(&["read"])
                .inc();
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database unavailable: {e}"),
            );
        }
    };
    match db::query(&pool, &q).await {
        Ok(records) => Json(serde_json::json!({ "records": records })).into_response(),
        Err(e) => {
            shared
                .metrics
                .database_errors
                .with_label_values(&["read"])
                .inc();
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database error: {e}"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_checked() {
        let p = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let q = parse_query(&p(&[("tool", "add"), ("status", "200"), ("limit", "5")]), 0).unwrap();
        assert_eq!(
            (q.tool.as_deref(), q.status, q.limit),
            (Some("add"), Some(200), 5)
        );
        assert!(parse_query(&p(&[("limit", "0")]), 0).is_err());
        assert!(parse_query(&p(&[("limit", "100000")]), 0).is_err());
        assert!(parse_query(&p(&[("status", "abc")]), 0).is_err());
        assert!(parse_query(&p(&[("since", "soon")]), 0).is_err());
        assert!(parse_query(&p(&[("colour", "red")]), 0).is_err());
    }
}
