//! Zero-downtime upgrade: a second gateway process started with `--upgrade` takes the
//! listening socket over when the first gets SIGQUIT; under steady load no connection is
//! refused and no request fails, and sessions continue on the new process.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn an_upgrade_under_load_refuses_no_connection_and_fails_no_request() {
    // Workers outside the gateway (a remote pool), and one session key for both processes,
    // so sessions opened on the old process continue on the new one.
    std::env::set_var(
        "MCP_GATEWAY_SESSION_KEY",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    );
    let worker_port = free_port();
    let mut worker = Command::new(worker_bin())
        .args(["tools", "--id", "remote", "--listen"])
        .arg(format!("127.0.0.1:{worker_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", worker_port)).is_ok()
    }));
    let (port, admin) = (free_port(), free_port());
    let sock = temp_path("upgrade.sock");
    let config = format!(
        "listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:{admin}\nshutdown_grace: 5s\nupgrade_sock: {}\nroutes:\n  - {{ path: /mcp, pool: remote }}\npools:\n  remote:\n    upstreams: [\"127.0.0.1:{worker_port}\"]\n    health: {{ kind: http, path: /health, interval: 1s }}\n",
        sock.display()
    );
    let mut old = Gateway::start_with(&config, port, admin).await;
    let url = old.url();

    // Steady load: every call on a new connection, so a refused connect would show.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let retried = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client in 0..2i64 {
        let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
        let retried = retried.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let sid = raw_session(&http, &url).await;
            let mut id = 10;
            while !stop.load(Ordering::Acquire) {
                id += 1;
                let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"add","arguments":{"a":client,"b":id}}});
                // A connection the old process accepted in its last instant, whose request had
                // not arrived yet, is closed unanswered (Pingora drops connections parked
                // waiting for a request at shutdown): nothing was processed, so it is sent
                // again once, as HTTP clients do. Such retries are counted and reported.
                let mut answer = None;
                for attempt in 0..2 {
                    let sent = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("accept", ACCEPT)
                        .header("mcp-session-id", &sid)
                        .header("mcp-protocol-version", "2025-06-18")
                        .body(body.to_string())
                        .send()
                        .await;
                    match sent {
                        Err(e) if attempt == 0 && e.is_request() && !e.is_timeout() => {
                            eprintln!("unanswered connection, sent again: {e}");
                            retried.fetch_add(1, Ordering::AcqRel);
                        }
                        other => {
                            answer = Some(other);
                            break;
                        }
                    }
                }
                let Some(answer) = answer else { continue };
                let good = match answer {
                    Ok(r) if r.status() == 200 => {
                        let text = r.text().await.unwrap_or_default();
                        find_response(&text, id).map(|v| result_text(&v))
                            == Some((client + id).to_string())
                    }
                    Ok(r) => {
                        eprintln!("status {}", r.status());
                        false
                    }
                    Err(e) => {
                        eprintln!("request error: {e}");
                        false
                    }
                };
                if good {
                    ok.fetch_add(1, Ordering::AcqRel);
                } else {
                    failed.fetch_add(1, Ordering::AcqRel);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::Acquire);

    // The new process waits for the listener; SIGQUIT makes the old one hand it over.
    let new_log = temp_path("gateway-new.log");
    let cfg_path = old.log.with_file_name("gateway.yaml");
    let mut new = Command::new(env!("CARGO_BIN_EXE_mcp-proxy"))
        .args(["run", "--upgrade", "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&new_log).unwrap())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal(libc::SIGQUIT);
    let status = old.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "the old process drained and exited: {status:?}"
    );
    let after_old = ok.load(Ordering::Acquire);
    // The new process serves alone now, on the same port, with the same sessions.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Acquire), failed.load(Ordering::Acquire));
    assert!(
        before > 0 && after_old > before && ok > after_old,
        "load ran throughout: {before} / {after_old} / {ok}"
    );
    assert_eq!(
        failed, 0,
        "no request failed across the upgrade ({ok} succeeded)"
    );
    // The new process took the admin port over too.
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
    }));
    let log = std::fs::read_to_string(&new_log).unwrap_or_default();
    assert!(log.contains("gateway started"), "{log}");
    unsafe {
        libc::kill(new.id() as i32, libc::SIGTERM);
    }
    let _ = new.wait();
    let _ = worker.kill();
    let _ = worker.wait();
}
