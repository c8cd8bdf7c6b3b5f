//! The gateway's own identity service, used through the gateway: register, log in, call a
//! tool with the access token, with an API key, and with a stored service credential injected.

mod common;

use common::*;
use serde_json::{json, Value};

async fn start() -> Gateway {
    start_with_db().await.0
}

async fn start_with_db() -> (Gateway, String) {
    let db = temp_path("gateway.db");
    start_on(&format!("sqlite://{}", db.display())).await
}

async fn start_on(db_url: &str) -> (Gateway, String) {
    std::env::set_var(
        "MCP_GATEWAY_CREDENTIALS_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let (port, admin) = (free_port(), free_port());
    let extra = format!(
        "public_url: http://127.0.0.1:{port}\ndatabase: {{ url: \"{db_url}\" }}\nidentity: {{}}\n"
    );
    let config = spawn_pool_config(port, admin, 1, &extra).replace(
        "    upstream_path: /mcp\n",
        "    upstream_path: /mcp\n  - path: /github\n    pool: tools\n    upstream_path: /mcp\n    credential: { service: github, header: Authorization, format: \"token {token}\" }\n  - path: /limited\n    pool: tools\n    upstream_path: /mcp\n    tools: [{ roles: [\"*\"], deny: [whoami] }]\n",
    );
    (
        Gateway::start_with(&config, port, admin).await,
        db_url.to_string(),
    )
}

fn base(gw: &Gateway) -> String {
    format!("http://127.0.0.1:{}", gw.port)
}

fn with_auth(value: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        "authorization",
        value.parse().unwrap_or_else(|e| panic!("{e}")),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn whoami(http: &reqwest::Client, url: &str) -> Value {
    let sid = raw_session(http, url).await;
    let (status, v) = raw_call(http, url, &sid, 2, "whoami", json!({})).await;
    assert_eq!(status, 200, "{v:?}");
    serde_json::from_str(&result_text(&v.unwrap_or_default())).unwrap_or_default()
}

async fn login(gw: &Gateway, email: &str, password: &str) -> String {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/auth/register", base(gw)))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = http
        .post(format!("{}/auth/login", base(gw)))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap_or_default();
    v["access_token"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn register_login_and_call_with_the_gateways_own_token() {
    let gw = start().await;
    own_token_flow(&gw).await;
}

#[tokio::test]
async fn the_same_flow_on_postgresql() {
    let schema = common::db::PgSchema::new("gw_test").await;
    let (gw, _) = start_on(&schema.url()).await;
    own_token_flow(&gw).await;
    api_key_flow(&gw).await;
    // The gateway goes before its schema.
    drop(gw);
    drop(schema);
}

async fn own_token_flow(gw: &Gateway) {
    // Closed without a token.
    let anon = reqwest::Client::new();
    let r = anon
        .post(gw.url())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401);

    let token = login(gw, "Dana@Example.test", "correct horse battery staple").await;
    let who = whoami(&with_auth(&format!("Bearer {token}")), &gw.url()).await;
    assert_eq!(who["headers"]["x-mcp-user-email"], "dana@example.test");
    assert!(who["headers"].get("authorization").is_none(), "{who}");
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", base(gw)))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert!(
        jwks["keys"].as_array().is_some_and(|k| !k.is_empty()),
        "{jwks}"
    );
}

#[tokio::test]
async fn api_keys_work_until_revoked() {
    let gw = start().await;
    api_key_flow(&gw).await;
}

async fn api_key_flow(gw: &Gateway) {
    let token = login(gw, "erin@example.test", "another long passphrase 42").await;
    let user = with_auth(&format!("Bearer {token}"));
    let r = user
        .post(format!("{}/auth/api-keys", base(gw)))
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.status().is_success(), "{}", r.status());
    let created: Value = r.json().await.unwrap_or_default();
    let key = created["key"].as_str().unwrap_or_default().to_string();
    let id = created["id"].as_str().unwrap_or_default().to_string();
    assert!(key.starts_with("mcpk_"), "{created}");

    // As X-API-Key and as a bearer token.
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-api-key", key.parse().unwrap_or_else(|e| panic!("{e}")));
    let by_header = reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let who = whoami(&by_header, &gw.url()).await;
    assert_eq!(who["headers"]["x-mcp-user-email"], "erin@example.test");
    assert!(
        who["headers"].get("x-api-key").is_none(),
        "the key reached the worker: {who}"
    );
    let who = whoami(&with_auth(&format!("Bearer {key}")), &gw.url()).await;
    assert_eq!(who["headers"]["x-mcp-user-email"], "erin@example.test");

    let r = user
        .delete(format!("{}/auth/api-keys/{id}", base(gw)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.status().is_success());
    let r = by_header
        .post(gw.url())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401, "a revoked key must stop working");
}

#[tokio::test]
async fn a_stored_credential_is_injected_and_a_missing_one_is_explained() {
    let gw = start().await;
    let token = login(&gw, "finn@example.test", "yet another long passphrase").await;
    let user = with_auth(&format!("Bearer {token}"));
    let github = format!("{}/github", base(&gw));
    let r = user
        .post(&github)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap_or_default();
    assert_eq!(v["error"]["code"], -32006);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/auth/credentials/github"),
        "{v}"
    );

    let r = user
        .put(format!("{}/auth/credentials/github", base(&gw)))
        .json(&json!({"token": "ghp_secret123"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.status().is_success(), "{}", r.status());
    let who = whoami(&user, &github).await;
    assert_eq!(
        who["headers"]["authorization"], "token ghp_secret123",
        "{who}"
    );
    assert_eq!(who["headers"]["x-mcp-user-email"], "finn@example.test");
}

#[tokio::test]
async fn a_denied_call_is_written_to_the_audit_trail() {
    let (gw, db) = start_with_db().await;
    let token = login(&gw, "hana@example.test", "the audit passphrase is long").await;
    let user = with_auth(&format!("Bearer {token}"));
    let limited = format!("{}/limited", base(&gw));
    let sid = raw_session(&user, &limited).await;
    let (status, v) = raw_call(&user, &limited, &sid, 3, "whoami", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(v.unwrap_or_default()["error"]["code"], -32005);
    let who = whoami(&user, &gw.url()).await;
    let user_id = who["headers"]["x-mcp-user-id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let store = mcp_proxy::store::Store::connect(&db, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut found = None;
    for _ in 0..100 {
        let events = store
            .list_audit_events(Some(&user_id), 50)
            .await
            .unwrap_or_default();
        found = events.into_iter().find(|e| e.kind == "call_denied");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ev = found.unwrap_or_else(|| panic!("no call_denied event for {user_id}"));
    assert_eq!(ev.detail["tool"], "whoami");
    assert_eq!(ev.detail["route"], "/limited");
    assert!(ev.ip.is_some());
}
