//! A minimal MCP client over Streamable HTTP: JSON-RPC requests POSTed to
//! one endpoint, answers in `application/json` or `text/event-stream`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::Serialize;
use serde_json::Value;

use crate::sse::SseParser;
use crate::workload::{check_result, Mismatch, RequestSpec};

/// Largest non-SSE body read (the worker caps results at 32 MiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Header carrying the session id.
pub const HEADER_SESSION_ID: &str = "mcp-session-id";
/// Header carrying the protocol version.
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// SEP-2243 method header (2026-07-28).
pub const HEADER_METHOD: &str = "mcp-method";
/// SEP-2243 name header (2026-07-28).
pub const HEADER_NAME: &str = "mcp-name";

/// MCP protocol revision spoken by the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Protocol {
    /// Sessions: initialize, `Mcp-Session-Id`, notifications/initialized.
    #[value(name = "2025-06-18")]
    #[serde(rename = "2025-06-18")]
    V2025_06_18,
    /// No session: every request carries its protocol context in `_meta`
    /// and the `Mcp-Method`/`Mcp-Name` headers.
    #[value(name = "2026-07-28")]
    #[serde(rename = "2026-07-28")]
    V2026_07_28,
}

impl Protocol {
    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V2025_06_18 => "2025-06-18",
            Protocol::V2026_07_28 => "2026-07-28",
        }
    }

    /// Whether requests are self-contained (no initialize, no session).
    pub fn stateless(self) -> bool {
        matches!(self, Protocol::V2026_07_28)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `_meta` members every 2026-07-28 request carries (SEP-2575: protocol
/// version and client capabilities are required; client info is optional).
pub const STATELESS_META: &str = concat!(
    r#""io.modelcontextprotocol/protocolVersion":"2026-07-28","#,
    r#""io.modelcontextprotocol/clientCapabilities":{},"#,
    r#""io.modelcontextprotocol/clientInfo":{"name":"mcp-bench","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""}"#
);

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The TCP connection could not be made.
    Connect(String),
    /// The request (or the whole operation) timed out.
    Timeout,
    /// Non-2xx HTTP status, with the JSON-RPC error code if the body had one.
    Http {
        /// HTTP status code.
        status: u16,
        /// JSON-RPC error code found in the body.
        jsonrpc: Option<i64>,
    },
    /// A JSON-RPC error answer.
    JsonRpc {
        /// JSON-RPC error code.
        code: i64,
        /// Its message.
        message: String,
    },
    /// The tool answered with `isError: true`.
    ToolError(String),
    /// The answer did not hold what the operation expects.
    Unexpected(String),
    /// The answer could not be understood.
    Protocol(String),
    /// The connection failed mid-request.
    Io(String),
}

impl CallError {
    /// Stable key for error counts: `http_503`, `jsonrpc_-32602`, `timeout`, ...
    pub fn kind(&self) -> String {
        match self {
            CallError::Connect(_) => "connect".into(),
            CallError::Timeout => "timeout".into(),
            CallError::Http {
                status,
                jsonrpc: None,
            } => format!("http_{status}"),
            CallError::Http {
                status,
                jsonrpc: Some(code),
            } => format!("http_{status}_jsonrpc_{code}"),
            CallError::JsonRpc { code, .. } => format!("jsonrpc_{code}"),
            CallError::ToolError(_) => "tool_error".into(),
            CallError::Unexpected(_) => "unexpected_result".into(),
            CallError::Protocol(_) => "protocol".into(),
            CallError::Io(_) => "io".into(),
        }
    }

    fn from_reqwest(err: &reqwest::Error) -> CallError {
        let msg = error_chain(err);
        if err.is_timeout() {
            CallError::Timeout
        } else if err.is_connect() {
            CallError::Connect(msg)
        } else {
            CallError::Io(msg)
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Connect(m) => write!(f, "connect: {m}"),
            CallError::Timeout => f.write_str("timed out"),
            CallError::Http { status, jsonrpc } => match jsonrpc {
                Some(code) => write!(f, "HTTP {status} (JSON-RPC error {code})"),
                None => write!(f, "HTTP {status}"),
            },
            CallError::JsonRpc { code, message } => write!(f, "JSON-RPC error {code}: {message}"),
            CallError::ToolError(m) => write!(f, "tool error: {m}"),
            CallError::Unexpected(m) => write!(f, "unexpected result: {m}"),
            CallError::Protocol(m) => write!(f, "protocol: {m}"),
            CallError::Io(m) => write!(f, "io: {m}"),
        }
    }
}

impl From<Mismatch> for CallError {
    fn from(m: Mismatch) -> Self {
        match m {
            Mismatch::ToolError(t) => CallError::ToolError(t),
            Mismatch::Unexpected(t) => CallError::Unexpected(t),
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Where requests go: a session (2025 protocol) or none (2026-07-28).
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// `Mcp-Session-Id` to echo (as received: the gateway may seal it).
    pub id: Option<HeaderValue>,
    /// `MCP-Protocol-Version` to send (none during the handshake).
    pub version: Option<HeaderValue>,
}

impl Session {
    /// The session-less context of a 2026-07-28 client.
    pub fn stateless(protocol: Protocol) -> Session {
        Session {
            id: None,
            version: Some(HeaderValue::from_static(protocol.as_str())),
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The JSON-RPC `result`.
    pub result: Value,
    /// Progress notifications received before it.
    pub notifications: u32,
    /// When the answer arrived (before the rest of the body was drained).
    pub answered_at: Instant,
    /// When the response body ended (`None`: not within the drain timeout,
    /// the connection is then dropped rather than reused).
    pub ended_at: Option<Instant>,
}

/// Build a JSON-RPC request body. `fields` are the members of `params`
/// (JSON text without braces), `meta` the members of `params._meta`.
pub fn build_body(id: u64, method: &str, fields: &str, meta: &str) -> Vec<u8> {
    let mut s = String::with_capacity(fields.len() + meta.len() + 96);
    s.push_str(r#"{"jsonrpc":"2.0","id":"#);
    s.push_str(&id.to_string());
    s.push_str(r#","method":"#);
    s.push_str(&Value::String(method.to_owned()).to_string());
    s.push_str(r#","params":{"#);
    s.push_str(fields);
    if !meta.is_empty() {
        if !fields.is_empty() {
            s.push(',');
        }
        s.push_str(r#""_meta":{"#);
        s.push_str(meta);
        s.push('}');
    }
    s.push_str("}}");
    s.into_bytes()
}

/// Find the answer to request `id` in a JSON-RPC message: `Ok(None)` if the
/// message is something else (a notification, another id).
pub fn match_answer(msg: &Value, id: u64) -> Result<Option<Value>, CallError> {
    if msg.get("method").is_some() {
        return Ok(None);
    }
    let ours = match msg.get("id") {
        // An error answer may omit the id (2026-07-28) or null it.
        None | Some(Value::Null) => msg.get("error").is_some(),
        Some(v) => v.as_u64() == Some(id),
    };
    if !ours {
        return Ok(None);
    }
    if let Some(err) = msg.get("error") {
        return Err(CallError::JsonRpc {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        });
    }
    match msg.get("result") {
        Some(r) => Ok(Some(r.clone())),
        None => Err(CallError::Protocol(
            "answer has neither result nor error".into(),
        )),
    }
}

/// Whether the answer to a standalone-stream `GET` opened a stream.
pub fn check_stream_answer(status: u16, content_type: &str) -> Result<(), CallError> {
    if !(200..300).contains(&status) {
        return Err(CallError::Http {
            status,
            jsonrpc: None,
        });
    }
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("text/event-stream")
    {
        return Err(CallError::Protocol(format!(
            "GET answered {status} with content type {content_type:?}, not text/event-stream"
        )));
    }
    Ok(())
}

/// Whether a JSON-RPC message is a progress notification.
pub fn is_progress(msg: &Value) -> bool {
    msg.get("method").and_then(Value::as_str) == Some("notifications/progress")
}

/// MCP over Streamable HTTP on one endpoint.
#[derive(Debug)]
pub struct McpClient {
    http: reqwest::Client,
    url: reqwest::Url,
    auth: Option<HeaderValue>,
    protocol: Protocol,
    next_id: AtomicU64,
    drain_timeout: Duration,
}

impl McpClient {
    /// A client for `url`; `token` is sent as `Authorization: Bearer`. For an https:// URL
    /// the server's certificate is verified against the system's roots and the CA
    /// certificates in `ca_file`.
    pub fn new(
        url: &str,
        token: Option<&str>,
        protocol: Protocol,
        ca_file: Option<&std::path::Path>,
    ) -> Result<McpClient, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("invalid --url {url:?}: {e}"))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(format!("--url must be http:// or https://, got {other}")),
        }
        let cas = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| format!("--ca-file {}: {}", path.display(), error_chain(&e)))?;
                if certs.is_empty() {
                    return Err(format!(
                        "--ca-file {}: no PEM certificate in it",
                        path.display()
                    ));
                }
                certs
            }
            None => Vec::new(),
        };
        let auth = match token {
            Some(t) => Some(
                HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| "--token contains characters not allowed in a header")?,
            ),
            None => None,
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .tls_certs_merge(cas)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        Ok(McpClient {
            http,
            url,
            auth,
            protocol,
            next_id: AtomicU64::new(1),
            drain_timeout: Duration::from_millis(200),
        })
    }

    /// The protocol revision spoken.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn post(
        &self,
        session: &Session,
        method: &str,
        tool: Option<&str>,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, CallError> {
        let mut req = self.with_session(
            self.http
                .post(self.url.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "application/json, text/event-stream"),
            session,
        );
        if self.protocol.stateless() {
            req = req.header(HEADER_METHOD, method);
            if let Some(t) = tool {
                req = req.header(HEADER_NAME, t);
            }
        }
        req.body(body)
            .send()
            .await
            .map_err(|e| CallError::from_reqwest(&e))
    }

    /// Send one request and check its answer.
    pub async fn call(&self, session: &Session, spec: &RequestSpec) -> Result<Reply, CallError> {
        let id = self.id();
        let mut meta = String::new();
        if spec.progress {
            meta.push_str(&format!(r#""progressToken":{id}"#));
        }
        if self.protocol.stateless() {
            if !meta.is_empty() {
                meta.push(',');
            }
            meta.push_str(STATELESS_META);
        }
        let body = build_body(id, spec.method, &spec.fields, &meta);
        let resp = self.post(session, spec.method, spec.tool, body).await?;
        let reply = self.read_reply(resp, id).await?;
        if reply.notifications != spec.expect_notifications {
            return Err(CallError::Unexpected(format!(
                "expected {} progress notifications, got {}",
                spec.expect_notifications, reply.notifications
            )));
        }
        check_result(&reply.result, &spec.expect)?;
        Ok(reply)
    }

    /// Open a session: initialize, then notifications/initialized.
    pub async fn initialize(&self) -> Result<Session, CallError> {
        let id = self.id();
        let fields = format!(
            r#""protocolVersion":"{}","capabilities":{{}},"clientInfo":{{"name":"mcp-bench","version":"{}"}}"#,
            self.protocol.as_str(),
            env!("CARGO_PKG_VERSION")
        );
        let body = build_body(id, "initialize", &fields, "");
        let resp = self
            .post(&Session::default(), "initialize", None, body)
            .await?;
        let sid = resp.headers().get(HEADER_SESSION_ID).cloned();
        let reply = self.read_reply(resp, id).await?;
        let version = reply
            .result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                CallError::Protocol("initialize result has no protocolVersion".into())
            })?;
        let version = HeaderValue::from_str(version).map_err(|_| {
            CallError::Protocol("negotiated protocol version is not a valid header value".into())
        })?;
        let session = Session {
            id: sid,
            version: Some(version),
        };
        self.notify(&session, "notifications/initialized").await?;
        Ok(session)
    }

    /// Send a notification (expects 202/2xx).
    pub async fn notify(&self, session: &Session, method: &str) -> Result<(), CallError> {
        let body = format!(
            r#"{{"jsonrpc":"2.0","method":{}}}"#,
            Value::String(method.to_owned())
        );
        let mut resp = self.post(session, method, None, body.into_bytes()).await?;
        let status = resp.status();
        let _ = self.drain(&mut resp).await;
        if !status.is_success() {
            return Err(CallError::Http {
                status: status.as_u16(),
                jsonrpc: None,
            });
        }
        Ok(())
    }

    /// The headers every request of a session carries: its id and protocol version (when
    /// known) and the bearer token.
    fn with_session(
        &self,
        mut req: reqwest::RequestBuilder,
        session: &Session,
    ) -> reqwest::RequestBuilder {
        if let Some(v) = &session.version {
            req = req.header(HEADER_PROTOCOL_VERSION, v.clone());
        }
        if let Some(id) = &session.id {
            req = req.header(HEADER_SESSION_ID, id.clone());
        }
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        req
    }

    /// End a session with DELETE (405 counts as success: the server may
    /// not let clients end sessions).
    pub async fn delete(&self, session: &Session) -> Result<(), CallError> {
        if session.id.is_none() {
            return Ok(());
        }
        let req = self.with_session(self.http.delete(self.url.clone()), session);
        let mut resp = req.send().await.map_err(|e| CallError::from_reqwest(&e))?;
        let status = resp.status();
        let _ = self.drain(&mut resp).await;
        if status.is_success() || status == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            Ok(())
        } else {
            Err(CallError::Http {
                status: status.as_u16(),
                jsonrpc: None,
            })
        }
    }

    /// Open the session's standalone SSE stream (`GET` with
    /// `Accept: text/event-stream`). Returns the response once its headers
    /// say `200` and `text/event-stream`; its body is the open stream.
    pub async fn open_stream(&self, session: &Session) -> Result<reqwest::Response, CallError> {
        let req = self.with_session(
            self.http
                .get(self.url.clone())
                .header(ACCEPT, "text/event-stream"),
            session,
        );
        let resp = req.send().await.map_err(|e| CallError::from_reqwest(&e))?;
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        // On a refusal the response is dropped unread: its connection closes.
        check_stream_answer(status.as_u16(), &ctype)?;
        Ok(resp)
    }

    /// Read the rest of a body (so the connection can be reused), briefly.
    /// Returns when the body ended, `None` if it did not end in time (or
    /// failed).
    async fn drain(&self, resp: &mut reqwest::Response) -> Option<Instant> {
        tokio::time::timeout(self.drain_timeout, async {
            loop {
                match resp.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Some(Instant::now()),
                    Err(_) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    async fn read_body(resp: &mut reqwest::Response) -> Result<Vec<u8>, CallError> {
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| CallError::from_reqwest(&e))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(CallError::Protocol(format!(
                    "response body larger than {MAX_BODY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn read_reply(&self, mut resp: reqwest::Response, id: u64) -> Result<Reply, CallError> {
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let is_json = ctype.starts_with("application/json");
        if !status.is_success() {
            let jsonrpc = if is_json {
                Self::read_body(&mut resp)
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .and_then(|v| v.get("error")?.get("code")?.as_i64())
            } else {
                let _ = self.drain(&mut resp).await;
                None
            };
            return Err(CallError::Http {
                status: status.as_u16(),
                jsonrpc,
            });
        }
        if ctype.starts_with("text/event-stream") {
            return self.read_sse(resp, id).await;
        }
        if !is_json {
            let _ = self.drain(&mut resp).await;
            return Err(CallError::Protocol(format!(
                "unexpected content-type {ctype:?} with HTTP {}",
                status.as_u16()
            )));
        }
        let body = Self::read_body(&mut resp).await?;
        let answered_at = Instant::now();
        let msg: Value = serde_json::from_slice(&body)
            .map_err(|e| CallError::Protocol(format!("invalid JSON body: {e}")))?;
        match match_answer(&msg, id)? {
            Some(result) => Ok(Reply {
                result,
                notifications: 0,
                answered_at,
                ended_at: Some(answered_at),
            }),
            None => Err(CallError::Protocol(format!(
                "JSON body does not answer request {id}"
            ))),
        }
    }

    async fn read_sse(&self, mut resp: reqwest::Response, id: u64) -> Result<Reply, CallError> {
        let mut parser = SseParser::new();
        let mut notifications = 0u32;
        loop {
            let chunk = resp
                .chunk()
                .await
                .map_err(|e| CallError::from_reqwest(&e))?;
            let ended = chunk.is_none();
            let events = match &chunk {
                Some(c) => parser.feed(c),
                None => parser.finish().into_iter().collect(),
            };
            for ev in events {
                if ev.data.iter().all(u8::is_ascii_whitespace) {
                    continue; // priming event or keep-alive
                }
                let msg: Value = serde_json::from_slice(&ev.data)
                    .map_err(|e| CallError::Protocol(format!("invalid JSON in SSE data: {e}")))?;
                if is_progress(&msg) {
                    notifications = notifications.saturating_add(1);
                    continue;
                }
                if let Some(result) = match_answer(&msg, id)? {
                    let answered_at = Instant::now();
                    let ended_at = self.drain(&mut resp).await;
                    return Ok(Reply {
                        result,
                        notifications,
                        answered_at,
                        ended_at,
                    });
                }
            }
            if ended {
                return Err(CallError::Protocol(format!(
                    "SSE stream ended without the answer to request {id}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_and_ca_files_are_checked_up_front() {
        let p = Protocol::V2025_06_18;
        let err = McpClient::new("ftp://127.0.0.1/mcp", None, p, None).expect_err("ftp");
        assert!(err.contains("http:// or https://"), "{err}");
        assert!(McpClient::new("https://127.0.0.1/mcp", None, p, None).is_ok());
        let missing = std::path::Path::new("/nonexistent/ca.pem");
        let err = McpClient::new("https://127.0.0.1/mcp", None, p, Some(missing))
            .expect_err("missing file");
        assert!(err.contains("--ca-file /nonexistent/ca.pem"), "{err}");
        let empty =
            std::env::temp_dir().join(format!("mcp-bench-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = McpClient::new("https://127.0.0.1/mcp", None, p, Some(&empty))
            .expect_err("no certificate");
        assert!(err.contains("no PEM certificate"), "{err}");
        let _ = std::fs::remove_file(&empty);
    }

    #[test]
    fn body_shapes() {
        let b = build_body(5, "tools/list", "", "");
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}})
        );
        let b = build_body(
            6,
            "tools/call",
            r#""name":"add","arguments":{"a":1,"b":2}"#,
            &format!(r#""progressToken":6,{STATELESS_META}"#),
        );
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["params"]["name"], "add");
        assert_eq!(v["params"]["_meta"]["progressToken"], 6);
        assert_eq!(
            v["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert!(v["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"].is_object());
        let b = build_body(7, "tools/list", "", STATELESS_META);
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert!(v["params"]["_meta"].is_object());
    }

    #[test]
    fn answers_are_matched_by_id() {
        let ok = json!({"jsonrpc":"2.0","id":3,"result":{"x":1}});
        assert_eq!(match_answer(&ok, 3), Ok(Some(json!({"x":1}))));
        assert_eq!(match_answer(&ok, 4), Ok(None));
        let note = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{}});
        assert_eq!(match_answer(&note, 3), Ok(None));
        assert!(is_progress(&note));
        let err = json!({"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"bad"}});
        let e = match_answer(&err, 3).expect_err("error answer");
        assert_eq!(e.kind(), "jsonrpc_-32602");
        let anon = json!({"jsonrpc":"2.0","error":{"code":-32600,"message":"x"}});
        assert!(match_answer(&anon, 9).is_err());
    }

    #[test]
    fn error_kinds() {
        assert_eq!(
            CallError::Http {
                status: 503,
                jsonrpc: None
            }
            .kind(),
            "http_503"
        );
        assert_eq!(
            CallError::Http {
                status: 400,
                jsonrpc: Some(-32020)
            }
            .kind(),
            "http_400_jsonrpc_-32020"
        );
        assert_eq!(CallError::Timeout.kind(), "timeout");
        assert_eq!(CallError::Connect("x".into()).kind(), "connect");
    }

    #[test]
    fn stream_answers() {
        assert!(check_stream_answer(200, "text/event-stream").is_ok());
        assert!(check_stream_answer(200, "Text/Event-Stream; charset=utf-8").is_ok());
        assert_eq!(
            check_stream_answer(405, "text/plain").map_err(|e| e.kind()),
            Err("http_405".into())
        );
        assert_eq!(
            check_stream_answer(200, "application/json").map_err(|e| e.kind()),
            Err("protocol".into())
        );
    }
}
