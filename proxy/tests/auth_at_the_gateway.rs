//! JWT checks at the gateway: a valid token reaches the worker as an identity (never as a
//! token), and every forged, stale or misdirected token is refused with 401.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ISS: &str = "https://id.example.test";
const AUD: &str = "http://127.0.0.1/mcp";
const HS_ISS: &str = "https://project.supabase.test/auth/v1";
const HS_SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn es256(claims: &Value, kid: Option<&str>, key_file: &str) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_ec_pem(&pem(key_file)).unwrap_or_else(|e| panic!("{e}"));
    encode(&h, claims, &key).unwrap_or_else(|e| panic!("{e}"))
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": sub, "exp": now() + 600, "iat": now(),
           "email": format!("{sub}@example.test"), "roles": ["user"]})
}

async fn start() -> Gateway {
    let (port, admin) = (free_port(), free_port());
    let extra = format!(
        r#"auth:
  issuers:
    - name: corp
      issuer: {ISS}
      audiences: ["{AUD}"]
      algorithms: [ES256]
      public_keys: [{{ kid: k1, pem_file: "{FIXTURES}/es256-public.pem" }}]
      leeway: 5s
    - name: supabase
      issuer: {HS_ISS}
      audiences: [authenticated]
      algorithms: [HS256]
      secret_env: TEST_HS_SECRET
      roles_claim: app_metadata.roles
"#
    );
    std::env::set_var("TEST_HS_SECRET", HS_SECRET);
    let config = spawn_pool_config(port, admin, 2, &extra);
    Gateway::start_with(&config, port, admin).await
}

async fn init_with(url: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(init_body("2025-06-18"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap_or_else(|e| panic!("{e}"))
}

async fn session_for(url: &str, token: &str) -> (reqwest::Client, String) {
    let http = bearer_client(token);
    let sid = raw_session(&http, url).await;
    (http, sid)
}

#[tokio::test]
async fn a_valid_token_reaches_the_worker_as_an_identity_not_as_a_token() {
    let gw = start().await;
    let token = es256(&claims("alice"), Some("k1"), "es256-private.pem");
    let (http, sid) = session_for(&gw.url(), &token).await;
    let (status, v) = raw_call(&http, &gw.url(), &sid, 2, "whoami", json!({})).await;
    assert_eq!(status, 200);
    let who: Value = serde_json::from_str(&result_text(&v.unwrap_or_default())).unwrap_or_default();
    let h = &who["headers"];
    assert_eq!(h["x-mcp-user-id"], "alice");
    assert_eq!(h["x-mcp-user-email"], "alice@example.test");
    assert_eq!(h["x-mcp-user-roles"], "user");
    assert!(
        h.get("authorization").is_none(),
        "the client's token reached the worker: {who}"
    );

    // A Supabase-style HS256 token with roles under app_metadata.
    let hs = hs256(
        &json!({"iss": HS_ISS, "aud": "authenticated", "sub": "bob", "exp": now() + 600,
                "app_metadata": {"roles": ["admin"]}}),
        HS_SECRET.as_bytes(),
    );
    let (http, sid) = session_for(&gw.url(), &hs).await;
    let (status, v) = raw_call(&http, &gw.url(), &sid, 2, "whoami", json!({})).await;
    assert_eq!(status, 200);
    let who: Value = serde_json::from_str(&result_text(&v.unwrap_or_default())).unwrap_or_default();
    assert_eq!(who["headers"]["x-mcp-user-id"], "bob");
    assert_eq!(who["headers"]["x-mcp-user-roles"], "admin");
}

#[tokio::test]
async fn client_supplied_identity_headers_never_reach_the_worker() {
    let gw = start().await;
    let token = es256(&claims("carol"), Some("k1"), "es256-private.pem");
    let (http, sid) = session_for(&gw.url(), &token).await;
    let body = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"whoami","arguments":{}}});
    let r = http
        .post(gw.url())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .header("x-mcp-user-id", "admin")
        .header("x-mcp-user-roles", "admin")
        .header("x-api-key", "stolen")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = r.text().await.unwrap_or_default();
    let who: Value =
        serde_json::from_str(&result_text(&find_response(&text, 3).unwrap_or_default()))
            .unwrap_or_default();
    assert_eq!(who["headers"]["x-mcp-user-id"], "carol");
    assert_eq!(who["headers"]["x-mcp-user-roles"], "user");
    assert!(who["headers"].get("x-api-key").is_none(), "{who}");
}

#[tokio::test]
async fn the_attack_battery_gets_401() {
    let gw = start().await;
    let url = gw.url();
    let good = es256(&claims("alice"), Some("k1"), "es256-private.pem");
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let parts: Vec<&str> = good.split('.').collect();

    let mut cases: Vec<(&str, String)> = Vec::new();
    // alg: none with no signature.
    cases.push((
        "alg none",
        format!("{}.{}.", b64(&json!({"alg":"none","typ":"JWT"})), parts[1]),
    ));
    // HS256 signed with the issuer's public key as the HMAC secret.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    cases.push((
        "HS256 with the public key",
        encode(
            &h,
            &claims("alice"),
            &EncodingKey::from_secret(&pem("es256-public.pem")),
        )
        .unwrap_or_default(),
    ));
    let mut wrong_aud = claims("alice");
    wrong_aud["aud"] = json!("https://other.example/mcp");
    cases.push((
        "wrong aud",
        es256(&wrong_aud, Some("k1"), "es256-private.pem"),
    ));
    let mut wrong_iss = claims("alice");
    wrong_iss["iss"] = json!("https://evil.example");
    cases.push((
        "wrong iss",
        es256(&wrong_iss, Some("k1"), "es256-private.pem"),
    ));
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 120);
    cases.push(("expired", es256(&expired, Some("k1"), "es256-private.pem")));
    let mut early = claims("alice");
    early["nbf"] = json!(now() + 600);
    cases.push((
        "nbf in the future",
        es256(&early, Some("k1"), "es256-private.pem"),
    ));
    cases.push((
        "bad signature",
        es256(&claims("alice"), Some("k1"), "es256-other-private.pem"),
    ));
    cases.push((
        "unknown kid",
        es256(&claims("alice"), Some("k9"), "es256-private.pem"),
    ));
    cases.push(("truncated", good[..good.len() - 10].to_string()));
    let mut no_exp = claims("alice");
    no_exp.as_object_mut().map(|o| o.remove("exp"));
    cases.push(("no exp", es256(&no_exp, Some("k1"), "es256-private.pem")));
    cases.push(("garbage", "not.a.token".to_string()));

    for (name, token) in &cases {
        let r = init_with(&url, Some(&format!("Bearer {token}"))).await;
        assert_eq!(r.status(), 401, "{name} was not refused");
        let www = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            www.starts_with("Bearer ") && www.contains("invalid_token"),
            "{name}: {www}"
        );
        let v: Value = r.json().await.unwrap_or_default();
        assert_eq!(v["error"]["code"], -32004, "{name}");
    }
    // No token at all, and a token in the query string.
    let r = init_with(&url, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"mcp-gateway\"")
    );
    let r = init_with(&format!("{url}?access_token={good}"), None).await;
    assert_eq!(r.status(), 401);
    // The genuine token still works.
    assert_eq!(
        init_with(&url, Some(&format!("Bearer {good}")))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn another_users_session_id_gets_404() {
    let gw = start().await;
    let alice = es256(&claims("alice"), Some("k1"), "es256-private.pem");
    let mallory = es256(&claims("mallory"), Some("k1"), "es256-private.pem");
    let (_, sid) = session_for(&gw.url(), &alice).await;
    let (http_m, _) = session_for(&gw.url(), &mallory).await;
    let (status, body) = raw_call(&http_m, &gw.url(), &sid, 5, "whoami", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(body.unwrap_or_default()["error"]["code"], -32001);
    // Without any token the route is closed anyway.
    let anon = reqwest::Client::new();
    let (status, _) = raw_call(&anon, &gw.url(), &sid, 6, "whoami", json!({})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_missing_role_gets_403() {
    let (port, admin) = (free_port(), free_port());
    let extra = format!(
        r#"auth:
  issuers:
    - name: corp
      issuer: {ISS}
      audiences: ["{AUD}"]
      algorithms: [ES256]
      public_keys: [{{ kid: k1, pem_file: "{FIXTURES}/es256-public.pem" }}]
"#
    );
    let config = spawn_pool_config(port, admin, 1, &extra).replace(
        "    upstream_path: /mcp\n",
        "    upstream_path: /mcp\n    auth: { roles: [admin] }\n",
    );
    let gw = Gateway::start_with(&config, port, admin).await;
    let user = es256(&claims("alice"), Some("k1"), "es256-private.pem");
    let r = init_with(&gw.url(), Some(&format!("Bearer {user}"))).await;
    assert_eq!(r.status(), 403);
    assert!(r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|w| w.contains("insufficient_scope")));
    let mut admin_claims = claims("root");
    admin_claims["roles"] = json!(["admin"]);
    let adm = es256(&admin_claims, Some("k1"), "es256-private.pem");
    assert_eq!(
        init_with(&gw.url(), Some(&format!("Bearer {adm}")))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_401_points_to_the_protected_resource_metadata() {
    let (port, admin) = (free_port(), free_port());
    let public = format!("http://127.0.0.1:{port}");
    let extra = format!(
        r#"public_url: {public}
auth:
  issuers:
    - name: corp
      issuer: {ISS}
      audiences: ["{AUD}"]
      algorithms: [ES256]
      public_keys: [{{ kid: k1, pem_file: "{FIXTURES}/es256-public.pem" }}]
"#
    );
    let gw = Gateway::start_with(&spawn_pool_config(port, admin, 1, &extra), port, admin).await;
    let r = init_with(&gw.url(), None).await;
    assert_eq!(r.status(), 401);
    let www = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let meta_url = format!("{public}/.well-known/oauth-protected-resource/mcp");
    assert!(
        www.contains(&format!("resource_metadata=\"{meta_url}\"")),
        "{www}"
    );
    let meta: Value = reqwest::get(&meta_url)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(meta["resource"], format!("{public}/mcp"));
    assert_eq!(meta["authorization_servers"], json!([ISS]));
    assert_eq!(meta["bearer_methods_supported"], json!(["header"]));
}
