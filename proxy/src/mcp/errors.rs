//! The gateway's own refusals: one enum, mapped once to an HTTP status, a JSON-RPC error
//! code and a JSON-RPC error body an MCP client can show.

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("no MCP endpoint at this path")]
    NoRoute,
    #[error("method not allowed on an MCP endpoint (use POST, GET or DELETE)")]
    MethodNotAllowed,
    #[error("origin not allowed")]
    OriginDenied,
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    HeaderMismatch(String),
    #[error("unauthorized: {0}")]
    Unauthenticated(crate::auth::AuthError),
    #[error("forbidden: this endpoint needs one of the roles {0}")]
    Forbidden(String),
    #[error("no credential stored for service `{0}`: add yours with PUT /auth/credentials/{0} {{\"token\": \"...\"}}")]
    CredentialMissing(String),
    #[error("tool `{0}` is not allowed for this caller")]
    ToolDenied(String),
    #[error("session not found; initialize a new session")]
    SessionNotFound,
    #[error("no healthy worker in pool {pool}")]
    NoHealthyWorker { pool: String },
    #[error("the worker could not be reached")]
    UpstreamUnavailable,
    #[error("the worker did not answer in time")]
    UpstreamTimeout,
    #[error("the worker failed while answering")]
    UpstreamFailed,
    #[error("{}", .0.message())]
    RateLimited(Box<crate::ratelimit::Limited>),
    #[error("the gateway is at its limit of {limit} calls in progress; retry shortly")]
    Overloaded { limit: usize },
    #[error("the gateway is at its limit of {limit} client connections; retry shortly")]
    TooManyConnections { limit: usize },
    #[error("internal gateway error")]
    Internal,
}

impl GatewayError {
    pub fn http_status(&self) -> u16 {
        match self {
            GatewayError::NoRoute | GatewayError::SessionNotFound => 404,
            GatewayError::MethodNotAllowed => 405,
            GatewayError::Unauthenticated(_) => 401,
            GatewayError::Forbidden(_) | GatewayError::CredentialMissing(_) => 403,
            // A JSON-RPC error for that call, in an ordinary answer clients handle.
            GatewayError::ToolDenied(_) => 200,
            GatewayError::OriginDenied => 403,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::Parse(_)
            | GatewayError::InvalidRequest(_)
            | GatewayError::HeaderMismatch(_) => 400,
            GatewayError::NoHealthyWorker { .. }
            | GatewayError::Overloaded { .. }
            | GatewayError::TooManyConnections { .. } => 503,
            GatewayError::UpstreamUnavailable | GatewayError::UpstreamFailed => 502,
            GatewayError::UpstreamTimeout => 504,
            GatewayError::RateLimited(_) => 429,
            GatewayError::Internal => 500,
        }
    }

    /// JSON-RPC error code: the standard ones where they fit, the implementation-defined
    /// server range (-32000..-32099) otherwise. -32001 "session not found" follows what the
    /// official SDKs use.
    pub fn jsonrpc_code(&self) -> i64 {
        match self {
            GatewayError::Parse(_) => -32700,
            GatewayError::InvalidRequest(_)
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::MethodNotAllowed => -32600,
            GatewayError::NoRoute => -32601,
            // The 2026-07-28 code clients react to by refreshing and retrying.
            GatewayError::HeaderMismatch(_) => -32020,
            GatewayError::SessionNotFound => -32001,
            GatewayError::OriginDenied => -32003,
            GatewayError::Unauthenticated(_) => -32004,
            GatewayError::Forbidden(_) | GatewayError::ToolDenied(_) => -32005,
            GatewayError::CredentialMissing(_) => -32006,
            GatewayError::NoHealthyWorker { .. }
            | GatewayError::UpstreamUnavailable
            | GatewayError::UpstreamTimeout
            | GatewayError::UpstreamFailed => -32002,
            GatewayError::RateLimited(_) => -32029,
            GatewayError::Overloaded { .. } | GatewayError::TooManyConnections { .. } => -32030,
            GatewayError::Internal => -32603,
        }
    }

    /// Short stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::NoRoute => "no_route",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::OriginDenied => "origin_denied",
            GatewayError::Unauthenticated(_) => "unauthenticated",
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::ToolDenied(_) => "tool_denied",
            GatewayError::CredentialMissing(_) => "credential_missing",
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::Parse(_) => "parse_error",
            GatewayError::InvalidRequest(_) => "invalid_request",
            GatewayError::HeaderMismatch(_) => "header_mismatch",
            GatewayError::SessionNotFound => "session_not_found",
            GatewayError::NoHealthyWorker { .. } => "no_healthy_worker",
            GatewayError::UpstreamUnavailable => "upstream_unavailable",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::UpstreamFailed => "upstream_failed",
            GatewayError::RateLimited(_) => "rate_limited",
            GatewayError::Overloaded { .. } => "overloaded",
            GatewayError::TooManyConnections { .. } => "max_connections",
            GatewayError::Internal => "internal",
        }
    }

    /// `{"jsonrpc":"2.0","id":ID|null,"error":{"code":..,"message":..}}`. `id` is the raw
    /// JSON text of the request id when it is known.
    pub fn jsonrpc_error_body(&self, id: Option<&str>) -> Bytes {
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": serde_json::Value::Null,
            "error": { "code": self.jsonrpc_code(), "message": self.to_string() },
        });
        let mut text = body.to_string();
        if let Some(id) = id {
            // The id is already valid JSON (it came from the parser); splice it in verbatim.
            text = text.replacen("\"id\":null", &format!("\"id\":{id}"), 1);
        }
        Bytes::from(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_code_message_and_id() {
        let e = GatewayError::Parse("parse error: expected value".into());
        let v: serde_json::Value = serde_json::from_slice(&e.jsonrpc_error_body(None)).unwrap();
        assert_eq!(v["error"]["code"], -32700);
        assert_eq!(v["id"], serde_json::Value::Null);
        let v: serde_json::Value = serde_json::from_slice(
            &GatewayError::SessionNotFound.jsonrpc_error_body(Some("\"a\"")),
        )
        .unwrap();
        assert_eq!(v["id"], "a");
        assert_eq!(v["error"]["code"], -32001);
        assert_eq!(GatewayError::SessionNotFound.http_status(), 404);
        assert_eq!(GatewayError::BodyTooLarge { limit: 1 }.http_status(), 413);
    }
}
