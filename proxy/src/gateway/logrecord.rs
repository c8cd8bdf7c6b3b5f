//! The request's log record: its id (taken in `request_filter`), facts gathered along the
//! phases, and the record built in `logging` and handed to the log pipeline.

use std::borrow::Cow;

use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;
use sha2::{Digest, Sha256};

use super::ctx::Ctx;
use crate::logship::record::{self, RequestRecord};
use crate::mcp::errors::GatewayError;
use crate::runtime::Shared;

const REQUEST_ID: &str = "x-request-id";
/// Longest header value copied into a record (user agent, protocol version).
const MAX_HEADER_TEXT: usize = 256;
/// How much of the first response chunk is searched for a JSON-RPC error code. A JSON-RPC
/// error answer names `error` right after `jsonrpc` and `id` (also inside an SSE `data:`
/// line), so the start is enough; the scan runs on every proxied answer.
const SCAN_BYTES: usize = 256;

/// Keep the client's `X-Request-Id` when it is safe, otherwise make one and put it in the
/// request, so the worker (which gets the request's headers) and error answers see it.
pub fn take_request_id(session: &mut Session, ctx: &mut Ctx) {
    let presented = session.req_header().headers.get(REQUEST_ID);
    let valid = presented.is_some_and(|v| record::valid_request_id(v.as_bytes()));
    ctx.log.request_id = record::request_id(presented.map(|v| v.as_bytes()));
    if !valid {
        let _ = session
            .req_header_mut()
            .insert_header(REQUEST_ID, ctx.log.request_id.as_str());
    }
}

/// `response_filter`: the request id goes back to the client; the worker answered.
pub fn on_response_header(resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
    if let Some(start) = ctx.log.upstream_start {
        ctx.log.upstream_micros = Some(start.elapsed().as_micros() as u64);
    }
    if !ctx.log.request_id.is_empty() {
        resp.insert_header(REQUEST_ID, ctx.log.request_id.as_str())?;
    }
    Ok(())
}

/// The code of a JSON-RPC error near the start of `chunk` (`"error":{"code":-32601`).
pub fn rpc_error_code(chunk: &[u8]) -> Option<i64> {
    let hay = &chunk[..chunk.len().min(SCAN_BYTES)];
    const NEEDLE: &[u8] = b"\"error\":{\"code\":";
    let at = hay.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let rest = &hay[at..];
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_digit() || *b == b'-' || *b == b' '))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.trim().parse().ok()
}

/// `response_body_filter`, first chunk only: note a JSON-RPC error answer.
pub fn scan_first_chunk(body: Option<&[u8]>, ctx: &mut Ctx) {
    if let Some(b) = body.filter(|b| !b.is_empty()) {
        ctx.log.scanned = true;
        ctx.log.rpc_error = rpc_error_code(b);
    }
}

/// Metrics that come with the record: tool calls, upstream latency, auth failures.
pub fn metrics(shared: &Shared, ctx: &Ctx) {
    let m = &shared.metrics.log;
    if ctx.rpc_method() == Some("tools/call") {
        if let Some(tool) = first_tool(ctx) {
            m.tool_call(tool);
        }
    }
    if let (Some(us), Some(route)) = (ctx.log.upstream_micros, &ctx.routing.route) {
        m.upstream_duration
            .with_label_values(&[route.pool.name.as_str()])
            .observe(us as f64 / 1e6);
    }
    if let Some(GatewayError::Unauthenticated(e)) = &ctx.refusal {
        m.auth_failures
            .with_label_values(&[crate::admin::metrics::auth_failure_reason(e)])
            .inc();
    }
}

fn first_tool(ctx: &Ctx) -> Option<&str> {
    ctx.body
        .parsed
        .as_ref()
        .and_then(|b| b.first())
        .and_then(|m| m.tool.as_deref())
}

fn header_text(session: &Session, name: &str) -> Option<String> {
    let v = session.req_header().headers.get(name)?;
    let b = v.as_bytes();
    Some(String::from_utf8_lossy(&b[..b.len().min(MAX_HEADER_TEXT)]).into_owned())
}

/// What a request's record needs from its HTTP exchange, taken from the Pingora session
/// (or, for a detached GET stream, taken before the session was handed back).
pub struct RequestView {
    pub method: http::Method,
    /// Hash of the client's `Mcp-Session-Id` (never the id itself).
    pub session_hash: Option<String>,
    pub user_agent: Option<String>,
    pub protocol_version: Option<String>,
    pub client_ip: Option<std::net::IpAddr>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl RequestView {
    pub fn of(session: &Session, ctx: &Ctx) -> RequestView {
        let req = session.req_header();
        RequestView {
            method: req.method.clone(),
            session_hash: req
                .headers
                .get(crate::mcp::headers::SESSION_ID)
                .map(|v| session_hash(v.as_bytes())),
            user_agent: header_text(session, "user-agent"),
            protocol_version: header_text(session, crate::mcp::headers::PROTOCOL_VERSION),
            client_ip: ctx.client_ip(session),
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
        }
    }
}

/// The first 8 bytes of the SHA-256 of a session id, in hex.
fn session_hash(id: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Sha256::digest(id);
    let mut s = String::with_capacity(16);
    for b in &d[..8] {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

fn auth_outcome(ctx: &Ctx) -> &'static str {
    match &ctx.refusal {
        Some(
            e @ (GatewayError::Unauthenticated(_)
            | GatewayError::Forbidden(_)
            | GatewayError::CredentialMissing(_)),
        ) => e.kind(),
        _ if ctx.identity.is_some() => "ok",
        _ => "anonymous",
    }
}

/// The record of this request. Called once, when the request ends (`finish_request`).
pub fn build(view: &mut RequestView, ctx: &mut Ctx, status: u16) -> RequestRecord {
    let elapsed = ctx.start.elapsed();
    let route = ctx.routing.route.as_ref();
    let rpc_method = ctx.rpc_method().map(str::to_owned);
    RequestRecord {
        // Empty only when Pingora ended the request before `request_filter` ran.
        request_id: match std::mem::take(&mut ctx.log.request_id) {
            id if id.is_empty() => record::request_id(None),
            id => id,
        },
        at: record::now_ms() - elapsed.as_millis() as i64,
        user_id: ctx.identity.as_ref().map(|i| i.subject.clone()),
        api_key_id: ctx.api_key_id.clone(),
        client_ip: view.client_ip.map(|a| a.to_string()),
        user_agent: view.user_agent.take(),
        route: route.map(|r| r.path.clone()),
        pool: route.map(|r| r.pool.name.clone()),
        worker: ctx.routing.guard.as_ref().map(|g| g.worker().id.clone()),
        http_method: match view.method.as_str() {
            "POST" => Cow::Borrowed("POST"),
            "GET" => Cow::Borrowed("GET"),
            "DELETE" => Cow::Borrowed("DELETE"),
            other => Cow::Owned(other.to_owned()),
        },
        tool: if rpc_method.as_deref() == Some("tools/call") {
            first_tool(ctx).map(str::to_owned)
        } else {
            None
        },
        rpc_method,
        session_hash: view.session_hash.take(),
        protocol_version: view.protocol_version.take(),
        status,
        rpc_error: ctx
            .refusal
            .as_ref()
            .map(GatewayError::jsonrpc_code)
            .or(ctx.log.rpc_error),
        latency_us: elapsed.as_micros() as i64,
        upstream_us: ctx.log.upstream_micros.map(|u| u as i64),
        bytes_in: view.bytes_in as i64,
        bytes_out: view.bytes_out as i64,
        rate_limit: ctx.log.rate_limit.map(Cow::Borrowed),
        auth: Cow::Borrowed(auth_outcome(ctx)),
        error: match &ctx.refusal {
            Some(e) => Some(Cow::Borrowed(e.kind())),
            None if ctx.log.client_closed => Some(Cow::Borrowed("client_closed")),
            None => ctx.log.shutdown.then_some(Cow::Borrowed("shutdown")),
        },
        request_body: ctx.log.request_body.take(),
        response_body: match (
            route.and_then(|r| r.log_bodies.as_ref()),
            ctx.log.response_buf.take(),
        ) {
            (Some(cfg), Some(buf)) => Some(super::capture::render(&buf, ctx.log.response_cut, cfg)),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::rpc_error_code;

    #[test]
    fn finds_rpc_error_codes() {
        assert_eq!(
            rpc_error_code(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"x"}}"#),
            Some(-32601)
        );
        assert_eq!(
            rpc_error_code(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32602,\"message\":\"bad\"}}\n\n"),
            Some(-32602)
        );
        assert_eq!(
            rpc_error_code(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            None
        );
    }
}
