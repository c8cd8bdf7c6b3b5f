//! The stdio bridge served in-process, relaying to real child processes: the
//! project's tools server over stdio (`mcp-worker tools-stdio`), and programs that
//! misbehave on purpose. Clients are rmcp and raw HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use mcp_workers::stdio::{Isolation, StdioOptions};
use mcp_workers::stdio_child::ChildSpec;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{json, Value};
use tokio::sync::oneshot;

const WORKER: &str = env!("CARGO_BIN_EXE_mcp-worker");
const ACCEPT: &str = "application/json, text/event-stream";

fn opts(command: &[&str], isolation: Isolation) -> StdioOptions {
    StdioOptions {
        worker_id: "bridge-test".into(),
        pool: "test".into(),
        isolation,
        max_children: 4,
        start_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(600),
        pass_identity: false,
        child: ChildSpec {
            program: command[0].into(),
            args: command[1..].iter().map(|s| s.to_string()).collect(),
            cwd: None,
            env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
            rlimit_as: None,
            rlimit_cpu: None,
            max_line_bytes: 1 << 20,
            max_bad_lines: 3,
            stop_grace: Duration::from_millis(500),
        },
        shutdown_grace: Duration::from_secs(1),
    }
}

struct Bridge {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Bridge {
    async fn start(o: StdioOptions) -> Bridge {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(mcp_workers::stdio::serve_stdio(listener, o, async move {
            let _ = stopped.await;
        }));
        Bridge {
            addr,
            stop: Some(stop),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn init() -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
    .to_string()
}

async fn post(url: &str, sid: Option<&str>, body: String) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(body);
    if let Some(s) = sid {
        r = r.header("mcp-session-id", s);
    }
    r.send().await.expect("POST")
}

#[tokio::test]
async fn rmcp_client_through_the_bridge_in_both_modes() {
    for isolation in [Isolation::PerSession, Isolation::Shared] {
        let b = Bridge::start(opts(&[WORKER, "tools-stdio"], isolation)).await;
        let client =
            ().serve(StreamableHttpClientTransport::from_uri(b.url()))
                .await
                .expect("initialize");
        let Value::Object(args) = json!({"a": 40, "b": 2}) else {
            panic!()
        };
        let r = client
            .call_tool(CallToolRequestParams::new("add").with_arguments(args))
            .await
            .expect("add");
        assert_eq!(
            r.content[0].as_text().map(|t| t.text.as_str()),
            Some("42"),
            "{isolation:?}"
        );
        let tools = client.list_all_tools().await.expect("tools/list");
        assert!(tools.iter().any(|t| t.name == "slow_count"));
        let _ = client.cancel().await;
        let health: Value = reqwest::get(format!("http://{}/health", b.addr))
            .await
            .expect("health")
            .json()
            .await
            .expect("health json");
        assert_eq!(health["status"], "ok");
        assert_eq!(health["kind"], "stdio");
        assert_eq!(health["worker"], "bridge-test");
    }
}

#[tokio::test]
async fn bad_requests_get_defined_errors() {
    let b = Bridge::start(opts(&[WORKER, "tools-stdio"], Isolation::PerSession)).await;
    let u = b.url();
    let r = post(&u, None, "{not json".into()).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], -32700);

    let r = post(&u, None, "[]".into()).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], -32600);

    let r = post(
        &u,
        None,
        json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string(),
    )
    .await;
    assert_eq!(r.status(), 400, "a request without session or 2026 _meta");

    let r = post(
        &u,
        Some("no-such-session"),
        json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string(),
    )
    .await;
    assert_eq!(r.status(), 404);

    let c = reqwest::Client::new();
    let r = c.get(&u).send().await.expect("GET");
    assert_eq!(r.status(), 405);
    let r = c
        .delete(&u)
        .header("mcp-session-id", "no-such-session")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_missing_program_and_a_silent_one_give_start_errors() {
    let b = Bridge::start(opts(&["/nonexistent/stdio-server"], Isolation::PerSession)).await;
    let v: Value = post(&b.url(), None, init())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["error"]["code"], -32002, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("cannot start"));

    let mut o = opts(&["sleep", "30"], Isolation::PerSession);
    o.start_timeout = Duration::from_millis(300);
    let b = Bridge::start(o).await;
    let r = post(&b.url(), None, init()).await;
    assert!(r.headers().get("mcp-session-id").is_none());
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], -32002, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("within"));
}

#[tokio::test]
async fn idle_sessions_are_ended() {
    let mut o = opts(&[WORKER, "tools-stdio"], Isolation::PerSession);
    o.idle_timeout = Duration::from_millis(400);
    let b = Bridge::start(o).await;
    let r = post(&b.url(), None, init()).await;
    let sid = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("session id");
    let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string();
    assert_eq!(post(&b.url(), Some(&sid), note.clone()).await.status(), 202);
    let mut status = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = post(&b.url(), Some(&sid), note.clone())
            .await
            .status()
            .as_u16();
        if status == 404 {
            break;
        }
        // Keep quiet long enough for the idle timeout to pass.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(status, 404, "the idle session was not ended");
    let health: Value = reqwest::get(format!("http://{}/health", b.addr))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["sessions"], 0);
}

#[tokio::test]
async fn the_cpu_limit_ends_a_spinning_server() {
    // Spins without ever answering: only RLIMIT_CPU can end it before the start timeout.
    let mut o = opts(&["sh", "-c", "while :; do :; done"], Isolation::PerSession);
    o.child.rlimit_cpu = Some(1);
    o.start_timeout = Duration::from_secs(60);
    let b = Bridge::start(o).await;
    let v: Value = post(&b.url(), None, init())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["error"]["code"], -32002, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("exited before answering"), "{msg}");
}
