//! POSTs to workers, forwarded by the gateway itself instead of Pingora's proxy loop
//! (docs/decisions.md, "POSTs forwarded by the gateway").
//!
//! Pingora writes and flushes an upstream request's header before its body, so each POST
//! cost two sends and woke the worker twice; its proxy loop also runs each request through
//! two channels and two joined futures. Here, in `request_filter`, the gateway reads and
//! checks the whole body exactly as `request_body_filter` does on Pingora's path, sends
//! header and body to the worker in one write over its own keep-alive pool
//! (`routing::h1`, hyper's HTTP/1.1 client), and writes the worker's answer back through
//! Pingora's session, with the same routing, rewriting, filtering and logging steps.
//!
//! Errors end the request the way Pingora's path ends it: returned from `request_filter`,
//! they reach `fail_to_proxy` (the client's answer, passive health) and `logging`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use pingora::http::ResponseHeader;
use pingora::protocols::http::{HttpTask, ServerSession};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::ctx::Ctx;
use super::{limits, logrecord, steps};
use crate::routing::h1::{Body, Target};
use crate::routing::within_read_timeout;
use crate::runtime::Shared;

/// Request headers of the client's hop that are not hop-by-hop in general: the body's
/// length (set anew for the checked body) and the expectation the gateway answered itself.
const REQUEST_OWN: &[&str] = &["content-length", "expect"];

/// At most this many pieces of an answer that arrived together are written as one.
const MAX_PIECES_PER_WRITE: usize = 16;

/// Response headers that belong to the worker's hop.
const RESPONSE_HOP: &[&str] = &["connection", "keep-alive", "proxy-connection"];

/// Whether this admitted request is a POST the gateway forwards itself: a JSON-RPC call on
/// an MCP route from an HTTP/1.1 client. (HTTP/2 clients, GET streams without `h2c_streams`,
/// DELETEs and the identity service's endpoints keep Pingora's proxy path.)
pub fn wants(session: &Session, ctx: &Ctx) -> bool {
    ctx.body.active
        && ctx.routing.internal.is_none()
        && ctx.routing.route.is_some()
        && matches!(*session.downstream_session, ServerSession::H1(_))
}

/// `request_filter` for a forwarded POST. `Ok(true)` once the answer is written; an error
/// goes on to `fail_to_proxy`, as it would from Pingora's proxy loop.
pub async fn serve(shared: &Arc<Shared>, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
    let body = read_body(shared, session, ctx).await?;
    let route = ctx
        .routing
        .route
        .clone()
        .ok_or_else(|| Error::new(ErrorType::InternalError))?;
    let pool = &route.pool.config;
    let (response, lease, read_timeout) = loop {
        let endpoint = steps::choose_worker(ctx, &route).map_err(|e| super::refuse(ctx, e))?;
        let target = Target {
            addr: endpoint.addr,
            connect_timeout: pool.connect_timeout,
            read_timeout: pool.read_timeout,
            idle_timeout: pool.idle_timeout,
        };
        let request = upstream_request(session, ctx, body.clone())?;
        ctx.log.upstream_start = Some(Instant::now());
        let exchange = within_read_timeout(target.read_timeout, shared.h1.send(&target, request));
        let sent = watching_client(session, exchange)
            .await?
            .and_then(|sent| sent);
        match sent {
            Ok((response, lease)) => break (response, lease, target.read_timeout),
            // Nothing was sent: `connect_failed` ejects the worker and says whether another
            // may be tried (never for a pinned session).
            Err(e) if steps::is_connect_error(&e) => {
                if !steps::connect_failed(shared, ctx) {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    };
    let (parts, mut incoming) = response.into_parts();
    let mut resp = ResponseHeader::from(parts);
    resp.set_version(http::Version::HTTP_11);
    for name in RESPONSE_HOP {
        resp.remove_header(*name);
    }
    logrecord::on_response_header(&mut resp, ctx)?;
    steps::rewrite_response(&mut resp, ctx, false)?;
    limits::add_headers(&mut resp, ctx)?;
    let framed = resp.headers.contains_key(http::header::CONTENT_LENGTH)
        || resp.headers.contains_key(http::header::TRANSFER_ENCODING);
    if !framed && !incoming.is_end_stream() {
        // The list filter dropped the length: re-frame the changed body.
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    let is_sse = resp
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));

    let mut header = Some(resp);
    // An event stream's header goes out at once, with its first event when that is already
    // here (it usually arrives with the header), so a slow first event does not hold the
    // header back.
    let mut early = None;
    if is_sse {
        match frame_soon(&mut incoming).await {
            Some(frame) => early = Some(frame),
            None => write(session, header.take(), Vec::new(), false).await?,
        }
    }
    loop {
        // Wait for the next piece, then take what else is already here: pieces that arrived
        // together leave together, in one chunk (as Pingora's proxy loop batches them).
        let mut frame = match early.take() {
            Some(frame) => frame,
            None if incoming.is_end_stream() => None,
            None => {
                let next = within_read_timeout(read_timeout, incoming.frame());
                watching_client(session, next).await??
            }
        };
        let mut pieces = Vec::new();
        let end = loop {
            let (mut chunk, end) = match frame {
                None => (None, true),
                Some(Err(e)) => {
                    return Err(Error::because(
                        ErrorType::ReadError,
                        "reading the worker's answer",
                        e,
                    )
                    .into_up())
                }
                // Trailers are not passed on (nor are they on Pingora's HTTP/1.1 path).
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => (Some(data), incoming.is_end_stream()),
                    Err(_) => (None, false),
                },
            };
            super::on_response_chunk(ctx, &mut chunk, end)?;
            pieces.extend(chunk);
            if end || pieces.len() >= MAX_PIECES_PER_WRITE {
                break end;
            }
            match frame_soon(&mut incoming).await {
                Some(next) => frame = next,
                None => break false,
            }
        };
        let mut head = header.take();
        if let (Some(h), true) = (head.as_mut(), end) {
            whole_answer_framing(h, &pieces)?;
        }
        write(session, head, pieces, end).await?;
        if end {
            break;
        }
    }
    shared.h1.release(lease);
    Ok(true)
}

/// The request body, read whole and checked by the same steps as on Pingora's path. A
/// client that asked to be told to go on (`Expect: 100-continue`, which curl sends for
/// bodies over 1 KiB) is told so first: the request passed every check that needs no body.
async fn read_body(shared: &Shared, session: &mut Session, ctx: &mut Ctx) -> Result<Bytes> {
    let expects = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects {
        session
            .downstream_session
            .write_continue_response()
            .await
            .map_err(|e| e.into_down())?;
    }
    loop {
        let mut chunk = session
            .downstream_session
            .read_request_body()
            .await
            .map_err(|e| e.into_down())?;
        let end = chunk.is_none() || session.as_downstream_mut().is_body_done();
        super::check_body(shared, session, ctx, &mut chunk, end).await?;
        if end {
            return Ok(chunk.unwrap_or_default());
        }
    }
}

/// The client's request as the worker gets it: the same rewriting as every proxied request
/// (`steps::upstream_rewrite`), in origin form, with the checked body.
pub(super) fn upstream_request(
    session: &Session,
    ctx: &Ctx,
    body: Bytes,
) -> Result<http::Request<Body>> {
    let req = session.req_header();
    let rewrite = steps::upstream_rewrite(session, req, ctx)?;
    let uri = http::Uri::try_from(rewrite.path_and_query(req))
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "upstream uri", e))?;
    let len = body.len();
    let method = req.method.clone();
    // A GET (a detached stream) has no body and says nothing about one.
    let sized = len > 0 || method != http::Method::GET;
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    rewrite.write_headers(req, headers, |n| REQUEST_OWN.contains(&n));
    if sized {
        headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
    Ok(request)
}

/// The worker's next frame if it is here already. hyper's connection task decodes body data
/// only once the body is polled, so a first poll that finds nothing asks for it, and after
/// one turn of the scheduler (the connection task runs) a second poll finds what the worker
/// had already sent. Writing the pieces together saves a send per piece.
async fn frame_soon(incoming: &mut Incoming) -> Option<Option<FrameResult>> {
    if let Some(frame) = incoming.frame().now_or_never() {
        return Some(frame);
    }
    tokio::task::yield_now().await;
    incoming.frame().now_or_never()
}

type FrameResult = std::result::Result<hyper::body::Frame<Bytes>, hyper::Error>;

/// Wait for `work` while watching the client's connection, as Pingora's proxy loop does: a
/// client that closes it (gives up on its call) ends the request at once, which frees its
/// concurrency slot and, by dropping the worker's connection, tells the worker. The error
/// reaches `fail_to_proxy` as the client's (`client_closed` in the record).
async fn watching_client<T>(
    session: &mut Session,
    work: impl std::future::Future<Output = T>,
) -> Result<T> {
    tokio::pin!(work);
    tokio::select! {
        biased;
        done = &mut work => Ok(done),
        idle = session.downstream_session.read_body_or_idle(true) => match idle {
            Err(e) => Err(e.into_down()),
            // Never for a request whose body was read; wait for the work alone.
            Ok(_) => Ok(work.await),
        },
    }
}

/// The whole answer is here before its header went out (a call answered as a short event
/// stream, usually): send it with its length instead of chunked. Pingora flushes the header
/// of a response without a length on its own and ends a chunked body with a write of its
/// own; with the length, header and body leave in one send.
fn whole_answer_framing(h: &mut ResponseHeader, pieces: &[Bytes]) -> Result<()> {
    let bodiless = h.status.is_informational()
        || h.status == http::StatusCode::NO_CONTENT
        || h.status == http::StatusCode::NOT_MODIFIED;
    if bodiless || h.headers.contains_key(http::header::CONTENT_LENGTH) {
        return Ok(());
    }
    let len: usize = pieces.iter().map(Bytes::len).sum();
    h.remove_header(&http::header::TRANSFER_ENCODING);
    h.insert_header(http::header::CONTENT_LENGTH, len.to_string())
}

/// Write the header (the first time) and pieces of the body in one go.
async fn write(
    session: &mut Session,
    header: Option<ResponseHeader>,
    pieces: Vec<Bytes>,
    end: bool,
) -> Result<()> {
    let mut tasks = Vec::with_capacity(pieces.len() + 2);
    if let Some(h) = header {
        tasks.push(HttpTask::Header(Box::new(h), false));
    }
    let last = pieces.len();
    for (i, piece) in pieces.into_iter().enumerate() {
        tasks.push(HttpTask::Body(Some(piece), end && i + 1 == last));
    }
    if end && last == 0 {
        tasks.push(HttpTask::Body(None, true));
    }
    if tasks.is_empty() {
        return Ok(());
    }
    session.write_response_tasks(tasks).await.map(|_| ())
}
