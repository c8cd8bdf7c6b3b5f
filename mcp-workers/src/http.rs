//! Streamable HTTP serving shared by every worker kind: the MCP endpoint at
//! `/mcp` and a `GET /health` probe, with graceful shutdown.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use axum::{extract::State, routing::get, Json, Router};
use rmcp::{
    transport::streamable_http_server::{
        session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
    },
    ServerHandler,
};
use tokio::net::TcpListener;

/// Largest accepted MCP POST body (the gateway enforces its own limit).
pub const MAX_REQUEST_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Interval of SSE keep-alive comments.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Default time to let in-flight requests finish after a stop signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How a worker serves MCP over HTTP.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Id reported by `/health` (and by tools such as `whoami`).
    pub worker_id: String,
    /// Prefer `application/json` responses over SSE for stateless requests.
    pub json_response: bool,
    /// Disable legacy (pre-2026-07-28) sessions: no `Mcp-Session-Id` is issued.
    pub stateless: bool,
    /// How long to wait for in-flight requests after the stop signal.
    pub shutdown_grace: Duration,
}

impl HttpOptions {
    /// Options with sessions on, SSE responses and the default grace period.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            json_response: false,
            stateless: false,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// The rmcp Streamable HTTP configuration these options stand for.
    pub fn streamable_http_config(&self) -> StreamableHttpServerConfig {
        StreamableHttpServerConfig::default()
            // The gateway forwards the client's Host header: accept any.
            .disable_allowed_hosts()
            .with_max_request_body_bytes(MAX_REQUEST_BODY_BYTES)
            .with_sse_keep_alive(Some(SSE_KEEP_ALIVE))
            .with_legacy_session_mode(!self.stateless)
            .with_json_response(self.json_response)
    }
}

/// Stops the MCP side of an [`app`]: cancelling it terminates every session
/// and makes the MCP service refuse new requests.
#[derive(Debug, Clone)]
pub struct SessionsHandle {
    // Holds rmcp's cancellation token without naming tokio-util's type.
    config: StreamableHttpServerConfig,
}

impl SessionsHandle {
    /// Cancel every MCP session.
    pub fn cancel(&self) {
        self.config.cancellation_token.cancel();
    }

    /// Whether [`Self::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.config.cancellation_token.is_cancelled()
    }
}

async fn health(State(worker_id): State<Arc<str>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "worker": &*worker_id }))
}

/// Build the axum app: `/mcp` (Streamable HTTP) and `GET /health`.
///
/// Returns the app and a handle that stops every MCP session.
pub fn app<S>(opts: &HttpOptions, server: S) -> (Router, SessionsHandle)
where
    S: ServerHandler + Clone + Send + Sync + 'static,
{
    let config = opts.streamable_http_config();
    let handle = SessionsHandle {
        config: config.clone(),
    };
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let worker_id: Arc<str> = Arc::from(opts.worker_id.as_str());
    let router = Router::new()
        .route("/health", get(health))
        .nest_service("/mcp", mcp)
        .with_state(worker_id);
    (router, handle)
}

/// Serve `server` on `listener` until `shutdown` completes.
///
/// On shutdown the MCP sessions are cancelled, the listener stops accepting
/// and in-flight requests get [`HttpOptions::shutdown_grace`] to finish.
pub async fn serve<S, F>(
    listener: TcpListener,
    opts: HttpOptions,
    server: S,
    shutdown: F,
) -> std::io::Result<()>
where
    S: ServerHandler + Clone + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (router, sessions) = app(&opts, server);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down");
        sessions.cancel();
        let _ = stopping_tx.send(());
    };
    // rmcp writes an SSE answer in several small writes; with Nagle on, the second waits
    // for the client's delayed ACK (~40 ms) on every reused connection.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let serving = axum::serve(listener, router)
        .with_graceful_shutdown(signal)
        .into_future();
    let grace = opts.shutdown_grace;
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            // The server ended without a stop signal; let `serving` report.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        res = serving => res,
        () = deadline => {
            tracing::warn!(?grace, "grace period over, dropping remaining connections");
            Ok(())
        }
    }
}
