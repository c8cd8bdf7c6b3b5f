//! Per-request context, split by concern.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::listfilter::ListFilter;
use crate::auth::Identity;
use crate::mcp::errors::GatewayError;
use crate::mcp::jsonrpc;
use crate::mcp::session::SessionClaims;
use crate::routing::pool::Endpoint;
use crate::routing::{InflightGuard, Worker};
use crate::runtime::{Route, Runtime};

/// Where the request goes.
#[derive(Default)]
pub struct Routing {
    /// The runtime this request started with (a reload does not change it mid-request).
    pub runtime: Option<Arc<Runtime>>,
    pub route: Option<Arc<Route>>,
    /// The worker named by the client's sealed session id.
    pub pinned: Option<Arc<Worker>>,
    pub claims: Option<SessionClaims>,
    /// Slots already tried for this request (connect failures).
    pub tried: Vec<usize>,
    pub endpoint: Option<Arc<Endpoint>>,
    /// Set for the identity service's endpoints: proxied to this loopback address.
    pub internal: Option<std::net::SocketAddr>,
    pub guard: Option<InflightGuard>,
    /// The request goes to the worker over h2c (a GET stream on an `h2c_streams` pool).
    pub h2c: bool,
}

/// The JSON-RPC body, held until whole.
#[derive(Default)]
pub struct BodyHold {
    pub active: bool,
    /// The body's `Content-Length`, as `admit` read and checked it.
    pub declared: Option<u64>,
    pub buf: BytesMut,
    pub parsed: Option<jsonrpc::Body>,
}

/// Facts for the request's log record, gathered along the phases.
#[derive(Default)]
pub struct LogFacts {
    /// The client's `X-Request-Id` when usable, otherwise a new UUID v7.
    pub request_id: String,
    pub upstream_start: Option<Instant>,
    /// Time from `upstream_start` to the worker's response header.
    pub upstream_micros: Option<u64>,
    /// A JSON-RPC error code seen at the start of the worker's answer.
    pub rpc_error: Option<i64>,
    /// The first response body chunk was looked at.
    pub scanned: bool,
    /// The rate limiter's decision (`allowed`, `limited`, …); set by rate limiting.
    pub rate_limit: Option<&'static str>,
    /// Captured request body (routes with `log_bodies`), redacted and cut.
    pub request_body: Option<String>,
    /// The start of the response body, for `log_bodies` (bounded).
    pub response_buf: Option<Vec<u8>>,
    /// Response bytes beyond what `response_buf` kept.
    pub response_cut: u64,
    /// The client went away before the answer ended (a GET stream it closed, a call it
    /// gave up on): logged as `client_closed`, not as an error of the request.
    pub client_closed: bool,
    /// The gateway ended the stream because it is shutting down (`detach`).
    pub shutdown: bool,
}

pub struct Ctx {
    pub start: Instant,
    /// The client's address: the TCP peer, or what a trusted proxy says (`client_ip.rs`).
    pub client_ip: Option<std::net::IpAddr>,
    /// What the request's log record needs from the phases.
    pub log: LogFacts,
    pub counted: bool,
    /// Counted in `Shared::calls_inflight` (a POST), released when the request ends.
    pub call_counted: bool,
    pub routing: Routing,
    pub body: BodyHold,
    /// Set when the gateway answers the request itself.
    pub refusal: Option<GatewayError>,
    /// The verified caller, on routes with authentication.
    pub identity: Option<Arc<Identity>>,
    /// The caller's stored credential for the route's service, to inject upstream.
    pub credential: Option<String>,
    /// Set when a `tools/list` answer must lose the tools this caller may not call.
    pub list_filter: Option<ListFilter>,
    /// Short id of the API key the caller presented (a prefix of its SHA-256).
    pub api_key_id: Option<String>,
    /// Rate-limit state: headers to send, concurrency slots held until the request ends.
    pub rate: crate::ratelimit::Admission,
    /// The request is a GET stream now carried by its own task (`detach`): Pingora's
    /// `logging` leaves it alone, the task logs it when the stream ends.
    pub detached: bool,
}

impl Ctx {
    /// The client's address; before `admit` ran (Pingora ended the request early), the peer.
    pub fn client_ip(&self, session: &pingora::proxy::Session) -> Option<std::net::IpAddr> {
        self.client_ip.or_else(|| super::client_ip::peer(session))
    }

    pub fn new() -> Ctx {
        Ctx {
            start: Instant::now(),
            client_ip: None,
            log: LogFacts::default(),
            counted: false,
            call_counted: false,
            routing: Routing::default(),
            body: BodyHold::default(),
            refusal: None,
            identity: None,
            credential: None,
            list_filter: None,
            api_key_id: None,
            rate: crate::ratelimit::Admission::default(),
            detached: false,
        }
    }

    /// The raw JSON id of the (first) request, for error bodies.
    pub fn rpc_id(&self) -> Option<&str> {
        self.body
            .parsed
            .as_ref()
            .and_then(|b| if b.batch { None } else { b.first() })
            .and_then(|m| m.id.as_deref())
    }

    pub fn rpc_method(&self) -> Option<&str> {
        self.body.parsed.as_ref().and_then(|b| {
            if b.batch {
                Some("batch")
            } else {
                b.first()?.method.as_deref()
            }
        })
    }

    /// The caller's roles (none when anonymous).
    pub fn roles(&self) -> &[String] {
        self.identity
            .as_ref()
            .map(|i| i.roles.as_slice())
            .unwrap_or(&[])
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}
