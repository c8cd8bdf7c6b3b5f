//! HTTP/1.1 keep-alive connections to workers for POSTs the gateway forwards itself
//! (`gateway::forward`).
//!
//! hyper's client connection (`hyper::client::conn::http1`) writes a request's header and
//! its whole body in one vectored write; Pingora's proxy loop writes and flushes the header
//! first, so every POST cost the gateway two sends and the worker two wake-ups
//! (docs/decisions.md, "POSTs forwarded by the gateway"). The pool keeps idle connections
//! per worker address; one that stayed idle past the pool's `idle_timeout` is dropped,
//! which closes it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use pingora::{Error, ErrorType};

use super::upstream_error as up;

/// A request body: the whole, checked JSON-RPC message.
pub type Body = Full<Bytes>;

/// How an exchange went wrong, as the Pingora error the proxy path would have raised (so
/// routing, passive health and the client's answer treat both paths alike).
pub type SendError = Box<Error>;

struct Idle {
    send: SendRequest<Body>,
    since: Instant,
    /// The pool's `idle_timeout`.
    limit: Duration,
}

/// Idle connections kept per worker; beyond it a finished exchange closes its connection
/// (a burst of concurrent calls opens many, a quiet pool keeps a few). Pingora's own
/// upstream pool keeps 128 in all by default.
const MAX_IDLE_PER_WORKER: usize = 128;

/// How often idle connections are looked over.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

type Conns = Arc<Mutex<HashMap<SocketAddr, Vec<Idle>>>>;

/// The pool: idle connections by worker address.
#[derive(Default)]
pub struct H1Pool {
    idle: Conns,
    /// A task that drops connections idle too long runs while any connection is idle.
    sweeping: Arc<AtomicBool>,
}

/// Where and how to send.
#[derive(Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    /// Bounds the wait for the response header (and, in `forward`, each silence after it).
    pub read_timeout: Option<Duration>,
    pub idle_timeout: Duration,
}

/// A connection lent for one exchange. Give it back with [`H1Pool::release`] once the
/// response body has been read to its end; dropped instead, it closes.
pub struct Lease {
    send: SendRequest<Body>,
    addr: SocketAddr,
    idle_timeout: Duration,
}

impl H1Pool {
    pub fn new() -> H1Pool {
        H1Pool::default()
    }

    /// The most recently used idle connection to `t.addr` that is still open. (It may not
    /// say it is ready yet: its task may not have run since its last answer ended.)
    fn reuse(&self, t: &Target) -> Option<SendRequest<Body>> {
        let mut map = self.idle.lock().ok()?;
        let list = map.get_mut(&t.addr)?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < idle.limit && !idle.send.is_closed() {
                return Some(idle.send);
            }
        }
        None
    }

    async fn connect(&self, t: &Target) -> Result<SendRequest<Body>, SendError> {
        connect(t, None).await
    }

    /// Send a request that opens a long-lived stream (a detached GET) on a new connection of
    /// its own, which reads in pieces of `STREAM_READ_BUF` bytes: an idle stream then holds
    /// that much for reading instead of hyper's adaptive buffer (8 KiB and up, more on a
    /// pooled connection that carried large answers). The connection is never pooled: it
    /// closes when the returned lease is dropped.
    pub async fn open_stream(
        &self,
        t: &Target,
        request: http::Request<Body>,
    ) -> Result<(http::Response<Incoming>, Lease), SendError> {
        let mut send = connect(t, Some(STREAM_READ_BUF)).await?;
        if send.ready().await.is_err() {
            return Err(Error::explain(
                ErrorType::ConnectError,
                "the worker closed a new connection",
            )
            .into_up());
        }
        let response = send.send_request(request).await;
        answered(response, send, t)
    }

    /// Send `request` and wait for the response header (at most `t.read_timeout`). A reused
    /// connection that turns out closed before the request went out is replaced by a new
    /// one; a request that did go out is never sent twice.
    pub async fn send(
        &self,
        t: &Target,
        request: http::Request<Body>,
    ) -> Result<(http::Response<Incoming>, Lease), SendError> {
        let mut request = request;
        let (send, response) = loop {
            let (mut send, reused) = match self.reuse(t) {
                Some(s) => (s, true),
                None => (self.connect(t).await?, false),
            };
            if send.ready().await.is_err() {
                // Closed meanwhile; the request has not gone anywhere.
                if reused {
                    continue;
                }
                return Err(Error::explain(
                    ErrorType::ConnectError,
                    "the worker closed a new connection",
                )
                .into_up());
            }
            let answer = send.try_send_request(request);
            match answer.await {
                Ok(response) => break (send, Ok(response)),
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection closed while idle. Try a fresh one.
                    Some(unsent) if reused => request = unsent,
                    _ => break (send, Err(e.into_error())),
                },
            }
        };
        answered(response, send, t)
    }

    /// Keep the connection of an exchange whose response was read to its end.
    pub fn release(&self, lease: Lease) {
        if lease.send.is_closed() {
            return;
        }
        let Ok(mut map) = self.idle.lock() else {
            return;
        };
        let list = map.entry(lease.addr).or_default();
        if list.len() >= MAX_IDLE_PER_WORKER {
            return;
        }
        list.push(Idle {
            send: lease.send,
            since: Instant::now(),
            limit: lease.idle_timeout,
        });
        drop(map);
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            let (idle, sweeping) = (self.idle.clone(), self.sweeping.clone());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(sweep(idle, sweeping));
            } else {
                self.sweeping.store(false, Ordering::Release);
            }
        }
    }

    /// Idle connections held (all workers).
    pub fn idle_connections(&self) -> usize {
        self.idle
            .lock()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

/// The worker's answer and the connection it came on, or the error Pingora would raise.
fn answered(
    response: Result<http::Response<Incoming>, hyper::Error>,
    send: SendRequest<Body>,
    t: &Target,
) -> Result<(http::Response<Incoming>, Lease), SendError> {
    let response = response.map_err(|e| {
        if e.is_timeout() {
            Error::explain(ErrorType::ReadTimedout, "waiting for the worker's answer").into_up()
        } else {
            up(ErrorType::ReadError, "reading the worker's answer", e)
        }
    })?;
    Ok((
        response,
        Lease {
            send,
            addr: t.addr,
            idle_timeout: t.idle_timeout,
        },
    ))
}

/// Read size of a stream's own connection (`H1Pool::open_stream`).
const STREAM_READ_BUF: usize = 2048;

/// A new HTTP/1.1 connection to `t.addr`; `exact_read` fixes the size of each read.
async fn connect(t: &Target, exact_read: Option<usize>) -> Result<SendRequest<Body>, SendError> {
    let tcp = super::connect_worker(t.addr, t.connect_timeout).await?;
    let mut builder = hyper::client::conn::http1::Builder::new();
    if exact_read.is_some() {
        builder.read_buf_exact_size(exact_read);
    }
    let (send, conn) = builder.handshake(TokioIo::new(tcp)).await.map_err(|e| {
        up(
            ErrorType::ConnectError,
            "starting HTTP/1.1 to the worker",
            e,
        )
    })?;
    tokio::spawn(async move {
        // Ends when the worker closes, or when the pool drops the connection's sender.
        let _ = conn.await;
    });
    Ok(send)
}

/// Drop connections idle past their pool's `idle_timeout` (which closes them), every
/// half second, until none is left.
async fn sweep(idle: Conns, sweeping: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Ok(mut map) = idle.lock() else {
            sweeping.store(false, Ordering::Release);
            return;
        };
        map.retain(|_, list| {
            list.retain(|c| c.since.elapsed() < c.limit && !c.send.is_closed());
            !list.is_empty()
        });
        if map.is_empty() {
            sweeping.store(false, Ordering::Release);
            return;
        }
    }
}
