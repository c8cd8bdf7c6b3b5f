//! The request body rule: hold the chunks (pass on empty chunks) until the message is whole,
//! parse it, check it, then release it in one piece. This works for any body size, unlike
//! reading the body in `request_filter`, which Pingora bounds by its 64 KiB retry buffer.

use bytes::Bytes;
use pingora::proxy::Session;

use super::ctx::Ctx;
use crate::mcp::errors::GatewayError;
use crate::mcp::headers;
use crate::mcp::jsonrpc::{self, ParseError};

/// Most buffer reserved for a body before its bytes arrive.
const RESERVE_AHEAD: usize = 1 << 20;

/// Returns the refusal when the body breaks a rule.
pub fn on_chunk(
    session: &Session,
    ctx: &mut Ctx,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    limit: usize,
) -> Result<(), GatewayError> {
    // The usual case: the whole body in one chunk. Check it in place, no copy.
    let whole = match body.take() {
        Some(chunk) if end_of_stream && ctx.body.buf.is_empty() => {
            if chunk.len() > limit {
                return Err(GatewayError::BodyTooLarge { limit });
            }
            chunk
        }
        taken => {
            if let Some(chunk) = taken {
                if ctx.body.buf.len() + chunk.len() > limit {
                    ctx.body.buf.clear();
                    return Err(GatewayError::BodyTooLarge { limit });
                }
                if ctx.body.buf.is_empty() {
                    // Room for the whole body at once (the declared length): growing chunk by
                    // chunk copied it over and over. Capped, so a client that declares a large
                    // body and sends it slowly does not get the memory ahead of its bytes.
                    let declared = ctx.body.declared.unwrap_or(0);
                    let declared = usize::try_from(declared).unwrap_or(usize::MAX);
                    ctx.body.buf.reserve(declared.min(limit).min(RESERVE_AHEAD));
                }
                ctx.body.buf.extend_from_slice(&chunk);
            }
            if !end_of_stream {
                // Pass on an empty chunk, not `None`: Pingora reads `None` as the end of the
                // body and would finish the upstream request early.
                *body = Some(Bytes::new());
                return Ok(());
            }
            ctx.body.buf.split().freeze()
        }
    };
    let parsed = jsonrpc::parse(&whole).map_err(|e| match e {
        ParseError::Syntax(_) => GatewayError::Parse(e.to_string()),
        ParseError::Invalid(_) => GatewayError::InvalidRequest(e.to_string()),
    })?;
    let max_batch_len = ctx
        .routing
        .runtime
        .as_ref()
        .map(|rt| rt.config.limits.max_batch_len)
        .unwrap_or(usize::MAX);
    if parsed.batch && parsed.messages.len() > max_batch_len {
        return Err(GatewayError::InvalidRequest(format!(
            "a batch of {} messages exceeds the limit of {max_batch_len} (limits.max_batch_len)",
            parsed.messages.len()
        )));
    }
    // Kept before the header check so a refusal can name the request id.
    let parsed = ctx.body.parsed.insert(parsed);
    check_headers(session, parsed)?;
    check_tools(ctx)?;
    *body = Some(whole);
    Ok(())
}

/// Every `tools/call` in the body (a batch included) must be allowed for this caller; the
/// call never reaches the worker otherwise.
fn check_tools(ctx: &Ctx) -> Result<(), GatewayError> {
    let (Some(route), Some(parsed)) = (&ctx.routing.route, &ctx.body.parsed) else {
        return Ok(());
    };
    let Some(policy) = &route.tools else {
        return Ok(());
    };
    for m in &parsed.messages {
        if let Some(tool) = &m.tool {
            if !policy.allows(ctx.roles(), tool) {
                return Err(GatewayError::ToolDenied(tool.clone()));
            }
        }
    }
    Ok(())
}

/// Decode an `Mcp-Name` value: verbatim, or `=?base64?…?=` wrapping UTF-8 (canonical
/// base64 only, so two spellings never match the same body value).
fn decode_header_value(raw: &[u8]) -> Option<String> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    let text = std::str::from_utf8(raw).ok()?;
    match text
        .strip_prefix("=?base64?")
        .and_then(|t| t.strip_suffix("?="))
    {
        None => Some(text.to_string()),
        Some(payload) => {
            let bytes = STANDARD.decode(payload).ok()?;
            if STANDARD.encode(&bytes) != payload {
                return None;
            }
            String::from_utf8(bytes).ok()
        }
    }
}

/// 2026-07-28 requests name their method (and tool, prompt or resource) in headers too; they
/// must agree with the body, or a policy keyed on headers could be fooled.
fn check_headers(session: &Session, parsed: &jsonrpc::Body) -> Result<(), GatewayError> {
    let h = session.req_header();
    let first = if parsed.batch { None } else { parsed.first() };
    if let Some(m) = h.headers.get(headers::METHOD) {
        let body_method = first.and_then(|f| f.method.as_deref());
        if body_method.map(str::as_bytes) != Some(m.as_bytes()) {
            return Err(GatewayError::HeaderMismatch(
                "Mcp-Method header does not match the request body's method".into(),
            ));
        }
    }
    if let Some(body_name) = first.and_then(|f| f.name.as_deref()) {
        if let Some(n) = h.headers.get(headers::NAME) {
            if decode_header_value(n.as_bytes()).as_deref() != Some(body_name) {
                return Err(GatewayError::HeaderMismatch(
                    "Mcp-Name header does not match the request body".into(),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::decode_header_value;

    #[test]
    fn header_values_decode() {
        assert_eq!(decode_header_value(b"whoami").as_deref(), Some("whoami"));
        assert_eq!(
            decode_header_value(b"=?base64?d2hvYW1p?=").as_deref(),
            Some("whoami")
        );
        assert_eq!(
            decode_header_value("=?base64?w6k=?=".as_bytes()).as_deref(),
            Some("\u{e9}")
        );
        assert_eq!(decode_header_value(b"=?base64?not base64?="), None);
        // Non-canonical padding bits.
        assert_eq!(decode_header_value(b"=?base64?w6l=?="), None);
        assert_eq!(decode_header_value(b"\xff"), None);
    }
}
