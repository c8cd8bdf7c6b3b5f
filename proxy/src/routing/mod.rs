//! Pools of workers, the balancers that pick one, health checks and DNS discovery.

pub mod discovery;
pub mod h1;
pub mod h2c;
pub mod health;
pub mod pool;

pub use pool::{InflightGuard, Pool, Worker};

/// An error on the way to or from a worker, as the Pingora error its proxy path would raise
/// (so routing, passive health and the client's answer treat every path alike).
pub(crate) fn upstream_error(
    etype: pingora::ErrorType,
    what: &'static str,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Box<pingora::Error> {
    pingora::Error::because(etype, what, cause).into_up()
}

/// `work` bounded by a pool's `read_timeout` (none: unbounded); past it, the error Pingora
/// raises for a silent worker.
pub(crate) async fn within_read_timeout<T>(
    limit: Option<std::time::Duration>,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Box<pingora::Error>> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, work).await.map_err(|_| {
            pingora::Error::explain(
                pingora::ErrorType::ReadTimedout,
                "waiting for the worker's answer",
            )
            .into_up()
        }),
        None => Ok(work.await),
    }
}

/// A TCP connection to a worker, without Nagle's delay, within `timeout`; failures as
/// Pingora's connect errors (a refused connection, a timeout, any other error).
pub(crate) async fn connect_worker(
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> Result<tokio::net::TcpStream, Box<pingora::Error>> {
    use pingora::ErrorType;
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => {
            return Err(pingora::Error::explain(
                ErrorType::ConnectTimedout,
                "connecting to the worker",
            )
            .into_up())
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(upstream_error(
                ErrorType::ConnectRefused,
                "connecting to the worker",
                e,
            ))
        }
        Ok(Err(e)) => {
            return Err(upstream_error(
                ErrorType::ConnectError,
                "connecting to the worker",
                e,
            ))
        }
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}
