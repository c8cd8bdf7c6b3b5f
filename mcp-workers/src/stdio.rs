//! The stdio bridge: serves MCP Streamable HTTP at `/mcp` (2025 sessions with
//! `Mcp-Session-Id`, and the stateless 2026-07-28 generation) and relays
//! JSON-RPC over stdin/stdout to stdio MCP servers it starts.
//!
//! * `per_session` isolation: one child per MCP session, started by
//!   `initialize`, stopped by `DELETE` or the idle timeout; a 2026-07-28
//!   request gets a child of its own for its duration.
//! * `shared` isolation: one child for the whole bridge, initialized once;
//!   sessions only route messages.
//!
//! A child that exits ends its sessions (their next request gets 404).

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

use crate::http::{MAX_REQUEST_BODY_BYTES, SSE_KEEP_ALIVE};
use crate::stdio_child::{lock, Child, ChildSpec, Label, Sink};
use crate::stdio_proto::{self as proto, Kind};

const SESSION_HEADER: &str = "mcp-session-id";
/// Identity headers the gateway injects, and the variables they become.
const IDENTITY: &[(&str, &str)] = &[
    ("x-mcp-user-id", "MCP_USER_ID"),
    ("x-mcp-user-issuer", "MCP_USER_ISSUER"),
    ("x-mcp-user-roles", "MCP_USER_ROLES"),
    ("x-mcp-user-email", "MCP_USER_EMAIL"),
];

/// How children are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// One child per MCP session.
    PerSession,
    /// One child per bridge (for servers that keep no per-client state).
    Shared,
}

/// Everything the bridge needs.
#[derive(Debug, Clone)]
pub struct StdioOptions {
    pub worker_id: String,
    pub pool: String,
    pub isolation: Isolation,
    pub max_children: usize,
    /// From starting a child to its `initialize` answer.
    pub start_timeout: Duration,
    /// A session without requests or open streams this long is ended.
    pub idle_timeout: Duration,
    /// Hand the caller's identity (X-MCP-User-* headers) to per-session children.
    pub pass_identity: bool,
    pub child: ChildSpec,
    pub shutdown_grace: Duration,
}

struct Session {
    owner: u64,
    child: Arc<Child>,
    sink: Arc<Sink>,
    last_seen: Mutex<Instant>,
    streams: Arc<AtomicUsize>,
}

impl Session {
    fn touch(&self) {
        *lock(&self.last_seen) = Instant::now();
    }
}

/// The bridge's state, shared by every request.
pub struct Bridge {
    opts: StdioOptions,
    pool: Arc<str>,
    worker: Arc<str>,
    slots: Arc<Semaphore>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    next_owner: AtomicU64,
    /// The shared child and its `initialize` result (shared isolation).
    shared: tokio::sync::Mutex<Option<(Arc<Child>, Value)>>,
    /// The last `initialize` result seen (answers `server/discover`).
    init_result: Mutex<Option<Value>>,
}

type Reply = Response;

fn rpc_error(status: StatusCode, id: Value, code: i64, msg: impl Into<String>) -> Reply {
    (status, Json(proto::error_response(id, code, msg))).into_response()
}

fn plain(status: StatusCode, msg: &'static str) -> Reply {
    (status, msg).into_response()
}

impl Bridge {
    pub fn new(opts: StdioOptions) -> Arc<Bridge> {
        Arc::new(Bridge {
            pool: Arc::from(opts.pool.as_str()),
            worker: Arc::from(opts.worker_id.as_str()),
            slots: Arc::new(Semaphore::new(opts.max_children)),
            sessions: Mutex::new(HashMap::new()),
            next_owner: AtomicU64::new(1),
            shared: tokio::sync::Mutex::new(None),
            init_result: Mutex::new(None),
            opts,
        })
    }

    /// Live children (started, not yet exited).
    pub fn live_children(&self) -> usize {
        self.opts
            .max_children
            .saturating_sub(self.slots.available_permits())
    }

    fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    fn label(&self, session: &str) -> Label {
        Label {
            pool: self.pool.clone(),
            worker: self.worker.clone(),
            session: session.to_string(),
        }
    }

    /// Start a child and initialize it with `init` (whose id is replaced).
    /// Returns the child and the whole `initialize` answer (result or error).
    async fn start_child(
        &self,
        session: &str,
        init: Value,
        identity: &[(String, String)],
    ) -> Result<(Arc<Child>, Value), (i64, String)> {
        let client_id = init.get("id").cloned().unwrap_or(Value::Null);
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            (
                proto::ERR_CHILD_LIMIT,
                format!(
                    "stdio pool {:?} is at its limit of {} live servers on worker {}; try again later",
                    self.opts.pool, self.opts.max_children, self.opts.worker_id
                ),
            )
        })?;
        let mut spec = self.opts.child.clone();
        spec.env.extend(identity.iter().cloned());
        let child = Child::start(&spec, self.label(session), permit).map_err(|e| {
            tracing::error!(pool = %self.pool, worker = %self.worker, session, program = %spec.program,
                error = %e, "cannot start the stdio server");
            (
                proto::ERR_CHILD_START,
                format!("cannot start the stdio server: {e}"),
            )
        })?;
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed);
        let answer = async {
            let mut rx = child.request(owner, init, false).await.ok()?;
            while let Some(m) = rx.recv().await {
                if proto::kind(&m) == Some(Kind::Response) {
                    return Some(m);
                }
            }
            None
        };
        match tokio::time::timeout(self.opts.start_timeout, answer).await {
            Ok(Some(mut m)) if m.get("result").is_some() => {
                if let Some(r) = m.get("result") {
                    *lock(&self.init_result) = Some(r.clone());
                }
                proto::set_id(&mut m, client_id);
                Ok((child, m))
            }
            Ok(Some(m))
                if m.pointer("/error/code").and_then(Value::as_i64)
                    == Some(proto::ERR_CHILD_EXITED) =>
            {
                // The bridge's own answer for a process that is gone.
                Err((
                    proto::ERR_CHILD_START,
                    "the stdio server exited before answering initialize (see the log)".into(),
                ))
            }
            Ok(Some(mut m)) => {
                child.stop();
                proto::set_id(&mut m, client_id);
                Ok((child, m))
            }
            Ok(None) => {
                child.stop();
                Err((
                    proto::ERR_CHILD_START,
                    "the stdio server exited before answering initialize (see the log)".into(),
                ))
            }
            Err(_) => {
                child.stop();
                tracing::error!(pool = %self.pool, worker = %self.worker, session,
                    timeout = ?self.opts.start_timeout, "stdio server did not answer initialize in time");
                Err((
                    proto::ERR_CHILD_START,
                    format!(
                        "the stdio server did not answer initialize within {:?}",
                        self.opts.start_timeout
                    ),
                ))
            }
        }
    }

    /// The shared child, started and initialized on first use.
    async fn shared_child(&self, init: Value) -> Result<(Arc<Child>, Value), (i64, String)> {
        let mut slot = self.shared.lock().await;
        if let Some((c, r)) = slot.as_ref() {
            if !c.is_exited() {
                return Ok((c.clone(), r.clone()));
            }
        }
        *slot = None;
        let (child, answer) = self.start_child("shared", init, &[]).await?;
        let Some(result) = answer.get("result").cloned() else {
            let msg = answer
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("initialize failed")
                .to_string();
            return Err((proto::ERR_CHILD_START, msg));
        };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let _ = child.send_raw(&note).await;
        *slot = Some((child.clone(), result.clone()));
        Ok((child, result))
    }

    fn insert_session(self: &Arc<Self>, child: Arc<Child>, id: String) -> String {
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed);
        let sink = Arc::new(Sink::default());
        child.subscribe(owner, sink.clone());
        let s = Arc::new(Session {
            owner,
            child: child.clone(),
            sink,
            last_seen: Mutex::new(Instant::now()),
            streams: Arc::new(AtomicUsize::new(0)),
        });
        lock(&self.sessions).insert(id.clone(), s);
        // A child that exits ends its session(s).
        let me = Arc::downgrade(self);
        let sid = id.clone();
        tokio::spawn(async move {
            child.wait_exit().await;
            if let Some(b) = me.upgrade() {
                if lock(&b.sessions).remove(&sid).is_some() {
                    tracing::info!(pool = %b.pool, worker = %b.worker, session = %sid,
                        "session ended: its stdio server exited");
                }
            }
        });
        id
    }

    fn end_session(&self, id: &str, why: &str) -> bool {
        let Some(s) = lock(&self.sessions).remove(id) else {
            return false;
        };
        s.sink.close();
        s.child.unsubscribe(s.owner);
        if self.opts.isolation == Isolation::PerSession {
            s.child.stop();
        }
        tracing::info!(pool = %self.pool, worker = %self.worker, session = %id, why, "session ended");
        true
    }

    /// End sessions idle for longer than the idle timeout.
    fn reap_idle(&self) {
        let idle: Vec<String> = lock(&self.sessions)
            .iter()
            .filter(|(_, s)| {
                s.streams.load(Ordering::Relaxed) == 0
                    && s.child.in_flight(s.owner) == 0
                    && lock(&s.last_seen).elapsed() >= self.opts.idle_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            self.end_session(&id, "idle timeout");
        }
    }

    /// Stop every child (shutdown).
    pub fn stop_all(&self) {
        let ids: Vec<String> = lock(&self.sessions).keys().cloned().collect();
        for id in ids {
            self.end_session(&id, "shutdown");
        }
        if let Ok(slot) = self.shared.try_lock() {
            if let Some((c, _)) = slot.as_ref() {
                c.stop();
            }
        }
    }
}

fn identity_env(headers: &HeaderMap) -> Vec<(String, String)> {
    IDENTITY
        .iter()
        .filter_map(|(h, var)| {
            let v = headers.get(*h)?.to_str().ok()?;
            Some((var.to_string(), v.to_string()))
        })
        .collect()
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

/// One SSE event per message; keep-alive comments while quiet. The stream
/// ends when the sender side is dropped (after the answer, for a POST).
fn sse(rx: mpsc::Receiver<Value>, guard: Option<StreamGuard>, headers: HeaderMap) -> Reply {
    let stream = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let item = tokio::select! {
            m = rx.recv() => {
                let m = m?;
                let mut s = String::from("event: message\ndata: ");
                s.push_str(&m.to_string());
                s.push_str("\n\n");
                Bytes::from(s)
            }
            () = tokio::time::sleep(SSE_KEEP_ALIVE) => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((Ok::<_, std::convert::Infallible>(item), (rx, guard)))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.headers_mut() = headers;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Counts a session's open streams (an open stream keeps a session alive);
/// stops a per-request child when its stream is gone.
struct StreamGuard {
    streams: Option<Arc<AtomicUsize>>,
    child: Option<Arc<Child>>,
}

impl StreamGuard {
    fn session(s: &Session) -> StreamGuard {
        s.streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            streams: Some(s.streams.clone()),
            child: None,
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(s) = &self.streams {
            s.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(c) = &self.child {
            c.stop();
        }
    }
}

/// Answer a forwarded request: SSE with everything related, or JSON with the
/// answer only when the client does not accept SSE.
async fn answer(
    mut rx: mpsc::Receiver<Value>,
    sse_ok: bool,
    guard: Option<StreamGuard>,
    headers: HeaderMap,
) -> Reply {
    if sse_ok {
        return sse(rx, guard, headers);
    }
    while let Some(m) = rx.recv().await {
        if proto::kind(&m) == Some(Kind::Response) {
            let mut resp = Json(m).into_response();
            resp.headers_mut().extend(headers);
            return resp;
        }
    }
    plain(
        StatusCode::BAD_GATEWAY,
        "the stdio server ended without an answer",
    )
}

async fn mcp(
    State(b): State<Arc<Bridge>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    match method {
        Method::POST => post(b, headers, body).await,
        Method::GET => {
            let Some(id) = session_id(&headers) else {
                return plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "GET needs an Mcp-Session-Id (the stateless protocol has no stream)",
                );
            };
            let Some(s) = b.session(id) else {
                return plain(StatusCode::NOT_FOUND, "Not Found: Session not found");
            };
            s.touch();
            let rx = s.sink.open();
            sse(rx, Some(StreamGuard::session(&s)), HeaderMap::new())
        }
        Method::DELETE => match session_id(&headers) {
            Some(id) if b.end_session(id, "DELETE") => StatusCode::NO_CONTENT.into_response(),
            Some(_) => plain(StatusCode::NOT_FOUND, "Not Found: Session not found"),
            None => plain(StatusCode::BAD_REQUEST, "DELETE needs an Mcp-Session-Id"),
        },
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
    }
}

async fn post(b: Arc<Bridge>, headers: HeaderMap, body: Bytes) -> Reply {
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                proto::ERR_PARSE,
                format!("Parse error: {e}"),
            )
        }
    };
    if msg.is_array() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            proto::ERR_INVALID_REQUEST,
            "JSON-RPC batches are not supported",
        );
    }
    let Some(kind) = proto::kind(&msg) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            msg.get("id").cloned().unwrap_or(Value::Null),
            proto::ERR_INVALID_REQUEST,
            "not a JSON-RPC 2.0 request, notification or response",
        );
    };
    let sse_ok = wants_sse(&headers);
    if let Some(sid) = session_id(&headers) {
        let Some(s) = b.session(sid) else {
            return plain(StatusCode::NOT_FOUND, "Not Found: Session not found");
        };
        s.touch();
        return in_session(&b, &s, msg, kind, sse_ok).await;
    }
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    match kind {
        Kind::Request if proto::method(&msg) == Some("initialize") => {
            initialize(&b, msg, &headers).await
        }
        Kind::Request if proto::is_stateless_request(&msg) => stateless(&b, msg, sse_ok).await,
        Kind::Request => rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            proto::ERR_INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id required (or the 2026-07-28 per-request _meta)",
        ),
        // Nothing to deliver them to without a session.
        Kind::Notification | Kind::Response => StatusCode::ACCEPTED.into_response(),
    }
}

async fn in_session(
    b: &Bridge,
    s: &Arc<Session>,
    mut msg: Value,
    kind: Kind,
    sse_ok: bool,
) -> Reply {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    match kind {
        Kind::Request => {
            if proto::method(&msg) == Some("initialize") {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    id,
                    proto::ERR_INVALID_REQUEST,
                    "the session is already initialized",
                );
            }
            proto::strip_protocol_meta(&mut msg);
            match s.child.request(s.owner, msg, false).await {
                Ok(rx) => answer(rx, sse_ok, Some(StreamGuard::session(s)), HeaderMap::new()).await,
                Err(_) => gone(b, s),
            }
        }
        Kind::Notification | Kind::Response => {
            let shared = b.opts.isolation == Isolation::Shared;
            if shared && proto::method(&msg) == Some("notifications/initialized") {
                // The bridge initialized the shared server once, itself.
                return StatusCode::ACCEPTED.into_response();
            }
            match s.child.notify(s.owner, msg).await {
                Ok(()) => StatusCode::ACCEPTED.into_response(),
                Err(_) => gone(b, s),
            }
        }
    }
}

/// The session's child is gone: end the session, answer 404.
fn gone(b: &Bridge, s: &Session) -> Reply {
    let sid: Option<String> = lock(&b.sessions)
        .iter()
        .find(|(_, x)| x.owner == s.owner)
        .map(|(k, _)| k.clone());
    if let Some(sid) = sid {
        b.end_session(&sid, "its stdio server exited");
    }
    plain(StatusCode::NOT_FOUND, "Not Found: Session not found")
}

async fn initialize(b: &Arc<Bridge>, msg: Value, headers: &HeaderMap) -> Reply {
    let client_id = msg.get("id").cloned().unwrap_or(Value::Null);
    let started = match b.opts.isolation {
        Isolation::PerSession => {
            let identity = if b.opts.pass_identity {
                identity_env(headers)
            } else {
                Vec::new()
            };
            // The session id is made first so the child's log lines name it.
            let pending_sid = uuid::Uuid::new_v4().simple().to_string();
            b.start_child(&pending_sid, msg, &identity)
                .await
                .map(|(c, answer)| (c, answer, Some(pending_sid)))
        }
        Isolation::Shared => b.shared_child(msg).await.map(|(c, result)| {
            let answer = json!({"jsonrpc": "2.0", "id": client_id.clone(), "result": result});
            (c, answer, None)
        }),
    };
    let (child, answer, sid) = match started {
        Ok(x) => x,
        Err((code, message)) => {
            tracing::warn!(pool = %b.pool, worker = %b.worker, code, %message, "initialize refused");
            return rpc_error(StatusCode::OK, client_id, code, message);
        }
    };
    if answer.get("result").is_none() {
        // The server refused initialize: pass its error on, keep no session.
        return Json(answer).into_response();
    }
    let sid = sid.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let id = b.insert_session(child, sid);
    let mut resp = Json(answer).into_response();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(SESSION_HEADER, v);
    }
    resp
}

/// A 2026-07-28 request: no session. Shared isolation forwards it to the
/// shared child; per-session isolation starts a child for this request alone.
async fn stateless(b: &Arc<Bridge>, mut msg: Value, sse_ok: bool) -> Reply {
    let client_id = msg.get("id").cloned().unwrap_or(Value::Null);
    let discover = proto::method(&msg) == Some("server/discover");
    if discover {
        let cached = lock(&b.init_result).clone();
        if let Some(init) = cached {
            return Json(
                json!({"jsonrpc": "2.0", "id": client_id, "result": proto::discover_result(&init)}),
            )
            .into_response();
        }
    }
    let init = proto::synthetic_initialize(Value::Null, Some(&msg));
    let (child, ephemeral) = match b.opts.isolation {
        Isolation::Shared => match b.shared_child(init).await {
            Ok((c, _)) => (c, false),
            Err((code, m)) => return rpc_error(StatusCode::OK, client_id, code, m),
        },
        Isolation::PerSession => {
            let label = format!("stateless-{}", uuid::Uuid::new_v4().simple());
            match b.start_child(&label, init, &[]).await {
                Ok((c, answer)) if answer.get("result").is_some() => {
                    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
                    let _ = c.send_raw(&note).await;
                    (c, true)
                }
                Ok((_, answer)) => return Json(answer).into_response(),
                Err((code, m)) => return rpc_error(StatusCode::OK, client_id, code, m),
            }
        }
    };
    if discover {
        let init = lock(&b.init_result).clone().unwrap_or_else(|| json!({}));
        if ephemeral {
            child.stop();
        }
        return Json(
            json!({"jsonrpc": "2.0", "id": client_id, "result": proto::discover_result(&init)}),
        )
        .into_response();
    }
    proto::strip_protocol_meta(&mut msg);
    let owner = b.next_owner.fetch_add(1, Ordering::Relaxed);
    let rx = match child.request(owner, msg, true).await {
        Ok(rx) => rx,
        Err(_) => {
            return rpc_error(
                StatusCode::OK,
                client_id,
                proto::ERR_CHILD_EXITED,
                "the stdio server exited",
            )
        }
    };
    let guard = ephemeral.then(|| StreamGuard {
        streams: None,
        child: Some(child.clone()),
    });
    answer(rx, sse_ok, guard, HeaderMap::new()).await
}

async fn health(State(b): State<Arc<Bridge>>) -> Json<Value> {
    let sessions = lock(&b.sessions).len();
    Json(json!({
        "status": "ok",
        "worker": &*b.worker,
        "pool": &*b.pool,
        "kind": "stdio",
        "children": b.live_children(),
        "max_children": b.opts.max_children,
        "sessions": sessions,
    }))
}

/// The bridge's axum app: `/mcp` and `GET /health`.
pub fn app(bridge: Arc<Bridge>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/mcp", any(mcp))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES))
        .with_state(bridge)
}

/// Serve the bridge on `listener` until `shutdown`; then stop every child.
pub async fn serve_stdio<F>(
    listener: TcpListener,
    opts: StdioOptions,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let grace = opts.shutdown_grace;
    let bridge = Bridge::new(opts);
    let reaper = {
        let weak = Arc::downgrade(&bridge);
        let every = (bridge.opts.idle_timeout / 4)
            .clamp(Duration::from_millis(200), Duration::from_secs(30));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match weak.upgrade() {
                    Some(b) => b.reap_idle(),
                    None => break,
                }
            }
        })
    };
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let b2 = bridge.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: stopping stdio servers");
        b2.stop_all();
        let _ = stopping_tx.send(());
    };
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let serving = axum::serve(listener, app(bridge.clone()))
        .with_graceful_shutdown(signal)
        .into_future();
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let res = tokio::select! {
        res = serving => res,
        () = deadline => Ok(()),
    };
    reaper.abort();
    bridge.stop_all();
    res
}
