//! HTTP/2 cleartext connections to workers for detached GET streams (`gateway::detach`).
//!
//! The `h2` crate directly, with a small pool per worker address: a stream holds only its
//! receive half and a slot count, nothing of its request or response headers once they are
//! sent and read (docs/decisions.md, "Detached GET streams"). Up to `max_streams` streams
//! share one connection (fewer if the worker's `SETTINGS_MAX_CONCURRENT_STREAMS` says so:
//! `h2` then waits for a free one); a connection left without streams for the pool's
//! `idle_timeout` is dropped, which closes it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::RecvStream;
use pingora::{Error, ErrorType};

use super::upstream_error as up;

/// How one stream's set-up went wrong, as the Pingora error the proxy path would have
/// raised (so routing, passive health and the client's answer treat both paths alike).
pub type OpenError = Box<Error>;

struct Conn {
    send: SendRequest<Bytes>,
    streams: Arc<AtomicUsize>,
    closed: Arc<AtomicBool>,
    /// Ends the connection's driver task. Dropping the last `SendRequest` does not wake it,
    /// so an idle connection would otherwise stay open until the worker sent something.
    close: Arc<tokio::sync::Notify>,
}

/// The pool: live connections by worker address.
#[derive(Default)]
pub struct H2cPool {
    conns: Arc<Mutex<HashMap<SocketAddr, Vec<Conn>>>>,
    /// One connection attempt at a time per address: streams opened together (a burst of
    /// clients) share the new connection instead of each opening one.
    connecting: Mutex<HashMap<SocketAddr, Arc<tokio::sync::Mutex<()>>>>,
}

/// Where and how to open a stream.
pub struct Target {
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    /// Bounds the wait for the response header (and, in `detach`, each silence after it).
    pub read_timeout: Option<Duration>,
    pub idle_timeout: Duration,
    pub max_streams: usize,
}

/// An open stream: the worker's response head and the body's receive half. Dropping it
/// before the body ended resets the stream (the worker sees the client leave) and frees
/// its slot on the connection.
pub struct Opened {
    pub head: http::response::Parts,
    pub body: RecvStream,
    pub slot: Slot,
}

/// One stream's place on a connection; given back on drop.
pub struct Slot {
    streams: Arc<AtomicUsize>,
    conns: Arc<Mutex<HashMap<SocketAddr, Vec<Conn>>>>,
    addr: SocketAddr,
    idle_timeout: Duration,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.streams.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // The connection is idle now: drop it unless a stream comes back in time.
        let (streams, conns, addr) = (self.streams.clone(), self.conns.clone(), self.addr);
        let idle = self.idle_timeout;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(idle).await;
                if let Ok(mut map) = conns.lock() {
                    if let Some(list) = map.get_mut(&addr) {
                        list.retain(|c| {
                            let idle = Arc::ptr_eq(&c.streams, &streams)
                                && c.streams.load(Ordering::Acquire) == 0;
                            if idle {
                                c.close.notify_one();
                            }
                            !idle
                        });
                        if list.is_empty() {
                            map.remove(&addr);
                        }
                    }
                }
            });
        }
    }
}

impl H2cPool {
    pub fn new() -> H2cPool {
        H2cPool::default()
    }

    /// A free place on a live connection to `addr`, counted as taken.
    fn reuse(&self, t: &Target) -> Option<(SendRequest<Bytes>, Arc<AtomicUsize>)> {
        let mut map = self.conns.lock().ok()?;
        let list = map.get_mut(&t.addr)?;
        list.retain(|c| !c.closed.load(Ordering::Acquire));
        let conn = list
            .iter()
            .find(|c| c.streams.load(Ordering::Acquire) < t.max_streams)?;
        conn.streams.fetch_add(1, Ordering::AcqRel);
        Some((conn.send.clone(), conn.streams.clone()))
    }

    async fn connect(
        &self,
        t: &Target,
    ) -> Result<(SendRequest<Bytes>, Arc<AtomicUsize>), OpenError> {
        let tcp = super::connect_worker(t.addr, t.connect_timeout).await?;
        let handshake = h2::client::Builder::new().handshake::<_, Bytes>(tcp);
        let (send, connection) = match tokio::time::timeout(t.connect_timeout, handshake).await {
            Err(_) => {
                return Err(Error::explain(ErrorType::H2Error, "h2c handshake timed out").into_up())
            }
            Ok(Err(e)) => return Err(up(ErrorType::H2Error, "h2c handshake", e)),
            Ok(Ok(pair)) => pair,
        };
        let closed = Arc::new(AtomicBool::new(false));
        let close = Arc::new(tokio::sync::Notify::new());
        let (driver_closed, driver_close) = (closed.clone(), close.clone());
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "h2c connection to a worker ended");
                    }
                }
                // Idle past the pool's idle_timeout, no stream left: dropping the connection
                // closes its socket.
                _ = driver_close.notified() => {}
            }
            driver_closed.store(true, Ordering::Release);
        });
        let streams = Arc::new(AtomicUsize::new(1));
        if let Ok(mut map) = self.conns.lock() {
            map.entry(t.addr).or_default().push(Conn {
                send: send.clone(),
                streams: streams.clone(),
                closed,
                close,
            });
        }
        Ok((send, streams))
    }

    /// Send `request` (no body) on a stream to `t.addr` and wait for the response head.
    pub async fn open(&self, t: &Target, request: http::Request<()>) -> Result<Opened, OpenError> {
        let (send, streams) = match self.reuse(t) {
            Some(found) => found,
            None => {
                let gate = self
                    .connecting
                    .lock()
                    .map(|mut m| m.entry(t.addr).or_default().clone())
                    .unwrap_or_default();
                let turn = gate.lock().await;
                let found = match self.reuse(t) {
                    Some(found) => Ok(found),
                    None => self.connect(t).await,
                };
                drop(turn);
                // Nobody else waiting: forget the gate (worker addresses come and go).
                if let Ok(mut m) = self.connecting.lock() {
                    if Arc::strong_count(&gate) <= 2 {
                        m.remove(&t.addr);
                    }
                }
                found?
            }
        };
        let slot = Slot {
            streams,
            conns: self.conns.clone(),
            addr: t.addr,
            idle_timeout: t.idle_timeout,
        };
        let exchange = async move {
            let mut send = send
                .ready()
                .await
                .map_err(|e| up(ErrorType::H2Error, "h2c connection not ready", e))?;
            let (answer, _) = send
                .send_request(request, true)
                .map_err(|e| up(ErrorType::H2Error, "sending the request over h2c", e))?;
            answer
                .await
                .map_err(|e| up(ErrorType::H2Error, "reading the worker's h2c answer", e))
        };
        let response = super::within_read_timeout(t.read_timeout, exchange).await??;
        let (head, body) = response.into_parts();
        Ok(Opened { head, body, slot })
    }
}
