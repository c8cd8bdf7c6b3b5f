//! The named steps the phases call.

use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::ctx::Ctx;
use super::listfilter::ListFilter;
use crate::mcp::errors::GatewayError;
use crate::mcp::headers;
use crate::mcp::origin;
use crate::mcp::session::SessionClaims;
use crate::routing::pool::Endpoint;
use crate::routing::InflightGuard;
use crate::runtime::{Route, Runtime, Shared};

/// Headers a client must never be able to set on the way to a worker: its own credentials
/// (the gateway authenticates; workers get identity from the gateway) and identity claims.
const STRIPPED_PREFIXES: &[&str] = &["x-mcp-user"];
const STRIPPED: &[&str] = &[
    "authorization",
    "x-api-key",
    "cookie",
    "proxy-authorization",
];
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-real-ip",
];

/// What `admit` decided.
pub enum Admitted {
    /// An MCP route: authenticate, then resume the session, then proxy.
    Mcp,
    /// The identity service's endpoints (`/auth/…`, `/.well-known/jwks.json`): proxied to it.
    Internal,
    /// The gateway answers itself with this JSON.
    Answer(bytes::Bytes),
}

const PROTECTED_RESOURCE: &str = "/.well-known/oauth-protected-resource";

/// The OAuth authorization server's endpoints and metadata (docs/oauth.md).
fn is_authorization_server_path(path: &str) -> bool {
    path.starts_with("/oauth/")
        || path == "/.well-known/oauth-authorization-server"
        || path == "/.well-known/openid-configuration"
}

/// `request_filter`, first step: route, method, origin, declared size.
pub fn admit(
    shared: &Shared,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<Admitted, GatewayError> {
    let rt = shared.runtime.load_full();
    let limits = &rt.config.limits;
    if session.req_header().method == http::Method::POST {
        // Shed at once rather than queue without bound: a client told to retry costs far
        // less than latency and memory growing for everyone.
        let now = shared.calls_inflight.fetch_add(1, Ordering::AcqRel) + 1;
        ctx.call_counted = true;
        let limit = limits.max_inflight_calls;
        if limit > 0 && now > limit {
            return Err(GatewayError::Overloaded { limit });
        }
    }
    session.set_read_timeout(Some(limits.client_read_timeout));
    session.set_write_timeout(Some(limits.client_write_timeout));
    let peer = super::client_ip::peer(session);
    ctx.client_ip =
        super::client_ip::resolve(peer, &session.req_header().headers, &rt.config.client_ip);
    let req = session.req_header();
    let path = req.uri.path();
    if let Some(rest) = path.strip_prefix(PROTECTED_RESOURCE) {
        ctx.routing.runtime = Some(rt.clone());
        return protected_resource_metadata(&rt, rest).map(Admitted::Answer);
    }
    if path.starts_with("/auth/")
        || path == "/.well-known/jwks.json"
        || is_authorization_server_path(path)
    {
        let handle = shared.identity.load_full().ok_or(GatewayError::NoRoute)?;
        ctx.routing.internal = Some(handle.internal_addr);
        ctx.routing.runtime = Some(rt);
        return Ok(Admitted::Internal);
    }
    let route = rt.routes.get(path).cloned().ok_or(GatewayError::NoRoute)?;
    ctx.routing.route = Some(route);
    let method = &req.method;
    let is_post = method == http::Method::POST;
    if !(is_post || method == http::Method::GET || method == http::Method::DELETE) {
        return Err(GatewayError::MethodNotAllowed);
    }
    if !origin::allowed(&rt.origins, req.headers.get("origin").map(|v| v.as_bytes())) {
        return Err(GatewayError::OriginDenied);
    }
    refuse_hostile_framing(req, is_post)?;
    if let Some(len) = req.headers.get("content-length") {
        let declared = std::str::from_utf8(len.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| GatewayError::InvalidRequest("bad Content-Length".into()))?;
        if declared > limits.max_body_bytes as u64 {
            return Err(GatewayError::BodyTooLarge {
                limit: limits.max_body_bytes,
            });
        }
        ctx.body.declared = Some(declared);
    }
    ctx.body.active = is_post;
    ctx.routing.runtime = Some(rt);
    Ok(Admitted::Mcp)
}

/// Framing an MCP endpoint never needs, refused before anything reaches a worker (see
/// docs/security.md): a protocol upgrade (Streamable HTTP never switches protocols; a worker
/// answering 101 would turn the connection into an unchecked tunnel), and a body on GET or
/// DELETE (never parsed by the gateway, so it must not be forwarded either).
fn refuse_hostile_framing(req: &RequestHeader, is_post: bool) -> Result<(), GatewayError> {
    if req.headers.contains_key(http::header::UPGRADE) {
        return Err(GatewayError::InvalidRequest(
            "protocol upgrades are not supported on MCP endpoints".into(),
        ));
    }
    let has_body = req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes().iter().any(|b| *b != b'0'));
    if !is_post && has_body {
        return Err(GatewayError::InvalidRequest(
            "GET and DELETE requests to an MCP endpoint carry no body".into(),
        ));
    }
    Ok(())
}

/// Where a 401 should point the client for this route's protected-resource metadata.
pub fn resource_metadata_url(ctx: &Ctx) -> Option<String> {
    let rt = ctx.routing.runtime.as_ref()?;
    let base = rt.config.public_url.as_ref()?;
    let route = ctx.routing.route.as_ref()?;
    Some(format!("{base}{PROTECTED_RESOURCE}{}", route.path))
}

/// RFC 9728 metadata for the route at `route_path` (or for the gateway as a whole).
fn protected_resource_metadata(
    rt: &Runtime,
    route_path: &str,
) -> Result<bytes::Bytes, GatewayError> {
    let base = rt.config.public_url.clone().ok_or(GatewayError::NoRoute)?;
    let route = if route_path.is_empty() {
        rt.routes.values().find(|r| r.auth.is_some())
    } else {
        rt.routes.get(route_path)
    }
    .ok_or(GatewayError::NoRoute)?;
    let mut servers: Vec<String> = rt
        .config
        .auth
        .issuers
        .iter()
        .map(|i| i.issuer.clone())
        .collect();
    if let Some(id) = &rt.config.identity {
        servers.insert(0, id.issuer.clone());
    }
    let doc = serde_json::json!({
        "resource": format!("{base}{}", route.path),
        "authorization_servers": servers,
        "bearer_methods_supported": ["header"],
        "scopes_supported": route.auth.as_ref().map(|a| a.roles.clone()).unwrap_or_default(),
    });
    Ok(bytes::Bytes::from(doc.to_string()))
}

/// `request_filter`, last step: open the sealed session id, which must belong to this pool
/// and to this caller.
pub fn resume_session(session: &Session, ctx: &mut Ctx) -> Result<(), GatewayError> {
    let (Some(rt), Some(route)) = (ctx.routing.runtime.clone(), ctx.routing.route.clone()) else {
        return Ok(());
    };
    let Some(sid) = session.req_header().headers.get(headers::SESSION_ID) else {
        return Ok(());
    };
    let user = ctx
        .identity
        .as_ref()
        .map(|i| i.user_key())
        .unwrap_or_default();
    let claims = rt
        .sealer
        .open(sid.as_bytes())
        .map_err(|_| GatewayError::SessionNotFound)?;
    // Another pool's session, or another user's: not found, exactly like a forgery.
    if claims.pool != route.pool.name || claims.user != user {
        return Err(GatewayError::SessionNotFound);
    }
    let worker = route
        .pool
        .find_sealed(&claims.worker, claims.instance)
        .ok_or(GatewayError::SessionNotFound)?;
    ctx.routing.pinned = Some(worker);
    ctx.routing.claims = Some(claims);
    Ok(())
}

fn client_key(ctx: &Ctx) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Some(ip) = ctx.client_ip {
        ip.hash(&mut h);
    }
    h.finish()
}

/// Request headers that belong to one hop of HTTP/1.1 and are not passed on to a worker by
/// the paths the gateway carries itself (`forward`, `detach`; HTTP/2 forbids them too).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Streams one h2c connection to a worker carries before the gateway opens another (the
/// worker's own `SETTINGS_MAX_CONCURRENT_STREAMS` lowers it; hyper's default is 200).
pub const H2C_STREAMS_PER_CONNECTION: usize = 100;

/// `upstream_peer`: the session's worker, or the balancer's pick among healthy ones. A GET
/// stream (`get_stream`) on an `h2c_streams` pool goes over HTTP/2 cleartext: many idle
/// streams then share a few connections instead of holding one socket each.
pub fn choose_peer(ctx: &mut Ctx, get_stream: bool) -> Result<Box<HttpPeer>, GatewayError> {
    if let Some(addr) = ctx.routing.internal {
        return Ok(Box::new(HttpPeer::new(addr, false, String::new())));
    }
    let route = ctx.routing.route.clone().ok_or(GatewayError::Internal)?;
    let endpoint = choose_worker(ctx, &route)?;
    let pool = &route.pool.config;
    let mut peer = HttpPeer::new(endpoint.addr, false, String::new());
    peer.options.connection_timeout = Some(pool.connect_timeout);
    peer.options.read_timeout = pool.read_timeout;
    peer.options.idle_timeout = Some(pool.idle_timeout);
    if get_stream && pool.h2c_streams {
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = H2C_STREAMS_PER_CONNECTION;
        ctx.routing.h2c = true;
    }
    Ok(Box::new(peer))
}

/// The worker of `route`'s pool for this request (the session's, or the balancer's pick
/// among healthy ones), recorded in `ctx.routing` (endpoint, in-flight guard).
pub fn choose_worker(ctx: &mut Ctx, route: &Route) -> Result<Arc<Endpoint>, GatewayError> {
    let pool = &route.pool;
    let worker = match &ctx.routing.pinned {
        Some(w) => w.clone(),
        None => {
            let slot = pool
                .select(client_key(ctx), &ctx.routing.tried)
                .ok_or_else(|| GatewayError::NoHealthyWorker {
                    pool: pool.name.clone(),
                })?;
            ctx.routing.tried.push(slot);
            pool.workers[slot].clone()
        }
    };
    let endpoint = worker.endpoint();
    ctx.routing.endpoint = Some(endpoint.clone());
    ctx.routing.guard = Some(InflightGuard::new(worker));
    Ok(endpoint)
}

/// `fail_to_connect`: eject the worker and say whether another may be tried. Nothing was
/// sent, so a retry is safe, but never for a pinned session (it must not move).
pub fn connect_failed(shared: &Shared, ctx: &mut Ctx) -> bool {
    let Some(route) = ctx.routing.route.clone() else {
        return false;
    };
    if let Some(guard) = ctx.routing.guard.take() {
        let w = guard.worker();
        shared
            .metrics
            .upstream_connect_failures
            .with_label_values(&[&route.pool.name, &w.id])
            .inc();
        if w.record_failure(1) {
            tracing::warn!(pool = %route.pool.name, worker = %w.id, "connect failed; worker ejected");
        }
    }
    if ctx.routing.pinned.is_some() {
        ctx.refusal = Some(GatewayError::SessionNotFound);
        return false;
    }
    ctx.routing.tried.len() < route.pool.workers.len()
}

/// The worker could not be reached at all (nothing was sent to it).
pub fn is_connect_error(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::ConnectProxyFailure
    )
}

/// `fail_to_proxy`, passive health: a worker that stayed silent past `read_timeout`, answered
/// something that is not HTTP, or broke its answer off counts one failure, like a failed
/// health check; after `health.unhealthy_after` of them it gets no traffic until a health
/// check passes again. Connect failures are counted in `connect_failed`.
pub fn upstream_failed(ctx: &Ctx, e: &Error) {
    if e.esource() != &ErrorSource::Upstream || ctx.refusal.is_some() {
        return;
    }
    if is_connect_error(e) {
        return;
    }
    let (Some(route), Some(guard)) = (&ctx.routing.route, &ctx.routing.guard) else {
        return;
    };
    let w = guard.worker();
    if ctx.routing.h2c && matches!(e.etype(), ErrorType::H2Error | ErrorType::InvalidH2) {
        // Most likely a worker that does not speak h2c: its GET streams fail (502), but it
        // still serves POSTs, so it is not ejected for it.
        if !route.pool.h2c_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(pool = %route.pool.name, worker = %w.id, error = %e,
                "a GET stream over h2c failed: if this pool's workers do not speak h2c, set h2c_streams: false");
        }
        return;
    }
    if w.record_failure(route.pool.config.health.unhealthy_after) {
        tracing::warn!(pool = %route.pool.name, worker = %w.id, error = %e, "worker failed while answering; ejected");
    }
}

/// What the gateway changes on a request on its way to a worker, worked out once and then
/// applied to Pingora's request header (its proxy path) or written straight into the request
/// the gateway sends itself (`forward`), which then needs no copy of the client's header.
pub struct UpstreamRewrite {
    /// The identity service's route: only identity claims and forwarding headers go.
    internal: bool,
    /// A new path and query, when the route maps the path or the client used absolute form.
    pub path: Option<http::uri::PathAndQuery>,
    /// The gateway's own headers, each replacing any of the same name.
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl UpstreamRewrite {
    /// Whether a client header reaches the worker: never its credentials, identity claims or
    /// forwarding headers (the gateway authenticates, and says where a request came from).
    pub fn keeps(&self, name: &str) -> bool {
        let doomed = STRIPPED_PREFIXES.iter().any(|p| name.starts_with(p))
            || FORWARDING.contains(&name)
            || (!self.internal && STRIPPED.contains(&name));
        !doomed
    }

    /// The worker's path and query: the new one, or the client's.
    pub fn path_and_query<'r>(&'r self, req: &'r RequestHeader) -> &'r str {
        match &self.path {
            Some(pq) => pq.as_str(),
            None => req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        }
    }

    /// Into a request the gateway sends itself: the client's headers that pass (and that
    /// `skip` does not name, the hop's own), then the gateway's own.
    pub fn write_headers(
        self,
        req: &RequestHeader,
        headers: &mut http::HeaderMap,
        skip: impl Fn(&str) -> bool,
    ) {
        headers.reserve(req.headers.len() + self.set.len() + 1);
        for (name, value) in req.headers.iter() {
            let n = name.as_str();
            if HOP_BY_HOP.contains(&n) || skip(n) || !self.keeps(n) {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        for (name, value) in self.set {
            headers.insert(name, value);
        }
    }

    /// Applied to Pingora's request header.
    pub fn apply(mut self, up: &mut RequestHeader) -> Result<()> {
        if let Some(pq) = self.path.take() {
            let uri = http::Uri::builder()
                .path_and_query(pq)
                .build()
                .map_err(|_| Error::new(ErrorType::InternalError))?;
            up.set_uri(uri);
        }
        let names: Vec<http::HeaderName> = up
            .headers
            .keys()
            .filter(|k| !self.keeps(k.as_str()))
            .cloned()
            .collect();
        for name in names {
            up.remove_header(&name);
        }
        for (name, value) in self.set {
            up.insert_header(name, value)?;
        }
        Ok(())
    }
}

/// `upstream_request_filter`: the worker's path and session id, credentials stripped.
pub fn rewrite_upstream_request(
    session: &Session,
    up: &mut RequestHeader,
    ctx: &Ctx,
) -> Result<()> {
    upstream_rewrite(session, up, ctx)?.apply(up)
}

/// One of the gateway's own headers; a value that cannot be a header value fails the request.
fn own(name: &'static str, value: &str) -> Result<(http::HeaderName, http::HeaderValue)> {
    let value = header_value(name, value)?;
    Ok((http::HeaderName::from_static(name), value))
}

fn header_value(name: &str, value: &str) -> Result<http::HeaderValue> {
    http::HeaderValue::from_str(value).map_err(|e| {
        Error::because(
            ErrorType::InvalidHTTPHeader,
            format!("value of {name} for the worker"),
            e,
        )
    })
}

/// The rewrite of the client's request `req` for the worker (see `UpstreamRewrite`).
pub fn upstream_rewrite(
    session: &Session,
    req: &RequestHeader,
    ctx: &Ctx,
) -> Result<UpstreamRewrite> {
    let mut rw = UpstreamRewrite {
        internal: ctx.routing.internal.is_some(),
        path: None,
        set: Vec::with_capacity(8),
    };
    if rw.internal {
        // The identity service reads the caller's own token; only identity claims and
        // forwarding headers are the gateway's to set.
        set_forwarded(session, ctx, &mut rw.set);
        return Ok(rw);
    }
    let Some(route) = &ctx.routing.route else {
        return Err(Error::new(ErrorType::InternalError));
    };
    // An absolute-form target (`POST http://host/mcp`, kept verbatim by Pingora) reaches
    // the worker in origin form.
    if route.upstream_path != route.path || !req.raw_path().starts_with(b"/") {
        let pq = match req.uri.query() {
            Some(q) => format!("{}?{q}", route.upstream_path),
            None => route.upstream_path.clone(),
        };
        rw.path = Some(
            http::uri::PathAndQuery::try_from(pq)
                .map_err(|_| Error::new(ErrorType::InternalError))?,
        );
    }
    if let Some(claims) = &ctx.routing.claims {
        rw.set.push(own(headers::SESSION_ID, &claims.upstream_id)?);
    }
    if let Some(id) = &ctx.identity {
        rw.set.push(own("x-mcp-user-id", &id.subject)?);
        rw.set.push(own("x-mcp-user-issuer", &id.issuer)?);
        rw.set.push(own("x-mcp-user-roles", &id.roles.join(","))?);
        if let Some(email) = &id.email {
            rw.set.push(own("x-mcp-user-email", email)?);
        }
    }
    if let (Some(rule), Some(secret)) = (route.credential.as_ref(), &ctx.credential) {
        let name = http::HeaderName::from_bytes(rule.header.as_bytes()).map_err(|e| {
            Error::because(ErrorType::InvalidHTTPHeader, "credential header name", e)
        })?;
        let value = header_value(&rule.header, &rule.format.replace("{token}", secret))?;
        rw.set.push((name, value));
    }
    set_forwarded(session, ctx, &mut rw.set);
    Ok(rw)
}

/// The gateway, not the client, says where a request came from.
fn set_forwarded(
    session: &Session,
    ctx: &Ctx,
    set: &mut Vec<(http::HeaderName, http::HeaderValue)>,
) {
    if let Some(ip) = ctx.client_ip(session) {
        if let Ok(v) = http::HeaderValue::from_str(&ip.to_string()) {
            set.push((http::header::HeaderName::from_static("x-forwarded-for"), v));
        }
    }
    set.push((
        http::header::HeaderName::from_static("x-forwarded-proto"),
        http::HeaderValue::from_static("http"),
    ));
}

/// `response_filter`: seal the worker's session id; make SSE unbufferable.
pub fn rewrite_response(resp: &mut ResponseHeader, ctx: &mut Ctx, is_delete: bool) -> Result<()> {
    if is_delete {
        session_ended_answer(resp)?;
    }
    if let Some(upstream_id) = resp.headers.get(headers::SESSION_ID) {
        let (Some(route), Some(endpoint), Some(rt)) = (
            &ctx.routing.route,
            &ctx.routing.endpoint,
            &ctx.routing.runtime,
        ) else {
            return Err(Error::new(ErrorType::InternalError));
        };
        let claims = SessionClaims {
            pool: route.pool.name.clone(),
            worker: endpoint.addr_text.clone(),
            instance: endpoint.instance,
            user: ctx
                .identity
                .as_ref()
                .map(|i| i.user_key())
                .unwrap_or_default(),
            upstream_id: String::from_utf8_lossy(upstream_id.as_bytes()).into_owned(),
            issued_at: 0,
        };
        match rt.sealer.seal(&claims) {
            Ok(sealed) => {
                resp.insert_header(headers::SESSION_ID, sealed)?;
                if let Some(g) = &ctx.routing.guard {
                    g.worker()
                        .sessions_opened
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot seal the worker's session id; dropped it");
                resp.remove_header(headers::SESSION_ID);
            }
        }
    }
    let is_sse = resp
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_sse {
        resp.insert_header("x-accel-buffering", "no")?;
    }
    let lists_tools = ctx.rpc_method() == Some("tools/list") && resp.status == 200;
    if let (true, Some(policy)) = (
        lists_tools,
        ctx.routing.route.as_ref().and_then(|r| r.tools.clone()),
    ) {
        // The body will change size.
        resp.remove_header("content-length");
        ctx.list_filter = Some(ListFilter::new(policy, ctx.roles().to_vec(), is_sse));
    }
    Ok(())
}

/// A worker that ends a session with `202 Accepted` and no body (rmcp does) is answered
/// `204 No Content`: the MCP specification leaves DELETE's success status open, and the
/// official Python SDK treats anything but 200 or 204 as a failed termination and says so in
/// its log. Any other answer passes unchanged.
fn session_ended_answer(resp: &mut ResponseHeader) -> Result<()> {
    let empty = resp
        .headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    if resp.status == http::StatusCode::ACCEPTED && empty {
        resp.set_status(http::StatusCode::NO_CONTENT)?;
        resp.remove_header(&http::header::CONTENT_LENGTH);
    }
    Ok(())
}

/// An error Pingora raised (not one of our refusals), as the client should see it.
pub fn classify_failure(e: &Error, ctx: &Ctx) -> GatewayError {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::ConnectProxyFailure => {
            if ctx.routing.pinned.is_some() {
                GatewayError::SessionNotFound
            } else {
                GatewayError::UpstreamUnavailable
            }
        }
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => match e.esource() {
            ErrorSource::Upstream => GatewayError::UpstreamTimeout,
            _ => GatewayError::InvalidRequest("the client was too slow".into()),
        },
        ErrorType::HTTPStatus(code) if *code == 413 => GatewayError::BodyTooLarge {
            limit: ctx
                .routing
                .runtime
                .as_ref()
                .map(|r| r.config.limits.max_body_bytes)
                .unwrap_or(0),
        },
        _ => match e.esource() {
            ErrorSource::Upstream => GatewayError::UpstreamFailed,
            ErrorSource::Downstream => GatewayError::InvalidRequest("malformed request".into()),
            _ => GatewayError::Internal,
        },
    }
}

/// An authenticated caller refused for lack of rights goes to the audit trail.
pub fn audit_denial(
    shared: &Shared,
    client_ip: Option<std::net::IpAddr>,
    ctx: &Ctx,
    refusal: &GatewayError,
) {
    let what = match refusal {
        GatewayError::ToolDenied(tool) => {
            serde_json::json!({ "reason": "tool_denied", "tool": tool })
        }
        GatewayError::Forbidden(roles) => {
            serde_json::json!({ "reason": "missing_role", "needed": roles })
        }
        _ => return,
    };
    let (Some(handle), Some(id)) = (shared.identity.load_full(), &ctx.identity) else {
        return;
    };
    let mut detail = what;
    detail["route"] = serde_json::json!(ctx.routing.route.as_ref().map(|r| r.path.clone()));
    detail["issuer"] = serde_json::json!(id.issuer);
    let ip = client_ip.map(|a| a.to_string());
    handle
        .provider
        .audit("call_denied", Some(&id.subject), ip, detail);
}
