//! Active health probes: an HTTP GET that must answer 2xx, or a TCP connect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Pool;
use crate::config::HealthKind;

/// One probe, bounded by `timeout`.
pub async fn probe(kind: HealthKind, addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        if kind == HealthKind::Tcp {
            return Some(true);
        }
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 16];
        let mut got = 0;
        while got < 12 {
            let n = stream.read(&mut buf[got..]).await.ok()?;
            if n == 0 {
                break;
            }
            got += n;
        }
        // "HTTP/1.1 200"
        Some(got >= 12 && buf.starts_with(b"HTTP/1.") && buf[9] == b'2')
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Probe every worker of a pool forever, at the pool's interval.
/// Failures count towards ejection; one success brings a worker back.
pub async fn run(pool: Arc<Pool>, spawned: bool) {
    let h = pool.config.health.clone();
    let mut tick = tokio::time::interval(h.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for w in &pool.workers {
            let e = w.endpoint();
            // A spawned worker that is down is the supervisor's business: it restarts it
            // and marks it healthy once ready. Probing its old port proves nothing.
            if spawned && e.instance == 0 {
                continue;
            }
            let ok = probe(h.kind, e.addr, &h.path, h.timeout).await;
            if ok {
                if !w.is_healthy() {
                    tracing::info!(pool = %pool.name, worker = %w.id, "worker healthy again");
                }
                w.set_healthy(true);
            } else if w.record_failure(h.unhealthy_after) {
                tracing::warn!(pool = %pool.name, worker = %w.id, addr = %e.addr, "worker failed its health check; ejected");
            }
        }
    }
}
