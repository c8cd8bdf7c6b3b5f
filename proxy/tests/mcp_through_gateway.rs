//! MCP clients talk to real workers through the real gateway binary.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Recorder {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        if let Ok(mut p) = self.progress.lock() {
            p.push(params);
        }
    }
}

type Client = RunningService<RoleClient, Recorder>;

async fn connect(url: &str) -> (Client, Recorder) {
    let rec = Recorder::default();
    let client = rec
        .clone()
        .serve(StreamableHttpClientTransport::from_uri(url.to_string()))
        .await
        .unwrap_or_else(|e| panic!("initialize through the gateway: {e}"));
    (client, rec)
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

fn text(r: &CallToolResult) -> String {
    r.content[0]
        .as_text()
        .map(|t| t.text.clone())
        .unwrap_or_else(|| panic!("no text content"))
}

#[tokio::test]
async fn initialize_list_and_call_through_the_gateway() {
    let gw = Gateway::start(2).await;
    let (client, _) = connect(&gw.url()).await;
    let info = client
        .peer_info()
        .unwrap_or_else(|| panic!("no server info"));
    let name = info.server_info.as_ref().map(|s| s.name.clone());
    assert_eq!(name.as_deref(), Some("mcp-workers-tools"));
    let tools = client
        .list_all_tools()
        .await
        .unwrap_or_else(|e| panic!("tools/list: {e}"));
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    for expected in ["add", "echo", "slow_count", "whoami", "large_result"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(
        text(&call(&client, "add", json!({"a": 2, "b": 3})).await),
        "5"
    );
    assert_eq!(
        text(&call(&client, "reverse", json!({"text": "héllo"})).await),
        "olléh"
    );
    let _ = client.cancel().await;
    let m = gw.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("mcp_gateway_requests_total")
                && l.contains("method=\"tools/call\"")
                && l.contains("route=\"/mcp\"")
                && l.contains("status=\"200\"")),
        "tools/call not counted:\n{m}"
    );
}

#[tokio::test]
async fn progress_notifications_arrive_before_the_result() {
    let gw = Gateway::start(1).await;
    let (client, rec) = connect(&gw.url()).await;
    let r = call(&client, "slow_count", json!({"n": 5, "delay_ms": 20})).await;
    // When the result is in our hands, every progress notification must already be.
    let seen: Vec<f64> = rec
        .progress
        .lock()
        .map(|p| p.iter().map(|n| n.progress).collect())
        .unwrap_or_default();
    assert_eq!(text(&r), "counted to 5");
    assert_eq!(seen, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let _ = client.cancel().await;
}

/// The SSE answer is streamed: the first progress event reaches the client in a chunk that
/// does not also carry the result (a buffering proxy would deliver them together).
#[tokio::test]
async fn sse_is_streamed_event_by_event() {
    let gw = Gateway::start(1).await;
    let http = reqwest::Client::new();
    let sid = raw_session(&http, &gw.url()).await;
    let body = json!({"jsonrpc":"2.0","id":9,"method":"tools/call",
        "params":{"name":"slow_count","arguments":{"n":3,"delay_ms":300},"_meta":{"progressToken":"p1"}}});
    let mut resp = http
        .post(gw.url())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("x-accel-buffering")
            .and_then(|v| v.to_str().ok()),
        Some("no")
    );
    let mut seen = String::new();
    let mut first_progress_chunk_had_result = None;
    while let Some(chunk) = resp.chunk().await.unwrap_or_else(|e| panic!("{e}")) {
        let c = String::from_utf8_lossy(&chunk).to_string();
        if first_progress_chunk_had_result.is_none() && c.contains("notifications/progress") {
            first_progress_chunk_had_result = Some(c.contains("\"id\":9"));
        }
        seen.push_str(&c);
        if find_response(&seen, 9).is_some() {
            break;
        }
    }
    assert_eq!(
        first_progress_chunk_had_result,
        Some(false),
        "stream:\n{seen}"
    );
    assert_eq!(seen.matches("notifications/progress").count(), 3);
}

#[tokio::test]
async fn one_mib_argument_round_trips_intact() {
    let gw = Gateway::start(1).await;
    let (client, _) = connect(&gw.url()).await;
    let unit = "abc\u{e9}\u{4e2d}\"\\\n{}[]0123456789 ";
    let mut big = String::new();
    while big.len() < 1 << 20 {
        big.push_str(unit);
    }
    let r = call(&client, "echo", json!({ "text": big })).await;
    assert_eq!(text(&r), big);
    let r = call(&client, "large_result", json!({"bytes": 3_000_000})).await;
    assert_eq!(text(&r).len(), 3_000_000);
    let _ = client.cancel().await;
}

#[tokio::test]
async fn twenty_sessions_stick_to_their_worker() {
    let gw = Gateway::start(2).await;
    let mut workers_seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let (client, _) = connect(&gw.url()).await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            let who: Value = serde_json::from_str(&text(&call(&client, "whoami", json!({})).await))
                .unwrap_or_else(|e| panic!("whoami json: {e}"));
            ids.push(who["worker"].as_str().unwrap_or_default().to_string());
        }
        assert!(ids.iter().all(|i| i == &ids[0]), "a session moved: {ids:?}");
        workers_seen.insert(ids[0].clone());
        let _ = client.cancel().await;
    }
    assert_eq!(
        workers_seen.len(),
        2,
        "sessions were not spread: {workers_seen:?}"
    );
}

#[tokio::test]
async fn session_ids_are_sealed_and_tampering_gets_404() {
    let gw = Gateway::start(1).await;
    let http = reqwest::Client::new();
    let sid = raw_session(&http, &gw.url()).await;
    let (status, who) = raw_call(&http, &gw.url(), &sid, 2, "whoami", json!({})).await;
    assert_eq!(status, 200);
    let who: Value =
        serde_json::from_str(&result_text(&who.unwrap_or_default())).unwrap_or_default();
    let worker_sid = who["headers"]["mcp-session-id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!worker_sid.is_empty(), "worker got no session id: {who}");
    assert_ne!(worker_sid, sid, "the client saw the worker's own id");
    assert!(!sid.contains(&worker_sid));

    // Flip one character in the middle.
    let mut bytes = sid.clone().into_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap_or_default();
    for bad in [tampered.as_str(), worker_sid.as_str(), "garbage", ""] {
        let (status, body) = raw_call(&http, &gw.url(), bad, 3, "add", json!({"a":1,"b":1})).await;
        assert_eq!(status, 404, "session id {bad:?}");
        assert_eq!(
            body.unwrap_or_default()["error"]["code"],
            -32001,
            "session id {bad:?}"
        );
    }
    // The genuine id still works.
    let (status, _) = raw_call(&http, &gw.url(), &sid, 4, "add", json!({"a":1,"b":1})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn delete_ends_the_session() {
    let gw = Gateway::start(1).await;
    let http = reqwest::Client::new();
    let sid = raw_session(&http, &gw.url()).await;
    let r = delete_session(&http, &gw.url(), &sid).await;
    // The worker's empty 202 goes out as 204 (the Python SDK accepts only 200 and 204).
    assert_eq!(r.status(), 204, "DELETE answered {}", r.status());
    assert!(r.headers().get("content-length").is_none());
    let (status, _) = raw_call(&http, &gw.url(), &sid, 2, "add", json!({"a":1,"b":1})).await;
    assert_eq!(status, 404, "a deleted session must be gone");
}

#[tokio::test]
async fn stateless_2026_protocol_works() {
    let gw = Gateway::start(2).await;
    let rec = Recorder::default();
    let client = rec
        .serve_with_lifecycle(
            StreamableHttpClientTransport::from_uri(gw.url()),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .unwrap_or_else(|e| panic!("server/discover through the gateway: {e}"));
    assert_eq!(
        text(&call(&client, "multiply", json!({"a": 6, "b": 7})).await),
        "42"
    );
    let who: Value = serde_json::from_str(&text(&call(&client, "whoami", json!({})).await))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        who["headers"].get("mcp-session-id").is_none(),
        "stateless calls carry no session: {who}"
    );
    let _ = client.cancel().await;
}

/// `DELETE` the session `sid`.
async fn delete_session(http: &reqwest::Client, url: &str, sid: &str) -> reqwest::Response {
    http.delete(url)
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap_or_else(|e| panic!("DELETE: {e}"))
}

/// Read a streamed answer until it ends (`Ok(Ok(()))`), fails, or `limit` passes (`Err`).
async fn read_to_end(
    stream: &mut reqwest::Response,
    limit: std::time::Duration,
) -> Result<reqwest::Result<()>, tokio::time::error::Elapsed> {
    tokio::time::timeout(limit, async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await
}

/// The standalone GET stream of a session stays open while quiet, longer than the client
/// read timeout (1 s here), and is forwarded as SSE.
#[tokio::test]
async fn a_quiet_get_stream_stays_open() {
    let (port, admin) = (free_port(), free_port());
    let config = spawn_pool_config(port, admin, 1, "limits: { client_read_timeout: 1s }\n");
    let gw = Gateway::start_with(&config, port, admin).await;
    let http = reqwest::Client::new();
    let sid = raw_session(&http, &gw.url()).await;
    let mut stream = raw_stream(&http, &gw.url(), &sid).await;
    assert_eq!(stream.status(), 200);
    assert!(stream
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream")));
    // Read whatever the worker sends at once (a priming event), then expect silence, not an end.
    let quiet = read_to_end(&mut stream, std::time::Duration::from_millis(2500)).await;
    assert!(quiet.is_err(), "the stream ended while quiet: {quiet:?}");
}

/// Established TCP connections on this host whose remote end is `addr`: the client side of
/// every connection to that listener (`/proc/net/tcp`, IPv4).
fn connections_to(addr: std::net::SocketAddr) -> usize {
    let std::net::SocketAddr::V4(v4) = addr else {
        panic!("IPv4 worker address expected, got {addr}");
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_else(|e| panic!("{e}"));
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == want && f[3] == "01"
        })
        .count()
}

/// With `h2c_streams`, idle GET streams share HTTP/2 connections to the worker instead of
/// holding one socket each; the same run without it shows one connection per stream, so
/// the count is a real measurement. A DELETE still ends a multiplexed stream cleanly.
#[tokio::test]
async fn get_streams_share_h2c_connections_to_the_worker() {
    const STREAMS: usize = 12;
    for h2c in [false, true] {
        let (port, admin) = (free_port(), free_port());
        let config = spawn_pool_config(port, admin, 1, "").replace(
            "    balance: round_robin\n",
            &format!("    balance: round_robin\n    h2c_streams: {h2c}\n"),
        );
        let gw = Gateway::start_with(&config, port, admin).await;
        let pools = gw.admin_json("/admin/pools").await;
        let worker: std::net::SocketAddr = pools["pools"][0]["workers"][0]["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no worker address in {pools}"));
        let http = reqwest::Client::new();
        let mut sids = Vec::new();
        let mut streams = Vec::new();
        for _ in 0..STREAMS {
            let sid = raw_session(&http, &gw.url()).await;
            let stream = raw_stream(&http, &gw.url(), &sid).await;
            assert_eq!(stream.status(), 200, "h2c_streams: {h2c}");
            assert!(stream
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("text/event-stream")));
            sids.push(sid);
            streams.push(stream);
        }
        let held = connections_to(worker);
        if h2c {
            // One h2c connection for the streams, plus the pooled HTTP/1.1 ones of the POSTs.
            assert!(held <= 4, "{held} connections for {STREAMS} h2c streams");
        } else {
            assert!(held >= STREAMS, "{held} connections for {STREAMS} streams");
        }
        if h2c {
            let r = delete_session(&http, &gw.url(), &sids[0]).await;
            assert_eq!(r.status(), 204);
            let mut first = streams.swap_remove(0);
            let ended = read_to_end(&mut first, std::time::Duration::from_secs(10)).await;
            assert!(
                matches!(ended, Ok(Ok(()))),
                "the deleted session's stream did not end cleanly: {ended:?}"
            );
            // The other streams are still open.
            let (status, answer) =
                raw_call(&http, &gw.url(), &sids[1], 2, "add", json!({"a":2,"b":3})).await;
            assert_eq!(status, 200);
            assert_eq!(answer.map(|a| result_text(&a)).as_deref(), Some("5"));
        }
    }
}

/// The gateway's config with `h2c_streams` set on its pool.
fn h2c_config(port: u16, admin: u16, h2c: bool, extra: &str) -> String {
    spawn_pool_config(port, admin, 1, extra).replace(
        "    balance: round_robin\n",
        &format!("    balance: round_robin\n    h2c_streams: {h2c}\n"),
    )
}

/// Read SSE chunks until `text` was seen `times` times (or 10 s passed); returns the count.
/// Call `notify` once with `text` (JSON-RPC id `id`); its notification must reach `stream`.
async fn notify_reaches(
    http: &reqwest::Client,
    gw: &Gateway,
    sid: &str,
    id: i64,
    text: &str,
    stream: &mut reqwest::Response,
) {
    let (status, _) = raw_call(http, &gw.url(), sid, id, "notify", json!({ "text": text })).await;
    assert_eq!(status, 200);
    assert_eq!(read_until(stream, text, 1).await, 1);
}

async fn read_until(stream: &mut reqwest::Response, text: &str, times: usize) -> usize {
    let mut seen = String::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while seen.matches(text).count() < times {
            match stream.chunk().await {
                Ok(Some(c)) => seen.push_str(&String::from_utf8_lossy(&c)),
                _ => return,
            }
        }
    })
    .await;
    seen.matches(text).count()
}

/// The gateway carries GET streams in a task of its own (`gateway::detach`), over a shared
/// h2c connection or, without `h2c_streams`, an HTTP/1.1 connection of the stream's own:
/// what the worker sends on the session's standalone stream reaches the client, the answer carries the gateway's headers, calls on the session go on meanwhile,
/// and a DELETE ends the stream cleanly and gets it counted and logged like any request.
#[tokio::test]
async fn a_detached_get_stream_carries_the_workers_notifications() {
    for h2c in [true, false] {
        let (port, admin) = (free_port(), free_port());
        let gw = Gateway::start_with(&h2c_config(port, admin, h2c, ""), port, admin).await;
        let http = reqwest::Client::new();
        let sid = raw_session(&http, &gw.url()).await;
        let mut stream = raw_stream(&http, &gw.url(), &sid).await;
        assert_eq!(stream.status(), 200);
        let header = |name: &str| {
            stream
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert!(header("content-type").is_some_and(|c| c.starts_with("text/event-stream")));
        assert!(header("x-request-id").is_some(), "{:?}", stream.headers());
        assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
        assert_eq!(header("connection").as_deref(), Some("close"));
        let (status, answer) = raw_call(
            &http,
            &gw.url(),
            &sid,
            2,
            "notify",
            json!({"text": "detached-hello", "times": 3}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(answer.map(|a| result_text(&a)).as_deref(), Some("sent 3"));
        assert_eq!(read_until(&mut stream, "detached-hello", 3).await, 3);
        // More calls, more notifications: the stream is still live.
        notify_reaches(&http, &gw, &sid, 3, "detached-again", &mut stream).await;
        let before = gw.metrics().await;
        let r = delete_session(&http, &gw.url(), &sid).await;
        assert_eq!(r.status(), 204);
        let ended = read_to_end(&mut stream, std::time::Duration::from_secs(10)).await;
        assert!(matches!(ended, Ok(Ok(()))), "not a clean end: {ended:?}");
        let get_200 = r#"mcp_gateway_requests_total{method="GET",route="/mcp",status="200"}"#;
        let count = |m: &str| {
            m.lines()
                .find_map(|l| l.strip_prefix(get_200))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        assert_eq!(count(&before), 0.0, "counted before it ended:\n{before}");
        let counted = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                if count(&gw.metrics().await) == 1.0 {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(counted.is_ok(), "{}", gw.metrics().await);
    }
}

/// The address of the (single) worker of the gateway's first pool.
async fn first_worker(gw: &Gateway) -> std::net::SocketAddr {
    let pools = gw.admin_json("/admin/pools").await;
    pools["pools"][0]["workers"][0]["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no worker address in {pools}"))
}

/// Send session `sid`'s GET stream request on a plain socket and read up to its status.
async fn open_raw_stream(stream: &mut tokio::net::TcpStream, sid: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\nmcp-session-id: {sid}\r\nmcp-protocol-version: 2025-06-18\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&head, b"HTTP/1.1 200");
}

/// The h2c connection that carried detached streams is closed once it has had no stream
/// for the pool's `idle_timeout`, like the pooled HTTP/1.1 ones.
#[tokio::test]
async fn an_idle_h2c_connection_to_the_worker_is_closed() {
    let (port, admin) = (free_port(), free_port());
    // Health checks over TCP, rarely: only the proxied traffic holds connections.
    let config = h2c_config(port, admin, true, "")
        .replace(
            "    h2c_streams: true\n",
            "    h2c_streams: true\n    idle_timeout: 1s\n",
        )
        .replace(
            "health: { kind: http, path: /health, interval: 1s }",
            "health: { kind: tcp, interval: 60s }",
        );
    let gw = Gateway::start_with(&config, port, admin).await;
    let worker = first_worker(&gw).await;
    let http = reqwest::Client::new();
    let sid = raw_session(&http, &gw.url()).await;
    // A plain socket, so that dropping it surely closes the client's connection.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    open_raw_stream(&mut stream, &sid).await;
    // Past the HTTP/1.1 connections' idle timeout: only the stream's connection is left.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(connections_to(worker), 1, "the stream's h2c connection");
    drop(stream);
    let closed = wait_until(std::time::Duration::from_secs(10), || {
        connections_to(worker) == 0
    });
    assert!(closed, "{} connections left", connections_to(worker));
}

/// A client that stops reading its detached stream is cut once a write to it has waited
/// `client_write_timeout`, instead of the gateway buffering the worker's events for it.
#[tokio::test]
async fn a_detached_stream_whose_client_stops_reading_is_cut() {
    use tokio::io::AsyncReadExt;
    let (port, admin) = (free_port(), free_port());
    let config = h2c_config(port, admin, true, "limits: { client_write_timeout: 1s }\n");
    let gw = Gateway::start_with(&config, port, admin).await;
    let http = reqwest::Client::new();
    let sid = raw_session(&http, &gw.url()).await;
    let client = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    // A small receive buffer, so the gateway's writes block soon.
    client
        .set_recv_buffer_size(4096)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stream = client
        .connect(([127, 0, 0, 1], port).into())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    open_raw_stream(&mut stream, &sid).await;
    // About 16 MiB of events the client never reads; the call itself may stall once the
    // gateway stops taking them, so it runs on its own.
    let text = "x".repeat(16 * 1024);
    let (h, url, s) = (http.clone(), gw.url(), sid.clone());
    let call = tokio::spawn(async move {
        raw_call(
            &h,
            &url,
            &s,
            2,
            "notify",
            json!({"text": text, "times": 1000}),
        )
        .await
    });
    let reason = r#"mcp_gateway_refusals_total{reason="invalid_request"}"#;
    let cut = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let m = gw.metrics().await;
            if m.lines()
                .any(|l| l.starts_with(reason) && !l.ends_with(" 0"))
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(cut.is_ok(), "not cut:\n{}", gw.metrics().await);
    // What the kernel still held reaches the client, then the connection ends.
    let mut sink = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client's connection stayed open");
    call.abort();
}

/// With the pool's `read_timeout` set, a detached stream silent for longer is cut (not
/// ended cleanly), as through Pingora's path: the worker counts a failure. Over h2c and over
/// HTTP/1.1 alike.
#[tokio::test]
async fn a_silent_detached_stream_is_cut_after_read_timeout() {
    for h2c in [true, false] {
        let (port, admin) = (free_port(), free_port());
        let config = h2c_config(port, admin, h2c, "").replace(
            &format!("    h2c_streams: {h2c}\n"),
            &format!("    h2c_streams: {h2c}\n    read_timeout: 1s\n"),
        );
        let gw = Gateway::start_with(&config, port, admin).await;
        let http = reqwest::Client::new();
        let sid = raw_session(&http, &gw.url()).await;
        let mut stream = raw_stream(&http, &gw.url(), &sid).await;
        assert_eq!(stream.status(), 200);
        let ended = read_to_end(&mut stream, std::time::Duration::from_secs(10)).await;
        assert!(matches!(ended, Ok(Err(_))), "not cut: {ended:?}");
        let timeouts = r#"mcp_gateway_refusals_total{reason="upstream_timeout"}"#;
        let m = gw.metrics().await;
        assert!(
            m.lines()
                .any(|l| l.starts_with(timeouts) && !l.ends_with(" 0")),
            "{m}"
        );
    }
}

/// A configuration reload leaves detached streams alone: a stream opened before it keeps
/// carrying the worker's notifications after it.
#[tokio::test]
async fn a_detached_stream_survives_a_reload() {
    let (port, admin) = (free_port(), free_port());
    let config = h2c_config(port, admin, true, "");
    let gw = Gateway::start_with(&config, port, admin).await;
    let http = reqwest::Client::new();
    let sid = raw_session(&http, &gw.url()).await;
    let mut stream = raw_stream(&http, &gw.url(), &sid).await;
    assert_eq!(stream.status(), 200);
    let version = |v: Value| v["version"].as_u64().unwrap_or(0);
    let before = version(gw.admin_json("/admin/config").await);
    std::fs::write(
        gw.log.with_file_name("gateway.yaml"),
        format!("{config}limits: {{ max_body_bytes: 2000000 }}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    gw.signal(libc::SIGHUP);
    let reloaded = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        while version(gw.admin_json("/admin/config").await) <= before {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(reloaded.is_ok(), "no reload:\n{}", gw.log_text());
    notify_reaches(&http, &gw, &sid, 2, "after-reload", &mut stream).await;
}

/// A GET the worker refuses (no session id) gets the worker's own answer, the same through
/// the detached path as through Pingora's.
#[tokio::test]
async fn a_refused_get_gets_the_same_answer_with_and_without_h2c() {
    let mut answers = Vec::new();
    for h2c in [false, true] {
        let (port, admin) = (free_port(), free_port());
        let gw = Gateway::start_with(&h2c_config(port, admin, h2c, ""), port, admin).await;
        let r = reqwest::Client::new()
            .get(gw.url())
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_ne!(status, 200, "h2c {h2c}: {body}");
        answers.push((status, body));
    }
    assert_eq!(answers[0], answers[1]);
}

/// A worker that speaks only HTTP/1.1, as a remote server without h2c would: `initialize`
/// gets a session id, notifications 202, other requests a JSON answer, and the HTTP/2
/// preface a 400.
async fn http1_only_worker() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body_start = loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < body_start + length {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&buf[body_start..]).to_string();
                let answer = if head.starts_with("pri * http/2.0") {
                    "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_string()
                } else if body.contains("\"notifications/") {
                    "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_string()
                } else {
                    let json = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"http1-only","version":"1"}}}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: raw-1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                        json.len()
                    )
                };
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

/// `h2c_streams` on a pool whose worker does not speak h2c: its GET streams fail with 502
/// and one warning says what to change, but the worker is not ejected and keeps serving
/// POSTs.
#[tokio::test]
async fn a_worker_without_h2c_fails_get_streams_but_stays_in_the_pool() {
    let worker = http1_only_worker().await;
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        "listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\nroutes:\n  - {{ path: /mcp, pool: remote, upstream_path: /mcp }}\npools:\n  remote:\n    upstreams: [\"127.0.0.1:{worker}\"]\n    health: {{ kind: tcp, interval: 1s }}\n    h2c_streams: true\n"
    );
    let gw = Gateway::start_with(&config, port, admin).await;
    let http = reqwest::Client::new();
    let sid = raw_session(&http, &gw.url()).await;
    for _ in 0..4 {
        let r = raw_stream(&http, &gw.url(), &sid).await;
        assert_eq!(r.status(), 502);
    }
    let pools = gw.admin_json("/admin/pools").await;
    assert_eq!(
        pools["pools"][0]["workers"][0]["healthy"],
        true,
        "{pools}\n{}",
        gw.log_text()
    );
    assert_eq!(init_status(&http, &gw.url(), &[]).await, 200);
    let log = gw.log_text();
    assert_eq!(
        log.matches("set h2c_streams: false").count(),
        1,
        "one warning expected:\n{log}"
    );
    assert!(!log.contains("ejected"), "{log}");
}

#[tokio::test]
async fn http2_cleartext_clients_are_served() {
    let gw = Gateway::start(1).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = h2
        .post(gw.url())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("h2c: {e}"));
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("mcp-session-id"));
    let body = r.text().await.unwrap_or_default();
    assert!(find_response(&body, 1).is_some(), "{body}");
}

/// This machine's address on the interface of its default route (a UDP "connect" sends
/// nothing; it only picks the source address).
fn non_loopback_address() -> std::net::IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("udp: {e}"));
    s.connect("198.51.100.1:9").unwrap_or_else(|e| {
        panic!("this test needs a non-loopback address (a default route): {e}")
    });
    let ip = s.local_addr().unwrap_or_else(|e| panic!("{e}")).ip();
    assert!(!ip.is_loopback(), "{ip}");
    ip
}

/// A gateway with no issuer, no identity service and no admin token cannot tell an admin
/// apart: with its admin listener on every address, `/admin/*` still answers only callers
/// on loopback, while `/metrics` and the health checks stay reachable for scrapers.
#[tokio::test]
async fn an_admin_api_without_credentials_answers_loopback_only() {
    let (port, admin) = (free_port(), free_port());
    let cfg = spawn_pool_config(port, admin, 1, "").replace(
        &format!("admin: 127.0.0.1:{admin}"),
        &format!("admin: 0.0.0.0:{admin}"),
    );
    assert!(cfg.contains("admin: 0.0.0.0:"), "{cfg}");
    let gw = Gateway::start_with(&cfg, port, admin).await;
    let http = reqwest::Client::new();
    let get = |base: String, path: &'static str| {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };
    let local = format!("http://127.0.0.1:{admin}");
    let outside = format!("http://{}:{admin}", non_loopback_address());
    assert_eq!(get(local.clone(), "/admin/pools").await.0, 200);
    assert_eq!(get(local, "/admin/config").await.0, 200);
    for path in [
        "/admin/pools",
        "/admin/config",
        "/admin/users",
        "/admin/logs",
    ] {
        let (status, body) = get(outside.clone(), path).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("answers only on loopback"), "{path}: {body}");
    }
    let (status, metrics) = get(outside.clone(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("mcp_gateway_"), "{metrics}");
    assert_eq!(get(outside, "/healthz").await.0, 200);
    let log = std::fs::read_to_string(&gw.log).unwrap_or_default();
    assert!(log.contains("admin API refused"), "{log}");
}
