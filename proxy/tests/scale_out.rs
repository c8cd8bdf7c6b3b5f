//! Scale-out: three gateway processes on loopback (one configuration, different ports) sharing
//! one Redis and one PostgreSQL schema, in front of worker processes none of them starts (a
//! remote pool, as on Kubernetes). Clients send each request to a different replica in turn.
//! Nothing a client depends on may live in one replica's memory:
//! - a session opened on one replica continues on the others, on the same worker;
//! - a limit of N holds for the sum of the three;
//! - a revoked API key or a disabled user fails on all three within a second;
//! - every request is logged exactly once, also when a replica is SIGKILLed while its log
//!   shipper holds stream entries (another replica claims them);
//! - a configuration rolled out to the replicas one at a time fails no request.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::db::{unique_name, PgSchema};
use common::*;
use serde_json::{json, Value};
use sqlx::{Connection, Executor, Row};

const SESSION_KEY: &str = "5ca1e0075ca1e0075ca1e0075ca1e0075ca1e0075ca1e0075ca1e0075ca1e007";
const CREDENTIALS_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const ADMIN_TOKEN: &str = "scale-out-test-admin-token-0123456789";

/// Every test of this file sets the same values, so parallel tests agree; every replica
/// inherits them (one sealing key, one credential key: what a Kubernetes Secret gives pods).
fn set_env() {
    std::env::set_var("MCP_GATEWAY_SESSION_KEY", SESSION_KEY);
    std::env::set_var("MCP_GATEWAY_CREDENTIALS_KEY", CREDENTIALS_KEY);
    std::env::set_var("MCP_GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN);
}

// ---------------------------------------------------------------- workers and replicas

/// An `mcp-worker tools` process the test starts (not a gateway): a remote pool member.
struct RemoteWorker {
    child: Child,
    addr: String,
}

impl RemoteWorker {
    async fn start(id: &str) -> RemoteWorker {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(worker_bin())
            .args(["tools", "--listen", &addr, "--id", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start worker: {e}"));
        let w = RemoteWorker { child, addr };
        let health = format!("http://{}/health", w.addr);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = reqwest::get(&health).await {
                if r.status() == 200 {
                    return w;
                }
            }
            assert!(
                Instant::now() < deadline,
                "worker {id} never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Fleet {
    replicas: Vec<Gateway>,
    workers: Vec<RemoteWorker>,
    pg: PgSchema,
    prefix: String,
    /// The first replica's base URL: the issuer every replica shares (`public_url`).
    public: String,
    extra: String,
}

impl Fleet {
    /// Three replicas; `workers` remote workers run, the first `members` of them are in the
    /// pool; `extra` is appended to the config.
    async fn start(workers: usize, members: usize, extra: &str) -> Fleet {
        set_env();
        let pg = PgSchema::new("scale_out").await;
        let prefix = unique_name("scale");
        let mut ws = Vec::new();
        for i in 0..workers {
            ws.push(RemoteWorker::start(&format!("w{i}")).await);
        }
        let mut fleet = Fleet {
            replicas: Vec::new(),
            workers: ws,
            pg,
            prefix,
            public: String::new(),
            // The built-in per-user limits would refuse the load these tests make; a test
            // that is about limits brings its own section.
            extra: if extra.contains("rate_limits:") {
                extra.to_string()
            } else {
                format!("{extra}rate_limits: {{ defaults: false }}\n")
            },
        };
        for _ in 0..3 {
            let (port, admin) = (free_port(), free_port());
            if fleet.public.is_empty() {
                fleet.public = format!("http://127.0.0.1:{port}");
            }
            let cfg = fleet.config(port, admin, members);
            // One at a time: the first applies the migrations and makes the signing key.
            fleet
                .replicas
                .push(Gateway::start_with(&cfg, port, admin).await);
        }
        fleet
    }

    /// The configuration of one replica: only the ports differ (and the spool folder, which
    /// is per replica by design).
    fn config(&self, port: u16, admin: u16, members: usize) -> String {
        let upstreams: Vec<String> = self.workers[..members]
            .iter()
            .map(|w| format!("\"{}\"", w.addr))
            .collect();
        let spool = temp_path("spool");
        format!(
            r#"listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
shutdown_grace: 3s
public_url: {public}
database: {{ url: "{db}" }}
identity: {{}}
redis: {{ url: "redis://127.0.0.1:6379", prefix: "{prefix}" }}
logging: {{ batch_interval: 50ms, claim_idle: 2s, spool_dir: "{spool}" }}
routes:
  - path: /mcp
    pool: tools
    upstream_path: /mcp
  - path: /limited
    pool: tools
    upstream_path: /mcp
pools:
  tools:
    upstreams: [{upstreams}]
    balance: round_robin
    health: {{ kind: http, path: /health, interval: 1s }}
{extra}"#,
            public = self.public,
            db = self.pg.url(),
            prefix = self.prefix,
            spool = spool.display(),
            upstreams = upstreams.join(", "),
            extra = self.extra,
        )
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.replicas[i % 3].port)
    }

    /// Register a user on replica 0 and log in; returns (user id, access token).
    async fn user(&self, email: &str) -> (String, String) {
        register_and_login(&self.public, email).await
    }

    async fn login(&self, email: &str) -> String {
        login(&self.public, email).await
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .enumerate()
            .map(|(i, g)| format!("--- replica {i}\n{}", g.log_text()))
            .collect()
    }
}

/// `whoami` in a session: the id of the worker that answered, or the failure.
async fn whoami(http: &reqwest::Client, url: &str, sid: &str, id: i64) -> Result<String, String> {
    let (status, v) = raw_call(http, url, sid, id, "whoami", json!({})).await;
    match v {
        Some(v) if status == 200 && v.get("result").is_some() => {
            let who: Value = serde_json::from_str(&result_text(&v)).unwrap_or_default();
            Ok(who["worker"].as_str().unwrap_or_default().to_string())
        }
        other => Err(format!("{status} {other:?}")),
    }
}

// ---------------------------------------------------------------- sessions and limits

#[tokio::test]
async fn sessions_continue_on_every_replica_and_a_limit_holds_for_their_sum() {
    let fleet = Fleet::start(
        2,
        2,
        "rate_limits:\n  defaults: false\n  redis_timeout: 500ms\n  policies:\n    shared: { key: [user], rate: 30/h, routes: [/limited], backend: redis }\n",
    )
    .await;
    let (_, token) = fleet.user("ann@example.test").await;
    let http = bearer_client(&token);

    // Sessions opened on each replica in turn, then used on all three: the same worker
    // answers every call of a session, and the sessions spread over both workers.
    let mut used = BTreeSet::new();
    for s in 0..6 {
        let sid = raw_session(&http, &fleet.url(s, "/mcp")).await;
        let mut answered = Vec::new();
        for (k, r) in (s..s + 3).enumerate() {
            let who = whoami(&http, &fleet.url(r, "/mcp"), &sid, 10 + k as i64)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "session from replica {s} failed on replica {r}: {e}\n{}",
                        fleet.logs()
                    )
                });
            answered.push(who);
        }
        assert!(
            answered.iter().all(|w| *w == answered[0]),
            "session {s} moved between workers: {answered:?}"
        );
        used.insert(answered[0].clone());
    }
    assert_eq!(used.len(), 2, "round robin spreads sessions: {used:?}");

    // A session is not tied to the replica's memory: a forged or foreign id is still refused
    // everywhere.
    let (status, _) = raw_call(
        &http,
        &fleet.url(1, "/mcp"),
        "forged",
        1,
        "whoami",
        json!({}),
    )
    .await;
    assert_eq!(status, 404);

    // 30 per hour for this user, through whichever replica: exactly 30 of 45 pass.
    let mut passed = 0;
    let mut limited = 0;
    for i in 0..45 {
        match init_status(&http, &fleet.url(i, "/limited"), &[]).await {
            200 => passed += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        (29..=31).contains(&passed),
        "the shared limit of 30 let {passed} through (429: {limited})"
    );
    assert_eq!(passed + limited, 45);
    // Another user has a limit of their own.
    let (_, other) = fleet.user("bob@example.test").await;
    assert_eq!(
        init_status(&bearer_client(&other), &fleet.url(2, "/limited"), &[]).await,
        200
    );
}

// ---------------------------------------------------------------- revocations

async fn refused_everywhere_within(
    fleet: &Fleet,
    header: (&str, &str),
    limit: Duration,
) -> Result<Duration, String> {
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut pending: BTreeSet<usize> = (0..3).collect();
    while start.elapsed() < limit {
        for r in pending.clone() {
            if init_status(&http, &fleet.url(r, "/mcp"), &[header]).await == 401 {
                pending.remove(&r);
            }
        }
        if pending.is_empty() {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "still accepted by replicas {pending:?} after {limit:?}"
    ))
}

#[tokio::test]
async fn a_revoked_key_and_a_disabled_user_fail_on_all_three_within_a_second() {
    let fleet = Fleet::start(1, 1, "").await;
    let (user_id, token) = fleet.user("cid@example.test").await;
    let bearer = format!("Bearer {token}");
    let http = bearer_client(&token);
    let anon = reqwest::Client::new();

    let (key_id, key) = create_api_key(&fleet.public, &token, "revoked").await;
    let (_, kept_key) = create_api_key(&fleet.public, &token, "kept").await;
    // Every replica accepts (and caches) both keys and the token first.
    for r in 0..3 {
        let url = fleet.url(r, "/mcp");
        assert_eq!(init_status(&anon, &url, &[("x-api-key", &key)]).await, 200);
        assert_eq!(
            init_status(&anon, &url, &[("x-api-key", &kept_key)]).await,
            200
        );
        assert_eq!(
            init_status(&anon, &url, &[("authorization", &bearer)]).await,
            200
        );
    }

    // Revoked through replica 1: refused on all three within a second.
    let r = http
        .delete(fleet.url(1, &format!("/auth/api-keys/{key_id}")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.status().is_success(), "{}", r.status());
    let took = refused_everywhere_within(&fleet, ("x-api-key", &key), Duration::from_secs(1))
        .await
        .unwrap_or_else(|e| panic!("revoked key: {e}\n{}", fleet.logs()));
    eprintln!("revoked key refused everywhere after {took:?}");
    for r in 0..3 {
        assert_eq!(
            init_status(&anon, &fleet.url(r, "/mcp"), &[("x-api-key", &kept_key)]).await,
            200,
            "the other key of the user still works on replica {r}"
        );
    }

    // An administrator (made with the CLI, as operators do) disables the user on replica 2:
    // the user's token and remaining key fail on all three within a second.
    let out = Command::new(PROXY)
        .args([
            "user",
            "add",
            "--email",
            "root@example.test",
            "--role",
            "admin",
        ])
        .args(["--password", TEST_PASSWORD, "--database", &fleet.pg.url()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = bearer_client(&fleet.login("root@example.test").await);
    let r = admin
        .post(fleet.url(2, &format!("/auth/admin/users/{user_id}/disable")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.status().is_success(), "{}", r.status());
    let start = Instant::now();
    let took_token =
        refused_everywhere_within(&fleet, ("authorization", &bearer), Duration::from_secs(1))
            .await
            .unwrap_or_else(|e| panic!("disabled user's token: {e}\n{}", fleet.logs()));
    let left = Duration::from_secs(1).saturating_sub(start.elapsed());
    refused_everywhere_within(
        &fleet,
        ("x-api-key", &kept_key),
        left.max(Duration::from_millis(1)),
    )
    .await
    .unwrap_or_else(|e| panic!("disabled user's key: {e}\n{}", fleet.logs()));
    eprintln!(
        "disabled user refused everywhere after {took_token:?} (token) / {:?} (all)",
        start.elapsed()
    );
    // And cannot log in again.
    let r = anon
        .post(fleet.url(0, "/auth/login"))
        .json(&json!({"email": "cid@example.test", "password": TEST_PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401);
}

// ---------------------------------------------------------------- logs, exactly once

fn stream_key(prefix: &str) -> String {
    format!("{{{prefix}:request-logs}}")
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open("redis://127.0.0.1:6379")
        .unwrap_or_else(|e| panic!("{e}"))
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis must run at 127.0.0.1:6379: {e}"))
}

/// Pending stream entries per consumer name of the shippers' group.
async fn pending_by_consumer(prefix: &str) -> BTreeMap<String, u64> {
    let mut c = redis().await;
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(stream_key(prefix))
        .arg("shippers")
        .query_async(&mut c)
        .await
        .unwrap_or(redis::Value::Nil);
    let mut out = BTreeMap::new();
    if let redis::Value::Array(parts) = v {
        if let Some(redis::Value::Array(consumers)) = parts.get(3) {
            for c in consumers {
                if let redis::Value::Array(pair) = c {
                    let name = pair.first().map(text).unwrap_or_default();
                    let n = pair.get(1).map(text).unwrap_or_default();
                    out.insert(name, n.parse().unwrap_or(0));
                }
            }
        }
    }
    out
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

/// A call through replica `r`, with a request id of the test's choosing.
async fn tagged_call(http: &reqwest::Client, fleet: &Fleet, r: usize, sid: &str, rid: &str) -> u16 {
    http.post(fleet.url(r, "/mcp"))
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-06-18")
        .header("x-request-id", rid)
        .body(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn stored_ids(pg_url: &str, tag: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let Ok(pool) = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect(pg_url)
        .await
    else {
        return Vec::new();
    };
    let ids = sqlx::query("SELECT request_id FROM request_logs WHERE request_id LIKE $1")
        .bind(format!("{tag}-%"))
        .fetch_all(&pool)
        .await
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r.try_get::<String, _>("request_id").ok())
                .collect()
        })
        .unwrap_or_default();
    pool.close().await;
    ids
}

#[tokio::test]
async fn every_request_is_logged_once_also_when_a_replica_is_killed_holding_entries() {
    let mut fleet = Fleet::start(1, 1, "").await;
    let (_, token) = fleet.user("dee@example.test").await;
    let http = bearer_client(&token);
    let sid = raw_session(&http, &fleet.url(0, "/mcp")).await;
    let tag = unique_name("lg");
    let mut served: Vec<String> = Vec::new();
    let mut n = 0;
    let mut send = |r: usize| {
        n += 1;
        (r, format!("{tag}-{n}"))
    };

    // The database stops taking rows (a lock held by the test): every shipper reads a batch
    // from the stream and then waits on its insert, holding the entries pending.
    let mut locker = sqlx::postgres::PgConnection::connect(&fleet.pg.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    locker
        .execute("BEGIN")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    locker
        .execute("LOCK TABLE request_logs IN SHARE MODE")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let victim = fleet.replicas[2].pid();
    let victim_holds = |p: &BTreeMap<String, u64>| {
        p.iter()
            .any(|(name, n)| name.contains(&format!("-{victim}-")) && *n > 0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for r in 0..3 {
            let (r, rid) = send(r);
            assert_eq!(tagged_call(&http, &fleet, r, &sid, &rid).await, 200);
            served.push(rid);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pending = pending_by_consumer(&fleet.prefix).await;
        if victim_holds(&pending) {
            eprintln!("pending before the kill: {pending:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica 2's shipper never held an entry: {pending:?}\n{}",
            fleet.logs()
        );
    }

    // Replica 2 leaves the rotation (as a load balancer would), its last records reach the
    // stream, then it is killed outright while the others keep serving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut killed = fleet.replicas.remove(2);
    let _ = killed.child.kill();
    let _ = killed.child.wait();
    for i in 0..20 {
        let (r, rid) = send(i % 2);
        assert_eq!(tagged_call(&http, &fleet, r, &sid, &rid).await, 200);
        served.push(rid);
    }
    locker
        .execute("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Every served request is stored exactly once (request_id is the primary key; a missing
    // one would be a lost record), including those the dead replica's shipper held.
    let want: BTreeSet<String> = served.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        got = stored_ids(&fleet.pg.url(), &tag).await;
        if got.len() >= want.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "a request stored twice");
    let missing: Vec<_> = want.difference(&got_set).collect();
    assert!(
        missing.is_empty(),
        "{} of {} records missing: {missing:?}\n{}",
        missing.len(),
        want.len(),
        fleet.logs()
    );
    assert_eq!(got_set, want);
    // Nothing is left pending: the dead consumer's entries were claimed and acknowledged.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending = pending_by_consumer(&fleet.prefix).await;
        if pending.values().all(|n| *n == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "entries left pending: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let claimed = fleet.logs();
    drop(killed);
    eprintln!(
        "{} records stored once each; claim lines: {}",
        want.len(),
        claimed.matches("claimed").count()
    );
}

// ---------------------------------------------------------------- rolling configuration

#[tokio::test]
async fn a_config_rolled_out_one_replica_at_a_time_fails_no_request() {
    // Two workers in the pool at first; the new configuration adds a third.
    let fleet = Fleet::start(3, 2, "").await;
    let (_, token) = fleet.user("eve@example.test").await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers_seen = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let urls: Vec<String> = (0..3).map(|r| fleet.url(r, "/mcp")).collect();
    let mut clients = Vec::new();
    for c in 0..3 {
        let (stop, ok, failures, seen) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            workers_seen.clone(),
        );
        let (urls, http) = (urls.clone(), bearer_client(&token));
        clients.push(tokio::spawn(async move {
            let mut turn = c;
            let mut id = 100;
            while !stop.load(Ordering::Acquire) {
                // A new session every few calls, opened on one replica and used on the next
                // ones, so sessions on a new member reach replicas still on the old list.
                let sid = raw_session(&http, &urls[turn % 3]).await;
                for _ in 0..4 {
                    turn += 1;
                    id += 1;
                    match whoami(&http, &urls[turn % 3], &sid, id).await {
                        Ok(w) => {
                            ok.fetch_add(1, Ordering::AcqRel);
                            if let Ok(mut s) = seen.lock() {
                                s.insert(w);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failures.lock() {
                                f.push(format!("replica {}: {e}", turn % 3));
                            }
                        }
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = ok.load(Ordering::Acquire);
    for r in 0..3 {
        let port = fleet.replicas[r].port;
        let admin = fleet.replicas[r].admin;
        let cfg = fleet.config(port, admin, 3);
        write_config(&fleet.replicas[r], &cfg);
        reload_now(&fleet.replicas[r]).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Release);
    for c in clients {
        let _ = c.await;
    }
    let failures = failures.lock().map(|f| f.clone()).unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} failed requests during the rollout: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        fleet.logs()
    );
    let total = ok.load(Ordering::Acquire);
    assert!(
        total > before + 30,
        "load kept running through the rollout: {before} → {total}"
    );
    let seen = workers_seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(seen.contains("w2"), "the new member served calls: {seen:?}");
}

fn write_config(gw: &Gateway, text: &str) {
    // Write then rename, as editors and Kubernetes do.
    let path = gw.log.with_file_name("gateway.yaml");
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("{e}"));
}

/// Ask the replica to reload its file now and check it took the new version.
async fn reload_now(gw: &Gateway) {
    let r = reqwest::Client::new()
        .post(gw.admin_url("/admin/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "reload refused: {body}\n{}", gw.log_text());
}
