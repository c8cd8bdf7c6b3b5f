//! Answers the gateway writes itself.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::mcp::errors::GatewayError;

/// The request id (`X-Request-Id`, made valid in `request_filter`) goes back to the client.
fn copy_request_id(session: &Session, h: &mut ResponseHeader) -> Result<()> {
    if let Some(id) = session.req_header().headers.get("x-request-id") {
        h.insert_header("x-request-id", id.clone())?;
    }
    Ok(())
}

/// Write a JSON answer of the gateway's own.
pub async fn write_json(session: &mut Session, status: u16, body: Bytes) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(5))?;
    copy_request_id(session, &mut h)?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Write `err` as an HTTP status with a JSON-RPC error body. `resource_metadata` is the RFC
/// 9728 document a 401 points to.
pub async fn write_error(
    session: &mut Session,
    err: &GatewayError,
    id: Option<&str>,
    resource_metadata: Option<&str>,
) -> Result<()> {
    let body: Bytes = err.jsonrpc_error_body(id);
    let mut h = ResponseHeader::build(err.http_status(), Some(9))?;
    copy_request_id(session, &mut h)?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    match err {
        GatewayError::MethodNotAllowed => h.insert_header("allow", "GET, POST, DELETE")?,
        GatewayError::Unauthenticated(why) => {
            let mut v = String::from("Bearer realm=\"mcp-gateway\"");
            if let Some(url) = resource_metadata {
                v.push_str(&format!(", resource_metadata=\"{url}\""));
            }
            if *why != crate::auth::AuthError::Missing {
                v.push_str(&format!(
                    ", error=\"invalid_token\", error_description=\"{why}\""
                ));
            }
            h.insert_header("www-authenticate", v)?
        }
        GatewayError::RateLimited(l) => {
            for (name, value) in l.headers() {
                h.insert_header(name, value)?;
            }
        }
        GatewayError::Overloaded { .. } => h.insert_header("retry-after", "1")?,
        GatewayError::Forbidden(_) => h.insert_header(
            "www-authenticate",
            "Bearer realm=\"mcp-gateway\", error=\"insufficient_scope\"",
        )?,
        _ => {}
    }
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}

/// How long a refused request's remaining body is read and discarded before closing.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Answer with `err`. When the client is still sending its body (or `close` is set), the
/// answer says `Connection: close`, and what the client still sends is read and discarded for
/// a short while (a lingering close), so closing does not reset the connection before the
/// client has read the answer.
pub async fn refuse(
    session: &mut Session,
    err: &GatewayError,
    id: Option<&str>,
    close: bool,
    resource_metadata: Option<&str>,
) {
    let pending = !session.as_downstream_mut().is_body_done();
    if pending || close {
        session.as_downstream_mut().set_keepalive(None);
    }
    if let Err(e) = write_error(session, err, id, resource_metadata).await {
        tracing::debug!(error = %e, "could not write the error answer");
        return;
    }
    if pending {
        let _ =
            tokio::time::timeout(LINGER, session.as_downstream_mut().drain_request_body()).await;
    }
}
