//! Stdio MCP servers no one here wrote, behind the gateway's stdio pools: the official
//! reference server `@modelcontextprotocol/server-everything` (npm) and a server built with
//! the official Python SDK (`mcp`, tests/fixtures/stdio_server.py), reached through the real
//! gateway binary by real MCP clients (rmcp, raw HTTP).
//!
//! Prerequisites installed by the tests themselves: the npm package (pinned, into a cache
//! folder beside the build output; tests that need it are skipped loudly when npm is
//! missing) and the Python venv (scripts/py-venv, the one scripts/python-tests uses).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::{json, Value};

/// The pinned reference server.
const EVERYTHING: &str = "@modelcontextprotocol/server-everything";
const EVERYTHING_VERSION: &str = "2026.8.31";
/// A value only the gateway's environment has; pools hand it on with `env_from`.
const SECRET_VAR: &str = "STDIO_POOLS_TEST_SECRET";
const SECRET: &str = "s3cret-from-the-gateway-env";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `index.js` of the reference server, installed once into `<target>/stdio-npm`;
/// None (after a loud message) when npm is missing.
fn everything_server() -> Option<PathBuf> {
    static DONE: OnceLock<Option<PathBuf>> = OnceLock::new();
    DONE.get_or_init(|| {
        let prefix = bin_dir()
            .parent()
            .map(|t| t.join("stdio-npm"))
            .unwrap_or_else(|| std::env::temp_dir().join("stdio-npm"));
        let pkg = prefix.join("node_modules").join(EVERYTHING);
        let installed = std::fs::read_to_string(pkg.join("package.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned));
        if installed.as_deref() != Some(EVERYTHING_VERSION) {
            if Command::new("npm").arg("--version").output().is_err() {
                eprintln!(
                    "\n!!!!!!!! SKIPPED: npm is not installed, so the tests with the reference \
                     server {EVERYTHING} cannot run. Install Node.js and npm. !!!!!!!!\n"
                );
                return None;
            }
            let status = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prefix)
                .arg(format!("{EVERYTHING}@{EVERYTHING_VERSION}"))
                .status()
                .unwrap_or_else(|e| panic!("npm install: {e}"));
            assert!(status.success(), "npm install {EVERYTHING} failed");
        }
        let index = pkg.join("dist").join("index.js");
        assert!(
            index.is_file(),
            "{} missing after npm install",
            index.display()
        );
        Some(index)
    })
    .clone()
}

/// The Python interpreter of the tests' venv (created by scripts/py-venv when missing).
fn python() -> PathBuf {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new(repo().join("scripts").join("py-venv"))
            .output()
            .unwrap_or_else(|e| panic!("scripts/py-venv: {e}"));
        assert!(
            out.status.success(),
            "scripts/py-venv failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let venv = String::from_utf8_lossy(&out.stdout).trim().to_string();
        PathBuf::from(venv).join("bin").join("python")
    })
    .clone()
}

fn fixture() -> PathBuf {
    repo().join("proxy/tests/fixtures/stdio_server.py")
}

/// A gateway with stdio pools: /py (per session, identity), /shared, /capped (one
/// child), /flood (few bad lines tolerated) and, with npm, /everything.
fn config(port: u16, admin: u16, everything: Option<&Path>) -> String {
    config_with(port, admin, everything, "")
}

fn config_with(port: u16, admin: u16, everything: Option<&Path>, extra: &str) -> String {
    let worker = worker_bin();
    let py = python();
    let fx = fixture();
    let pool = |name: &str, extra: &str| {
        format!(
            r#"  {name}:
    stdio:
      command: ["{py}", "{fx}"]
      bridge: "{worker}"
      env_from: {{ FIXTURE_SECRET: {SECRET_VAR} }}
{extra}    count: 1
    health: {{ kind: http, path: /health, interval: 1s }}
"#,
            py = py.display(),
            fx = fx.display(),
            worker = worker.display()
        )
    };
    let mut routes = String::new();
    let mut pools = String::new();
    for (name, extra) in [
        ("py", "      pass_identity: true\n      cwd: /\n"),
        ("shared", "      isolation: shared\n"),
        ("capped", "      max_children: 1\n"),
        ("flood", "      max_line_bytes: 4096\n"),
    ] {
        routes.push_str(&format!(
            "  - path: /{name}\n    pool: {name}\n    upstream_path: /mcp\n"
        ));
        pools.push_str(&pool(name, extra));
    }
    if let Some(index) = everything {
        routes.push_str("  - path: /everything\n    pool: everything\n    upstream_path: /mcp\n");
        pools.push_str(&format!(
            r#"  everything:
    stdio:
      command: [node, "{index}", stdio]
      bridge: "{worker}"
      isolation: per_session
      max_children: 8
      start_timeout: 20s
    count: 2
    health: {{ kind: http, path: /health, interval: 1s }}
"#,
            index = index.display(),
            worker = worker.display()
        ));
    }
    format!(
        "listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\nshutdown_grace: 3s\n{extra}routes:\n{routes}pools:\n{pools}"
    )
}

async fn gateway(everything: Option<&Path>) -> Gateway {
    // SAFETY: set before any thread reads it; every test sets the same value.
    std::env::set_var(SECRET_VAR, SECRET);
    let port = free_port();
    let admin = free_port();
    Gateway::start_with(&config(port, admin, everything), port, admin).await
}

/// The gateway's log without terminal colour codes.
fn plain_log(gw: &Gateway) -> String {
    let raw = gw.log_text();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn url(gw: &Gateway, route: &str) -> String {
    format!("http://127.0.0.1:{}/{route}", gw.port)
}

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
        .unwrap_or_else(|e| panic!("initialize {url}: {e}"));
    (client, rec)
}

async fn call(client: &Client, name: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(name.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("call {name}: {e}"))
}

fn text(r: &CallToolResult) -> String {
    r.content[0]
        .as_text()
        .map(|t| t.text.clone())
        .unwrap_or_else(|| panic!("no text content in {r:?}"))
}

fn progress_of(rec: &Recorder) -> Vec<f64> {
    rec.progress
        .lock()
        .map(|p| p.iter().map(|n| n.progress).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn reference_server_lists_calls_and_streams_progress_in_order() {
    let Some(index) = everything_server() else {
        return;
    };
    let gw = gateway(Some(&index)).await;
    let (client, rec) = connect(&url(&gw, "everything")).await;
    let info = client
        .peer_info()
        .unwrap_or_else(|| panic!("no server info"));
    let name = info.server_info.as_ref().map(|s| s.name.clone());
    assert!(
        name.as_deref().is_some_and(|n| n.contains("everything")),
        "server name {name:?}"
    );
    let tools = client
        .list_all_tools()
        .await
        .unwrap_or_else(|e| panic!("tools/list: {e}"));
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    for expected in [
        "echo",
        "get-sum",
        "trigger-long-running-operation",
        "get-env",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let echo = call(&client, "echo", json!({"message": "through the bridge"})).await;
    assert!(
        text(&echo).contains("through the bridge"),
        "{}",
        text(&echo)
    );
    let sum = call(&client, "get-sum", json!({"a": 40, "b": 2})).await;
    assert!(text(&sum).contains("42"), "{}", text(&sum));

    let done = call(
        &client,
        "trigger-long-running-operation",
        json!({"duration": 0.3, "steps": 3}),
    )
    .await;
    assert!(text(&done).contains("Steps: 3"), "{}", text(&done));
    // Every progress notification arrived before the result, in order.
    assert_eq!(progress_of(&rec), vec![1.0, 2.0, 3.0]);

    // The pool's env_from reached the child; the gateway's own variables did not.
    let env = text(&call(&client, "get-env", json!({})).await);
    assert!(
        !env.contains(SECRET),
        "a secret leaked into a pool without env_from"
    );
    assert!(
        !env.contains("MCP_WORKER_ID"),
        "bridge environment leaked: {env}"
    );
    let _ = client.cancel().await;

    // The server's stderr is in the gateway's log, with pool, worker and session named.
    let logged = wait_until(Duration::from_secs(10), || {
        plain_log(&gw).lines().any(|l| {
            l.contains("Starting default (STDIO) server")
                && l.contains("pool=everything")
                && l.contains("worker=")
                && l.contains("session=")
        })
    });
    assert!(
        logged,
        "child stderr not in the gateway log:\n{}",
        plain_log(&gw)
    );
}

#[tokio::test]
async fn python_sdk_server_two_sessions_get_two_children() {
    let gw = gateway(None).await;
    let (a, rec) = connect(&url(&gw, "py")).await;
    let (b, _) = connect(&url(&gw, "py")).await;
    let pid_a = text(&call(&a, "pid", json!({})).await);
    let pid_b = text(&call(&b, "pid", json!({})).await);
    assert_ne!(pid_a, pid_b, "two sessions share one process");
    for want in ["1", "2", "3"] {
        assert_eq!(text(&call(&a, "count", json!({})).await), want);
    }
    // b's process never saw a's calls.
    assert_eq!(text(&call(&b, "count", json!({})).await), "1");

    let r = call(&a, "count_slowly", json!({"n": 4})).await;
    assert_eq!(text(&r), "counted to 4");
    assert_eq!(progress_of(&rec), vec![1.0, 2.0, 3.0, 4.0]);

    assert_eq!(
        text(&call(&a, "cwd", json!({})).await),
        "/",
        "cwd not applied"
    );
    // env_from hands the gateway's variable on; no identity without authentication.
    assert_eq!(
        text(&call(&a, "whoami", json!({})).await),
        format!("|{SECRET}")
    );

    // Closing a session (DELETE) stops its child.
    let pid: i32 = pid_a.parse().unwrap_or_else(|e| panic!("pid {pid_a}: {e}"));
    assert!(alive(pid));
    let _ = a.cancel().await;
    assert!(
        wait_until(Duration::from_secs(10), || !alive(pid)),
        "child {pid} still alive after DELETE"
    );
    assert_eq!(text(&call(&b, "count", json!({})).await), "2");
    let _ = b.cancel().await;
    let log = plain_log(&gw);
    assert!(
        log.contains("py-stdio-fixture starting") && log.contains("pool=py"),
        "Python server stderr not in the log:\n{log}"
    );
}

#[tokio::test]
async fn a_killed_child_gives_404_then_a_fresh_session_works() {
    let gw = gateway(None).await;
    let http = reqwest::Client::new();
    let u = url(&gw, "py");
    let sid = raw_session(&http, &u).await;
    let (status, r) = raw_call(&http, &u, &sid, 2, "pid", json!({})).await;
    assert_eq!(status, 200);
    let pid_text = result_text(&r.unwrap_or_else(|| panic!("no answer")));
    let pid: i32 = pid_text
        .parse()
        .unwrap_or_else(|e| panic!("{pid_text}: {e}"));
    // SAFETY: kill(2) on the stdio server process started for this test's session.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let mut last = 0;
    for _ in 0..100 {
        let (status, _) = raw_call(&http, &u, &sid, 3, "pid", json!({})).await;
        last = status;
        if status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 404, "the session outlived its child");
    let sid2 = raw_session(&http, &u).await;
    assert_ne!(sid, sid2);
    let (status, r) = raw_call(&http, &u, &sid2, 2, "count", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(result_text(&r.unwrap_or_else(|| panic!("no answer"))), "1");
}

#[tokio::test]
async fn the_child_cap_gives_a_clear_error() {
    let gw = gateway(None).await;
    let http = reqwest::Client::new();
    let u = url(&gw, "capped");
    let sid = raw_session(&http, &u).await;
    let r = http
        .post(&u)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("second initialize: {e}"));
    assert!(
        r.headers().get("mcp-session-id").is_none(),
        "a session over the cap"
    );
    let body: Value = r.json().await.unwrap_or_else(|e| panic!("error body: {e}"));
    assert_eq!(body["error"]["code"], json!(-32001), "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("limit of 1"), "{msg}");
    // Ending the first session frees the slot.
    let del = http
        .delete(&u)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DELETE: {e}"));
    assert!(del.status().is_success(), "DELETE: {}", del.status());
    let mut ok = false;
    for _ in 0..100 {
        let r = http
            .post(&u)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(init_body("2025-06-18"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("initialize: {e}"));
        if r.headers().get("mcp-session-id").is_some() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no session after the slot was freed");
}

#[tokio::test]
async fn a_shared_child_serves_every_session_with_remapped_ids() {
    let gw = gateway(None).await;
    let (a, rec_a) = connect(&url(&gw, "shared")).await;
    let (b, rec_b) = connect(&url(&gw, "shared")).await;
    assert_eq!(
        text(&call(&a, "pid", json!({})).await),
        text(&call(&b, "pid", json!({})).await),
        "shared isolation started two processes"
    );
    // Both clients number their requests the same way, concurrently: the bridge keeps
    // them apart, and progress goes to the caller that asked for it.
    let (ra, rb) = tokio::join!(
        call(&a, "count_slowly", json!({"n": 3})),
        call(&b, "count_slowly", json!({"n": 5}))
    );
    assert_eq!(text(&ra), "counted to 3");
    assert_eq!(text(&rb), "counted to 5");
    assert_eq!(progress_of(&rec_a), vec![1.0, 2.0, 3.0]);
    assert_eq!(progress_of(&rec_b), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let first: u32 = text(&call(&a, "count", json!({})).await)
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let second: u32 = text(&call(&b, "count", json!({})).await)
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        second,
        first + 1,
        "the shared process counts every session's calls"
    );
    let _ = a.cancel().await;
    let _ = b.cancel().await;
}

#[tokio::test]
async fn a_child_flooding_stdout_is_cut_off() {
    let gw = gateway(None).await;
    let http = reqwest::Client::new();
    let u = url(&gw, "flood");
    let other = raw_session(&http, &u).await;
    let sid = raw_session(&http, &u).await;
    let (status, r) = raw_call(&http, &u, &sid, 2, "flood", json!({"lines": 500})).await;
    assert_eq!(status, 200);
    let r = r.unwrap_or_else(|| panic!("no answer to the flooding call"));
    assert_eq!(r["error"]["code"], json!(-32003), "{r}");
    let (status, _) = raw_call(&http, &u, &sid, 3, "count", json!({})).await;
    assert_eq!(status, 404, "the flooding child's session lives on");
    // The other session (its own child) was not disturbed.
    let (status, r) = raw_call(&http, &u, &other, 2, "count", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(result_text(&r.unwrap_or_else(|| panic!("no answer"))), "1");
    let log = plain_log(&gw);
    assert!(log.contains("not JSON-RPC"), "bad lines not logged:\n{log}");
    assert!(log.contains("floods stdout"), "cut-off not logged:\n{log}");
}

#[tokio::test]
async fn protocol_2026_07_28_requests_are_served_statelessly() {
    let gw = gateway(None).await;
    for (route, counts) in [("py", ["1", "1"]), ("shared", ["1", "2"])] {
        let rec = Recorder::default();
        let client = rec
            .clone()
            .serve_with_lifecycle(
                StreamableHttpClientTransport::from_uri(url(&gw, route)),
                ClientLifecycleMode::Discover {
                    preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                },
            )
            .await
            .unwrap_or_else(|e| panic!("server/discover on /{route}: {e}"));
        let info = client
            .peer_info()
            .unwrap_or_else(|| panic!("no server info"));
        assert_eq!(info.protocol_version, ProtocolVersion::V_2026_07_28);
        let tools = client
            .list_all_tools()
            .await
            .unwrap_or_else(|e| panic!("tools/list: {e}"));
        assert!(
            tools.iter().any(|t| t.name == "count"),
            "/{route}: {tools:?}"
        );
        // Per-session isolation gives every stateless request a fresh process; a shared
        // process keeps counting.
        for want in counts {
            assert_eq!(
                text(&call(&client, "count", json!({})).await),
                want,
                "/{route}"
            );
        }
        let r = call(&client, "count_slowly", json!({"n": 2})).await;
        assert_eq!(text(&r), "counted to 2");
        assert_eq!(progress_of(&rec), vec![1.0, 2.0], "/{route}");
        let _ = client.cancel().await;
    }
}

#[tokio::test]
async fn bridges_pass_the_gateways_health_checks() {
    let gw = gateway(None).await;
    // Health is probed with GET /health on every bridge (kind: http).
    let m = gw.metrics().await;
    for pool in ["py", "shared", "capped", "flood"] {
        assert!(
            m.lines()
                .any(|l| l.starts_with("mcp_gateway_worker_healthy")
                    && l.contains(&format!("pool=\"{pool}\""))
                    && l.ends_with(" 1")),
            "no healthy bridge in {pool}:\n{m}"
        );
    }
}

#[tokio::test]
async fn per_session_children_get_the_callers_identity() {
    const HS_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
    const ISS: &str = "https://id.stdio.test";
    std::env::set_var(SECRET_VAR, SECRET);
    std::env::set_var("STDIO_POOLS_HS_SECRET", HS_SECRET);
    let auth = format!(
        "auth:\n  issuers:\n    - name: t\n      issuer: {ISS}\n      audiences: [stdio]\n      algorithms: [HS256]\n      secret_env: STDIO_POOLS_HS_SECRET\n"
    );
    let (port, admin) = (free_port(), free_port());
    let gw = Gateway::start_with(&config_with(port, admin, None, &auth), port, admin).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let u = url(&gw, "py");
    for user in ["alice", "bob"] {
        let claims = json!({"iss": ISS, "aud": "stdio", "sub": user, "exp": now + 600, "iat": now});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(HS_SECRET.as_bytes()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let http = bearer_client(&token);
        let sid = raw_session(&http, &u).await;
        let (status, r) = raw_call(&http, &u, &sid, 2, "whoami", json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(
            result_text(&r.unwrap_or_else(|| panic!("no answer"))),
            format!("{user}|{SECRET}")
        );
    }
    // Without a token the gateway refuses before any child starts.
    let r = reqwest::Client::new()
        .post(&u)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401);
}

/// A client that can sample: answers the server's `sampling/createMessage` requests.
/// (Sampling is deprecated in the newest protocol, but the session generation that
/// stdio servers speak has it, and the reference server uses it.)
#[derive(Clone)]
struct Sampler;

#[allow(deprecated)]
impl ClientHandler for Sampler {
    fn get_info(&self) -> rmcp::model::ClientConfig {
        let mut c = rmcp::model::ClientConfig::default();
        c.capabilities.sampling = Some(rmcp::model::SamplingCapability::default());
        c
    }

    async fn create_message(
        &self,
        params: rmcp::model::CreateMessageRequestParams,
        _cx: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        let asked = serde_json::to_string(&params.messages).unwrap_or_default();
        Ok(rmcp::model::CreateMessageResult::new(
            rmcp::model::SamplingMessage::assistant_text(format!(
                "sampled by the test client (asked {})",
                asked.contains("bridge prompt")
            )),
            "test-model".into(),
        ))
    }
}

#[tokio::test]
async fn server_to_client_requests_and_their_answers_are_relayed() {
    let Some(index) = everything_server() else {
        return;
    };
    let gw = gateway(Some(&index)).await;
    let client = Sampler
        .serve(StreamableHttpClientTransport::from_uri(url(
            &gw,
            "everything",
        )))
        .await
        .unwrap_or_else(|e| panic!("initialize: {e}"));
    let Value::Object(args) = json!({"prompt": "bridge prompt", "maxTokens": 10}) else {
        panic!()
    };
    let r = client
        .call_tool(CallToolRequestParams::new("trigger-sampling-request").with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("trigger-sampling-request: {e}"));
    let t = r.content[0]
        .as_text()
        .map(|t| t.text.clone())
        .unwrap_or_default();
    // The server asked the client (through the bridge) and got the client's answer back.
    assert!(t.contains("sampled by the test client (asked true)"), "{t}");
    assert!(t.contains("test-model"), "{t}");
    let _ = client.cancel().await;
}

#[tokio::test]
async fn a_shared_child_that_dies_ends_every_session_of_its_bridge() {
    let gw = gateway(None).await;
    let http = reqwest::Client::new();
    let u = url(&gw, "shared");
    let a = raw_session(&http, &u).await;
    let b = raw_session(&http, &u).await;
    let (_, r) = raw_call(&http, &u, &a, 2, "pid", json!({})).await;
    let pid_text = result_text(&r.unwrap_or_else(|| panic!("no answer")));
    let pid: i32 = pid_text
        .parse()
        .unwrap_or_else(|e| panic!("{pid_text}: {e}"));
    // SAFETY: kill(2) on the shared stdio server this test's bridge started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    for sid in [&a, &b] {
        let mut last = 0;
        for _ in 0..100 {
            last = raw_call(&http, &u, sid, 3, "pid", json!({})).await.0;
            if last == 404 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last, 404, "a session outlived the shared process");
    }
    // The next session starts a new shared process.
    let c = raw_session(&http, &u).await;
    let (status, r) = raw_call(&http, &u, &c, 2, "pid", json!({})).await;
    assert_eq!(status, 200);
    assert_ne!(
        result_text(&r.unwrap_or_else(|| panic!("no answer"))),
        pid_text
    );
}
