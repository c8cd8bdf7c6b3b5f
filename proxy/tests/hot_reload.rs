//! Hot reload through the real gateway: under load no request fails while routes, limits
//! and pools change by POST /admin/reload, SIGHUP and a file edit; a broken file keeps the
//! previous configuration and reports its errors; pools are reconciled (new ones started,
//! removed ones stopped, unchanged ones kept with their sessions).

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "reload-test-admin-token-0123456789";

fn set_admin_token() {
    // Every test of this file sets the same value, so parallel tests agree.
    std::env::set_var("MCP_GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN);
}

fn config_path(gw: &Gateway) -> PathBuf {
    gw.log.with_file_name("gateway.yaml")
}

fn route(path: &str, pool: &str) -> String {
    format!("  - path: {path}\n    pool: {pool}\n    upstream_path: /mcp\n")
}

fn second_pool() -> String {
    format!(
        "  second:\n    spawn:\n      command: [\"{}\", tools, --id, \"second-{{id}}\"]\n      count: 1\n      stop_grace: 2s\n    health: {{ kind: http, path: /health, interval: 1s }}\n",
        worker_bin().display()
    )
}

/// The standard config with extra routes (inserted before `pools:`), extra pools and extra
/// top-level YAML.
fn config(port: u16, admin: u16, routes: &str, pools: &str, extra: &str) -> String {
    spawn_pool_config(port, admin, 1, extra)
        .replace("pools:\n", &format!("{routes}pools:\n{pools}"))
}

fn write_config(gw: &Gateway, text: &str) {
    // Write then rename, as editors and Kubernetes do, so a reader never sees half a file.
    let path = config_path(gw);
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

async fn admin_get(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(gw.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn reload(gw: &Gateway) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(gw.admin_url("/admin/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn version(gw: &Gateway) -> u64 {
    admin_get(gw, "/admin/config").await.1["version"]
        .as_u64()
        .unwrap_or(0)
}

async fn wait_version(gw: &Gateway, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if version(gw).await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "configuration version did not reach {at_least}; gateway log:\n{}",
        gw.log_text()
    );
}

async fn init_status(url: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(init_body("2025-06-18"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Clients calling in a loop until `stop`; counts successes and failures.
fn load(url: String, stop: Arc<AtomicBool>, ok: Arc<AtomicUsize>, failed: Arc<AtomicUsize>) {
    for client in 0..2 {
        let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let sid = raw_session(&http, &url).await;
            let mut id = 10;
            while !stop.load(Ordering::Acquire) {
                id += 1;
                let (status, v) =
                    raw_call(&http, &url, &sid, id, "add", json!({"a": client, "b": id})).await;
                let good =
                    status == 200 && v.as_ref().map(result_text) == Some((client + id).to_string());
                if good {
                    ok.fetch_add(1, Ordering::AcqRel);
                } else {
                    eprintln!("failed call: {status} {v:?}");
                    failed.fetch_add(1, Ordering::AcqRel);
                }
            }
        });
    }
}

#[tokio::test]
async fn reloads_under_load_fail_no_request_and_apply_to_the_next_one() {
    set_admin_token();
    let (port, admin) = (free_port(), free_port());
    let gw = Gateway::start_with(&config(port, admin, "", "", ""), port, admin).await;
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(version(&gw).await, 1);
    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    load(gw.url(), stop.clone(), ok.clone(), failed.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. POST /admin/reload: a new route.
    assert_eq!(init_status(&format!("{base}/extra")).await, 404);
    write_config(&gw, &config(port, admin, &route("/extra", "tools"), "", ""));
    let (status, v) = reload(&gw).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["version"], 2);
    assert_eq!(init_status(&format!("{base}/extra")).await, 200);

    // 2. SIGHUP: a rate limit on the new route only.
    let limited = "rate_limits:\n  defaults: false\n  policies:\n    extra: { key: [ip], rate: 2/h, routes: [/extra] }\n";
    write_config(
        &gw,
        &config(port, admin, &route("/extra", "tools"), "", limited),
    );
    gw.signal(libc::SIGHUP);
    wait_version(&gw, 3).await;
    let statuses = [
        init_status(&format!("{base}/extra")).await,
        init_status(&format!("{base}/extra")).await,
        init_status(&format!("{base}/extra")).await,
    ];
    assert_eq!(
        statuses,
        [200, 200, 429],
        "the new limit applies to the next requests"
    );

    // 3. The file changes: picked up without any signal; the route goes away.
    // (The limit named /extra must go with it, or the file would be refused.)
    write_config(
        &gw,
        &config(port, admin, "", "", "rate_limits: { defaults: false }\n"),
    );
    wait_version(&gw, 4).await;
    assert_eq!(init_status(&format!("{base}/extra")).await, 404);

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = (ok.load(Ordering::Acquire), failed.load(Ordering::Acquire));
    assert!(ok > 20, "the load ran ({ok} calls)");
    assert_eq!(
        failed, 0,
        "no call failed across three reloads ({ok} succeeded)"
    );
    let log = gw.log_text();
    for trigger in ["admin_api", "sighup", "file_changed"] {
        assert!(
            log.contains(&format!("\"{trigger}\"")),
            "reload by {trigger} logged:\n{log}"
        );
    }
}

#[tokio::test]
async fn a_broken_file_keeps_the_previous_config_and_reports_its_errors() {
    set_admin_token();
    let (port, admin) = (free_port(), free_port());
    let good = config(port, admin, "", "", "");
    let gw = Gateway::start_with(&good, port, admin).await;
    // The admin API wants the token.
    let r = reqwest::Client::new()
        .post(gw.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .post(gw.admin_url("/admin/reload"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let broken = good
        .replace("    pool: tools\n", "    pool: nowhere\n")
        .replace(
            "shutdown_grace: 3s\n",
            "shutdown_grace: 3s\nlisten_backlog: 5\n",
        );
    write_config(&gw, &broken);
    let (status, v) = reload(&gw).await;
    assert_eq!(status, 400, "{v}");
    let errors = v["errors"].to_string();
    assert!(errors.contains("no pool named \\\"nowhere\\\""), "{errors}");
    assert!(errors.contains("listen_backlog"), "{errors}");
    assert!(
        errors.contains("gateway.yaml:"),
        "errors name the file and line: {errors}"
    );
    let (_, cfg) = admin_get(&gw, "/admin/config").await;
    assert_eq!(cfg["version"], 1);
    assert!(cfg["last_error"].as_str().unwrap_or("").contains("nowhere"));
    assert!(
        cfg["text"].as_str().unwrap_or("").contains("pool: tools"),
        "the text in force is the old one"
    );
    // Still serving on the old configuration.
    assert_eq!(init_status(&gw.url()).await, 200);
    // Not YAML at all, picked up by the file watch: refused too, the gateway keeps serving.
    write_config(&gw, "routes: [\n");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(version(&gw).await, 1);
    assert_eq!(init_status(&gw.url()).await, 200);
    // A good file again: accepted, and the error is cleared.
    write_config(
        &gw,
        &good.replace("shutdown_grace: 3s", "shutdown_grace: 4s"),
    );
    let (status, v) = reload(&gw).await;
    assert_eq!(status, 200, "{v}");
    let (_, cfg) = admin_get(&gw, "/admin/config").await;
    assert_eq!(cfg["last_error"], Value::Null);
    assert_eq!(cfg["pending_restart"], json!(["shutdown_grace"]));
}

#[tokio::test]
async fn pools_are_reconciled_new_ones_started_removed_ones_stopped_unchanged_ones_kept() {
    set_admin_token();
    let (port, admin) = (free_port(), free_port());
    let gw = Gateway::start_with(&config(port, admin, "", "", ""), port, admin).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let sid = raw_session(&http, &gw.url()).await;
    let before = children_of(gw.pid());
    assert_eq!(before.len(), 1, "one tools worker");

    write_config(
        &gw,
        &config(port, admin, &route("/second", "second"), &second_pool(), ""),
    );
    let (status, v) = reload(&gw).await;
    assert_eq!(status, 200, "{v}");
    // The reload answers once the new pool serves.
    assert_eq!(init_status(&format!("{base}/second")).await, 200);
    let during = children_of(gw.pid());
    assert_eq!(during.len(), 2, "the new pool's worker runs");
    assert!(
        during.contains(&before[0]),
        "the unchanged pool's worker was kept"
    );
    let new_worker = *during.iter().find(|p| **p != before[0]).unwrap();

    write_config(&gw, &config(port, admin, "", "", ""));
    let (status, _) = reload(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(init_status(&format!("{base}/second")).await, 404);
    assert!(
        wait_until(Duration::from_secs(10), || !alive(new_worker)),
        "the removed pool's worker was stopped"
    );
    assert!(alive(before[0]));
    // The session opened before both reloads still works on the kept worker.
    let (status, v) = raw_call(&http, &gw.url(), &sid, 5, "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(status, 200);
    assert_eq!(result_text(&v.unwrap()), "5");
}
