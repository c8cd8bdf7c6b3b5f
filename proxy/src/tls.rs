//! HTTPS on the client listener (`tls` in the configuration).
//!
//! The listener stays a plain TCP listener in Pingora's terms: the handshake is made in the
//! listener's app (`server::FirstBytesDeadline`), after the connection has taken its slot
//! under `limits.max_connections` and within `tls.handshake_timeout`, so a client that
//! opens connections and never finishes a handshake is bounded like one that never sends
//! a request. The certificate lives in the runtime: a reload (SIGHUP, the admin API, a change
//! of the configuration or of the certificate files) builds a new acceptor, which the next
//! handshake uses; connections already open keep theirs.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::{SslDigest, TlsRef, TlsStream};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::{TlsConfig, TlsVersion};

/// The listener's TLS side as the runtime holds it.
pub struct ListenerTls {
    acceptor: Acceptor,
    pub handshake_timeout: Duration,
    /// When the certificate expires (Unix seconds), for the metric and the start-up log.
    pub not_after: Option<i64>,
}

/// The rustls server configuration of `tls`: ring's provider, TLS 1.2 and 1.3 (or 1.3
/// only), ALPN `h2` then `http/1.1`, no client certificates. Fails when the files do not
/// parse or the key is not the certificate's.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    min: TlsVersion,
) -> Result<ServerConfig, String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate file is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the certificate file holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the key file holds no PEM private key: {e}"))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match min {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the private key does not belong to the certificate (the first one in \
                     cert_file)"
                        .to_string()
                }
                e => format!("the certificate or key is not usable: {e}"),
            })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Unix time at which the first certificate of `cert_pem` expires.
pub fn not_after(cert_pem: &[u8]) -> Option<i64> {
    let first = CertificateDer::pem_slice_iter(cert_pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(first.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

impl ListenerTls {
    pub fn new(cfg: &TlsConfig) -> Result<ListenerTls, String> {
        let config = server_config(&cfg.cert_pem, &cfg.key_pem, cfg.min_version)?;
        Ok(ListenerTls {
            acceptor: Acceptor::from_server_config(Arc::new(config)),
            handshake_timeout: cfg.handshake_timeout,
            not_after: not_after(&cfg.cert_pem),
        })
    }

    /// The handshake on a freshly accepted connection. `Err` says why it failed, for the
    /// metric's label and a debug line.
    pub async fn accept(&self, stream: pingora::protocols::Stream) -> Result<TlsConn, Failed> {
        // The listener is plain TCP, so every connection it hands over is an L4 stream.
        let mut l4 = stream
            .into_any()
            .downcast::<L4Stream>()
            .map_err(|_| Failed::Error("not a TCP connection".into()))?;
        let handshake = async {
            // A connection closed before its first byte (a TCP health check, a port scan, the
            // gateway's own readiness probe) is a client that left, not a failed handshake.
            // The byte is put back (`try_peek` rewinds).
            let mut first = [0u8; 1];
            if let Err(e) = l4.try_peek(&mut first).await {
                return Err(match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => Failed::Closed,
                    _ => Failed::Error(e.to_string()),
                });
            }
            self.acceptor
                .tls_handshake(*l4)
                .await
                .map_err(|e| Failed::Error(e.to_string()))
        };
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(inner)) => Ok(TlsConn {
                inner,
                peeked: Vec::new(),
                pos: 0,
            }),
            Ok(Err(failed)) => Err(failed),
            Err(_) => Err(Failed::Timeout),
        }
    }
}

#[derive(Debug)]
pub enum Failed {
    Error(String),
    Timeout,
    /// Closed by the client before it sent anything.
    Closed,
}

/// A client connection after its handshake: Pingora's TLS stream, plus the bytes read by
/// `try_peek` (the first-bytes deadline reads the start of the first request before Pingora
/// does; they are handed back on the next reads). Pingora's own TLS stream cannot peek.
#[derive(Debug)]
pub struct TlsConn {
    inner: TlsStream<L4Stream>,
    peeked: Vec<u8>,
    pos: usize,
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.peeked.len() {
            let rest = &this.peeked[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.peeked.len() {
                this.peeked = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Peek for TlsConn {
    /// Fill `buf` with the first bytes the client sends (waiting for all of them, as
    /// Pingora's TCP stream does) without consuming them.
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        use tokio::io::AsyncReadExt;
        let have = self.peeked.len() - self.pos;
        if have < buf.len() {
            let mut more = vec![0u8; buf.len() - have];
            self.inner.read_exact(&mut more).await?;
            self.peeked.drain(..self.pos);
            self.pos = 0;
            self.peeked.extend_from_slice(&more);
        }
        buf.copy_from_slice(&self.peeked[self.pos..self.pos + buf.len()]);
        Ok(true)
    }
}

#[async_trait]
impl Shutdown for TlsConn {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut self.inner).await
    }
}

impl UniqueID for TlsConn {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for TlsConn {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for TlsConn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for TlsConn {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for TlsConn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

/// A certificate this close to its expiry is warned about at start and on every reload.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Publish the certificate in force (`mcp_gateway_tls_certificate_expiry_timestamp_seconds`)
/// and warn when it has expired or soon will.
pub fn note_certificate(tls: Option<&ListenerTls>, metrics: &crate::admin::metrics::Metrics) {
    let not_after = tls.and_then(|t| t.not_after);
    metrics.tls_certificate_expiry.set(not_after.unwrap_or(0));
    let Some(not_after) = not_after else {
        return;
    };
    let left = not_after - crate::store::now();
    if left <= 0 {
        tracing::error!(
            not_after,
            "the listener's TLS certificate has expired (tls.cert_file)"
        );
    } else if left < EXPIRY_WARNING.as_secs() as i64 {
        tracing::warn!(
            not_after,
            days_left = left / 86_400,
            "the listener's TLS certificate expires soon (tls.cert_file)"
        );
    }
}
