//! Rate and concurrency limits through the real gateway: exact counts, 429 answers with
//! their headers, per-tool scope, concurrency slots, two replicas sharing one Redis, Redis
//! killed mid-run (allow / deny / local) and back, and login brute force.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn config_with(port: u16, admin: u16, extra: &str) -> String {
    spawn_pool_config(port, admin, 1, extra)
}

async fn start(extra: &str) -> Gateway {
    let (port, admin) = (free_port(), free_port());
    Gateway::start_with(&config_with(port, admin, extra), port, admin).await
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn post(http: &reqwest::Client, url: &str, body: &str, sid: Option<&str>) -> Answer {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(body.to_string());
    if let Some(sid) = sid {
        req = req
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", "2025-06-18");
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("post: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

fn header(a: &Answer, name: &str) -> String {
    a.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn call_body(id: i64, tool: &str, args: Value) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})
        .to_string()
}

/// Send `n` initialize requests; returns the answers.
async fn inits(http: &reqwest::Client, url: &str, n: usize) -> Vec<Answer> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(post(http, url, &init_body("2025-06-18"), None).await);
    }
    out
}

fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

#[tokio::test]
async fn a_limit_of_n_lets_exactly_n_through_then_answers_429_with_headers() {
    let gw = start(
        "rate_limits:\n  defaults: false\n  policies:\n    calls: { key: [ip], rate: 5/h }\n",
    )
    .await;
    let http = reqwest::Client::new();
    let answers = inits(&http, &gw.url(), 9).await;
    assert_eq!(count(&answers, 200), 5, "exactly the limit passes");
    assert_eq!(count(&answers, 429), 4);
    // Allowed answers carry the policy and what is left of it.
    assert_eq!(
        header(&answers[0], "ratelimit-policy"),
        "\"calls\";q=5;w=3600"
    );
    assert!(header(&answers[0], "ratelimit").starts_with("\"calls\";r=4;t="));
    assert!(header(&answers[4], "ratelimit").starts_with("\"calls\";r=0;t="));
    // Refused: Retry-After (one interval: 3600 s / 5), the headers, a JSON-RPC error.
    let refused = &answers[5];
    assert_eq!(header(refused, "retry-after"), "720");
    assert_eq!(header(refused, "ratelimit-policy"), "\"calls\";q=5;w=3600");
    let v: Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(v["error"]["code"], -32029);
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("rate limit exceeded") && msg.contains("calls"),
        "{msg}"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            "mcp_gateway_ratelimit_decisions_total{outcome=\"limited\",policy=\"calls\"} 4"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("mcp_gateway_refusals_total{reason=\"rate_limited\"} 4"));
}

#[tokio::test]
async fn a_limit_on_one_tool_does_not_touch_another() {
    let gw = start(
        "rate_limits:\n  defaults: false\n  policies:\n    adds: { key: [ip, tool], tools: [add], rate: 3/h }\n",
    )
    .await;
    let http = reqwest::Client::new();
    let url = gw.url();
    let sid = raw_session(&http, &url).await;
    let mut add_ok = 0;
    let mut add_limited = 0;
    for i in 0..6 {
        let a = post(
            &http,
            &url,
            &call_body(10 + i, "add", json!({"a": 1, "b": 2})),
            Some(&sid),
        )
        .await;
        match a.status {
            200 => {
                assert_eq!(result_text(&find_response(&a.body, 10 + i).unwrap()), "3");
                add_ok += 1;
            }
            429 => {
                let v: Value = serde_json::from_str(&a.body).unwrap();
                assert_eq!(v["id"], 10 + i, "the refusal names the call");
                add_limited += 1;
            }
            other => panic!("unexpected status {other}: {}", a.body),
        }
    }
    assert_eq!((add_ok, add_limited), (3, 3));
    for i in 0..6 {
        let a = post(
            &http,
            &url,
            &call_body(100 + i, "upper", json!({"text": "x"})),
            Some(&sid),
        )
        .await;
        assert_eq!(a.status, 200, "another tool is not limited: {}", a.body);
    }
    // Other methods are not counted by a tool policy either.
    let list = post(
        &http,
        &url,
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#,
        Some(&sid),
    )
    .await;
    assert_eq!(list.status, 200);
}

#[tokio::test]
async fn the_n_plus_first_parallel_call_is_refused_and_slots_come_back() {
    let gw = start(
        "rate_limits:\n  defaults: false\n  policies:\n    inflight: { key: [ip], concurrency: 2 }\n",
    )
    .await;
    let http = reqwest::Client::new();
    let url = gw.url();
    let sid = raw_session(&http, &url).await;
    let slow = |id: i64, n: u32| call_body(id, "slow_count", json!({"n": n, "delay_ms": 100}));
    // Two slow calls hold both slots: one finishes after ~1 s, one the client abandons.
    let finishing = {
        let (http, url, sid, body) = (http.clone(), url.clone(), sid.clone(), slow(1, 10));
        tokio::spawn(async move { post(&http, &url, &body, Some(&sid)).await.status })
    };
    let abandoned = {
        let (url, sid, body) = (url.clone(), sid.clone(), slow(2, 300));
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            post(&http, &url, &body, Some(&sid)).await.status
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let third = post(
        &http,
        &url,
        &call_body(3, "add", json!({"a": 1, "b": 1})),
        Some(&sid),
    )
    .await;
    assert_eq!(third.status, 429, "{}", third.body);
    assert!(
        third.body.contains("too many requests in progress"),
        "{}",
        third.body
    );
    // A finished call frees its slot.
    assert_eq!(finishing.await.unwrap(), 200);
    let a = post(
        &http,
        &url,
        &call_body(4, "add", json!({"a": 1, "b": 1})),
        Some(&sid),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // So does a client that goes away (its call would run 30 s more).
    abandoned.abort();
    let _ = abandoned.await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut freed = false;
    while Instant::now() < deadline && !freed {
        // Hold one slot ourselves so the probe needs the abandoned one back.
        let hold = {
            let (http, url, sid, body) = (http.clone(), url.clone(), sid.clone(), slow(5, 10));
            tokio::spawn(async move { post(&http, &url, &body, Some(&sid)).await.status })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let probe = post(
            &http,
            &url,
            &call_body(6, "add", json!({"a": 2, "b": 2})),
            Some(&sid),
        )
        .await;
        freed = probe.status == 200;
        let _ = hold.await;
    }
    assert!(freed, "the abandoned call's slot came back");
}

fn redis_conn_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

fn replica(port: u16, admin: u16, prefix: &str, backend: &str) -> String {
    config_with(
        port,
        admin,
        &format!(
            "redis: {{ url: \"redis://127.0.0.1:6379\", prefix: \"{prefix}\" }}\nrate_limits:\n  defaults: false\n  # Sharing is under test, not slowness: a loaded machine must not trip the 5 ms default.\n  redis_timeout: 500ms\n  policies:\n    shared: {{ key: [ip], rate: 20/h, backend: {backend} }}\n"
        ),
    )
}

#[tokio::test]
async fn two_replicas_share_one_redis_limit_and_local_ones_do_not() {
    for (backend, expected) in [("redis", 20), ("local", 40)] {
        let prefix = format!("rl-{}", uuid::Uuid::new_v4().simple());
        let (p1, a1, p2, a2) = (free_port(), free_port(), free_port(), free_port());
        let g1 = Gateway::start_with(&replica(p1, a1, &prefix, backend), p1, a1).await;
        let g2 = Gateway::start_with(&replica(p2, a2, &prefix, backend), p2, a2).await;
        g1.wait_redis_up().await;
        g2.wait_redis_up().await;
        let http = reqwest::Client::new();
        let mut allowed = 0;
        for i in 0..60 {
            let url = if i % 2 == 0 { g1.url() } else { g2.url() };
            if post(&http, &url, &init_body("2025-06-18"), None)
                .await
                .status
                == 200
            {
                allowed += 1;
            }
        }
        assert_eq!(allowed, expected, "backend {backend}");
    }
}

/// A policy that takes allowance from Redis in blocks: a replica answers most checks from
/// memory, yet the replicas together never admit more than the limit.
#[tokio::test]
async fn prefetched_allowance_saves_round_trips_and_never_exceeds_the_shared_limit() {
    let prefix = format!("rl-{}", uuid::Uuid::new_v4().simple());
    let cfg = |port, admin| {
        config_with(
            port,
            admin,
            &format!(
                "redis: {{ url: \"redis://127.0.0.1:6379\", prefix: \"{prefix}\" }}\nrate_limits:\n  defaults: false\n  redis_timeout: 500ms\n  policies:\n    shared: {{ key: [ip], rate: 40/d, prefetch: 8 }}\n"
            ),
        )
    };
    let (p1, a1, p2, a2) = (free_port(), free_port(), free_port(), free_port());
    let g1 = Gateway::start_with(&cfg(p1, a1), p1, a1).await;
    let g2 = Gateway::start_with(&cfg(p2, a2), p2, a2).await;
    g1.wait_redis_up().await;
    g2.wait_redis_up().await;
    let http = reqwest::Client::new();
    let calls = "mcp_gateway_ratelimit_redis_calls_total";

    // One replica alone: blocks of 1, 2, 4, 8, 8, 8 cover 30 requests in 6 round trips.
    let first = inits(&http, &g1.url(), 30).await;
    assert_eq!(count(&first, 200), 30);
    let g1_calls = metric(&g1.metrics().await, calls);
    assert!(
        (6.0..=10.0).contains(&g1_calls),
        "30 requests took {g1_calls} Redis checks"
    );
    let last = first
        .last()
        .map(|a| header(a, "ratelimit"))
        .unwrap_or_default();
    assert!(last.starts_with("\"shared\";r="), "{last}");

    // Both replicas: whatever each holds, no more than 40 in all.
    let mut answers = Vec::new();
    for i in 0..40 {
        let url = if i % 2 == 0 { g1.url() } else { g2.url() };
        answers.push(post(&http, &url, &init_body("2025-06-18"), None).await);
    }
    let admitted = 30 + count(&answers, 200);
    assert!(admitted <= 40, "{admitted} admitted over a limit of 40");
    // Allowance a replica holds unused is lost to the caller: at most one block each.
    assert!(admitted >= 40 - 2 * 8, "only {admitted} of 40 admitted");
    let refused = answers
        .iter()
        .find(|a| a.status == 429)
        .expect("the limit was reached");
    assert!(!header(refused, "retry-after").is_empty());
    let total = metric(&g1.metrics().await, calls) + metric(&g2.metrics().await, calls);
    assert!(total < 70.0, "{total} Redis checks for 70 requests");
}

/// Allowance a replica already holds is spent while Redis is away; past it, the policy's
/// `on_redis_error` applies (here `deny`).
#[tokio::test]
async fn held_allowance_is_used_while_redis_is_away_then_the_outage_policy_applies() {
    let redis_port = free_port();
    let mut redis = start_redis(redis_port);
    let (port, admin) = (free_port(), free_port());
    let extra = format!(
        "redis: {{ url: \"{}\", prefix: \"held\" }}\nrate_limits:\n  defaults: false\n  redis_timeout: 500ms\n  policies:\n    held: {{ key: [ip], rate: 40/d, prefetch: 8, on_redis_error: deny }}\n",
        redis_conn_url(redis_port)
    );
    let gw = Gateway::start_with(&config_with(port, admin, &extra), port, admin).await;
    gw.wait_redis_up().await;
    let http = reqwest::Client::new();
    // Blocks of 1, 2 and 4: seven granted, four used, three held.
    assert_eq!(count(&inits(&http, &gw.url(), 4).await, 200), 4);
    let calls = metric(
        &gw.metrics().await,
        "mcp_gateway_ratelimit_redis_calls_total",
    );
    assert_eq!(calls, 3.0, "blocks of 1, 2 and 4");
    redis.kill().unwrap();
    redis.wait().unwrap();
    let during = inits(&http, &gw.url(), 5).await;
    assert_eq!(
        during.iter().map(|a| a.status).collect::<Vec<_>>(),
        [200, 200, 200, 429, 429],
        "three from what was held, then deny"
    );
    assert!(
        during[3].body.contains("cannot be checked right now"),
        "{}",
        during[3].body
    );
}

fn start_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server (scripts/services installs it): {e}"));
    let ok = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(ok, "redis-server did not start on {port}");
    child
}

#[tokio::test]
async fn redis_killed_mid_run_each_outage_policy_behaves_and_the_shared_limit_returns() {
    let redis_port = free_port();
    let mut redis = start_redis(redis_port);
    let (port, admin) = (free_port(), free_port());
    let routes = "  - path: /allow\n    pool: tools\n    upstream_path: /mcp\n  - path: /deny\n    pool: tools\n    upstream_path: /mcp\n  - path: /local\n    pool: tools\n    upstream_path: /mcp\n";
    let extra = format!(
        "redis: {{ url: \"{}\", prefix: \"outage\" }}\nrate_limits:\n  defaults: false\n  replicas: 2\n  redis_timeout: 50ms\n  policies:\n    open: {{ key: [ip], rate: 10/h, routes: [/allow], on_redis_error: allow }}\n    closed: {{ key: [ip], rate: 10/h, routes: [/deny], on_redis_error: deny }}\n    fallback: {{ key: [ip], rate: 10/h, routes: [/local], on_redis_error: local }}\n",
        redis_conn_url(redis_port)
    );
    let config = config_with(port, admin, &extra).replace(
        "    upstream_path: /mcp\npools:",
        &format!("    upstream_path: /mcp\n{routes}pools:"),
    );
    let gw = Gateway::start_with(&config, port, admin).await;
    gw.wait_redis_up().await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let send = |path: &'static str, n: usize| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move { inits(&http, &url, n).await }
    };
    // Redis up: each route's shared limit counts.
    for path in ["/allow", "/deny", "/local"] {
        assert_eq!(count(&send(path, 2).await, 200), 2);
    }
    // Redis killed.
    redis.kill().unwrap();
    redis.wait().unwrap();
    let allow = send("/allow", 15).await;
    assert_eq!(
        count(&allow, 200),
        15,
        "allow: no limit while Redis is away"
    );
    let deny = send("/deny", 5).await;
    assert_eq!(
        count(&deny, 429),
        5,
        "deny: everything refused while Redis is away"
    );
    assert!(
        deny[0].body.contains("cannot be checked right now"),
        "{}",
        deny[0].body
    );
    let local = send("/local", 12).await;
    assert_eq!(
        count(&local, 200),
        5,
        "local: limit ÷ replicas (10 / 2) on this node"
    );
    assert_eq!(gw.redis_down().await, Some(1));
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("outcome=\"redis_down_allowed\",policy=\"open\"} 15"),
        "{metrics}"
    );
    assert!(metrics.contains("outcome=\"redis_down_denied\",policy=\"closed\"} 5"));
    assert!(metrics.contains("outcome=\"fallback_limited\",policy=\"fallback\"} 7"));
    // Redis back (empty: it keeps nothing on disk): the shared limit is in force again
    // without a restart — the fallback bucket is spent, so 10 passes means Redis counts.
    let _redis = start_redis(redis_port);
    gw.wait_redis_up().await;
    let back = send("/local", 14).await;
    assert_eq!(count(&back, 200), 10, "the shared limit is back");
    assert_eq!(count(&back, 429), 4);
    let mut redis = _redis;
    let _ = redis.kill();
    let _ = redis.wait();
}

#[tokio::test]
async fn login_brute_force_from_one_address_is_stopped_and_users_are_limited_apart() {
    std::env::set_var(
        "MCP_GATEWAY_CREDENTIALS_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let db = temp_path("gateway.db");
    let (port, admin) = (free_port(), free_port());
    // The built-in `login` policy (20 per minute per address) plus a per-user rate.
    let extra = format!(
        "public_url: http://127.0.0.1:{port}\ndatabase: {{ url: \"sqlite://{}\" }}\nidentity: {{}}\nrate_limits:\n  policies:\n    user: {{ key: [user], rate: 4/h }}\n",
        db.display()
    );
    let gw = Gateway::start_with(&config_with(port, admin, &extra), port, admin).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut tokens = Vec::new();
    for email in ["rl-a@example.com", "rl-b@example.com"] {
        let r = http
            .post(format!("{base}/auth/register"))
            .json(&json!({"email": email, "password": "correct horse battery 1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = http
            .post(format!("{base}/auth/login"))
            .json(&json!({"email": email, "password": "correct horse battery 1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        tokens.push(v["access_token"].as_str().unwrap().to_string());
    }
    // Per user: A spends its 4, B still has its own.
    let init_as = |token: String| {
        let (http, url) = (http.clone(), gw.url());
        async move {
            http.post(&url)
                .header("content-type", "application/json")
                .header("accept", ACCEPT)
                .header("authorization", format!("Bearer {token}"))
                .body(init_body("2025-06-18"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut a = Vec::new();
    for _ in 0..6 {
        a.push(init_as(tokens[0].clone()).await);
    }
    assert_eq!(a, [200, 200, 200, 200, 429, 429]);
    assert_eq!(
        init_as(tokens[1].clone()).await,
        200,
        "another user is counted apart"
    );
    // Brute force: 4 attempts were made above; wrong passwords until 429.
    let mut statuses = Vec::new();
    for _ in 0..24 {
        let r = http
            .post(format!("{base}/auth/login"))
            .json(&json!({"email": "rl-a@example.com", "password": "guess"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        unauthorized, 16,
        "20 per minute per address, 4 used: {statuses:?}"
    );
    assert_eq!(limited, 8);
    // Even the right password is refused now: the address is limited, not the account.
    let r = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": "rl-a@example.com", "password": "correct horse battery 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
}

/// `n` initialize requests that say (in X-Forwarded-For) they come from `forwarded`.
async fn inits_from(url: &str, forwarded: &str, n: usize) -> usize {
    let http = reqwest::Client::new();
    let mut passed = 0;
    for _ in 0..n {
        let r = http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .header("x-forwarded-for", forwarded)
            .body(init_body("2025-06-18"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("post: {e}"));
        if r.status() == 200 {
            passed += 1;
        }
    }
    passed
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let policy =
        "rate_limits:\n  defaults: false\n  policies:\n    calls: { key: [ip], rate: 3/h }\n";
    // The test client (127.0.0.1) plays the load balancer.
    let trusted = start(&format!(
        "client_ip: {{ trusted_proxies: [127.0.0.0/8] }}\n{policy}"
    ))
    .await;
    // The balancer appends the peer it saw; what the client wrote before it is not trusted.
    assert_eq!(inits_from(&trusted.url(), "198.51.100.1", 5).await, 3);
    assert_eq!(inits_from(&trusted.url(), "198.51.100.2", 5).await, 3);
    assert_eq!(
        inits_from(&trusted.url(), "198.51.100.9, 198.51.100.1", 2).await,
        0,
        "a forged left-most entry does not escape the limit of the real client"
    );

    // Without trusted proxies the header is ignored: one address, one limit.
    let plain = start(policy).await;
    assert_eq!(inits_from(&plain.url(), "198.51.100.1", 2).await, 2);
    assert_eq!(inits_from(&plain.url(), "198.51.100.2", 5).await, 1);
}
