//! Start-up and shutdown: build the runtime, start the control plane, run Pingora, and on
//! SIGTERM/SIGINT drain in-flight requests, stop the workers, exit.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::Stream;
use pingora::server::configuration::ServerConf;
use pingora::server::{
    ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch,
};
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::metrics::Metrics;
use crate::config::GatewayConfig;
use crate::control::ControlPlane;
use crate::gateway::Gateway;
use crate::ratelimit::redis::RedisLimits;
use crate::ratelimit::RateLimiter;
use crate::runtime::{Runtime, Shared};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Build(#[from] crate::runtime::BuildError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start: {0}")]
    Control(String),
}

const H2_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// L4 read buffer of the MCP listener: none (see `run`).
const MCP_LISTENER_READ_BUFFER: usize = 0;

/// The listener's app: Pingora's HTTP proxy behind a deadline for a connection's first
/// bytes. With h2c on, Pingora waits for the 24-byte HTTP/2 preface with no time limit, so a
/// connection that sends nothing (or a few bytes) would be held forever (docs/security.md).
/// Here those bytes must arrive within `limits.client_read_timeout`. (Between the requests of
/// a kept-alive connection Pingora's own 60 s keep-alive timeout applies.)
///
/// With `tls` configured it makes the TLS handshake (`crate::tls`), after the connection has
/// its slot and within `tls.handshake_timeout`; the first bytes then are the first decrypted
/// ones.
///
/// It also holds the gateway-wide cap on open client connections (`limits.max_connections`):
/// beyond it a new connection gets a 503 and is closed, so memory under overload is bounded
/// by the cap instead of by what clients open.
struct FirstBytesDeadline {
    inner: Arc<pingora::proxy::HttpProxy<Gateway>>,
    shared: Arc<Shared>,
    connections: ConnectionSlots,
}

/// Open client connections, counted for `limits.max_connections` and the
/// `mcp_gateway_client_connections` gauge.
struct ConnectionSlots {
    open: AtomicUsize,
    gauge: prometheus::IntGauge,
    /// When a refusal was last logged (seconds on the process clock); a warning at most
    /// every `REFUSAL_LOG_EVERY`.
    warned_at: AtomicU64,
    epoch: Instant,
    /// Refused connections still being answered (`refuse_connection`).
    refusing: AtomicUsize,
}

/// Held for a connection's life.
struct Slot<'a>(&'a ConnectionSlots);

/// Held while a refused connection is answered.
struct Refusing<'a>(&'a AtomicUsize);

/// Add one to `counter` unless that passes `limit`.
fn count_within(counter: &AtomicUsize, limit: usize) -> bool {
    if counter.fetch_add(1, Ordering::AcqRel) >= limit {
        counter.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

impl ConnectionSlots {
    fn new(gauge: prometheus::IntGauge) -> ConnectionSlots {
        ConnectionSlots {
            open: AtomicUsize::new(0),
            gauge,
            warned_at: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            refusing: AtomicUsize::new(0),
        }
    }

    /// A slot when fewer than `limit` connections are open.
    fn take(&self, limit: usize) -> Option<Slot<'_>> {
        if !count_within(&self.open, limit) {
            return None;
        }
        self.gauge.inc();
        Some(Slot(self))
    }

    /// Leave to answer a refused connection, while fewer than `refusing_limit(limit)` are
    /// being answered; beyond, the connection is closed at once without an answer, so a
    /// flood of clients that never close cannot hold sockets past the cap for the linger.
    fn refuse(&self, limit: usize) -> Option<Refusing<'_>> {
        // Built only once counted: a guard built and dropped on refusal would give back a
        // count it never took (`bool::then_some` builds its value either way).
        if !count_within(&self.refusing, refusing_limit(limit)) {
            return None;
        }
        Some(Refusing(&self.refusing))
    }

    /// Whether this refusal should be logged: the first, then one per interval.
    fn should_warn(&self) -> bool {
        let now = self.epoch.elapsed().as_secs();
        let last = self.warned_at.load(Ordering::Acquire);
        (last == u64::MAX || now >= last.saturating_add(REFUSAL_LOG_EVERY.as_secs()))
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

impl Drop for Refusing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Refused connections answered at once, for a cap of `max_connections`: a sixteenth of it,
/// at least 16, at most 4,096.
fn refusing_limit(max_connections: usize) -> usize {
    (max_connections / 16).clamp(16, 4096)
}

/// At most one warning per this interval while connections are refused (the metric counts
/// each one).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a refused connection may take to accept its 503: the write, then reading what
/// the client already sent (closing with unread bytes would reset the connection and could
/// destroy the answer before the client reads it).
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Answer a connection beyond `limits.max_connections`: 503 with the JSON-RPC error an
/// in-flight-limit refusal carries, `Retry-After: 1`, `Connection: close`. HTTP/1.1 whatever
/// the client speaks: an HTTP/2 client sees a protocol error, and the connection closes
/// either way.
async fn refuse_connection(mut stream: Stream, limit: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let e = crate::mcp::errors::GatewayError::TooManyConnections { limit };
    let body = e.jsonrpc_error_body(None);
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

#[async_trait]
impl ServerApp for FirstBytesDeadline {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let (limit, max_connections, tls) = {
            let rt = self.shared.runtime.load();
            let limits = &rt.config.limits;
            (
                limits.client_read_timeout,
                limits.max_connections,
                rt.tls.clone(),
            )
        };
        let Some(_slot) = self.connections.take(max_connections) else {
            self.shared
                .metrics
                .refusals
                .with_label_values(&["max_connections"])
                .inc();
            if self.connections.should_warn() {
                tracing::warn!(
                    limit = max_connections,
                    "client connection limit reached; new connections get 503 (limits.max_connections)"
                );
            }
            // Without leave, `stream` is dropped here: closed with no answer. On a TLS
            // listener too: answering would cost a handshake when the gateway is busiest.
            if tls.is_none() {
                if let Some(_answering) = self.connections.refuse(max_connections) {
                    refuse_connection(stream, max_connections).await;
                }
            }
            return None;
        };
        if let Some(tls) = tls {
            let handshakes = &self.shared.metrics.tls_handshakes;
            match tls.accept(stream).await {
                Ok(conn) => {
                    handshakes.with_label_values(&["ok"]).inc();
                    stream = Box::new(conn);
                }
                Err(failed) => {
                    let result = match failed {
                        crate::tls::Failed::Closed => return None,
                        crate::tls::Failed::Timeout => "timeout",
                        crate::tls::Failed::Error(e) => {
                            tracing::debug!("TLS handshake failed: {e}");
                            "error"
                        }
                    };
                    handshakes.with_label_values(&[result]).inc();
                    return None;
                }
            }
        }
        // The same peek Pingora does next: it reads and rewinds, so nothing is lost.
        let mut first = [0u8; 24];
        match tokio::time::timeout(limit, stream.try_peek(&mut first)).await {
            Ok(Ok(_)) => ServerApp::process_new(&self.inner, stream, shutdown).await,
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::debug!("a connection sent too little within {limit:?}; closed");
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// SIGTERM and SIGINT both mean: stop accepting, drain, stop workers.
struct Signals;

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        let quit = signal(SignalKind::quit());
        match (term, int, quit) {
            (Ok(mut term), Ok(mut int), Ok(mut quit)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    _ = quit.recv() => {
                        tracing::info!("SIGQUIT: handing the listener to the new process, then draining");
                        return ShutdownSignal::GracefulUpgrade;
                    }
                }
            }
            _ => {
                tracing::error!("cannot install signal handlers; waiting forever");
                std::future::pending::<()>().await;
            }
        }
        tracing::info!("shutdown signal received: draining");
        ShutdownSignal::GracefulTerminate
    }
}

/// Run the gateway until a shutdown signal; never returns.
///
/// With `upgrade`, the process takes the listening socket over from a running one (Pingora's
/// graceful upgrade: start this, then send SIGQUIT to the old process, which hands its
/// listener over through `upgrade_sock`, drains and exits).
pub fn run(config: GatewayConfig, upgrade: bool) -> Result<(), StartError> {
    crate::auth::jwks::install_crypto_provider();
    let grace = config.shutdown_grace;
    let listen = config.listen;
    let threads = config.threads;
    let admin_addr = config.admin;
    let upgrade_sock = config.upgrade_sock.clone();
    let admin = if upgrade {
        // The old process still holds both ports.
        crate::admin::AdminListener::WhenFree(admin_addr)
    } else {
        // Bind the MCP address once to fail early with a clear message when it is taken.
        drop(
            std::net::TcpListener::bind(listen).map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?,
        );
        crate::admin::AdminListener::Bound(std::net::TcpListener::bind(admin_addr).map_err(
            |source| StartError::Bind {
                addr: admin_addr,
                source,
            },
        )?)
    };
    let metrics = Arc::new(Metrics::new()?);
    let ratelimit_redis = match &config.redis {
        Some(r) => Some(Arc::new(
            RedisLimits::new(
                r,
                config.rate_limits.redis_timeout,
                metrics.ratelimit_redis_errors.clone(),
                metrics.ratelimit_redis_calls.clone(),
                metrics.ratelimit_redis_down.clone(),
            )
            .map_err(StartError::Control)?,
        )),
        None => None,
    };
    let ratelimit = RateLimiter::new(&config.rate_limits, ratelimit_redis.clone(), &metrics);
    let reload_status = Arc::new(std::sync::Mutex::new(crate::reload::initial_status(
        &config,
    )));
    let runtime = Runtime::build(config)?;
    crate::tls::note_certificate(runtime.tls.as_deref(), &metrics);
    let logship = Arc::new(crate::logship::LogShip::new(
        &runtime.config.logging,
        &metrics,
    ));
    let shared = Arc::new(Shared {
        reload_status,
        control: std::sync::OnceLock::new(),
        runtime: ArcSwap::from_pointee(runtime),
        ratelimit: ArcSwap::from_pointee(ratelimit),
        ratelimit_redis,
        logship,
        metrics,
        inflight: AtomicUsize::new(0),
        calls_inflight: AtomicUsize::new(0),
        draining: AtomicBool::new(false),
        listening: AtomicBool::new(false),
        stopping: tokio::sync::Notify::new(),
        identity: arc_swap::ArcSwapOption::empty(),
        h2c: crate::routing::h2c::H2cPool::new(),
        h1: crate::routing::h1::H1Pool::new(),
    });
    let control = ControlPlane::start(shared.clone(), admin).map_err(StartError::Control)?;

    let conf = ServerConf {
        threads,
        // Fallback only: the drain thread below exits as soon as requests are done.
        grace_period_seconds: Some(grace.as_secs() + 5),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock,
        ..Default::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    let mut http = pingora::proxy::http_proxy(&server.configuration, Gateway::new(shared.clone()));
    let mut opts = HttpServerOptions::default();
    opts.h2c = true;
    // An HTTP/2 connection with no stream open is closed after this (Pingora: never).
    opts.h2_idle_timeout = Some(H2_IDLE_TIMEOUT);
    http.server_options = Some(opts);
    let mut proxy = pingora::services::listening::Service::new(
        "mcp-gateway".to_string(),
        FirstBytesDeadline {
            inner: Arc::new(http),
            shared: shared.clone(),
            connections: ConnectionSlots::new(shared.metrics.client_connections.clone()),
        },
    );
    // Pingora's default 64 KiB L4 read buffer is a zero-filled tokio `BufReader`: 64 KiB of
    // RSS for every client connection, idle SSE streams included. Plain-TCP HTTP/1 reads go
    // straight into Pingora's header and body buffers, so the listener reads unbuffered
    // (docs/benchmarks.md, "Idle SSE streams").
    proxy.add_listener(
        ListenerConfig::tcp(listen.to_string())
            .l4_buffer(L4BufferSettings::default().read(MCP_LISTENER_READ_BUFFER)),
    );
    server.add_service(proxy);

    let phases = server.watch_execution_phase();
    let started = server.watch_execution_phase();
    let probe_shared = shared.clone();
    std::thread::Builder::new()
        .name("mcp-listen-probe".into())
        .spawn(move || wait_listening(started, listen, probe_shared))
        .map_err(|e| StartError::Control(e.to_string()))?;
    let drain_shared = shared.clone();
    std::thread::Builder::new()
        .name("mcp-drain".into())
        .spawn(move || drain_then_exit(phases, drain_shared, control, grace))
        .map_err(|e| StartError::Control(e.to_string()))?;

    let scheme = if shared.runtime.load().tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%listen, admin = %admin_addr, scheme, "gateway started");
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals),
    });
    // Reached only if Pingora finished before the drain thread did.
    std::process::exit(0)
}

/// Once Pingora runs its services, connect to the MCP listener until it accepts, then mark
/// the gateway as listening (`/readyz`). The probe connection closes without a byte, which
/// the listener's app takes as a client that left (no TLS handshake error is counted).
fn wait_listening(
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    listen: std::net::SocketAddr,
    shared: Arc<Shared>,
) {
    loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::Running) => break,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
    let mut probe = listen;
    if probe.ip().is_unspecified() {
        probe.set_ip(match listen {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            tracing::error!(%probe, "the MCP listener does not accept connections; readiness stays false");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.listening.store(true, Ordering::Release);
    tracing::debug!(%listen, "the MCP listener accepts connections");
}

fn drain_then_exit(
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    shared: Arc<Shared>,
    control: ControlPlane,
    grace: Duration,
) {
    loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::ShutdownStarted) | Ok(ExecutionPhase::GracefulTerminate) => break,
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    shared.draining.store(true, Ordering::Release);
    shared.stopping.notify_waiters();
    let deadline = Instant::now() + grace;
    // Give Pingora a moment to close its listeners, then wait for requests in flight.
    std::thread::sleep(Duration::from_millis(100));
    while shared.inflight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = shared.inflight.load(Ordering::Acquire);
    if left > 0 {
        tracing::warn!(
            requests = left,
            "grace period over; cutting requests still in flight"
        );
    }
    let stop_limit = {
        let rt = shared.runtime.load();
        rt.config
            .pools
            .iter()
            .filter_map(|p| match &p.source {
                crate::config::PoolSource::Spawn(s) => Some(s.stop_grace),
                _ => None,
            })
            .max()
            .unwrap_or_default()
            + Duration::from_secs(2)
    };
    // Requests are done: ship (or spool) the log records still queued in memory.
    if !shared.logship.flush_blocking(Duration::from_secs(10)) {
        tracing::warn!("log records still queued at exit could not be flushed in time");
    }
    control.stop_workers(stop_limit);
    tracing::info!("gateway stopped");
    std::process::exit(0)
}
