//! Worker supervision, shutdown, refusals the gateway answers itself, and `validate`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {headers:?}: {e:?}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn whoami(http: &reqwest::Client, url: &str, sid: &str) -> Value {
    let (status, v) = raw_call(http, url, sid, 7, "whoami", json!({})).await;
    assert_eq!(status, 200, "whoami: {v:?}");
    serde_json::from_str(&result_text(&v.unwrap_or_default())).unwrap_or_default()
}

#[tokio::test]
async fn a_killed_worker_is_restarted_and_its_sessions_get_404() {
    let gw = Gateway::start(2).await;
    let http = reqwest::Client::new();
    let sid = raw_session(&http, &gw.url()).await;
    let who = whoami(&http, &gw.url(), &sid).await;
    let pid = who["pid"].as_i64().unwrap_or(0) as i32;
    let worker = who["worker"].as_str().unwrap_or_default().to_string();
    assert!(pid > 0);
    assert!(
        children_of(gw.pid()).contains(&pid),
        "worker {pid} is not the gateway's child"
    );
    // SAFETY: SIGKILL to the worker process we just identified.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    // The supervisor starts a replacement: a new child pid appears and the pool is whole.
    let gw_pid = gw.pid();
    assert!(
        wait_until(Duration::from_secs(15), || {
            let kids = children_of(gw_pid);
            kids.len() == 2 && !kids.contains(&pid)
        }),
        "no replacement worker; log:\n{}",
        gw.log_text()
    );
    gw.wait_ready(Duration::from_secs(15)).await;
    let healthy = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("mcp_gateway_worker_healthy{") && l.ends_with(" 1"))
            .count()
    };
    let mut ok = false;
    for _ in 0..100 {
        if healthy(&gw.metrics().await) == 2 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "both workers should be healthy again");
    let m = gw.metrics().await;
    assert!(
        m.contains("mcp_gateway_worker_restarts_total{pool=\"tools\"} 1"),
        "{m}"
    );

    // The old session named a process that is gone: 404, so the client re-initializes.
    let (status, body) = raw_call(&http, &gw.url(), &sid, 8, "add", json!({"a":1,"b":2})).await;
    assert_eq!(status, 404);
    assert_eq!(body.unwrap_or_default()["error"]["code"], -32001);
    // New sessions are served, by both workers including the replacement.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        let s = raw_session(&http, &gw.url()).await;
        let w = whoami(&http, &gw.url(), &s).await;
        seen.insert(w["worker"].as_str().unwrap_or_default().to_string());
        assert_ne!(w["pid"].as_i64().unwrap_or(0) as i32, pid);
    }
    assert!(
        seen.contains(&worker),
        "the restarted slot {worker} serves again: {seen:?}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_stops_every_worker() {
    let mut gw = Gateway::start(2).await;
    let workers = children_of(gw.pid());
    assert_eq!(workers.len(), 2, "two worker processes");
    let http = reqwest::Client::new();
    let sid = raw_session(&http, &gw.url()).await;
    let url = gw.url();
    // A call that takes ~1 s is in flight when the signal comes.
    let slow = tokio::spawn(async move {
        raw_call(
            &http,
            &url,
            &sid,
            5,
            "slow_count",
            json!({"n": 5, "delay_ms": 200}),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal(libc::SIGTERM);
    let (status, v) = slow.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200);
    assert_eq!(result_text(&v.unwrap_or_default()), "counted to 5");
    let exit = gw.wait_exit(Duration::from_secs(15));
    assert!(exit.success(), "exit status {exit}");
    for pid in workers {
        assert!(
            wait_until(Duration::from_secs(5), || !alive(pid)),
            "worker {pid} survived"
        );
    }
    let log = gw.log_text();
    assert!(log.contains("worker stopped"), "{log}");
}

#[tokio::test]
async fn workers_die_with_a_gateway_killed_by_sigkill() {
    let mut gw = Gateway::start(2).await;
    let workers = children_of(gw.pid());
    assert_eq!(workers.len(), 2);
    gw.signal(libc::SIGKILL);
    gw.wait_exit(Duration::from_secs(5));
    for pid in workers {
        assert!(
            wait_until(Duration::from_secs(5), || !alive(pid)),
            "orphan worker {pid}"
        );
    }
}

#[tokio::test]
async fn the_gateway_refuses_bad_requests_with_json_rpc_errors() {
    let gw = Gateway::start(1).await;
    let url = gw.url();

    let (s, v) = post(&url, &[("origin", "http://evil.example")], "{}").await;
    assert_eq!((s, v["error"]["code"].as_i64()), (403, Some(-32003)));
    let (s, _) = post(
        &url,
        &[("origin", "http://localhost:5173")],
        init_body("2025-06-18"),
    )
    .await;
    assert_eq!(s, 200, "an allowed origin passes");

    let five_mib = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(5 << 20)
    );
    let (s, v) = post(&url, &[], five_mib.clone()).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (413, Some(-32600)));
    // Chunked, without Content-Length: cut while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = five_mib
        .into_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let (s, v) = post(
        &url,
        &[],
        reqwest::Body::wrap_stream(futures::stream::iter(chunks)),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_i64()), (413, Some(-32600)));

    let (s, v) = post(&url, &[], r#"{"jsonrpc":"2.0","id":1,"method":"#).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32700)));
    let (s, v) = post(&url, &[], r#"{"jsonrpc":"2.0","id":1}"#).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32600)));
    let (s, v) = post(
        &url,
        &[("mcp-method", "tools/list")],
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add"}}"#,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_i64(), v["id"].as_i64()),
        (400, Some(-32020), Some(3))
    );

    let other = format!("http://127.0.0.1:{}/elsewhere", gw.port);
    let (s, _) = post(&other, &[], "{}").await;
    assert_eq!(s, 404);
    let r = reqwest::Client::new()
        .put(&url)
        .body("{}")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 405);

    // The worker was never bothered, and still serves.
    let (s, _) = post(&url, &[], init_body("2025-06-18")).await;
    assert_eq!(s, 200);
    let m = gw.metrics().await;
    for reason in [
        "origin_denied",
        "body_too_large",
        "parse_error",
        "invalid_request",
        "no_route",
    ] {
        assert!(
            m.contains(&format!(
                "mcp_gateway_refusals_total{{reason=\"{reason}\"}}"
            )),
            "{reason}:\n{m}"
        );
    }
}

fn start_worker(id: &str, port: u16) -> std::process::Child {
    let child = Command::new(worker_bin())
        .args([
            "tools",
            "--id",
            id,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    child
}

#[tokio::test]
async fn a_dead_upstream_is_skipped_retried_and_ejected() {
    // A remote pool of two workers the test starts itself; one dies after the gateway's
    // first health check, and long before the next one.
    let (pa, pb) = (free_port(), free_port());
    let mut a = start_worker("remote-a", pa);
    let mut b = start_worker("remote-b", pb);
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        r#"listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
routes:
  - path: /mcp
    pool: remote
pools:
  remote:
    upstreams: ["127.0.0.1:{pa}", "127.0.0.1:{pb}"]
    balance: round_robin
    health: {{ kind: http, path: /health, interval: 60s }}
"#
    );
    let gw = Gateway::start_with(&config, port, admin).await;
    let _ = a.kill();
    let _ = a.wait();
    for i in 0..6 {
        let (s, v) = post(&gw.url(), &[], init_body("2025-06-18")).await;
        assert_eq!(s, 200, "request {i}: {v}");
    }
    let m = gw.metrics().await;
    assert!(
        m.contains(
            "mcp_gateway_upstream_connect_failures_total{pool=\"remote\",worker=\"remote-0\"} 1"
        ),
        "one failed connect, then ejected:\n{m}"
    );
    assert!(
        m.contains("mcp_gateway_worker_healthy{pool=\"remote\",worker=\"remote-0\"} 0"),
        "{m}"
    );
    assert!(
        m.contains(
            "mcp_gateway_requests_total{method=\"initialize\",route=\"/mcp\",status=\"200\"} 6"
        ),
        "{m}"
    );
    let _ = b.kill();
    let _ = b.wait();
}

#[tokio::test]
async fn no_healthy_worker_means_503_and_not_ready() {
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        r#"listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
routes:
  - path: /mcp
    pool: broken
pools:
  broken:
    spawn: {{ command: [/bin/false], count: 1, ready_timeout: 1s }}
"#
    );
    let cfg = write_file("broken.yaml", &config);
    let child = Command::new(PROXY)
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Killed on drop, also when an assertion below fails.
    let _gateway = Gateway {
        child,
        port,
        admin,
        log: cfg.with_file_name("gateway.log"),
    };
    let http = reqwest::Client::new();
    // Not ready while the MCP listener is not up, then not ready for want of a worker.
    let mut ready = (0, String::new());
    for _ in 0..200 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
        {
            ready = (r.status().as_u16(), r.text().await.unwrap_or_default());
            if ready.1.contains("no healthy worker") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready.0, 503, "{ready:?}");
    assert!(
        ready.1.contains("no healthy worker in: broken"),
        "{ready:?}"
    );
    let (s, v) = post(
        &format!("http://127.0.0.1:{port}/mcp"),
        &[],
        init_body("2025-06-18"),
    )
    .await;
    assert_eq!((s, v["error"]["code"].as_i64()), (503, Some(-32002)));
    let alive = http
        .get(format!("http://127.0.0.1:{admin}/healthz"))
        .send()
        .await;
    assert_eq!(alive.map(|r| r.status().as_u16()).unwrap_or(0), 200);
}

#[test]
fn validate_lists_every_problem_with_lines() {
    let bad = write_file(
        "bad.yaml",
        "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nroutes:\n  - path: /mcp\n    pool: toolz\npools:\n  tools:\n    spawn:\n      command: [mcp-worker, tools]\n      count: 2\n      colour: blue\n",
    );
    let out = Command::new(PROXY)
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let name = bad.display().to_string();
    assert!(
        err.contains(&format!(
            "{name}:11:7: pools.tools.spawn.colour: unknown field `colour`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{name}:5:11: routes[0].pool: no pool named \"toolz\""
        )),
        "{err}"
    );

    let typed = write_file("typed.yaml", "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nroutes: []\npools:\n  tools:\n    spawn:\n      command: [w]\n      count: two\n");
    let out = Command::new(PROXY)
        .args(["validate", "--config"])
        .arg(&typed)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":8:14: pools.tools.spawn.count: expected an integer"),
        "{err}"
    );

    let good = Command::new(PROXY)
        .args(["validate", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/gateway.yaml"
        ))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
}

#[test]
fn every_shipped_configuration_validates() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    let mut files = vec![format!("{root}/gateway.yaml")];
    for entry in std::fs::read_dir(format!("{root}/examples")).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path.display().to_string());
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        let out = Command::new(PROXY)
            .args(["validate", "--config", &f])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn calls_beyond_the_in_flight_limit_get_503_at_once_and_streams_do_not_count() {
    let (port, admin) = (free_port(), free_port());
    let cfg = spawn_pool_config(port, admin, 1, "limits: { max_inflight_calls: 2 }\n");
    let gw = Gateway::start_with(&cfg, port, admin).await;
    let http = reqwest::Client::new();
    let url = gw.url();
    let sid = raw_session(&http, &url).await;
    // A standalone GET stream stays open throughout and takes no call slot.
    let stream = raw_stream(&http, &url, &sid).await;
    assert_eq!(stream.status(), 200);
    // Two slow calls hold both slots.
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let (http, url, sid) = (http.clone(), url.clone(), sid.clone());
            tokio::spawn(async move {
                raw_call(
                    &http,
                    &url,
                    &sid,
                    10 + i,
                    "slow_count",
                    json!({"n": 10, "delay_ms": 100}),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .body(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(v["error"]["code"], -32030, "{v}");
    // Refused before its body was read: the id is not known yet.
    assert!(v["id"].is_null(), "{v}");
    for s in slow {
        let (status, v) = s.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 200);
        assert_eq!(result_text(&v.unwrap_or_default()), "counted to 10");
    }
    // Slots come back: calls pass again.
    let (status, v) = raw_call(&http, &url, &sid, 4, "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(status, 200);
    assert_eq!(result_text(&v.unwrap_or_default()), "5");
    drop(stream);
}
