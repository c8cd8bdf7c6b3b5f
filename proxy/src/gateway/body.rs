//! The request body rule: hold the chunks (pass on empty chunks) until the message is whole,
//! parse it, check it, then release it in one piece. This works for any body size, unlike
//! reading the body in `request_filter`, which Pingora bounds by its 64 KiB retry buffer.

use bytes::Bytes;
use pingora::proxy::Session;

use super::ctx::Ctx;
use crate::mcp::errors::GatewayError;
use crate::mcp::headers;
use crate::mcp::jsonrpc::{self, ParseError};

/// Returns the refusal when the body breaks a rule.
pub fn on_chunk(
    session: &Session,
    ctx: &mut Ctx,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    limit: usize,
) -> Result<(), GatewayError> {
    if let Some(chunk) = body.take() {
        if ctx.body.buf.len() + chunk.len() > limit {
            ctx.body.buf.clear();
            return Err(GatewayError::BodyTooLarge { limit });
        }
        ctx.body.buf.extend_from_slice(&chunk);
    }
    if !end_of_stream {
        // Pass on an empty chunk, not `None`: Pingora reads `None` as the end of the body and
        // would finish the upstream request early.
        *body = Some(Bytes::new());
        return Ok(());
    }
    let parsed = jsonrpc::parse(&ctx.body.buf).map_err(|e| match e {
        ParseError::Syntax(_) => GatewayError::Parse(e.to_string()),
        ParseError::Invalid(_) => GatewayError::InvalidRequest(e.to_string()),
    })?;
    // Kept before the header check so a refusal can name the request id.
    let parsed = ctx.body.parsed.insert(parsed);
    check_headers(session, parsed)?;
    *body = Some(ctx.body.buf.split().freeze());
    Ok(())
}

/// 2026-07-28 requests name their method (and tool) in headers too; they must agree with
/// the body, or a policy keyed on headers could be fooled.
fn check_headers(session: &Session, parsed: &jsonrpc::Body) -> Result<(), GatewayError> {
    let h = session.req_header();
    let first = parsed.first();
    if let Some(m) = h.headers.get(headers::METHOD) {
        let body_method = if parsed.batch {
            None
        } else {
            first.and_then(|f| f.method.as_deref())
        };
        if body_method.map(str::as_bytes) != Some(m.as_bytes()) {
            return Err(GatewayError::InvalidRequest(
                "the Mcp-Method header does not match the body".into(),
            ));
        }
    }
    if let Some(n) = h.headers.get(headers::NAME) {
        let body_tool = first.and_then(|f| f.tool.as_deref());
        if let Some(tool) = body_tool {
            if tool.as_bytes() != n.as_bytes() {
                return Err(GatewayError::InvalidRequest(
                    "the Mcp-Name header does not match the body".into(),
                ));
            }
        }
    }
    Ok(())
}
