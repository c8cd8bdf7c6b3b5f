//! GET streams, carried by a small task of their own instead of Pingora's per-request
//! machinery (docs/decisions.md, "Detached GET streams"). To an `h2c_streams` pool the
//! stream is one HTTP/2 stream on a shared connection; to any other pool it has an HTTP/1.1
//! connection of its own.
//!
//! A standalone SSE stream is mostly idle for its whole life. Through Pingora's proxy path
//! each one keeps the connection's boxed proxy future, the request and response state and
//! the header buffers alive (about 28 KiB per stream, docs/benchmarks.md). Here the gateway
//! does everything up to the worker's response header in `request_filter` (same checks,
//! same routing, same headers as any request), writes the header to the client, then hands
//! the client's socket and the worker's HTTP/2 stream to a task that only copies events and
//! watches both ends. Pingora's session gets a spent stand-in and ends at once. Either way
//! shutdown ends the stream at once (its client reconnects) instead of holding the process
//! for `shutdown_grace`.
//!
//! Only HTTP/1.1 clients are detached (an HTTP/2 client's stream is one of many on its
//! connection, which Pingora keeps serving). Anything that is not a `200` event stream
//! (a refusal of the worker, an error) is answered through the Pingora session as usual.

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use hyper::body::{Body as _, Incoming};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::ctx::Ctx;
use super::logrecord::{self, RequestView};
use super::{capture, limits, respond, steps};
use crate::mcp::errors::GatewayError;
use crate::routing::h1::{self, Lease};
use crate::routing::h2c::{self, Opened, Slot};
use crate::runtime::Shared;

/// Largest non-stream answer (a worker refusing the GET) read whole before it is passed on.
const MAX_PLAIN_ANSWER: usize = 1 << 20;

/// Whether this admitted request is a GET stream the gateway carries itself.
pub fn wants(session: &Session, ctx: &Ctx) -> bool {
    let req = session.req_header();
    req.method == http::Method::GET
        && req.version == http::Version::HTTP_11
        && matches!(*session.downstream_session, ServerSession::H1(_))
        && ctx.routing.route.is_some()
        && ctx.routing.internal.is_none()
}

/// The worker's side of a detached stream. Dropping it before the body ended tells the
/// worker the client left (an HTTP/2 reset, or the HTTP/1.1 connection closed).
enum Upstream {
    /// A stream on a shared h2c connection, and its place there.
    H2 { body: RecvStream, _slot: Slot },
    /// An HTTP/1.1 connection of the stream's own; closed when the stream ends.
    H1 { body: Incoming, _conn: Lease },
}

impl Upstream {
    /// The next piece of the body, `None` at its end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        match self {
            Upstream::H2 { body, .. } => match body.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = body.flow_control().release_capacity(data.len());
                    Poll::Ready(Some(Ok(data)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(read_failed(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Upstream::H1 { body, .. } => loop {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers carry no events.
                        if let Ok(data) = frame.into_data() {
                            return Poll::Ready(Some(Ok(data)));
                        }
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(read_failed(e)))),
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            },
        }
    }

    async fn data(&mut self) -> Option<Result<Bytes>> {
        std::future::poll_fn(|cx| self.poll_data(cx)).await
    }
}

/// The error of a worker's stream that broke off, whichever protocol carried it.
fn read_failed(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Box<Error> {
    Error::because(ErrorType::ReadError, "while reading the worker's stream", e)
}

/// `request_filter` for a GET stream. Always answers the request (`Ok(true)`): with the
/// stream, handed to its own task, or with an error.
pub async fn serve(shared: &Arc<Shared>, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
    let (opened, read_timeout) = match open(shared, session, ctx).await {
        Ok(opened) => opened,
        Err(err) => {
            respond::refuse(session, &err, None, true, None).await;
            ctx.refusal = Some(err);
            return Ok(true);
        }
    };
    let (head, body) = opened;
    let mut resp = ResponseHeader::from(head);
    resp.set_version(http::Version::HTTP_11);
    logrecord::on_response_header(&mut resp, ctx)?;
    steps::rewrite_response(&mut resp, ctx, false)?;
    limits::add_headers(&mut resp, ctx)?;
    let is_stream = resp.status == http::StatusCode::OK
        && resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_stream {
        pass_plain_answer(session, ctx, body, resp).await?;
        return Ok(true);
    }
    // The connection ends with the stream: say so, so that no client reuses it.
    session.set_keepalive(None);
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    session.write_response_header(Box::new(resp), false).await?;

    let mut view = RequestView::of(session, ctx);
    let spent = spent_session().await?;
    let ServerSession::H1(h1) = std::mem::replace(&mut *session.downstream_session, spent) else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "detached a non-HTTP/1.1 session",
        ));
    };
    let client = h1.into_inner();
    let mut owned = std::mem::take(ctx);
    ctx.detached = true;
    let shared = shared.clone();
    let task = async move {
        let (mut client, mut body) = (client, body);
        let write_limit = owned
            .routing
            .runtime
            .as_ref()
            .map(|rt| rt.config.limits.client_write_timeout)
            .unwrap_or(Duration::from_secs(30));
        let error = pump(
            &shared,
            &mut owned,
            &mut view,
            &mut client,
            &mut body,
            read_timeout,
            write_limit,
        )
        .await;
        // Dropping an unfinished stream resets it (h2c) or closes its connection (HTTP/1.1):
        // the worker sees the client leave.
        drop(body);
        let _ = tokio::time::timeout(write_limit, client.shutdown()).await;
        super::finish_request(&shared, &mut owned, &mut view, 200, error);
    };
    tokio::spawn(task);
    Ok(true)
}

/// Route, connect (trying another worker after a connect failure when the session allows
/// it), send the request and read the worker's response header. Also returns the pool's
/// `read_timeout`, which bounds the stream's silences too.
async fn open(
    shared: &Shared,
    session: &Session,
    ctx: &mut Ctx,
) -> Result<((http::response::Parts, Upstream), Option<Duration>), GatewayError> {
    loop {
        let route = ctx.routing.route.clone().ok_or(GatewayError::Internal)?;
        let addr = steps::choose_worker(ctx, &route)?.addr;
        let pool = &route.pool.config;
        // Errors of an h2c stream are an h2c worker's (`upstream_failed` does not eject a
        // worker for failing h2c); an HTTP/1.1 stream's count like any request's.
        ctx.routing.h2c = pool.h2c_streams;
        let malformed = |_| GatewayError::InvalidRequest("malformed request".into());
        ctx.log.upstream_start = Some(std::time::Instant::now());
        let opened = if pool.h2c_streams {
            let target = h2c::Target {
                addr,
                connect_timeout: pool.connect_timeout,
                read_timeout: pool.read_timeout,
                idle_timeout: pool.idle_timeout,
                max_streams: steps::H2C_STREAMS_PER_CONNECTION,
            };
            let request = h2c_request(session, ctx, &addr).map_err(malformed)?;
            shared
                .h2c
                .open(&target, request)
                .await
                .map(|Opened { head, body, slot }| (head, Upstream::H2 { body, _slot: slot }))
        } else {
            let target = h1::Target {
                addr,
                connect_timeout: pool.connect_timeout,
                read_timeout: pool.read_timeout,
                idle_timeout: pool.idle_timeout,
            };
            let request =
                super::forward::upstream_request(session, ctx, Bytes::new()).map_err(malformed)?;
            crate::routing::within_read_timeout(
                target.read_timeout,
                shared.h1.open_stream(&target, request),
            )
            .await
            .and_then(|sent| sent)
            .map(|(response, lease)| {
                let (head, body) = response.into_parts();
                (head, Upstream::H1 { body, _conn: lease })
            })
        };
        match opened {
            Ok(opened) => return Ok((opened, pool.read_timeout)),
            Err(e) if steps::is_connect_error(&e) => {
                if steps::connect_failed(shared, ctx) {
                    continue;
                }
                let err = ctx.refusal.take();
                return Err(err.unwrap_or_else(|| steps::classify_failure(&e, ctx)));
            }
            Err(e) => {
                steps::upstream_failed(ctx, &e);
                return Err(steps::classify_failure(&e, ctx));
            }
        }
    }
}

/// The client's request as an h2c worker gets it: the same rewriting as every proxied
/// request (`steps::upstream_rewrite`), in HTTP/2 form (`:authority` from `Host`, no
/// hop-by-hop headers).
fn h2c_request(
    session: &Session,
    ctx: &Ctx,
    addr: &std::net::SocketAddr,
) -> Result<http::Request<()>> {
    let req = session.req_header();
    let rewrite = steps::upstream_rewrite(session, req, ctx)?;
    let authority = match req.headers.get(http::header::HOST) {
        Some(h) => String::from_utf8_lossy(h.as_bytes()).into_owned(),
        None => addr.to_string(),
    };
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(rewrite.path_and_query(req))
        .build()
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "upstream uri", e))?;
    let mut request = http::Request::new(());
    *request.method_mut() = http::Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    rewrite.write_headers(req, request.headers_mut(), |n| n == "host");
    Ok(request)
}

/// A worker's answer that is not an event stream (a 4xx for an unknown session, say): read
/// whole and answered through the Pingora session, logged by Pingora's `logging` as usual.
async fn pass_plain_answer(
    session: &mut Session,
    ctx: &mut Ctx,
    mut body: Upstream,
    mut resp: ResponseHeader,
) -> Result<()> {
    let mut whole = Vec::new();
    let complete = loop {
        match body.data().await {
            Some(Ok(chunk)) => {
                if whole.len() + chunk.len() > MAX_PLAIN_ANSWER {
                    break false;
                }
                whole.extend_from_slice(&chunk);
            }
            None => break true,
            Some(Err(e)) => {
                steps::upstream_failed(ctx, &e.into_up());
                break false;
            }
        }
    };
    if !complete {
        let err = GatewayError::UpstreamFailed;
        respond::refuse(session, &err, None, true, None).await;
        ctx.refusal = Some(err);
        return Ok(());
    }
    logrecord::scan_first_chunk(Some(&whole), ctx);
    resp.remove_header(&http::header::TRANSFER_ENCODING);
    resp.insert_header(http::header::CONTENT_LENGTH, whole.len().to_string())?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(whole)), true)
        .await
}

/// What Pingora's session holds once the real connection is taken: a parsed request on an
/// in-memory stream, not kept alive, so Pingora ends it without touching the client.
async fn spent_session() -> Result<ServerSession> {
    let io = std::io::Cursor::new(b"GET / HTTP/1.1\r\nhost: detached\r\n\r\n".to_vec());
    let mut spent = ServerSession::new_http1(Box::new(io));
    spent.read_request().await?;
    spent.set_keepalive(None);
    Ok(spent)
}

/// What the worker's stream and the client's connection can do next while a stream is idle.
enum Event {
    Data(Bytes),
    /// The worker ended the stream.
    End,
    Upstream(Box<Error>),
    /// The client closed its connection (or sent something, which a GET stream never does).
    ClientGone,
    /// `read_timeout` passed without an event from the worker.
    Idle,
    /// The gateway is shutting down.
    Shutdown,
}

/// Wait for the next [`Event`]. A plain poll function instead of `select!` over futures, so a
/// waiting stream's task holds little more than its three borrows.
fn next_event(
    cx: &mut Context<'_>,
    body: &mut Upstream,
    client: &mut Stream,
    idle: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    stop: Pin<&mut tokio::sync::futures::Notified<'_>>,
) -> Poll<Event> {
    if stop.poll(cx).is_ready() {
        return Poll::Ready(Event::Shutdown);
    }
    match body.poll_data(cx) {
        Poll::Ready(Some(Ok(data))) => return Poll::Ready(Event::Data(data)),
        Poll::Ready(Some(Err(e))) => return Poll::Ready(Event::Upstream(e.into_up())),
        Poll::Ready(None) => return Poll::Ready(Event::End),
        Poll::Pending => {}
    }
    let mut probe = [0u8; 1];
    let mut buf = ReadBuf::new(&mut probe);
    if Pin::new(&mut *client).poll_read(cx, &mut buf).is_ready() {
        return Poll::Ready(Event::ClientGone);
    }
    if let Some(sleep) = idle {
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Event::Idle);
        }
    }
    Poll::Pending
}

/// Copy the worker's events to the client until either side ends. Returns the error text
/// for the record, if any; the outcome is in `ctx` (`client_closed`, `refusal`).
async fn pump(
    shared: &Shared,
    ctx: &mut Ctx,
    view: &mut RequestView,
    client: &mut Stream,
    body: &mut Upstream,
    read_timeout: Option<Duration>,
    write_limit: Duration,
) -> Option<String> {
    let mut idle = read_timeout.map(|t| Box::pin(tokio::time::sleep(t)));
    // Shutdown ends idle streams at once instead of letting them hold the process for the
    // whole `shutdown_grace`: their clients reconnect (to another replica, or to the new
    // process of an upgrade).
    let stop = shared.stopping.notified();
    tokio::pin!(stop);
    stop.as_mut().enable();
    let stopping = shared.draining.load(std::sync::atomic::Ordering::Acquire);
    // The response header may still sit in the connection's write buffer.
    if send(client, &[], write_limit).await.is_err() {
        ctx.log.client_closed = true;
        return None;
    }
    let mut error = None;
    loop {
        let event = if stopping {
            Event::Shutdown
        } else {
            std::future::poll_fn(|cx| next_event(cx, body, client, &mut idle, stop.as_mut())).await
        };
        match event {
            Event::Data(data) => {
                if let (Some(sleep), Some(t)) = (idle.as_mut(), read_timeout) {
                    sleep.as_mut().reset(tokio::time::Instant::now() + t);
                }
                if !ctx.log.scanned {
                    logrecord::scan_first_chunk(Some(&data), ctx);
                }
                if let Some(cfg) = ctx
                    .routing
                    .route
                    .as_ref()
                    .and_then(|r| r.log_bodies.as_ref())
                {
                    let buf = ctx.log.response_buf.get_or_insert_with(Vec::new);
                    capture::hold(buf, &mut ctx.log.response_cut, &data, cfg);
                }
                if data.is_empty() {
                    continue;
                }
                let mut frame = Vec::with_capacity(data.len() + 12);
                let _ = write!(frame, "{:x}\r\n", data.len());
                frame.extend_from_slice(&data);
                frame.extend_from_slice(b"\r\n");
                match send(client, &frame, write_limit).await {
                    Ok(()) => view.bytes_out += data.len() as u64,
                    Err(true) => {
                        let err = GatewayError::InvalidRequest("the client was too slow".into());
                        error = Some(err.to_string());
                        ctx.refusal = Some(err);
                        break;
                    }
                    Err(false) => {
                        ctx.log.client_closed = true;
                        break;
                    }
                }
            }
            Event::End => {
                // The worker ended the stream (the session was deleted, say).
                if send(client, b"0\r\n\r\n", write_limit).await.is_err() {
                    ctx.log.client_closed = true;
                }
                break;
            }
            Event::Upstream(e) => {
                steps::upstream_failed(ctx, &e);
                error = Some(e.to_string());
                ctx.refusal = Some(steps::classify_failure(&e, ctx));
                break;
            }
            Event::Idle => {
                let e = Error::explain(ErrorType::ReadTimedout, "worker stream idle").into_up();
                steps::upstream_failed(ctx, &e);
                error = Some(e.to_string());
                ctx.refusal = Some(steps::classify_failure(&e, ctx));
                break;
            }
            Event::Shutdown => {
                ctx.log.shutdown = true;
                if send(client, b"0\r\n\r\n", write_limit).await.is_err() {
                    ctx.log.client_closed = true;
                }
                break;
            }
            Event::ClientGone => {
                ctx.log.client_closed = true;
                break;
            }
        }
    }
    error
}

/// Write `bytes` and flush. `Err(true)` when the client did not take them in time,
/// `Err(false)` when its connection is gone.
async fn send(client: &mut Stream, bytes: &[u8], limit: Duration) -> Result<(), bool> {
    let write = async {
        client.write_all(bytes).await?;
        client.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(false),
        Err(_) => Err(true),
    }
}
