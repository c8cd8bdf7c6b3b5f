//! The admin API on the admin listener: who may call it, and the views of routes, pools and
//! workers, rate limits, users, API keys and audit events, against a real gateway with its
//! identity service on SQLite.

mod common;

use common::*;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "admin-api-test-token-0123456789abcdefghij";

async fn admin(gw: &Gateway, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(gw.admin_url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_admin_api_shows_routes_pools_limits_users_keys_and_audit_to_admins_only() {
    std::env::set_var("MCP_GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN);
    std::env::set_var(
        "MCP_GATEWAY_CREDENTIALS_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let db = temp_path("admin.db");
    let (port, admin_port) = (free_port(), free_port());
    let extra = format!(
        "public_url: http://127.0.0.1:{port}\ndatabase: {{ url: \"sqlite://{}\" }}\nidentity: {{}}\n",
        db.display()
    );
    let gw = Gateway::start_with(
        &spawn_pool_config(port, admin_port, 2, &extra),
        port,
        admin_port,
    )
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": "dana@example.com", "password": "correct horse battery 9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": "dana@example.com", "password": "correct horse battery 9"}))
        .send()
        .await
        .unwrap();
    let login: Value = r.json().await.unwrap();
    let user_token = login["access_token"].as_str().unwrap().to_string();
    let r = http
        .post(format!("{base}/auth/api-keys"))
        .bearer_auth(&user_token)
        .json(&json!({"name": "laptop"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    // Who may call it.
    assert_eq!(admin(&gw, "/admin/pools", None).await.0, 401);
    assert_eq!(
        admin(&gw, "/admin/pools", Some("not-the-token")).await.0,
        401
    );
    assert_eq!(
        admin(&gw, "/admin/pools", Some(&user_token)).await.0,
        403,
        "a valid token without the admin role"
    );

    // Pools and workers, with the sessions they were given.
    let client = reqwest::Client::builder()
        .default_headers({
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(
                "authorization",
                format!("Bearer {user_token}").parse().unwrap(),
            );
            h
        })
        .build()
        .unwrap();
    for _ in 0..4 {
        raw_session(&client, &gw.url()).await;
    }
    let (status, pools) = admin(&gw, "/admin/pools", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{pools}");
    let pool = &pools["pools"][0];
    assert_eq!(pool["name"], "tools");
    assert_eq!(pool["kind"], "spawn");
    assert_eq!(pool["healthy"], 2);
    let workers = pool["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let sessions: u64 = workers
        .iter()
        .map(|w| w["sessions_opened"].as_u64().unwrap())
        .sum();
    assert_eq!(sessions, 4, "{pools}");
    assert!(workers
        .iter()
        .all(|w| w["healthy"] == true && w["inflight"] == 0));

    let (_, routes) = admin(&gw, "/admin/routes", Some(ADMIN_TOKEN)).await;
    assert_eq!(routes["routes"][0]["path"], "/mcp");
    assert_eq!(routes["routes"][0]["auth"]["required"], true);

    let (_, limits) = admin(&gw, "/admin/rate-limits", Some(ADMIN_TOKEN)).await;
    let names: Vec<&str> = limits["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["login", "user", "user-inflight"]);
    assert!(
        limits["policies"][0]["local_keys"].as_u64().unwrap() >= 1,
        "{limits}"
    );

    let (_, users) = admin(&gw, "/admin/users", Some(ADMIN_TOKEN)).await;
    let dana = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "dana@example.com")
        .unwrap_or_else(|| panic!("{users}"))
        .clone();
    assert!(dana.get("password_hash").is_none(), "never shown");
    let id = dana["id"].as_str().unwrap();
    let (_, keys) = admin(
        &gw,
        &format!("/admin/users/{id}/api-keys"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(keys["keys"][0]["name"], "laptop");
    assert!(keys["keys"][0].get("secret").is_none() && keys["keys"][0].get("hash").is_none());

    // Audit events arrive through the log pipeline.
    let mut kinds = Vec::new();
    for _ in 0..50 {
        let (_, audit) = admin(&gw, "/admin/audit?limit=50", Some(ADMIN_TOKEN)).await;
        kinds = audit["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["kind"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        if kinds.iter().any(|k| k.contains("api_key")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(kinds.iter().any(|k| k.contains("login")), "{kinds:?}");
    assert!(kinds.iter().any(|k| k.contains("api_key")), "{kinds:?}");
    assert_eq!(
        admin(&gw, "/admin/audit?limit=0", Some(ADMIN_TOKEN))
            .await
            .0,
        400
    );
}
