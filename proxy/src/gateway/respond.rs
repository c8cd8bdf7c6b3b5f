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
    if *err == GatewayError::MethodNotAllowed {
        h.insert_header("allow", "GET, POST, DELETE")?;
    }
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}
