//! Answers the gateway writes itself.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::mcp::errors::GatewayError;

/// Write `err` as an HTTP status with a JSON-RPC error body.
pub async fn write_error(
    session: &mut Session,
    err: &GatewayError,
    id: Option<&str>,
) -> Result<()> {
    let body: Bytes = err.jsonrpc_error_body(id);
    let mut h = ResponseHeader::build(err.http_status(), Some(5))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    match err {
        GatewayError::MethodNotAllowed => h.insert_header("allow", "GET, POST, DELETE")?,
        GatewayError::Unauthenticated(crate::auth::AuthError::Missing) => {
            h.insert_header("www-authenticate", "Bearer realm=\"mcp-gateway\"")?
        }
        GatewayError::Unauthenticated(why) => h.insert_header(
            "www-authenticate",
            format!("Bearer realm=\"mcp-gateway\", error=\"invalid_token\", error_description=\"{why}\""),
        )?,
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
pub async fn refuse(session: &mut Session, err: &GatewayError, id: Option<&str>, close: bool) {
    let pending = !session.as_downstream_mut().is_body_done();
    if pending || close {
        session.as_downstream_mut().set_keepalive(None);
    }
    if let Err(e) = write_error(session, err, id).await {
        tracing::debug!(error = %e, "could not write the error answer");
        return;
    }
    if pending {
        let _ =
            tokio::time::timeout(LINGER, session.as_downstream_mut().drain_request_body()).await;
    }
}
