//! The rate-limit steps: the identity service's paths by client address, MCP routes once
//! the caller is known, and each `tools/call` once the body is parsed.

use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::ctx::Ctx;
use crate::mcp::errors::GatewayError;
use crate::ratelimit::{quota_headers, Limited, Subject};
use crate::runtime::Shared;

/// Note the outcome for the request record, and put a refusal in the audit trail.
fn settle(
    shared: &Shared,
    session: &Session,
    ctx: &mut Ctx,
    out: Result<(), Limited>,
) -> Result<(), GatewayError> {
    match out {
        Ok(()) => {
            if ctx.rate.tightest.is_some() && ctx.log.rate_limit.is_none() {
                ctx.log.rate_limit = Some("allowed");
            }
            Ok(())
        }
        Err(l) => {
            ctx.log.rate_limit = Some(if l.redis_down {
                "redis_down"
            } else {
                "limited"
            });
            let user = ctx.identity.as_ref().map(|i| i.subject.clone());
            let ip = ctx.client_ip(session).map(|i| i.to_string());
            shared.logship.audit(
                "rate_limited",
                user.as_deref(),
                None,
                ip.as_deref(),
                serde_json::json!({
                    "policy": &*l.quota.policy,
                    "path": session.req_header().uri.path(),
                    "retry_after": l.retry_after_secs,
                    "redis_down": l.redis_down,
                }),
            );
            Err(GatewayError::RateLimited(Box::new(l)))
        }
    }
}

/// `/auth/login` and the other paths policies name (anonymous: counted by address).
pub async fn check_path(
    shared: &Shared,
    session: &Session,
    ctx: &mut Ctx,
) -> Result<(), GatewayError> {
    let limiter = shared.ratelimit.load_full();
    if limiter.is_empty() {
        return Ok(());
    }
    let subject = Subject {
        ip: ctx.client_ip(session),
        path: session.req_header().uri.path(),
        ..Subject::default()
    };
    let mut adm = std::mem::take(&mut ctx.rate);
    let out = limiter.check_path(&subject, &mut adm).await;
    ctx.rate = adm;
    settle(shared, session, ctx, out)
}

/// The caller as the limiter sees it (the tool is set per call).
fn subject_of<'a>(
    session: &'a Session,
    ctx: &'a Ctx,
    user: Option<&'a str>,
    tool: Option<&'a str>,
) -> Subject<'a> {
    Subject {
        user,
        api_key: ctx.api_key_id.as_deref(),
        ip: ctx.client_ip(session),
        route: ctx.routing.route.as_ref().map(|r| r.path.as_str()),
        path: session.req_header().uri.path(),
        roles: ctx
            .identity
            .as_ref()
            .map(|i| i.roles.as_slice())
            .unwrap_or(&[]),
        tool,
    }
}

/// An MCP route, after authentication.
pub async fn check_route(
    shared: &Shared,
    session: &Session,
    ctx: &mut Ctx,
) -> Result<(), GatewayError> {
    let limiter = shared.ratelimit.load_full();
    if limiter.is_empty() {
        return Ok(());
    }
    let user = ctx.identity.as_ref().map(|i| i.user_key());
    let mut adm = std::mem::take(&mut ctx.rate);
    let out = limiter
        .check_route(&subject_of(session, ctx, user.as_deref(), None), &mut adm)
        .await;
    ctx.rate = adm;
    settle(shared, session, ctx, out)
}

/// Every `tools/call` in the parsed body (a batch counts each call).
pub async fn check_tools(
    shared: &Shared,
    session: &Session,
    ctx: &mut Ctx,
) -> Result<(), GatewayError> {
    let limiter = shared.ratelimit.load_full();
    if !limiter.has_tool_policies() {
        return Ok(());
    }
    let tools: Vec<String> = match ctx.body.parsed.as_ref() {
        Some(parsed) => parsed
            .messages
            .iter()
            .filter_map(|m| m.tool.clone())
            .collect(),
        None => return Ok(()),
    };
    if tools.is_empty() {
        return Ok(());
    }
    let user = ctx.identity.as_ref().map(|i| i.user_key());
    let mut adm = std::mem::take(&mut ctx.rate);
    let mut out = Ok(());
    for tool in &tools {
        let subject = subject_of(session, ctx, user.as_deref(), Some(tool));
        out = limiter.check_tool(&subject, &mut adm).await;
        if out.is_err() {
            break;
        }
    }
    ctx.rate = adm;
    settle(shared, session, ctx, out)
}

/// `RateLimit-Policy` / `RateLimit` on answers that were let through.
pub fn add_headers(resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    if let Some(q) = &ctx.rate.tightest {
        for (name, value) in quota_headers(q) {
            resp.insert_header(name, value)?;
        }
    }
    Ok(())
}
