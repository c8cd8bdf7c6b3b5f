//! Two gateway processes sharing a database and Redis: a revocation made on one is enforced
//! by the other within a second (Redis pub/sub), and at once on the one that made it. Without
//! Redis, a logout still reaches the other replica, through the database's cutoff table.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn replica_config(port: u16, admin: u16, public_port: u16, db: &str, prefix: &str) -> String {
    let extra = format!(
        "public_url: http://127.0.0.1:{public_port}\ndatabase: {{ url: \"sqlite://{db}\" }}\nidentity: {{}}\nredis: {{ url: \"redis://127.0.0.1:6379\", prefix: \"{prefix}\" }}\n"
    );
    spawn_pool_config(port, admin, 1, &extra).replace(
        "    upstream_path: /mcp\n",
        "    upstream_path: /mcp\n  - path: /github\n    pool: tools\n    upstream_path: /mcp\n    credential: { service: github, header: Authorization, format: \"token {token}\" }\n",
    )
}

async fn redis_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open("redis://127.0.0.1:6379")
        .unwrap_or_else(|e| panic!("{e}"))
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("Redis must run at 127.0.0.1:6379 (scripts/services starts it): {e}")
        })
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn init_status(url: &str, header: (&str, &str)) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header(header.0, header.1)
        .body(init_body("2025-06-18"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Log out at the identity service `base` with the refresh token; it must succeed.
async fn logout(base: &str, refresh: &str) {
    let r = reqwest::Client::new()
        .post(format!("{base}/auth/logout"))
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("logout: {e}"));
    assert!(r.status().is_success(), "logout: {}", r.status());
}

/// Poll until `url` refuses the credential; returns how long that took.
async fn refused_within(url: &str, header: (&str, &str), limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if init_status(url, header).await == 401 {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The identity service's key for stored credentials and signing keys, the same for both
/// replicas (each test sets it: tests run alone or in any order).
fn set_credentials_key() {
    std::env::set_var(
        "MCP_GATEWAY_CREDENTIALS_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
}

#[tokio::test]
async fn revocations_reach_the_other_replica_within_a_second() {
    set_credentials_key();
    let db = temp_path("shared.db").display().to_string();
    let prefix = format!("mcp-test-{}-{}", std::process::id(), free_port());
    let (pa, aa) = (free_port(), free_port());
    let a = Gateway::start_with(&replica_config(pa, aa, pa, &db, &prefix), pa, aa).await;
    let (pb, ab) = (free_port(), free_port());
    // Same public URL: one issuer, one audience, for both replicas.
    let b = Gateway::start_with(&replica_config(pb, ab, pa, &db, &prefix), pb, ab).await;
    let base_a = format!("http://127.0.0.1:{pa}");
    let http = reqwest::Client::new();

    let creds = json!({"email": "gus@example.test", "password": "a fine long passphrase"});
    let r = http
        .post(format!("{base_a}/auth/register"))
        .json(&creds)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 201);
    let login: Value = http
        .post(format!("{base_a}/auth/login"))
        .json(&creds)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let token = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let refresh = login["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let bearer = format!("Bearer {token}");

    // The token from A works on B.
    assert_eq!(init_status(&b.url(), ("authorization", &bearer)).await, 200);

    // An API key made on A works on B (and B caches that), until A revokes it.
    let (id, key) = create_api_key(&base_a, &token, "replica-test").await;
    assert_eq!(init_status(&b.url(), ("x-api-key", &key)).await, 200);
    assert_eq!(init_status(&b.url(), ("x-api-key", &key)).await, 200);
    // The lookup is shared through Redis for the other replicas.
    use redis::AsyncCommands;
    let mut rc = redis_conn().await;
    let shared_key = format!("{prefix}:apikey:{}", sha256_hex(&key));
    let cached: Option<Vec<u8>> = rc.get(&shared_key).await.unwrap_or(None);
    let cached = String::from_utf8(cached.unwrap_or_default()).unwrap_or_default();
    assert!(
        cached.contains("gus@example.test"),
        "no shared entry for the key: {cached:?}"
    );
    revoke_api_key(&base_a, &token, &id).await;
    assert_eq!(
        init_status(&a.url(), ("x-api-key", &key)).await,
        401,
        "at once on A"
    );
    let took = refused_within(&b.url(), ("x-api-key", &key), Duration::from_secs(1)).await;
    assert!(
        took.is_some(),
        "B still accepts a key revoked on A after 1 s; B log:\n{}",
        b.log_text()
    );

    // A credential stored on A is used on B, and Redis holds it sealed, never in clear.
    let r = http
        .put(format!("{base_a}/auth/credentials/github"))
        .header("authorization", &bearer)
        .json(&json!({"token": "ghp_clear_text_secret"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.status().is_success());
    let gh_b = format!("http://127.0.0.1:{pb}/github");
    let with_token = {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "authorization",
            bearer.parse().unwrap_or_else(|e| panic!("{e}")),
        );
        reqwest::Client::builder()
            .default_headers(h)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let sid = raw_session(&with_token, &gh_b).await;
    let (status, v) = raw_call(&with_token, &gh_b, &sid, 2, "whoami", json!({})).await;
    assert_eq!(status, 200);
    let who: Value = serde_json::from_str(&result_text(&v.unwrap_or_default())).unwrap_or_default();
    assert_eq!(
        who["headers"]["authorization"],
        "token ghp_clear_text_secret"
    );
    let cred_keys: Vec<String> = rc
        .keys(format!("{prefix}:cred:*"))
        .await
        .unwrap_or_default();
    assert_eq!(cred_keys.len(), 1, "{cred_keys:?}");
    let sealed: Vec<u8> = rc.get(&cred_keys[0]).await.unwrap_or_default();
    assert!(!sealed.is_empty());
    assert!(
        !String::from_utf8_lossy(&sealed).contains("ghp_clear_text_secret"),
        "a credential must never sit in Redis in clear"
    );

    // Logout on A ends the access token everywhere.
    logout(&base_a, &refresh).await;
    assert_eq!(
        init_status(&a.url(), ("authorization", &bearer)).await,
        401,
        "at once on A"
    );
    let took = refused_within(&b.url(), ("authorization", &bearer), Duration::from_secs(1)).await;
    assert!(
        took.is_some(),
        "B still accepts a logged-out token after 1 s"
    );

    // Logging in again works on both (a new token is after the cutoff).
    let again: Value = http
        .post(format!("{base_a}/auth/login"))
        .json(&creds)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let fresh = format!(
        "Bearer {}",
        again["access_token"].as_str().unwrap_or_default()
    );
    assert_eq!(init_status(&a.url(), ("authorization", &fresh)).await, 200);
    assert_eq!(init_status(&b.url(), ("authorization", &fresh)).await, 200);
}

/// No Redis: the logout's cutoff reaches the other replica through the database, which every
/// replica reads every few seconds (`CUTOFF_POLL_INTERVAL`, 5 s).
#[tokio::test]
async fn without_redis_a_logout_reaches_the_other_replica_through_the_database() {
    set_credentials_key();
    let db = temp_path("shared-no-redis.db").display().to_string();
    let config = |port: u16, admin: u16, public_port: u16| {
        replica_config(port, admin, public_port, &db, "unused")
            .lines()
            .filter(|l| !l.starts_with("redis:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (pa, aa) = (free_port(), free_port());
    let a = Gateway::start_with(&config(pa, aa, pa), pa, aa).await;
    let (pb, ab) = (free_port(), free_port());
    let b = Gateway::start_with(&config(pb, ab, pa), pb, ab).await;
    let base_a = format!("http://127.0.0.1:{pa}");
    let _ = register_and_login(&base_a, "hal@example.test").await;
    let (token, refresh) = login_tokens(&base_a, "hal@example.test").await;
    let bearer = format!("Bearer {token}");
    assert_eq!(init_status(&b.url(), ("authorization", &bearer)).await, 200);
    logout(&base_a, &refresh).await;
    assert_eq!(init_status(&a.url(), ("authorization", &bearer)).await, 401);
    let took = refused_within(
        &b.url(),
        ("authorization", &bearer),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        took.is_some(),
        "B still accepts a token logged out on A after 10 s; B log:\n{}",
        b.log_text()
    );
}
