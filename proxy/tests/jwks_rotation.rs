//! An outside issuer publishing a JWKS: its keys are fetched, a rotation at the provider is
//! picked up without a restart, and a provider outage keeps the last good set.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const ISS: &str = "https://oidc.example.test/realms/mcp";
const AUD: &str = "mcp-gateway";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn key(file: &str) -> EncodingKey {
    let pem = std::fs::read(format!("{FIXTURES}/{file}")).unwrap_or_else(|e| panic!("{e}"));
    EncodingKey::from_ec_pem(&pem).unwrap_or_else(|e| panic!("{e}"))
}

fn jwk(file: &str, kid: &str) -> Jwk {
    let mut j =
        Jwk::from_encoding_key(&key(file), Algorithm::ES256).unwrap_or_else(|e| panic!("{e}"));
    j.common.key_id = Some(kid.to_string());
    j
}

fn token(file: &str, kid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.to_string());
    encode(
        &h,
        &json!({"iss": ISS, "aud": AUD, "sub": "oidc-user", "exp": now + 600}),
        &key(file),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// What the test provider serves: a key set, or an outage.
type Served = Arc<Mutex<Option<JwkSet>>>;

async fn provider(served: Served) -> u16 {
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let served = served.clone();
            async move {
                match served.lock().ok().and_then(|s| s.clone()) {
                    Some(set) => axum::Json(set).into_response(),
                    None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

async fn status_with(gw: &Gateway, tok: &str) -> u16 {
    reqwest::Client::new()
        .post(gw.url())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("authorization", format!("Bearer {tok}"))
        .body(init_body("2025-06-18"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn set(served: &Served, keys: Option<Vec<Jwk>>) {
    if let Ok(mut s) = served.lock() {
        *s = keys.map(|keys| JwkSet { keys });
    }
}

#[tokio::test]
async fn jwks_rotation_is_picked_up_and_outages_keep_the_last_good_set() {
    let served: Served = Arc::new(Mutex::new(None));
    set(&served, Some(vec![jwk("es256-private.pem", "k1")]));
    let jwks_port = provider(served.clone()).await;
    let (port, admin) = (free_port(), free_port());
    let extra = format!(
        r#"auth:
  issuers:
    - name: oidc
      issuer: {ISS}
      audiences: [{AUD}]
      algorithms: [ES256]
      jwks_uri: http://127.0.0.1:{jwks_port}/jwks
      jwks_max_age: 1h
"#
    );
    let gw = Gateway::start_with(&spawn_pool_config(port, admin, 1, &extra), port, admin).await;

    let t1 = token("es256-private.pem", "k1");
    let mut ok = false;
    for _ in 0..100 {
        if status_with(&gw, &t1).await == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        ok,
        "the initial key set was not fetched; log:\n{}",
        gw.log_text()
    );

    // The provider rotates to k2 (k1 gone). No restart: the unknown kid triggers a refetch.
    set(&served, Some(vec![jwk("es256-other-private.pem", "k2")]));
    let t2 = token("es256-other-private.pem", "k2");
    assert_eq!(status_with(&gw, &t2).await, 200, "rotation not picked up");
    // t1's key was cached as verified before; a fresh token signed with k1 is refused now.
    let t1b = {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        token("es256-private.pem", "k1")
    };
    assert_eq!(
        status_with(&gw, &t1b).await,
        401,
        "a key removed at the provider must stop working"
    );

    // Outage: the last good set stays in use.
    set(&served, None);
    let t2b = token("es256-other-private.pem", "k2");
    assert_eq!(status_with(&gw, &t2b).await, 200);
    // A made-up kid during the outage: refused, and no crash.
    assert_eq!(
        status_with(&gw, &token("es256-private.pem", "k-unknown")).await,
        401
    );
    assert_eq!(status_with(&gw, &t2b).await, 200);
}
