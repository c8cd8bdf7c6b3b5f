//! End-to-end tests: the tools worker served in-process over Streamable HTTP,
//! driven by the rmcp client and by raw HTTP requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_workers::HttpOptions;
use rmcp::{
    model::{
        CallToolRequestParams, CallToolResult, ProgressNotificationParam, ProtocolVersion,
        ServerPeerInfo,
    },
    service::{NotificationContext, RunningService},
    transport::{
        streamable_http_client::StreamableHttpClientTransportConfig, StreamableHttpClientTransport,
    },
    ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt,
};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const EXPECTED_TOOLS: &[&str] = &[
    "add",
    "divide",
    "echo",
    "large_result",
    "multiply",
    "notify",
    "reverse",
    "slow_count",
    "upper",
    "whoami",
    "word_count",
];

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    async fn start(opts: HttpOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(mcp_workers::serve_tools(listener, opts, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Signal shutdown and require the server to end cleanly and promptly.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let res = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not stop within 10 s")
            .expect("server task panicked");
        res.expect("server returned an error");
    }
}

fn opts(id: &str) -> HttpOptions {
    let mut o = HttpOptions::new(id);
    o.shutdown_grace = Duration::from_secs(3);
    o
}

/// Client handler recording progress notifications in arrival order.
#[derive(Clone, Default)]
struct Recorder {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl Recorder {
    fn progress(&self) -> Vec<ProgressNotificationParam> {
        self.progress.lock().expect("progress lock").clone()
    }
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().expect("progress lock").push(params);
    }
}

type Client = RunningService<RoleClient, Recorder>;

fn transport(server: &TestServer) -> StreamableHttpClientTransport<reqwest::Client> {
    let mut headers = HashMap::new();
    headers.insert(
        http::HeaderName::from_static("x-mcp-tenant"),
        http::HeaderValue::from_static("tenant-42"),
    );
    headers.insert(
        http::HeaderName::from_static("x-not-reported"),
        http::HeaderValue::from_static("hidden"),
    );
    StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(server.mcp_url()).custom_headers(headers),
    )
}

async fn legacy_client(server: &TestServer, recorder: Recorder) -> Client {
    recorder
        .serve(transport(server))
        .await
        .expect("legacy initialize")
}

async fn discover_client(server: &TestServer, recorder: Recorder) -> Client {
    recorder
        .serve_with_lifecycle(
            transport(server),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("2026-07-28 discover")
}

async fn call(client: &Client, name: &'static str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(name).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("call {name}: {e}"))
}

fn only_text(result: &CallToolResult) -> &str {
    assert_eq!(result.content.len(), 1, "expected one content block");
    &result.content[0].as_text().expect("text content").text
}

fn assert_ok_text(result: &CallToolResult, expected: &str) {
    assert_ne!(result.is_error, Some(true), "unexpected tool error");
    assert_eq!(only_text(result), expected);
}

async fn assert_tool_names(client: &Client) {
    let tools = client.list_all_tools().await.expect("list tools");
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, EXPECTED_TOOLS);
    for tool in &tools {
        assert!(
            tool.description.as_deref().is_some_and(|d| !d.is_empty()),
            "{} has no description",
            tool.name
        );
        assert_eq!(
            tool.input_schema.get("type").and_then(Value::as_str),
            Some("object"),
            "{} schema",
            tool.name
        );
    }
    let echo = tools.iter().find(|t| t.name == "echo").expect("echo");
    let required = echo.input_schema.get("required").cloned();
    assert_eq!(required, Some(json!(["text"])));
}

async fn assert_arithmetic_and_text(client: &Client) {
    assert_ok_text(&call(client, "add", json!({"a": 2, "b": 3.5})).await, "5.5");
    assert_ok_text(
        &call(client, "multiply", json!({"a": -4, "b": 2.5})).await,
        "-10",
    );
    assert_ok_text(
        &call(client, "divide", json!({"a": 1, "b": 4})).await,
        "0.25",
    );
    let by_zero = call(client, "divide", json!({"a": 1, "b": 0})).await;
    assert_eq!(by_zero.is_error, Some(true));
    assert!(only_text(&by_zero).contains("zero"));
    assert_ok_text(
        &call(client, "upper", json!({"text": "héllo wörld"})).await,
        "HÉLLO WÖRLD",
    );
    assert_ok_text(
        &call(client, "reverse", json!({"text": "añb€"})).await,
        "€bña",
    );
    assert_ok_text(
        &call(
            client,
            "word_count",
            json!({"text": "  one two\tthree\nfour  "}),
        )
        .await,
        "4",
    );
}

/// A 1 MiB string with multi-byte characters and JSON-escaped characters.
fn one_mib_text() -> String {
    let unit = "ab\"c\\d\né€😀\t0123456789";
    let mut s = String::with_capacity(1 << 20);
    while s.len() + unit.len() <= 1 << 20 {
        s.push_str(unit);
    }
    while s.len() < 1 << 20 {
        s.push('x');
    }
    assert_eq!(s.len(), 1 << 20);
    s
}

async fn assert_echo_and_large(client: &Client) {
    let text = one_mib_text();
    let result = call(client, "echo", json!({ "text": text })).await;
    assert_ne!(result.is_error, Some(true));
    assert!(only_text(&result) == text, "echo did not round-trip 1 MiB");

    let result = call(client, "large_result", json!({"bytes": 100_003})).await;
    let body = only_text(&result);
    assert_eq!(body.len(), 100_003);
    assert_eq!(
        body.as_bytes(),
        mcp_workers::tools::pattern_text(100_003).as_bytes()
    );
    assert!(body.starts_with("abcdefghijklmnopqrstuvwxyz0123456789\nabc"));

    let too_big = call(client, "large_result", json!({"bytes": 33_554_433u64})).await;
    assert_eq!(too_big.is_error, Some(true));
}

async fn assert_slow_count_progress(client: &Client, recorder: &Recorder) {
    let before = recorder.progress().len();
    let result = call(client, "slow_count", json!({"n": 5, "delay_ms": 20})).await;
    // Progress notifications and the result travel on the same stream; all
    // five must have been delivered to the handler by the time the result is.
    let at_result: Vec<_> = recorder.progress()[before..].to_vec();
    assert_ok_text(&result, "counted to 5");
    assert_eq!(at_result.len(), 5, "progress notifications before result");
    let token = at_result[0].progress_token.clone();
    for (i, p) in at_result.iter().enumerate() {
        let step = (i + 1) as f64;
        assert_eq!(p.progress_token, token, "one progress token per call");
        assert_eq!(p.progress, step);
        assert_eq!(p.total, Some(5.0));
        assert_eq!(
            p.message.as_deref(),
            Some(format!("step {}", i + 1).as_str())
        );
    }
    let too_many = call(client, "slow_count", json!({"n": 10_001, "delay_ms": 0})).await;
    assert_eq!(too_many.is_error, Some(true));
}

async fn whoami(client: &Client) -> Value {
    let result = call(client, "whoami", json!({})).await;
    assert_ne!(result.is_error, Some(true));
    serde_json::from_str(only_text(&result)).expect("whoami returns JSON")
}

fn assert_whoami(who: &Value, worker: &str, addr: SocketAddr, session: bool) {
    assert_eq!(who["worker"], worker);
    assert_eq!(who["pid"], std::process::id());
    let headers = who["headers"].as_object().expect("headers object");
    assert_eq!(headers.get("x-mcp-tenant"), Some(&json!("tenant-42")));
    assert_eq!(headers.get("host"), Some(&json!(addr.to_string())));
    assert!(!headers.contains_key("x-not-reported"));
    assert!(!headers.contains_key("accept"));
    assert_eq!(
        headers.contains_key("mcp-session-id"),
        session,
        "mcp-session-id presence: {headers:?}"
    );
}

fn assert_server_identity(info: &ServerPeerInfo) {
    let implementation = info.server_info.as_ref().expect("serverInfo");
    assert_eq!(implementation.name, "mcp-workers-tools");
    assert_eq!(implementation.version, env!("CARGO_PKG_VERSION"));
    assert!(info.capabilities.tools.is_some());
    assert!(info.instructions.as_deref().is_some_and(|i| !i.is_empty()));
}

#[tokio::test]
async fn health_reports_worker_id() {
    let server = TestServer::start(opts("health-worker")).await;
    let resp = reqwest::get(format!("http://{}/health", server.addr))
        .await
        .expect("GET /health");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let body: Value = resp.json().await.expect("health JSON");
    assert_eq!(body, json!({"status": "ok", "worker": "health-worker"}));

    let missing = reqwest::get(format!("http://{}/nope", server.addr))
        .await
        .expect("GET /nope");
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test]
async fn legacy_session_client_uses_every_tool() {
    let server = TestServer::start(opts("w-legacy")).await;
    let recorder = Recorder::default();
    let client = legacy_client(&server, recorder.clone()).await;

    let info = client.peer_info().expect("server info after initialize");
    assert_server_identity(&info);
    assert!(info.protocol_version.has_initialize());

    assert_tool_names(&client).await;
    assert_arithmetic_and_text(&client).await;
    assert_echo_and_large(&client).await;
    assert_slow_count_progress(&client, &recorder).await;
    assert_whoami(&whoami(&client).await, "w-legacy", server.addr, true);

    client.cancel().await.expect("close client");
    server.shutdown().await;
}

#[tokio::test]
async fn stateless_json_server_serves_legacy_client() {
    let mut o = opts("w-stateless");
    o.stateless = true;
    o.json_response = true;
    let server = TestServer::start(o).await;
    let recorder = Recorder::default();
    let client = legacy_client(&server, recorder.clone()).await;

    assert_tool_names(&client).await;
    assert_arithmetic_and_text(&client).await;
    assert_echo_and_large(&client).await;
    assert_slow_count_progress(&client, &recorder).await;
    assert_whoami(&whoami(&client).await, "w-stateless", server.addr, false);

    client.cancel().await.expect("close client");
    server.shutdown().await;
}

#[tokio::test]
async fn protocol_2026_07_28_is_served_statelessly() {
    // Default options: legacy sessions on, yet 2026-07-28 requests carry no session.
    let server = TestServer::start(opts("w-2026")).await;
    let recorder = Recorder::default();
    let client = discover_client(&server, recorder.clone()).await;
    let info = client.peer_info().expect("server info after discover");
    assert_server_identity(&info);
    assert_eq!(info.protocol_version, ProtocolVersion::V_2026_07_28);

    assert_tool_names(&client).await;
    assert_arithmetic_and_text(&client).await;
    assert_echo_and_large(&client).await;
    assert_slow_count_progress(&client, &recorder).await;
    assert_whoami(&whoami(&client).await, "w-2026", server.addr, false);

    client.cancel().await.expect("close client");
    server.shutdown().await;
}

fn initialize_body() -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}
        }
    })
}

fn mcp_post(server: &TestServer, host: &str, body: &Value) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(server.mcp_url())
        .header(reqwest::header::HOST, host)
        .header(
            reqwest::header::ACCEPT,
            "application/json, text/event-stream",
        )
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("serialize"))
}

#[tokio::test]
async fn any_host_is_accepted_and_sessions_are_issued() {
    let server = TestServer::start(opts("w-host")).await;
    let resp = mcp_post(&server, "mcp.gateway.example:8443", &initialize_body())
        .send()
        .await
        .expect("POST initialize");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let session = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert!(
        session.is_some_and(|s| !s.is_empty()),
        "no Mcp-Session-Id issued"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn stateless_mode_issues_no_session_and_takes_large_bodies() {
    let mut o = opts("w-raw");
    o.stateless = true;
    o.json_response = true;
    let server = TestServer::start(o).await;

    let resp = mcp_post(&server, "public.example", &initialize_body())
        .send()
        .await
        .expect("POST initialize");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    assert!(resp.headers().get("mcp-session-id").is_none());

    // 5 MiB argument: above rmcp's 4 MiB default body limit, below ours.
    let text = "z".repeat(5 << 20);
    let call = json!({
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}}
    });
    let resp = mcp_post(&server, "public.example", &call)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .expect("POST tools/call");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = resp.json().await.expect("JSON-RPC response");
    assert_eq!(body["id"], 2);
    assert_eq!(
        body["result"]["content"][0]["text"].as_str(),
        Some(text.as_str())
    );

    let whoami = json!({
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}}
    });
    let resp = mcp_post(&server, "public.example", &whoami)
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", "Bearer abc")
        .header("x-request-id", "req-7")
        .header("cookie", "c=1")
        .send()
        .await
        .expect("POST whoami");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let body: Value = resp.json().await.expect("JSON-RPC response");
    let who: Value = serde_json::from_str(
        body["result"]["content"][0]["text"]
            .as_str()
            .expect("whoami text"),
    )
    .expect("whoami JSON");
    assert_eq!(who["worker"], "w-raw");
    assert_eq!(
        who["headers"],
        json!({
            "host": "public.example",
            "authorization": "Bearer abc",
            "x-request-id": "req-7",
        })
    );
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_with_an_open_session_is_prompt() {
    let server = TestServer::start(opts("w-stop")).await;
    let client = legacy_client(&server, Recorder::default()).await;
    assert_ok_text(&call(&client, "add", json!({"a": 1, "b": 1})).await, "2");
    // The client keeps its session (and standalone SSE stream) open.
    let started = std::time::Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown waited for the grace period: {:?}",
        started.elapsed()
    );
    drop(client);
}
