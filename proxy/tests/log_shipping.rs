//! Log shipping end to end, with real parts: the gateway binary, real workers, SQLite,
//! PostgreSQL (the shared test server, or a throwaway one started here for the fault tests)
//! and Redis (a throwaway `redis-server` per test). Every record of N requests arrives
//! exactly once, also when Redis, the database or the gateway itself dies mid-run.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::db::{unique_name, PgSchema, SqliteDb};
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sqlx::Row;

const ISS: &str = "https://logship.example.test";
const AUD: &str = "logship-test";
const SECRET: &str = "a-log-shipping-test-secret-of-32-bytes!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token(sub: &str, roles: &[&str]) -> String {
    let claims = json!({"iss": ISS, "aud": AUD, "sub": sub, "exp": now() + 600, "iat": now(),
                        "roles": roles});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------- throwaway servers

/// A `redis-server` of this test on a free port. Its append-only file is fsynced on every
/// write, so a SIGKILL loses nothing Redis acknowledged (what a production Redis holding a
/// log stream should be configured for; see docs/logging.md).
struct OwnRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    async fn start() -> OwnRedis {
        let dir = std::env::temp_dir().join(unique_name("logship_redis"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let mut r = OwnRedis {
            port: free_port(),
            dir,
            child: None,
        };
        r.restart().await;
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server must be installed: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    let pong: redis::RedisResult<String> =
                        redis::cmd("PING").query_async(&mut c).await;
                    if pong.is_ok() {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pg_program(name: &str) -> PathBuf {
    let bindir = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(dir) = bindir.filter(|d| PathBuf::from(d).join(name).is_file()) {
        return PathBuf::from(dir).join(name);
    }
    // Debian's postgresql package keeps the server programs off PATH.
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").join(name))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|p| p.is_file());
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from(name))
}

fn id_of(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A PostgreSQL server of this test (initdb into a temporary folder) on a free port. As
/// root, it runs as the `postgres` user (PostgreSQL refuses root) through `setpriv`.
struct OwnPostgres {
    port: u16,
    dir: PathBuf,
    as_postgres: bool,
    child: Option<Child>,
}

impl OwnPostgres {
    fn command(&self, program: &str) -> Command {
        if self.as_postgres {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]);
            c.arg(pg_program(program));
            c
        } else {
            Command::new(pg_program(program))
        }
    }

    async fn start() -> OwnPostgres {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let dir = std::env::temp_dir().join(unique_name("logship_pg"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        if root {
            let (Some(uid), Some(gid)) = (id_of("-u"), id_of("-g")) else {
                panic!(
                    "these tests run as root and PostgreSQL refuses root: a `postgres` user is \
                     needed to run the throwaway server"
                );
            };
            let c = std::ffi::CString::new(dir.to_string_lossy().as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            // SAFETY: chown(2) on a path we just created.
            assert_eq!(unsafe { libc::chown(c.as_ptr(), uid, gid) }, 0, "chown");
        }
        let pg = OwnPostgres {
            port: free_port(),
            dir,
            as_postgres: root,
            child: None,
        };
        let data = pg.dir.join("data");
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap_or_else(|e| {
                panic!("initdb (PostgreSQL server binaries) must be installed: {e}")
            });
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = pg;
        pg.restart().await;
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn restart(&mut self) {
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("postgres: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            use sqlx::Connection;
            if let Ok(c) = sqlx::postgres::PgConnection::connect(&self.url()).await {
                let _ = c.close().await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "throwaway PostgreSQL did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fast shutdown (SIGINT), and wait for the server to exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGINT);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- gateway and traffic

struct Setup {
    db_url: String,
    redis_url: Option<String>,
    spool_dir: PathBuf,
    logging: String,
}

impl Setup {
    fn new(db_url: String, redis_url: Option<String>) -> Setup {
        Setup {
            db_url,
            redis_url,
            spool_dir: std::env::temp_dir().join(unique_name("logship_spool")),
            logging: "  batch_interval: 50ms\n  claim_idle: 2s\n".into(),
        }
    }

    fn config(&self, port: u16, admin: u16) -> String {
        let mut extra = format!(
            r#"auth:
  issuers:
    - name: test
      issuer: {ISS}
      audiences: [{AUD}]
      algorithms: [HS256]
      secret_env: LOGSHIP_TEST_SECRET
database:
  url: "{db}"
logging:
  spool_dir: "{spool}"
{logging}"#,
            db = self.db_url,
            spool = self.spool_dir.display(),
            logging = self.logging,
        );
        if let Some(r) = &self.redis_url {
            let prefix = unique_name("lt");
            extra.push_str(&format!("redis:\n  url: \"{r}\"\n  prefix: \"{prefix}\"\n"));
        }
        spawn_pool_config(port, admin, 1, &extra)
    }

    async fn start(&self) -> Gateway {
        std::env::set_var("LOGSHIP_TEST_SECRET", SECRET);
        let (port, admin) = (free_port(), free_port());
        Gateway::start_with(&self.config(port, admin), port, admin).await
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.spool_dir);
    }
}

fn client(user: &str) -> reqwest::Client {
    bearer_client(&token(user, &["user"]))
}

/// One `tools/call add` with `X-Request-Id: id`; returns the HTTP status.
async fn call_add(http: &reqwest::Client, url: &str, sid: &str, id: &str, n: i64) -> u16 {
    let body = json!({"jsonrpc":"2.0","id":n,"method":"tools/call",
                      "params":{"name":"add","arguments":{"a":n,"b":1}}});
    match http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18")
        .header("x-request-id", id)
        .body(body.to_string())
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(e) => panic!("call {id}: {e}"),
    }
}

/// `count` calls with ids `{tag}-{from}` … ; each must succeed.
async fn calls(
    gw: &Gateway,
    http: &reqwest::Client,
    sid: &str,
    tag: &str,
    from: usize,
    count: usize,
) {
    for i in from..from + count {
        let status = call_add(http, &gw.url(), sid, &format!("{tag}-{i}"), i as i64).await;
        assert_eq!(status, 200, "call {tag}-{i}");
    }
}

async fn pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// Wait until `expected` rows of `tag` are stored, then check it stays exactly that.
async fn expect_rows(url: &str, tag: &str, expected: i64, limit: Duration, gw: Option<&Gateway>) {
    let deadline = Instant::now() + limit;
    let mut n = 0;
    while Instant::now() < deadline {
        n = common::db::count_log_rows(url, tag).await;
        if n >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        n,
        expected,
        "rows of {tag}; gateway log:\n{}",
        gw.map(|g| g.log_text()).unwrap_or_default()
    );
    // Nothing more arrives later (no second copy of any record: request_id is unique, and
    // the count must not move past N).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        common::db::count_log_rows(url, tag).await,
        expected,
        "rows of {tag} changed"
    );
}

async fn wait_metric(gw: &Gateway, name: &str, at_least: f64, limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let v = metric(&gw.metrics().await, name);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// N requests, then every field that matters checked in the stored rows.
async fn n_requests_n_rows(db_url: &str, redis: Option<&OwnRedis>) {
    const N: usize = 25;
    let setup = Setup::new(db_url.to_string(), redis.map(|r| r.url()));
    let gw = setup.start().await;
    let http = client("alice");
    let sid = raw_session(&http, &gw.url()).await;
    let tag = unique_name("n");
    calls(&gw, &http, &sid, &tag, 0, N).await;
    expect_rows(db_url, &tag, N as i64, Duration::from_secs(30), Some(&gw)).await;
    let p = pool(db_url).await;
    let rows = sqlx::query(
        "SELECT request_id, http_method, rpc_method, tool, user_id, status, route, pool, worker, \
         auth, upstream_us, latency_us, bytes_in, bytes_out, protocol_version, session_hash \
         FROM request_logs WHERE request_id LIKE $1",
    )
    .bind(format!("{tag}-%"))
    .fetch_all(&p)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), N);
    for r in &rows {
        let s = |c: &str| {
            r.try_get::<Option<String>, _>(c)
                .unwrap_or_else(|e| panic!("{c}: {e}"))
        };
        let i = |c: &str| {
            r.try_get::<Option<i64>, _>(c)
                .unwrap_or_else(|e| panic!("{c}: {e}"))
        };
        assert_eq!(s("http_method").as_deref(), Some("POST"));
        assert_eq!(s("rpc_method").as_deref(), Some("tools/call"));
        assert_eq!(s("tool").as_deref(), Some("add"));
        assert_eq!(s("user_id").as_deref(), Some("alice"));
        assert_eq!(i("status"), Some(200));
        assert_eq!(s("route").as_deref(), Some("/mcp"));
        assert_eq!(s("pool").as_deref(), Some("tools"));
        assert_eq!(s("worker").as_deref(), Some("tools-0"));
        assert_eq!(s("auth").as_deref(), Some("ok"));
        assert_eq!(s("protocol_version").as_deref(), Some("2025-06-18"));
        assert_eq!(s("session_hash").map(|h| h.len()), Some(16));
        assert!(i("upstream_us").is_some_and(|u| u > 0));
        assert!(i("latency_us") >= i("upstream_us"));
        assert!(i("bytes_in").is_some_and(|b| b > 50), "bytes_in");
        assert!(i("bytes_out").is_some_and(|b| b > 20), "bytes_out");
    }
    // The session's own two requests (initialize, notifications/initialized) are recorded
    // too, under ids the gateway made.
    let session_rows: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM request_logs WHERE user_id = 'alice' AND \
         rpc_method IN ('initialize', 'notifications/initialized')",
    )
    .fetch_one(&p)
    .await
    .and_then(|r| r.try_get("n"))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(session_rows >= 2, "session rows: {session_rows}");
    p.close().await;
    let m = gw.metrics().await;
    assert!(metric(&m, r#"mcp_gateway_tool_calls_total{tool="add"}"#) >= N as f64);
    let sink = if redis.is_some() { "redis" } else { "database" };
    assert!(
        metric(
            &m,
            &format!(r#"mcp_gateway_log_shipped_total{{sink="{sink}"}}"#)
        ) >= N as f64
    );
    if redis.is_some() {
        assert!(metric(&m, "mcp_gateway_log_stored_total") >= N as f64);
    }
    assert_eq!(
        metric(&m, r#"mcp_gateway_log_dropped_total{reason="queue_full"}"#),
        0.0
    );
}

#[tokio::test]
async fn n_requests_n_rows_sqlite_direct() {
    let db = SqliteDb::new("logship");
    n_requests_n_rows(&db.url(), None).await;
}

/// A client closing its GET stream is a normal end: the record says `client_closed`, with the
/// stream's 200 and no JSON-RPC error, and the gateway logs no proxy error for it. Both ways
/// a stream is carried: Pingora's proxy path, and the detached task of `h2c_streams` pools.
#[tokio::test]
async fn a_get_stream_the_client_closes_is_logged_as_client_closed() {
    for h2c in [false, true] {
        a_get_stream_the_client_closes(h2c).await;
    }
}

/// Session `sid`'s GET stream with `X-Request-Id: id` (to find its record), answered 200.
async fn tagged_stream(
    http: &reqwest::Client,
    gw: &Gateway,
    sid: &str,
    id: &str,
) -> reqwest::Response {
    let stream = http
        .get(gw.url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18")
        .header("x-request-id", id)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET stream: {e}"));
    assert_eq!(stream.status(), 200);
    stream
}

async fn a_get_stream_the_client_closes(h2c: bool) {
    let db = SqliteDb::new("logship");
    let setup = Setup::new(db.url(), None);
    std::env::set_var("LOGSHIP_TEST_SECRET", SECRET);
    let (port, admin) = (free_port(), free_port());
    let config = setup.config(port, admin).replace(
        "    balance: round_robin\n",
        &format!("    balance: round_robin\n    h2c_streams: {h2c}\n"),
    );
    let gw = Gateway::start_with(&config, port, admin).await;
    let http = client("alice");
    let sid = raw_session(&http, &gw.url()).await;
    let tag = unique_name("closed");
    let mut stream = tagged_stream(&http, &gw, &sid, &format!("{tag}-0")).await;
    // The worker's priming event, then the client hangs up.
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.chunk()).await;
    drop(stream);
    expect_rows(&db.url(), &tag, 1, Duration::from_secs(30), Some(&gw)).await;
    let p = pool(&db.url()).await;
    let row = sqlx::query(
        "SELECT http_method, status, error, rpc_error, session_hash, worker FROM request_logs WHERE request_id = $1",
    )
    .bind(format!("{tag}-0"))
    .fetch_one(&p)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let s = |c: &str| {
        row.try_get::<Option<String>, _>(c)
            .unwrap_or_else(|e| panic!("{c}: {e}"))
    };
    let i = |c: &str| {
        row.try_get::<Option<i64>, _>(c)
            .unwrap_or_else(|e| panic!("{c}: {e}"))
    };
    assert_eq!(s("http_method").as_deref(), Some("GET"));
    assert_eq!(i("status"), Some(200));
    assert_eq!(s("error").as_deref(), Some("client_closed"));
    assert_eq!(i("rpc_error"), None);
    assert!(s("session_hash").is_some(), "h2c {h2c}");
    assert!(s("worker").is_some(), "h2c {h2c}");
    p.close().await;
    let log = gw.log_text();
    assert!(!log.contains("Fail to proxy"), "{log}");
}

/// Shutdown ends a detached GET stream at once (a clean end, so the client reconnects
/// elsewhere) instead of waiting `shutdown_grace` for it, and its record says `shutdown`;
/// over h2c and over HTTP/1.1 to the worker alike.
#[tokio::test]
async fn shutdown_ends_detached_streams_at_once_and_logs_them() {
    shutdown_case(true).await;
    shutdown_case(false).await;
}

async fn shutdown_case(h2c: bool) {
    let db = SqliteDb::new("logship");
    let setup = Setup::new(db.url(), None);
    std::env::set_var("LOGSHIP_TEST_SECRET", SECRET);
    let (port, admin) = (free_port(), free_port());
    let config = setup
        .config(port, admin)
        .replace(
            "    balance: round_robin\n",
            &format!("    balance: round_robin\n    h2c_streams: {h2c}\n"),
        )
        .replace("shutdown_grace: 3s", "shutdown_grace: 30s");
    let mut gw = Gateway::start_with(&config, port, admin).await;
    let http = client("carol");
    let sid = raw_session(&http, &gw.url()).await;
    let tag = unique_name("stop");
    let mut stream = tagged_stream(&http, &gw, &sid, &format!("{tag}-0")).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.chunk()).await;
    let asked = Instant::now();
    gw.signal(libc::SIGTERM);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    })
    .await;
    assert!(matches!(ended, Ok(Ok(()))), "not a clean end: {ended:?}");
    let status = gw.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "shutdown took {took:?}, as if it waited for the stream"
    );
    let p = pool(&db.url()).await;
    let row = sqlx::query("SELECT status, error FROM request_logs WHERE request_id = $1")
        .bind(format!("{tag}-0"))
        .fetch_one(&p)
        .await
        .unwrap_or_else(|e| panic!("the stream's record: {e}"));
    assert_eq!(
        row.try_get::<Option<i64>, _>("status").ok().flatten(),
        Some(200)
    );
    assert_eq!(
        row.try_get::<Option<String>, _>("error")
            .ok()
            .flatten()
            .as_deref(),
        Some("shutdown")
    );
    p.close().await;
}

#[tokio::test]
async fn n_requests_n_rows_sqlite_through_redis() {
    let db = SqliteDb::new("logship");
    let redis = OwnRedis::start().await;
    n_requests_n_rows(&db.url(), Some(&redis)).await;
}

#[tokio::test]
async fn n_requests_n_rows_postgres_direct() {
    let schema = PgSchema::new("logship").await;
    n_requests_n_rows(&schema.url(), None).await;
}

#[tokio::test]
async fn n_requests_n_rows_postgres_through_redis() {
    let schema = PgSchema::new("logship").await;
    let redis = OwnRedis::start().await;
    n_requests_n_rows(&schema.url(), Some(&redis)).await;
}

#[tokio::test]
async fn redis_killed_mid_run_and_restarted() {
    const N: usize = 40;
    let db = SqliteDb::new("logship");
    let mut redis = OwnRedis::start().await;
    let setup = Setup::new(db.url(), Some(redis.url()));
    let gw = setup.start().await;
    let http = client("bob");
    let sid = raw_session(&http, &gw.url()).await;
    let tag = unique_name("rk");
    calls(&gw, &http, &sid, &tag, 0, N / 2).await;
    redis.kill();
    // Traffic goes on while Redis is gone: batches go to the spool.
    calls(&gw, &http, &sid, &tag, N / 2, N / 2).await;
    let spooled = wait_metric(
        &gw,
        "mcp_gateway_log_spooled_total",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    assert!(spooled >= 1.0, "nothing was spooled while Redis was down");
    redis.restart().await;
    expect_rows(
        &db.url(),
        &tag,
        N as i64,
        Duration::from_secs(40),
        Some(&gw),
    )
    .await;
    let replayed = wait_metric(
        &gw,
        "mcp_gateway_log_replayed_total",
        1.0,
        Duration::from_secs(10),
    )
    .await;
    assert!(replayed >= 1.0, "replayed {replayed}");
    let m = gw.metrics().await;
    assert!(metric(&m, r#"mcp_gateway_redis_errors_total{op="xadd"}"#) >= 1.0);
}

#[tokio::test]
async fn database_stopped_mid_run_and_restarted() {
    const N: usize = 40;
    let mut pg = OwnPostgres::start().await;
    let setup = Setup::new(pg.url(), None);
    let gw = setup.start().await;
    let http = client("carol");
    let sid = raw_session(&http, &gw.url()).await;
    let tag = unique_name("ds");
    calls(&gw, &http, &sid, &tag, 0, N / 2).await;
    expect_rows(
        &pg.url(),
        &tag,
        (N / 2) as i64,
        Duration::from_secs(30),
        Some(&gw),
    )
    .await;
    pg.stop();
    calls(&gw, &http, &sid, &tag, N / 2, N / 2).await;
    let spooled = wait_metric(
        &gw,
        "mcp_gateway_log_spooled_total",
        (N / 2) as f64,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        spooled >= (N / 2) as f64,
        "spooled {spooled}; log:\n{}",
        gw.log_text()
    );
    pg.restart().await;
    expect_rows(
        &pg.url(),
        &tag,
        N as i64,
        Duration::from_secs(40),
        Some(&gw),
    )
    .await;
    let m = gw.metrics().await;
    assert!(metric(&m, r#"mcp_gateway_database_errors_total{op="write"}"#) >= 1.0);
    // Counted just after the replayed rows commit: the test may see the rows first.
    let replayed = wait_metric(
        &gw,
        "mcp_gateway_log_replayed_total",
        (N / 2) as f64,
        Duration::from_secs(10),
    )
    .await;
    assert!(replayed >= (N / 2) as f64, "replayed {replayed}");
}

#[tokio::test]
async fn database_stopped_behind_redis_and_restarted() {
    const N: usize = 30;
    let mut pg = OwnPostgres::start().await;
    let redis = OwnRedis::start().await;
    let setup = Setup::new(pg.url(), Some(redis.url()));
    let gw = setup.start().await;
    let http = client("dave");
    let sid = raw_session(&http, &gw.url()).await;
    let tag = unique_name("dr");
    calls(&gw, &http, &sid, &tag, 0, 5).await;
    expect_rows(&pg.url(), &tag, 5, Duration::from_secs(30), Some(&gw)).await;
    pg.stop();
    // The stream holds what the database cannot take yet; nothing is acknowledged.
    calls(&gw, &http, &sid, &tag, 5, N - 5).await;
    wait_metric(
        &gw,
        r#"mcp_gateway_database_errors_total{op="write"}"#,
        1.0,
        Duration::from_secs(20),
    )
    .await;
    pg.restart().await;
    expect_rows(
        &pg.url(),
        &tag,
        N as i64,
        Duration::from_secs(40),
        Some(&gw),
    )
    .await;
}

/// Records already fsynced to the spool survive a SIGKILL of the gateway and are replayed
/// by the next process.
#[tokio::test]
async fn gateway_sigkill_keeps_spooled_records() {
    const N: usize = 20;
    let mut pg = OwnPostgres::start().await;
    let setup = Setup::new(pg.url(), None);
    let tag = unique_name("ks");
    {
        let gw = setup.start().await;
        let http = client("erin");
        let sid = raw_session(&http, &gw.url()).await;
        // Make sure the schema exists before the database goes away.
        calls(&gw, &http, &sid, &format!("{tag}warm"), 0, 1).await;
        expect_rows(
            &pg.url(),
            &format!("{tag}warm"),
            1,
            Duration::from_secs(30),
            Some(&gw),
        )
        .await;
        pg.stop();
        calls(&gw, &http, &sid, &tag, 0, N).await;
        let spooled = wait_metric(
            &gw,
            "mcp_gateway_log_spooled_total",
            N as f64,
            Duration::from_secs(30),
        )
        .await;
        assert!(
            spooled >= N as f64,
            "spooled {spooled}; log:\n{}",
            gw.log_text()
        );
        gw.signal(libc::SIGKILL);
    }
    pg.restart().await;
    let gw = setup.start().await;
    expect_rows(
        &pg.url(),
        &tag,
        N as i64,
        Duration::from_secs(40),
        Some(&gw),
    )
    .await;
}

/// Batches already in the Redis Stream but not yet in the database when the gateway is
/// SIGKILLed stay pending for the dead consumer; the next shipper claims them (XAUTOCLAIM).
#[tokio::test]
async fn gateway_sigkill_pending_stream_entries_are_claimed() {
    const N: usize = 20;
    let mut pg = OwnPostgres::start().await;
    let redis = OwnRedis::start().await;
    let mut setup = Setup::new(pg.url(), Some(redis.url()));
    let tag = unique_name("kc");
    // Both processes must use one stream: fix the prefix.
    let prefix = unique_name("kc");
    setup.logging.push_str("  stream: kc\n");
    let config_for = |setup: &Setup, port: u16, admin: u16| {
        setup
            .config(port, admin)
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("prefix:") {
                    format!("  prefix: \"{prefix}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    std::env::set_var("LOGSHIP_TEST_SECRET", SECRET);
    {
        let (port, admin) = (free_port(), free_port());
        let gw = Gateway::start_with(&config_for(&setup, port, admin), port, admin).await;
        let http = client("frank");
        let sid = raw_session(&http, &gw.url()).await;
        calls(&gw, &http, &sid, &format!("{tag}warm"), 0, 1).await;
        expect_rows(
            &pg.url(),
            &format!("{tag}warm"),
            1,
            Duration::from_secs(30),
            Some(&gw),
        )
        .await;
        pg.stop();
        calls(&gw, &http, &sid, &tag, 0, N).await;
        let shipped = wait_metric(
            &gw,
            r#"mcp_gateway_log_shipped_total{sink="redis"}"#,
            (N + 3) as f64,
            Duration::from_secs(20),
        )
        .await;
        assert!(shipped >= (N + 3) as f64, "shipped {shipped}");
        // The shipper read them and could not store them: pending, not acknowledged.
        wait_metric(
            &gw,
            r#"mcp_gateway_database_errors_total{op="write"}"#,
            1.0,
            Duration::from_secs(20),
        )
        .await;
        gw.signal(libc::SIGKILL);
    }
    pg.restart().await;
    let (port, admin) = (free_port(), free_port());
    let gw = Gateway::start_with(&config_for(&setup, port, admin), port, admin).await;
    expect_rows(
        &pg.url(),
        &tag,
        N as i64,
        Duration::from_secs(60),
        Some(&gw),
    )
    .await;
}

/// SIGTERM flushes the in-memory queue; SIGKILL loses exactly what was still in it (the
/// guarantee stated in docs/logging.md).
#[tokio::test]
async fn sigterm_flushes_the_queue_and_sigkill_loses_only_the_queue() {
    const N: usize = 15;
    let db = SqliteDb::new("logship");
    let mut setup = Setup::new(db.url(), None);
    // Batches would leave only after a minute: everything sits in memory.
    setup.logging = "  batch_interval: 60s\n  batch_size: 5000\n".into();
    let tag = unique_name("st");
    {
        let mut gw = setup.start().await;
        let http = client("gina");
        let sid = raw_session(&http, &gw.url()).await;
        calls(&gw, &http, &sid, &tag, 0, N).await;
        assert_eq!(
            common::db::count_log_rows(&db.url(), &tag).await,
            0,
            "nothing shipped before shutdown"
        );
        gw.signal(libc::SIGTERM);
        let status = gw.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "exit: {status:?}");
    }
    expect_rows(&db.url(), &tag, N as i64, Duration::from_secs(5), None).await;

    let tag = unique_name("sk");
    let gw = setup.start().await;
    let http = client("gina");
    let sid = raw_session(&http, &gw.url()).await;
    calls(&gw, &http, &sid, &tag, 0, N).await;
    // All of them (and the session's two requests) wait in memory.
    let depth = metric(&gw.metrics().await, "mcp_gateway_log_queue_depth");
    assert_eq!(depth, (N + 2) as f64);
    gw.signal(libc::SIGKILL);
    drop(gw);
    let gw = setup.start().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        common::db::count_log_rows(&db.url(), &tag).await,
        0,
        "records only in memory at SIGKILL are lost (not silently half-kept)"
    );
    drop(gw);
}

/// More records than the queue holds while the sink hangs: the surplus is dropped and
/// counted, and every request is still answered.
#[tokio::test]
async fn flood_beyond_the_queue_drops_and_counts() {
    const N: usize = 120;
    // A "Redis" that accepts connections and never answers: each batch waits for its
    // timeout. No spool either (its folder cannot be made), so nothing drains the queue.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = blackhole.local_addr().map(|a| a.port()).unwrap_or(0);
    let file = write_file("not-a-dir", "x");
    let db = SqliteDb::new("logship");
    let mut setup = Setup::new(db.url(), Some(format!("redis://127.0.0.1:{port}")));
    setup.spool_dir = file.join("spool");
    setup.logging = "  queue_size: 16\n  batch_size: 1\n  batch_interval: 10ms\n".into();
    let gw = setup.start().await;
    let http = client("hank");
    let sid = raw_session(&http, &gw.url()).await;
    let tag = unique_name("fl");
    calls(&gw, &http, &sid, &tag, 0, N).await;
    let m = gw.metrics().await;
    let dropped = metric(&m, r#"mcp_gateway_log_dropped_total{reason="queue_full"}"#);
    assert!(dropped >= (N - 40) as f64, "dropped {dropped}");
    let depth = metric(&m, "mcp_gateway_log_queue_depth");
    assert!(
        depth <= 17.0,
        "queue depth {depth} (16 queued + 1 in the batch)"
    );
    // Still serving.
    calls(&gw, &http, &sid, &format!("{tag}after"), 0, 3).await;
    drop(blackhole);
}

/// One id in the client's response header, the worker's view and the stored row; a bad id
/// from the client is replaced; refusals carry the id too.
#[tokio::test]
async fn request_id_is_the_same_everywhere() {
    let db = SqliteDb::new("logship");
    let setup = Setup::new(db.url(), None);
    let gw = setup.start().await;
    let http = client("ivy");
    let sid = raw_session(&http, &gw.url()).await;
    let whoami = |id: &'static str| {
        let http = http.clone();
        let url = gw.url();
        let sid = sid.clone();
        async move {
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", ACCEPT)
                .header("mcp-session-id", &sid)
                .header("mcp-protocol-version", "2025-06-18")
                .header("x-request-id", id)
                .body(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let header = r
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no x-request-id in the answer"));
            let text = r.text().await.unwrap_or_default();
            let v = find_response(&text, 7).unwrap_or_else(|| panic!("no answer: {text}"));
            let who: Value =
                serde_json::from_str(&result_text(&v)).unwrap_or_else(|e| panic!("{e}"));
            let seen = who["headers"]["x-request-id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (header, seen)
        }
    };
    let (header, seen) = whoami("trace-abc-123").await;
    assert_eq!(header, "trace-abc-123");
    assert_eq!(seen, "trace-abc-123");
    let (header, seen) = whoami("bad id <script>").await;
    assert_ne!(header, "bad id <script>");
    assert!(uuid::Uuid::parse_str(&header).is_ok(), "{header}");
    assert_eq!(seen, header, "the worker sees the id the client got");
    let replaced = header;

    // A refusal (no token): 401 with the id, recorded with the auth outcome.
    let r = reqwest::Client::new()
        .post(gw.url())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("x-request-id", "refused-1")
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("refused-1")
    );

    let p = pool(&db.url()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let find = |id: String| {
        let p = p.clone();
        async move {
            sqlx::query("SELECT tool, status, auth, error, rpc_error FROM request_logs WHERE request_id = $1")
                .bind(id)
                .fetch_optional(&p)
                .await
                .unwrap_or(None)
        }
    };
    loop {
        if find("refused-1".into()).await.is_some() && find(replaced.clone()).await.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rows did not arrive; log:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = find("trace-abc-123".into())
        .await
        .unwrap_or_else(|| panic!("no row"));
    assert_eq!(
        row.try_get::<Option<String>, _>("tool")
            .ok()
            .flatten()
            .as_deref(),
        Some("whoami")
    );
    let row = find(replaced).await.unwrap_or_else(|| panic!("no row"));
    assert_eq!(
        row.try_get::<Option<String>, _>("tool")
            .ok()
            .flatten()
            .as_deref(),
        Some("whoami")
    );
    let row = find("refused-1".into())
        .await
        .unwrap_or_else(|| panic!("no row"));
    assert_eq!(row.try_get::<i64, _>("status").ok(), Some(401));
    assert_eq!(
        row.try_get::<String, _>("auth").ok().as_deref(),
        Some("unauthenticated")
    );
    assert_eq!(
        row.try_get::<Option<String>, _>("error")
            .ok()
            .flatten()
            .as_deref(),
        Some("unauthenticated")
    );
    assert_eq!(
        row.try_get::<Option<i64>, _>("rpc_error").ok().flatten(),
        Some(-32004)
    );
    p.close().await;
    let m = gw.metrics().await;
    assert!(metric(&m, r#"mcp_gateway_auth_failures_total{reason="missing"}"#) >= 1.0);
}

/// `GET /admin/logs` needs the admin role; filters work; `mcp-proxy logs` reads the same rows.
#[tokio::test]
async fn operators_read_logs_over_http_and_the_cli() {
    const STATIC: &str = "a-static-admin-token-for-the-log-tests-0123";
    std::env::set_var("MCP_GATEWAY_ADMIN_TOKEN", STATIC);
    let db = SqliteDb::new("logship");
    let setup = Setup::new(db.url(), None);
    let gw = setup.start().await;
    let http = client("jack");
    let sid = raw_session(&http, &gw.url()).await;
    let tag = unique_name("op");
    calls(&gw, &http, &sid, &tag, 0, 6).await;
    expect_rows(&db.url(), &tag, 6, Duration::from_secs(30), Some(&gw)).await;

    let admin = reqwest::Client::new();
    let url = gw.admin_url("/admin/logs?tool=add&user=jack&status=200&since=10m&limit=4");
    let get = |auth: Option<String>| {
        let mut r = admin.get(&url);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    assert_eq!(
        get(None).await.map(|r| r.status().as_u16()).unwrap_or(0),
        401
    );
    assert_eq!(
        get(Some("Bearer not-a-token".into()))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        401
    );
    assert_eq!(
        get(Some(format!("Bearer {}", token("jack", &["user"]))))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        403
    );
    for auth in [
        format!("Bearer {}", token("root", &["admin"])),
        format!("Bearer {STATIC}"),
    ] {
        let r = get(Some(auth)).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("{e}"));
        let records = v["records"].as_array().cloned().unwrap_or_default();
        assert_eq!(records.len(), 4, "{v}");
        for rec in &records {
            assert_eq!(rec["tool"], "add");
            assert_eq!(rec["user_id"], "jack");
            assert_eq!(rec["status"], 200);
        }
    }
    let bad = admin
        .get(gw.admin_url("/admin/logs?limit=0"))
        .header("authorization", format!("Bearer {STATIC}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.status(), 400);

    let cfg = gw.log.with_file_name("gateway.yaml");
    let out = Command::new(PROXY)
        .args([
            "logs", "--since", "10m", "--tool", "add", "--json", "--limit", "1000", "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mine = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with(&tag))
        })
        .count();
    assert_eq!(mine, 6, "{text}");
    let out = Command::new(PROXY)
        .args(["logs", "--since", "soon", "--config"])
        .arg(&cfg)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
}

/// The `logging:` section: defaults, values, and every bad value reported with its line.
#[test]
fn logging_section_is_validated_with_lines() {
    let base = "listen: 127.0.0.1:1\nadmin: 127.0.0.1:2\nroutes: [{ path: /mcp, pool: p }]\npools:\n  p: { upstreams: [\"127.0.0.1:3\"] }\n";
    let cfg = mcp_proxy::config::parse(base, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.logging, mcp_proxy::config::LoggingConfig::default());
    let good = format!(
        "{base}logging:\n  queue_size: 1000\n  batch_size: 50\n  batch_interval: 20ms\n  stream: logs\n  retention: 0s\n  spool_dir: /var/spool/gw\n"
    );
    let cfg = mcp_proxy::config::parse(&good, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.logging.queue_size, 1000);
    assert_eq!(cfg.logging.batch_size, 50);
    assert_eq!(cfg.logging.batch_interval, Duration::from_millis(20));
    assert_eq!(cfg.logging.retention, None);
    let bad = format!(
        "{base}logging:\n  queue_size: 3\n  batch_size: 0\n  stream: \"a b\"\n  retention: 5s\n  colour: red\n"
    );
    let errors = mcp_proxy::config::parse(&bad, "t.yaml")
        .err()
        .unwrap_or_else(|| panic!("accepted"))
        .to_string();
    for expected in [
        "t.yaml:7:15: logging.queue_size: must be 16–10000000, got 3",
        "t.yaml:8:15: logging.batch_size: must be 1–5000, got 0",
        "t.yaml:9:11: logging.stream:",
        "t.yaml:10:14: logging.retention: must be at least 1m",
        "logging.colour: unknown field `colour`",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

/// Rows older than `retention` are deleted in the background; newer ones stay.
#[tokio::test]
async fn retention_deletes_old_rows() {
    let db = SqliteDb::new("logship");
    let mut setup = Setup::new(db.url(), None);
    setup.logging = "  batch_interval: 50ms\n  retention: 1h\n  retention_check: 1s\n".into();
    let gw = setup.start().await;
    let http = client("kate");
    let sid = raw_session(&http, &gw.url()).await;
    let tag = unique_name("rt");
    calls(&gw, &http, &sid, &tag, 0, 3).await;
    expect_rows(&db.url(), &tag, 3, Duration::from_secs(30), Some(&gw)).await;
    let p = pool(&db.url()).await;
    let two_hours_ago = (now() as i64 - 7200) * 1000;
    sqlx::query(
        "INSERT INTO request_logs (request_id, at, http_method, status, latency_us, bytes_in, \
         bytes_out, auth) VALUES ($1, $2, 'POST', 200, 1, 0, 0, 'ok')",
    )
    .bind(format!("{tag}-old"))
    .bind(two_hours_ago)
    .execute(&p)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(common::db::count_log_rows(&db.url(), &tag).await, 4);
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::db::count_log_rows(&db.url(), &tag).await != 3 {
        assert!(Instant::now() < deadline, "the old row was not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM request_logs WHERE request_id = $1")
        .bind(format!("{tag}-old"))
        .fetch_one(&p)
        .await
        .and_then(|r| r.try_get("n"))
        .unwrap_or(-1);
    assert_eq!(left, 0);
    p.close().await;
}

/// `logging.enabled: false` records no request (the table exists: retention made it).
#[tokio::test]
async fn logging_can_be_switched_off() {
    let db = SqliteDb::new("logship");
    let mut setup = Setup::new(db.url(), None);
    setup.logging = "  enabled: false\n  batch_interval: 10ms\n  retention_check: 1s\n".into();
    let gw = setup.start().await;
    let http = client("liam");
    let sid = raw_session(&http, &gw.url()).await;
    let tag = unique_name("off");
    calls(&gw, &http, &sid, &tag, 0, 3).await;
    let p = pool(&db.url()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let table = sqlx::query("SELECT COUNT(*) AS n FROM request_logs")
            .fetch_one(&p)
            .await
            .and_then(|r| r.try_get::<i64, _>("n"));
        if let Ok(n) = table {
            assert_eq!(n, 0, "rows recorded although logging is off");
            break;
        }
        assert!(Instant::now() < deadline, "request_logs never created");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(common::db::count_log_rows(&db.url(), &tag).await, 0);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, r#"mcp_gateway_log_shipped_total{sink="database"}"#),
        0.0
    );
    assert!(metric(&m, r#"mcp_gateway_tool_calls_total{tool="add"}"#) >= 3.0);
    p.close().await;
}

/// Audit events take the same lossless path: calls denied while the database is down are
/// spooled and reach `audit_events` once it is back.
#[tokio::test]
async fn audit_events_survive_a_database_outage() {
    const DENIED: usize = 5;
    let mut pg = OwnPostgres::start().await;
    let setup = Setup::new(pg.url(), None);
    std::env::set_var(
        "MCP_GATEWAY_CREDENTIALS_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    );
    std::env::set_var("LOGSHIP_TEST_SECRET", SECRET);
    let (port, admin) = (free_port(), free_port());
    let config = format!("{}identity: {{}}\n", setup.config(port, admin)).replace(
        "    upstream_path: /mcp\n",
        "    upstream_path: /mcp\n    tools:\n      - roles: [\"*\"]\n        deny: [whoami]\n",
    );
    let gw = Gateway::start_with(&config, port, admin).await;
    let http = client("mona");
    let sid = raw_session(&http, &gw.url()).await;
    pg.stop();
    for i in 0..DENIED {
        let (status, v) =
            raw_call(&http, &gw.url(), &sid, 10 + i as i64, "whoami", json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(v.unwrap_or_default()["error"]["code"], -32005);
    }
    let spooled = wait_metric(
        &gw,
        "mcp_gateway_log_spooled_total",
        (DENIED * 2) as f64,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        spooled >= (DENIED * 2) as f64,
        "spooled {spooled}; log:\n{}",
        gw.log_text()
    );
    pg.restart().await;
    let p = pool(&pg.url()).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut n = 0;
    while Instant::now() < deadline {
        n = sqlx::query(
            "SELECT COUNT(*) AS n FROM audit_events WHERE kind = 'call_denied' AND user_id = 'mona'",
        )
        .fetch_one(&p)
        .await
        .and_then(|r| r.try_get::<i64, _>("n"))
        .unwrap_or(0);
        if n >= DENIED as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(n, DENIED as i64, "log:\n{}", gw.log_text());
    p.close().await;
}

/// A route with `log_bodies` keeps both bodies with the configured fields redacted; a route
/// without it keeps none. The API key id is recorded for API-key callers' requests too.
#[tokio::test]
async fn bodies_are_captured_per_route_with_fields_redacted() {
    let db = SqliteDb::new("logship_bodies");
    let setup = Setup::new(db.url(), None);
    let (port, admin) = (free_port(), free_port());
    let config = setup.config(port, admin).replace(
        "    upstream_path: /mcp\n",
        "    upstream_path: /mcp\n  - path: /captured\n    pool: tools\n    upstream_path: /mcp\n    log_bodies: { max_bytes: 2048, redact: [text, secret] }\n",
    );
    std::env::set_var("LOGSHIP_TEST_SECRET", SECRET);
    let gw = Gateway::start_with(&config, port, admin).await;
    let http = client("carol");
    let tag = unique_name("bodies");
    for (path, n) in [("/captured", 0), ("/mcp", 1)] {
        let url = format!("http://127.0.0.1:{port}{path}");
        let sid = raw_session(&http, &url).await;
        let body = json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
            "params":{"name":"echo","arguments":{"text":"hunter2-private"},"_meta":{"secret":"s3"}}});
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", "2025-06-18")
            .header("x-request-id", format!("{tag}-{n}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.text().await.unwrap().contains("hunter2-private"),
            "the client gets the real answer"
        );
    }
    expect_rows(&db.url(), &tag, 2, Duration::from_secs(30), Some(&gw)).await;
    let p = pool(&db.url()).await;
    let get = |n: i64| {
        let p = p.clone();
        let id = format!("{tag}-{n}");
        async move {
            let r = sqlx::query(
                "SELECT request_body, response_body FROM request_logs WHERE request_id = $1",
            )
            .bind(id)
            .fetch_one(&p)
            .await
            .unwrap();
            (
                r.try_get::<Option<String>, _>("request_body").unwrap(),
                r.try_get::<Option<String>, _>("response_body").unwrap(),
            )
        }
    };
    let (req, resp) = get(0).await;
    let (req, resp) = (
        req.expect("request body kept"),
        resp.expect("response body kept"),
    );
    assert!(
        req.contains("\"method\":\"tools/call\"") && req.contains("\"name\":\"echo\""),
        "{req}"
    );
    assert!(
        !req.contains("hunter2") && !req.contains("s3"),
        "redacted: {req}"
    );
    assert!(req.contains("[redacted]"));
    assert!(
        resp.contains("[redacted]") && !resp.contains("hunter2"),
        "{resp}"
    );
    assert_eq!(get(1).await, (None, None), "no capture without log_bodies");
}
