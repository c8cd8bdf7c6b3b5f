//! The Pingora `ProxyHttp` implementation. Thin: each phase calls named steps.

mod authn;
mod body;
mod capture;
pub mod client_ip;
pub mod ctx;
mod detach;
mod forward;
mod limits;
mod listfilter;
mod logrecord;
mod respond;
mod steps;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::admin::metrics::method_label;
use crate::mcp::errors::GatewayError;
use crate::runtime::Shared;
use ctx::Ctx;

pub struct Gateway {
    pub shared: Arc<Shared>,
}

impl Gateway {
    pub fn new(shared: Arc<Shared>) -> Gateway {
        Gateway { shared }
    }
}

/// Turn a refusal into the Pingora error that ends the request; `fail_to_proxy` then
/// writes the JSON-RPC answer from `ctx.refusal`.
fn refuse(ctx: &mut Ctx, err: GatewayError) -> Box<Error> {
    let status = err.http_status();
    ctx.refusal = Some(err);
    Error::new(ErrorType::HTTPStatus(status))
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        self.shared.inflight.fetch_add(1, Ordering::AcqRel);
        ctx.counted = true;
        logrecord::take_request_id(session, ctx);
        let admitted = match steps::admit(&self.shared, session, ctx) {
            Ok(steps::Admitted::Mcp) => {
                match authn::authenticate(&self.shared, session, ctx).await {
                    Ok(()) => limits::check_route(&self.shared, session, ctx)
                        .await
                        .and_then(|()| steps::resume_session(session, ctx)),
                    Err(e) => Err(e),
                }
            }
            Ok(steps::Admitted::Internal) => limits::check_path(&self.shared, session, ctx).await,
            Ok(steps::Admitted::Answer(json)) => {
                respond::write_json(session, 200, json).await?;
                return Ok(true);
            }
            Err(e) => Err(e),
        };
        match admitted {
            Ok(()) if detach::wants(session, ctx) => {
                detach::serve(&self.shared, session, ctx).await
            }
            Ok(()) if forward::wants(session, ctx) => {
                forward::serve(&self.shared, session, ctx).await
            }
            Ok(()) => Ok(false),
            Err(err) => {
                let www = steps::resource_metadata_url(ctx);
                respond::refuse(session, &err, None, false, www.as_deref()).await;
                ctx.refusal = Some(err);
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let get = session.req_header().method == http::Method::GET;
        steps::choose_peer(ctx, get).map_err(|e| refuse(ctx, e))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = steps::connect_failed(&self.shared, ctx);
        e.set_retry(retry);
        e
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if !ctx.body.active {
            return Ok(());
        }
        check_body(&self.shared, session, ctx, body, end_of_stream).await
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.log.upstream_start = Some(std::time::Instant::now());
        steps::rewrite_upstream_request(session, upstream, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        logrecord::on_response_header(resp, ctx)?;
        let is_delete = session.req_header().method == http::Method::DELETE;
        steps::rewrite_response(resp, ctx, is_delete)?;
        limits::add_headers(resp, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        on_response_chunk(ctx, body, end_of_stream)?;
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        steps::upstream_failed(ctx, e);
        let client_gone = matches!(
            e.etype(),
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
        ) && e.esource() == &pingora::ErrorSource::Downstream;
        if client_gone && ctx.refusal.is_none() {
            // It closed its GET stream or gave up on an answer: not a malformed request.
            ctx.log.client_closed = true;
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let err = ctx
            .refusal
            .clone()
            .unwrap_or_else(|| steps::classify_failure(e, ctx));
        let final_sent = session
            .response_written()
            .is_some_and(|r| !r.status.is_informational());
        let code = if final_sent || client_gone {
            // Headers already went out (a stream broke midway), or the client is gone:
            // nothing more to say.
            0
        } else {
            let id = ctx.rpc_id().map(str::to_owned);
            // Pingora does not reuse a connection after a failed proxy attempt.
            respond::refuse(session, &err, id.as_deref(), true, None).await;
            err.http_status()
        };
        ctx.refusal = Some(err);
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        // Our own refusals are expected outcomes, counted in metrics, not errors; so is a
        // client closing its stream.
        ctx.refusal.is_some() || ctx.log.client_closed
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if ctx.detached {
            // The stream's own task logs it when it ends (`detach`).
            return;
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or_else(|| ctx.refusal.as_ref().map(GatewayError::http_status))
            .unwrap_or(0);
        let mut view = logrecord::RequestView::of(session, ctx);
        finish_request(
            &self.shared,
            ctx,
            &mut view,
            status,
            e.map(|e| e.to_string()),
        );
    }
}

/// The request body rule (`body::on_chunk`), per-call rate limits and body capture, for each
/// piece of a POST's body: from `request_body_filter`, or from `forward` (which reads the
/// body itself).
async fn check_body(
    shared: &Shared,
    session: &Session,
    ctx: &mut Ctx,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
) -> Result<()> {
    let limit = ctx
        .routing
        .runtime
        .as_ref()
        .map(|rt| rt.config.limits.max_body_bytes)
        .unwrap_or(0);
    body::on_chunk(session, ctx, body, end_of_stream, limit).map_err(|e| refuse(ctx, e))?;
    if end_of_stream {
        limits::check_tools(shared, session, ctx)
            .await
            .map_err(|e| refuse(ctx, e))?;
        if let (Some(cfg), Some(whole)) = (
            ctx.routing
                .route
                .as_ref()
                .and_then(|r| r.log_bodies.as_ref()),
            body.as_deref(),
        ) {
            ctx.log.request_body = Some(capture::render(whole, 0, cfg));
        }
    }
    Ok(())
}

/// Each piece of a worker's answer on its way to the client (both paths): the error code
/// for the record, the `tools/list` filter, body capture.
fn on_response_chunk(ctx: &mut Ctx, body: &mut Option<Bytes>, end_of_stream: bool) -> Result<()> {
    if !ctx.log.scanned {
        logrecord::scan_first_chunk(body.as_deref(), ctx);
    }
    if let Some(f) = ctx.list_filter.as_mut() {
        f.on_chunk(body, end_of_stream).map_err(|_| {
            Error::explain(
                ErrorType::InternalError,
                "tools/list answer too large to filter",
            )
        })?;
    }
    let route = ctx.routing.route.clone();
    if let (Some(cfg), Some(chunk)) = (
        route.as_ref().and_then(|r| r.log_bodies.as_ref()),
        body.as_deref(),
    ) {
        let buf = ctx.log.response_buf.get_or_insert_with(Vec::new);
        capture::hold(buf, &mut ctx.log.response_cut, chunk, cfg);
    }
    Ok(())
}

/// The end of every request: metrics, the log record, the audit trail, the in-flight counts.
/// Called by `logging`, or by a detached stream's task when the stream ends.
pub(crate) fn finish_request(
    shared: &Shared,
    ctx: &mut Ctx,
    view: &mut logrecord::RequestView,
    status: u16,
    error: Option<String>,
) {
    logrecord::metrics(shared, ctx);
    if shared.logship.enabled() {
        let record = logrecord::build(view, ctx, status);
        shared.logship.record(record);
    }
    let route = ctx
        .routing
        .route
        .as_ref()
        .map(|r| r.path.as_str())
        .unwrap_or("-");
    let method = if ctx.body.parsed.is_some() {
        match ctx.rpc_method() {
            Some("batch") => "batch",
            m => method_label(m),
        }
    } else {
        view.method.as_str()
    };
    let m = &shared.metrics;
    let status_text = crate::admin::metrics::status_label(status);
    m.requests
        .with_label_values(&[route, method, status_text.as_ref()])
        .inc();
    m.duration
        .with_label_values(&[route])
        .observe(ctx.start.elapsed().as_secs_f64());
    if let Some(r) = &ctx.refusal {
        m.refusals.with_label_values(&[r.kind()]).inc();
        steps::audit_denial(shared, view.client_ip, ctx, r);
    }
    tracing::debug!(
        route,
        method,
        status,
        error,
        micros = ctx.start.elapsed().as_micros() as u64,
        "request"
    );
    // Last: shutdown waits for this count to reach zero before it flushes the log queue,
    // so the record above is already queued.
    if ctx.call_counted {
        shared.calls_inflight.fetch_sub(1, Ordering::AcqRel);
    }
    if ctx.counted {
        shared.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}
