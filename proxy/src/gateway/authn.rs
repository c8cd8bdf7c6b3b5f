//! Who is calling: a JWT (the gateway's own or a trusted issuer's) or one of the gateway's
//! API keys, then the route's roles, then the caller's service credential when the route
//! injects one.

use std::sync::Arc;

use pingora::proxy::Session;

use super::ctx::Ctx;
use crate::auth::{AuthError, Identity};
use crate::mcp::errors::GatewayError;
use crate::runtime::Shared;

/// API keys the gateway issues start with this.
pub const API_KEY_PREFIX: &str = "mcpk_";

enum Presented {
    Nothing,
    Jwt(String),
    ApiKey(String),
}

fn unauthenticated(e: AuthError) -> GatewayError {
    GatewayError::Unauthenticated(e)
}

/// What the request carries. Tokens in the query string are refused outright (they end up
/// in logs and browser history).
fn presented(session: &Session) -> Result<Presented, GatewayError> {
    let req = session.req_header();
    let in_query = req.uri.query().is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.starts_with("access_token=")
                || kv.starts_with("token=")
                || kv.starts_with("api_key=")
        })
    });
    if in_query {
        return Err(unauthenticated(AuthError::TokenInQuery));
    }
    // Authorization wins when both are sent; X-API-Key is for clients that cannot set it.
    let Some(v) = req.headers.get("authorization") else {
        return match req.headers.get("x-api-key") {
            Some(v) => {
                let key = v
                    .to_str()
                    .map_err(|_| unauthenticated(AuthError::Malformed))?;
                Ok(Presented::ApiKey(key.trim().to_string()))
            }
            None => Ok(Presented::Nothing),
        };
    };
    let v = v
        .to_str()
        .map_err(|_| unauthenticated(AuthError::Malformed))?;
    let (scheme, token) = v
        .split_once(' ')
        .ok_or(unauthenticated(AuthError::Malformed))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated(AuthError::Malformed));
    }
    let token = token.trim();
    Ok(if token.starts_with(API_KEY_PREFIX) {
        Presented::ApiKey(token.to_string())
    } else {
        Presented::Jwt(token.to_string())
    })
}

/// A token of the gateway's own issuer without the general audience was bound by the
/// authorization server to one route's resource (RFC 8707): it is accepted on that route only.
fn check_resource(
    rt: &crate::runtime::Runtime,
    route_path: &str,
    identity: &Identity,
) -> Result<(), GatewayError> {
    let Some(id) = &rt.config.identity else {
        return Ok(());
    };
    if identity.issuer != id.issuer || identity.audiences.contains(&id.audience) {
        return Ok(());
    }
    let resource = format!("{}{route_path}", id.issuer);
    if identity.audiences.contains(&resource) {
        Ok(())
    } else {
        Err(unauthenticated(AuthError::WrongAudience))
    }
}

/// Establish `ctx.identity` and `ctx.credential` for an MCP route.
pub async fn authenticate(
    shared: &Shared,
    session: &Session,
    ctx: &mut Ctx,
) -> Result<(), GatewayError> {
    let (Some(rt), Some(route)) = (ctx.routing.runtime.clone(), ctx.routing.route.clone()) else {
        return Ok(());
    };
    let Some(rules) = &route.auth else {
        return Ok(());
    };
    let identity: Arc<Identity> = match presented(session)? {
        Presented::Nothing if rules.required => return Err(unauthenticated(AuthError::Missing)),
        Presented::Nothing => return Ok(()),
        Presented::Jwt(token) => {
            let identity = rt
                .verifier
                .verify_refreshing(&token)
                .await
                .map_err(unauthenticated)?;
            check_resource(&rt, &route.path, &identity)?;
            identity
        }
        Presented::ApiKey(key) => {
            ctx.api_key_id = Some(api_key_id(&key));
            let handle = match (rules.api_keys, shared.identity.load_full()) {
                (true, Some(h)) => h,
                _ => {
                    return Err(unauthenticated(AuthError::Invalid(
                        "API keys are not accepted here",
                    )))
                }
            };
            let found = handle
                .provider
                .authenticate_api_key(&key)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "API key lookup failed");
                    GatewayError::Internal
                })?;
            Arc::new(found.ok_or(unauthenticated(AuthError::Invalid(
                "unknown or revoked API key",
            )))?)
        }
    };
    if let Some(handle) = shared.identity.load_full() {
        if identity.issuer == handle.provider.issuer()
            && identity.issued_at != 0
            && handle
                .provider
                .token_revoked(&identity.subject, identity.issued_at)
        {
            return Err(unauthenticated(AuthError::Invalid(
                "this token was revoked",
            )));
        }
    }
    // Known from here on, also when refused below (the audit trail names the caller).
    ctx.identity = Some(identity.clone());
    if !identity.has_any_role(&rules.roles) {
        return Err(GatewayError::Forbidden(rules.roles.join(", ")));
    }
    if let Some(rule) = &route.credential {
        let handle = shared.identity.load_full().ok_or(GatewayError::Internal)?;
        let secret = handle
            .provider
            .service_credential(&identity.subject, &rule.service)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "credential lookup failed");
                GatewayError::Internal
            })?;
        ctx.credential =
            Some(secret.ok_or_else(|| GatewayError::CredentialMissing(rule.service.clone()))?);
    }
    ctx.identity = Some(identity);
    Ok(())
}

/// A stable, non-secret id for an API key: the first 16 hex digits of its SHA-256.
fn api_key_id(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
