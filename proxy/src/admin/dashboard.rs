//! The web dashboard: static assets built into the binary (no CDN; works offline), the
//! figures it shows (`/admin/overview`) and sign-in with an admin's email and password
//! (`/admin/login`, through the identity service and the same login rate limit as
//! `/auth/login`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{auth, json_answer};
use crate::ratelimit::{Admission, Subject};
use crate::runtime::Shared;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

pub async fn overview(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err((status, why)) = auth::check(&shared, &headers).await {
        return json_answer(status, json!({ "error": why }));
    }
    json_answer(StatusCode::OK, shared.metrics.overview())
}

#[derive(serde::Deserialize)]
pub struct Login {
    email: String,
    password: String,
}

/// Sign an admin in: the identity service checks the password; only a token with the admin
/// role is handed to the page.
pub async fn login(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let fail = |status: StatusCode, why: &str| json_answer(status, json!({ "error": why }));
    let Ok(req) = serde_json::from_slice::<Login>(&body) else {
        return fail(StatusCode::BAD_REQUEST, "expected {\"email\", \"password\"}");
    };
    let Some(identity) = shared.identity.load_full() else {
        return fail(
            StatusCode::NOT_FOUND,
            "no identity service: sign in with the admin token (MCP_GATEWAY_ADMIN_TOKEN)",
        );
    };
    // The same brute-force limit as /auth/login on the MCP listener.
    let limiter = shared.ratelimit.load_full();
    let mut adm = Admission::default();
    let subject = Subject {
        ip: Some(peer.ip()),
        path: "/auth/login",
        ..Subject::default()
    };
    if let Err(l) = limiter.check_path(&subject, &mut adm).await {
        return json_answer(
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "error": l.message(), "retry_after": l.retry_after_secs }),
        );
    }
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(_) => return fail(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    };
    let answer = client
        .post(format!("http://{}/auth/login", identity.internal_addr))
        .header("x-forwarded-for", peer.ip().to_string())
        .json(&json!({ "email": req.email, "password": req.password }))
        .send()
        .await;
    let Ok(answer) = answer else {
        return fail(StatusCode::SERVICE_UNAVAILABLE, "the identity service did not answer");
    };
    if answer.status() != reqwest::StatusCode::OK {
        return fail(StatusCode::UNAUTHORIZED, "wrong email or password");
    }
    let v: serde_json::Value = answer.json().await.unwrap_or_default();
    let Some(token) = v["access_token"].as_str() else {
        return fail(StatusCode::SERVICE_UNAVAILABLE, "the identity service gave no token");
    };
    let rt = shared.runtime.load_full();
    match rt.verifier.verify_refreshing(token).await {
        Ok(id) if id.roles.iter().any(|r| r == "admin") => json_answer(
            StatusCode::OK,
            json!({ "token": token, "expires_in": v["expires_in"] }),
        ),
        Ok(_) => fail(StatusCode::FORBIDDEN, "this account does not have the admin role"),
        Err(_) => fail(StatusCode::SERVICE_UNAVAILABLE, "the new token could not be verified"),
    }
}
