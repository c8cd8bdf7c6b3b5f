//! MCP specifics: JSON-RPC parsing, sealed session ids, JSON-RPC error bodies, header rules.

pub mod errors;
pub mod jsonrpc;
pub mod origin;
pub mod session;

/// Header names the gateway reads or rewrites.
pub mod headers {
    pub const SESSION_ID: &str = "mcp-session-id";
    pub const PROTOCOL_VERSION: &str = "mcp-protocol-version";
    pub const METHOD: &str = "mcp-method";
    pub const NAME: &str = "mcp-name";
}
