//! Who may use the admin API: a caller with the `admin` role (a token of a trusted issuer or
//! an API key of the gateway's own users), or one presenting the static token in
//! `MCP_GATEWAY_ADMIN_TOKEN` (at least 32 characters; the same check as
//! `GET /admin/logs`). A gateway with neither (no issuer, no identity, no static
//! token) has no way to tell an admin apart, so its admin API is open: keep the admin
//! listener on loopback (the default) or set the token.

use axum::http::{HeaderMap, StatusCode};

use crate::runtime::Shared;

use super::logs::{static_token_matches, ADMIN_ROLE, ADMIN_TOKEN_ENV};

/// `Ok` when the request may use the admin API; otherwise the status and a reason.
pub async fn check(shared: &Shared, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    let static_token = std::env::var(ADMIN_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let rt = shared.runtime.load_full();
    let identity = shared.identity.load_full();
    let Some(token) = presented else {
        if static_token.is_none() && rt.verifier.is_empty() && identity.is_none() {
            return Ok(());
        }
        return Err((
            StatusCode::UNAUTHORIZED,
            "the admin API needs a bearer token with the admin role".into(),
        ));
    };
    if static_token_matches(token) {
        return Ok(());
    }
    let who = if token.starts_with("mcpk_") {
        match &identity {
            Some(h) => h.provider.authenticate_api_key(token).await.ok().flatten(),
            None => None,
        }
    } else {
        rt.verifier
            .verify_refreshing(token)
            .await
            .ok()
            .map(|i| (*i).clone())
    };
    match who {
        None => Err((StatusCode::UNAUTHORIZED, "invalid or expired token".into())),
        Some(i) if i.roles.iter().any(|r| r == ADMIN_ROLE) => Ok(()),
        Some(_) => Err((StatusCode::FORBIDDEN, "the admin role is required".into())),
    }
}
