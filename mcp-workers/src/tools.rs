//! The `tools` worker: a small MCP server with arithmetic, text and
//! diagnostic tools, used as a gateway pool backend.

use std::sync::Arc;
use std::time::Duration;

use rmcp::{
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{
        CallToolResult, ContentBlock, Implementation, ProgressNotificationParam,
        ResourceUpdatedNotificationParam, ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Largest payload `large_result` will produce (32 MiB).
pub const MAX_LARGE_RESULT_BYTES: u64 = 32 * 1024 * 1024;
/// Largest `n` accepted by `slow_count`.
pub const MAX_SLOW_COUNT: u32 = 10_000;
/// Most notifications one `notify` call sends.
pub const MAX_NOTIFY_TIMES: u32 = 1_000;
/// Largest per-step delay accepted by `slow_count` (one minute).
pub const MAX_SLOW_COUNT_DELAY_MS: u64 = 60_000;
/// Pattern repeated by `large_result`.
pub const LARGE_RESULT_PATTERN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789\n";

/// HTTP headers reported by `whoami`, besides every `x-mcp-*` header.
const WHOAMI_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "mcp-session-id",
    "host",
    "x-request-id",
];

/// Two operands of an arithmetic tool.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct BinaryArgs {
    /// Left-hand operand.
    pub a: f64,
    /// Right-hand operand.
    pub b: f64,
}

/// A single text argument.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct TextArgs {
    /// Input text.
    pub text: String,
}

/// Arguments of `large_result`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct LargeResultArgs {
    /// Exact size in bytes of the returned text (at most 33554432).
    pub bytes: u64,
}

fn default_delay_ms() -> u64 {
    100
}

/// Arguments of `slow_count`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SlowCountArgs {
    /// How many steps to count (at most 10000).
    pub n: u32,
    /// Delay before each step, in milliseconds (at most 60000).
    #[serde(default = "default_delay_ms")]
    pub delay_ms: u64,
}

fn default_times() -> u32 {
    1
}

/// Arguments of `notify`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct NotifyArgs {
    /// The text each notification carries (in its `uri`, after `note://`).
    pub text: String,
    /// How many notifications to send (at most 1000).
    #[serde(default = "default_times")]
    pub times: u32,
}

/// The tools MCP server. Cheap to clone: one clone serves one session (or
/// one request in stateless mode).
#[derive(Debug, Clone)]
pub struct ToolsServer {
    worker_id: Arc<str>,
    tool_router: ToolRouter<Self>,
}

fn text_result(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

fn tool_error(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// Build a string of exactly `len` bytes by repeating [`LARGE_RESULT_PATTERN`].
pub fn pattern_text(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let take = (len - out.len()).min(LARGE_RESULT_PATTERN.len());
        // The pattern is ASCII, so any prefix is valid UTF-8.
        out.extend(LARGE_RESULT_PATTERN[..take].iter().map(|&b| char::from(b)));
    }
    out
}

/// Collect the headers `whoami` reports from the HTTP request parts.
fn reported_headers(headers: &http::HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for name in headers.keys() {
        let lower = name.as_str().to_ascii_lowercase();
        if !(lower.starts_with("x-mcp-") || WHOAMI_HEADERS.contains(&lower.as_str())) {
            continue;
        }
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        out.insert(lower, serde_json::Value::String(values.join(", ")));
    }
    out
}

#[tool_router]
impl ToolsServer {
    /// Create a server that reports itself as `worker_id`.
    pub fn new(worker_id: impl Into<Arc<str>>) -> Self {
        Self {
            worker_id: worker_id.into(),
            tool_router: Self::tool_router(),
        }
    }

    /// The worker id reported by `whoami`.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    #[tool(
        description = "Add two numbers and return the sum as text.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    fn add(&self, Parameters(BinaryArgs { a, b }): Parameters<BinaryArgs>) -> String {
        (a + b).to_string()
    }

    #[tool(
        description = "Multiply two numbers and return the product as text.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    fn multiply(&self, Parameters(BinaryArgs { a, b }): Parameters<BinaryArgs>) -> String {
        (a * b).to_string()
    }

    #[tool(
        description = "Divide a by b and return the quotient as text. Division by zero is a tool error.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    fn divide(&self, Parameters(BinaryArgs { a, b }): Parameters<BinaryArgs>) -> CallToolResult {
        if b == 0.0 {
            return tool_error("division by zero");
        }
        text_result((a / b).to_string())
    }

    #[tool(
        description = "Return the text in upper case.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    fn upper(&self, Parameters(TextArgs { text }): Parameters<TextArgs>) -> String {
        text.to_uppercase()
    }

    #[tool(
        description = "Return the text reversed character by character.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    fn reverse(&self, Parameters(TextArgs { text }): Parameters<TextArgs>) -> String {
        text.chars().rev().collect()
    }

    #[tool(
        description = "Count the whitespace-separated words in the text.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    fn word_count(&self, Parameters(TextArgs { text }): Parameters<TextArgs>) -> String {
        text.split_whitespace().count().to_string()
    }

    #[tool(
        description = "Return the text unchanged, as the single text content of the result.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    fn echo(&self, Parameters(TextArgs { text }): Parameters<TextArgs>) -> CallToolResult {
        text_result(text)
    }

    #[tool(
        description = "Return a text content of exactly `bytes` bytes, repeating \"abcdefghijklmnopqrstuvwxyz0123456789\\n\" (at most 32 MiB).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    fn large_result(
        &self,
        Parameters(LargeResultArgs { bytes }): Parameters<LargeResultArgs>,
    ) -> CallToolResult {
        if bytes > MAX_LARGE_RESULT_BYTES {
            return tool_error(format!(
                "bytes must be at most {MAX_LARGE_RESULT_BYTES}, got {bytes}"
            ));
        }
        match usize::try_from(bytes) {
            Ok(len) => text_result(pattern_text(len)),
            Err(_) => tool_error("bytes does not fit in memory on this platform"),
        }
    }

    #[tool(
        description = "Count from 1 to n, waiting delay_ms (default 100) before each step and sending a progress notification (progress i, total n, message \"step i\") when the request carries a progress token; returns \"counted to n\".",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn slow_count(
        &self,
        Parameters(SlowCountArgs { n, delay_ms }): Parameters<SlowCountArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        if n > MAX_SLOW_COUNT {
            return Ok(tool_error(format!(
                "n must be at most {MAX_SLOW_COUNT}, got {n}"
            )));
        }
        if delay_ms > MAX_SLOW_COUNT_DELAY_MS {
            return Ok(tool_error(format!(
                "delay_ms must be at most {MAX_SLOW_COUNT_DELAY_MS}, got {delay_ms}"
            )));
        }
        let token = ctx.meta.get_progress_token();
        let delay = Duration::from_millis(delay_ms);
        for i in 1..=n {
            tokio::select! {
                _ = ctx.ct.cancelled() => {
                    return Err(ErrorData::internal_error(
                        format!("slow_count cancelled at step {i}"),
                        None,
                    ));
                }
                _ = tokio::time::sleep(delay) => {}
            }
            if let Some(token) = &token {
                let param = ProgressNotificationParam::new(token.clone(), f64::from(i))
                    .with_total(f64::from(n))
                    .with_message(format!("step {i}"));
                if let Err(err) = ctx.peer.notify_progress(param).await {
                    tracing::debug!(%err, step = i, "slow_count: progress notification failed");
                    return Err(ErrorData::internal_error(
                        format!("failed to send progress notification: {err}"),
                        None,
                    ));
                }
            }
        }
        Ok(text_result(format!("counted to {n}")))
    }

    #[tool(
        description = "Send `times` (default 1, at most 1000) notifications/resources/updated with uri \"note://\" followed by the text. They belong to no request, so they travel on the session's standalone GET stream; returns \"sent N\".",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn notify(
        &self,
        Parameters(NotifyArgs { text, times }): Parameters<NotifyArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        if times > MAX_NOTIFY_TIMES {
            return Ok(tool_error(format!(
                "times must be at most {MAX_NOTIFY_TIMES}, got {times}"
            )));
        }
        for i in 0..times {
            let param = ResourceUpdatedNotificationParam::new(format!("note://{text}"));
            if let Err(err) = ctx.peer.notify_resource_updated(param).await {
                return Ok(tool_error(format!(
                    "notification {} of {times} failed: {err}",
                    i + 1
                )));
            }
        }
        Ok(text_result(format!("sent {times}")))
    }

    #[tool(
        description = "Report which worker served this call: JSON with `worker` (id), `pid` and `headers` (the incoming HTTP headers named x-mcp-*, authorization, x-api-key, mcp-session-id, host, x-request-id).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    fn whoami(&self, ctx: RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
        let headers = ctx
            .extensions
            .get::<http::request::Parts>()
            .map(|parts| reported_headers(&parts.headers))
            .unwrap_or_default();
        let body = serde_json::json!({
            "worker": &*self.worker_id,
            "pid": std::process::id(),
            "headers": headers,
        });
        let text = serde_json::to_string(&body)
            .map_err(|e| ErrorData::internal_error(format!("serialize whoami: {e}"), None))?;
        Ok(text_result(text))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for ToolsServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "mcp-workers-tools",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Test tools for an MCP gateway: arithmetic (add, multiply, divide), text \
                 (upper, reverse, word_count, echo), payload size (large_result), progress \
                 (slow_count), notify (notifications on the standalone stream) and whoami to see which worker served a call.",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_text_has_exact_length_and_pattern() {
        assert_eq!(pattern_text(0), "");
        assert_eq!(pattern_text(3), "abc");
        let t = pattern_text(LARGE_RESULT_PATTERN.len() + 2);
        assert_eq!(t.len(), LARGE_RESULT_PATTERN.len() + 2);
        assert!(t.ends_with("\nab"));
    }

    #[test]
    fn reported_headers_filters_and_lowercases() {
        let mut h = http::HeaderMap::new();
        h.insert("X-MCP-Tenant", http::HeaderValue::from_static("t1"));
        h.insert("host", http::HeaderValue::from_static("example.com"));
        h.insert("cookie", http::HeaderValue::from_static("secret"));
        h.append("x-request-id", http::HeaderValue::from_static("a"));
        h.append("x-request-id", http::HeaderValue::from_static("b"));
        let m = reported_headers(&h);
        assert_eq!(m.get("x-mcp-tenant").and_then(|v| v.as_str()), Some("t1"));
        assert_eq!(m.get("host").and_then(|v| v.as_str()), Some("example.com"));
        assert_eq!(m.get("x-request-id").and_then(|v| v.as_str()), Some("a, b"));
        assert!(!m.contains_key("cookie"));
    }
}
