//! Test harness: start the real gateway binary (which starts real worker processes) on
//! free ports with a generated configuration, and talk to it with real clients.
#![allow(dead_code)]

pub mod certs;
pub mod db;
pub mod redis_servers;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const PROXY: &str = env!("CARGO_BIN_EXE_mcp-proxy");

/// Where the binaries are (the worker is built by `cargo build --workspace`).
pub fn bin_dir() -> PathBuf {
    Path::new(PROXY)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn worker_bin() -> PathBuf {
    let p = bin_dir().join("mcp-worker");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests (scripts/test does)",
        p.display()
    );
    p
}

/// reqwest is built without a bundled TLS provider (the gateway installs ring's); tests
/// that build HTTP clients install it the same way.
pub fn init_tls() {
    mcp_proxy::auth::jwks::install_crypto_provider();
}

/// A port nothing listens on, and one this test process has not been given before: the
/// kernel may hand the same ephemeral port to two binds in a row once the first is closed,
/// and a gateway given it for both `listen` and `admin` refuses its configuration.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    init_tls();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mcp-gw-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir: {e}"));
    dir.join(name)
}

pub fn write_file(name: &str, text: &str) -> PathBuf {
    let p = temp_path(name);
    let mut f = std::fs::File::create(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    p
}

/// The standard test configuration: /mcp to a spawned pool of `count` tools workers.
pub fn spawn_pool_config(port: u16, admin: u16, count: usize, extra: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
shutdown_grace: 3s
routes:
  - path: /mcp
    pool: tools
    upstream_path: /mcp
pools:
  tools:
    spawn:
      command: ["{worker}", tools, --id, "{{id}}"]
      count: {count}
      stop_grace: 2s
    balance: round_robin
    health: {{ kind: http, path: /health, interval: 1s }}
{extra}"#,
        worker = worker_bin().display()
    )
}

pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub admin: u16,
    pub log: PathBuf,
}

impl Gateway {
    /// Start with the standard configuration and `count` workers; wait until ready.
    pub async fn start(count: usize) -> Gateway {
        let port = free_port();
        let admin = free_port();
        Gateway::start_with(&spawn_pool_config(port, admin, count, ""), port, admin).await
    }

    pub async fn start_with(config: &str, port: u16, admin: u16) -> Gateway {
        let cfg = write_file("gateway.yaml", config);
        let log = cfg.with_file_name("gateway.log");
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let child = Command::new(PROXY)
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("start gateway: {e}"));
        let gw = Gateway {
            child,
            port,
            admin,
            log,
        };
        gw.wait_ready(Duration::from_secs(30)).await;
        gw
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_ready(&self, limit: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = client.get(self.admin_url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "gateway not ready after {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET` an admin endpoint (open admin API, loopback) as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(self.admin_url(path))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// `mcp_gateway_ratelimit_redis_down`: 1 while the gateway has no Redis connection.
    pub async fn redis_down(&self) -> Option<i64> {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix("mcp_gateway_ratelimit_redis_down "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Wait (10 s at most) for the rate limiter's `cannot connect to Redis` warning, which
    /// must come; the log then.
    pub fn wait_redis_refused(&self) -> String {
        let warned = wait_until(Duration::from_secs(10), || {
            self.log_text()
                .contains("rate limits: cannot connect to Redis")
        });
        let log = self.log_text();
        assert!(warned, "no `cannot connect to Redis` warning:\n{log}");
        log
    }

    /// Wait until the gateway has its Redis connection (the gauge reads 0).
    pub async fn wait_redis_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.redis_down().await != Some(0) {
            assert!(
                Instant::now() < deadline,
                "the gateway did not connect to Redis; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .unwrap_or_else(|e| panic!("metrics: {e}"))
            .text()
            .await
            .unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Wait for the gateway to exit; panics after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "gateway did not exit within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Children of a process, from /proc.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        if let Some(after) = stat.rsplit_once(") ").map(|(_, a)| a) {
            let ppid = after
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<i32>().ok());
            if ppid == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

/// Is the process alive (and not a zombie)?
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .map(|(_, a)| a.starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    cond()
}

pub const ACCEPT: &str = "application/json, text/event-stream";

/// The value of a metric line `name{labels}` (or `name` alone) in Prometheus text; 0 when
/// absent.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name_and_labels).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

pub fn init_body(version: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{version}","capabilities":{{}},"clientInfo":{{"name":"raw-test","version":"1"}}}}}}"#
    )
}

/// Open a session with raw HTTP; returns the (sealed) session id.
pub async fn raw_session(client: &reqwest::Client, url: &str) -> String {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("initialize: {e}"));
    assert_eq!(r.status(), 200);
    let sid = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no session id"));
    let _ = r.bytes().await;
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("initialized: {e}"));
    assert_eq!(r.status(), 202);
    sid
}

/// Open the standalone SSE stream (GET) of a raw-HTTP session; the response is returned as
/// it is, its status unchecked.
pub async fn raw_stream(client: &reqwest::Client, url: &str, sid: &str) -> reqwest::Response {
    client
        .get(url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET stream: {e}"))
}

/// The JSON-RPC message with `"id": id` in a JSON or SSE answer body.
pub fn find_response(body: &str, id: i64) -> Option<serde_json::Value> {
    let try_one = |text: &str| -> Option<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
        (v.get("id").and_then(|i| i.as_i64()) == Some(id)).then_some(v)
    };
    if let Some(v) = try_one(body) {
        return Some(v);
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(try_one)
}

/// A tools/call over raw HTTP in a session; returns (status, parsed response if any).
pub async fn raw_call(
    client: &reqwest::Client,
    url: &str,
    sid: &str,
    id: i64,
    tool: &str,
    args: serde_json::Value,
) -> (u16, Option<serde_json::Value>) {
    let body = serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}});
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("call: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    if status != 200 {
        return (status, serde_json::from_str(&text).ok());
    }
    (status, find_response(&text, id))
}

/// The text of the first content block of a tools/call result.
pub fn result_text(v: &serde_json::Value) -> String {
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {v}"))
        .to_string()
}

/// An `initialize` request with extra headers; the HTTP status (0 when it could not be sent).
pub async fn init_status(http: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(init_body("2025-06-18"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// A client that sends `Authorization: Bearer <token>` on every request.
pub fn bearer_client(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

pub const TEST_PASSWORD: &str = "a fine long passphrase";

/// Log in to the gateway's identity service at `base`; the access token.
pub async fn login(base: &str, email: &str) -> String {
    login_tokens(base, email).await.0
}

/// Log in to the gateway's identity service at `base`; (access token, refresh token).
pub async fn login_tokens(base: &str, email: &str) -> (String, String) {
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({"email": email, "password": TEST_PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"))
        .json()
        .await
        .unwrap_or_default();
    let token = v["access_token"].as_str().unwrap_or_default();
    assert!(!token.is_empty(), "login failed: {v}");
    let refresh = v["refresh_token"].as_str().unwrap_or_default();
    (token.to_string(), refresh.to_string())
}

/// Register `email` (password [`TEST_PASSWORD`]) and log in; (user id, access token).
pub async fn register_and_login(base: &str, email: &str) -> (String, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}/auth/register"))
        .json(&serde_json::json!({"email": email, "password": TEST_PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("register: {e}"));
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap_or_default()["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (id, login(base, email).await)
}

/// Create an API key through the identity service at `base`; (key id, key).
pub async fn create_api_key(base: &str, token: &str, name: &str) -> (String, String) {
    let v: serde_json::Value = bearer_client(token)
        .post(format!("{base}/auth/api-keys"))
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("create an API key: {e}"))
        .json()
        .await
        .unwrap_or_default();
    (
        v["id"].as_str().unwrap_or_default().to_string(),
        v["key"].as_str().unwrap_or_default().to_string(),
    )
}

/// Revoke API key `id` with the owner's token; the revocation must be accepted.
pub async fn revoke_api_key(base: &str, token: &str, id: &str) {
    let r = bearer_client(token)
        .delete(format!("{base}/auth/api-keys/{id}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("revoke an API key: {e}"));
    assert!(r.status().is_success(), "revoke an API key: {}", r.status());
}
