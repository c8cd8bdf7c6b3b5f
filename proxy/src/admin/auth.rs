//! Who may use the admin API: a caller with the `admin` role (a token of a trusted issuer or
//! an API key of the gateway's own users), or one presenting the static token in
//! `MCP_GATEWAY_ADMIN_TOKEN` (at least 32 characters; the same check as
//! `GET /admin/logs`). A gateway with neither (no issuer, no identity, no static
//! token) has no way to tell an admin apart: its admin API then answers callers on loopback
//! only (`open_guard`), so an admin listener moved to a public address without credentials
//! does not hand the gateway's state to anyone who can reach it.

use axum::http::{HeaderMap, StatusCode};

use crate::runtime::Shared;

use super::logs::{static_token_matches, ADMIN_ROLE, ADMIN_TOKEN_ENV};

/// No issuer, no identity service and no static token: nothing can prove a caller is an admin.
pub fn is_open(shared: &Shared) -> bool {
    std::env::var(ADMIN_TOKEN_ENV).map_or(true, |t| t.is_empty())
        && shared.runtime.load().verifier.is_empty()
        && shared.identity.load().is_none()
}

/// Whether a caller from `peer` may reach an admin API that has no credentials configured:
/// only from loopback (an IPv4 peer on a dual-stack listener arrives as `::ffff:a.b.c.d`).
/// An unknown peer is refused.
pub fn open_admin_reachable(peer: Option<std::net::IpAddr>) -> bool {
    peer.is_some_and(|ip| ip.to_canonical().is_loopback())
}

/// In front of `/admin/*`: while the admin API is open (`is_open`), a caller that is not
/// on loopback gets 403 instead of the gateway's configuration, users and logs.
pub async fn open_guard(
    axum::extract::State(shared): axum::extract::State<std::sync::Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req.uri().path().starts_with("/admin/") && is_open(&shared) {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        if !open_admin_reachable(peer) {
            tracing::warn!(
                peer = ?peer,
                path = req.uri().path(),
                "admin API refused: no credentials are configured and the caller is not on loopback"
            );
            return super::json_answer(
                StatusCode::FORBIDDEN,
                serde_json::json!({
                    "error": format!(
                        "the admin API has no credentials configured (no issuer, no identity \
                         service, no {ADMIN_TOKEN_ENV}) and answers only on loopback"
                    )
                }),
            );
        }
    }
    next.run(req).await
}

/// `Ok` when the request may use the admin API; otherwise the status and a reason.
pub async fn check(shared: &Shared, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
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
        if is_open(shared) {
            // Open: `open_guard` already turned away callers that are not on loopback.
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

#[cfg(test)]
mod tests {
    use super::open_admin_reachable;

    #[test]
    fn an_open_admin_api_answers_loopback_only() {
        for ok in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(open_admin_reachable(ok.parse().ok()), "{ok}");
        }
        for refused in [
            "192.0.2.2",
            "10.0.0.1",
            "::ffff:192.0.2.2",
            "fd00::2",
            "0.0.0.0",
        ] {
            assert!(!open_admin_reachable(refused.parse().ok()), "{refused}");
        }
        assert!(!open_admin_reachable(None));
    }
}
