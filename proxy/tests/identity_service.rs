//! The identity service over HTTP, against real databases: an SQLite file in a temporary
//! directory and the PostgreSQL server at `postgres://postgres@127.0.0.1:5432/test` (override
//! with `MCP_PROXY_TEST_POSTGRES`), each PostgreSQL test in a schema of its own. An
//! unreachable PostgreSQL fails the tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::db::{PgSchema, SqliteDb};
use jsonwebtoken::{Algorithm, Validation};
use mcp_proxy::identity::{IdentityConfig, IdentityService};
use mcp_proxy::store::Store;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;

const ISSUER: &str = "http://127.0.0.1:8080";
const AUDIENCE: &str = "http://127.0.0.1:8080/mcp";
const KEY1: [u8; 32] = [7u8; 32];
const GOOD_PASSWORD: &str = "correct horse 42";

// ---------------------------------------------------------------------------------------------
// Databases

/// Runs `case` against a fresh, migrated store on each backend.
macro_rules! on_both_backends {
    ($name:ident, $case:path) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::SqliteDb::new("mcp-proxy-identity");
                let store = mcp_proxy::store::Store::connect(&db.url(), true)
                    .await
                    .expect("connect to SQLite");
                $case(store.clone()).await;
                store.close().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let schema = super::PgSchema::new("identity_test").await;
                let store = mcp_proxy::store::Store::connect(&schema.url(), true)
                    .await
                    .expect("connect to PostgreSQL");
                $case(store.clone()).await;
                store.close().await;
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn config() -> IdentityConfig {
    IdentityConfig::new(ISSUER, AUDIENCE, vec![("k1".to_owned(), KEY1)])
}

async fn service(store: &Store) -> Arc<IdentityService> {
    IdentityService::new(store.clone(), config())
        .await
        .expect("start the identity service")
}

/// Serves the router on an ephemeral port; returns its base URL.
async fn serve(svc: &Arc<IdentityService>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let app = svc.router();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    format!("http://{addr}")
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(base: String) -> Client {
        mcp_proxy::auth::jwks::install_crypto_provider();
        Client {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, value)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    async fn register(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/auth/register",
            None,
            json!({ "email": email, "password": password }),
        )
        .await
    }

    async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/auth/login",
            None,
            json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Registers and logs in; returns (user id, access token, refresh token).
    async fn account(&self, email: &str) -> (String, String, String) {
        let (status, body) = self.register(email, GOOD_PASSWORD).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().expect("id").to_owned();
        let (status, body) = self.login(email, GOOD_PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            id,
            body["access_token"].as_str().expect("access").to_owned(),
            body["refresh_token"].as_str().expect("refresh").to_owned(),
        )
    }
}

/// Verifies a token as the gateway would: kid → verification_keys(), ES256, iss, aud.
fn verify(svc: &IdentityService, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).expect("token header");
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.expect("the token names its kid");
    let keys = svc.verification_keys();
    let (_, key) = keys
        .iter()
        .find(|(k, _)| *k == kid)
        .unwrap_or_else(|| panic!("kid {kid} not among the verification keys"));
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[svc.issuer()]);
    validation.set_audience(&[svc.audience()]);
    jsonwebtoken::decode::<Value>(token, key, &validation)
        .expect("the token verifies")
        .claims
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

async fn audit_kinds(store: &Store) -> Vec<String> {
    store
        .list_audit_events(None, 1000)
        .await
        .expect("audit events")
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Cases

async fn accounts_and_tokens(store: Store) {
    let svc = service(&store).await;
    let c = Client::new(serve(&svc).await);

    // Register: email normalised.
    let (status, body) = c.register("  Alice@Example.COM ", GOOD_PASSWORD).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["email"], "alice@example.com");
    let alice_id = body["id"].as_str().expect("id").to_owned();
    let stored = store.get_user(&alice_id).await.expect("get").expect("user");
    assert_eq!(stored.email, "alice@example.com");
    assert!(
        stored.password_hash.starts_with("$argon2id$"),
        "{}",
        stored.password_hash
    );

    // Duplicate, in another case.
    let (status, body) = c.register("ALICE@example.com", GOOD_PASSWORD).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "email_taken");

    // Weak passwords: too short, and long but of one class.
    for weak in ["Short1!", "onlylowercaseletters", "123456789012345"] {
        let (status, body) = c.register("bob@example.com", weak).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{weak}: {body}");
        assert_eq!(body["error"], "weak_password");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("12 characters"),
            "{body}"
        );
    }
    // Malformed body: a JSON error too.
    let (status, body) = c.post("/auth/register", None, json!({ "email": 3 })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");

    // Login, and the token verifies with the published keys.
    let (status, pair) = c.login("alice@EXAMPLE.com", GOOD_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{pair}");
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 900);
    let access = pair["access_token"].as_str().expect("access").to_owned();
    let refresh1 = pair["refresh_token"].as_str().expect("refresh").to_owned();
    let claims = verify(&svc, &access);
    assert_eq!(claims["sub"], alice_id.as_str());
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], AUDIENCE);
    assert_eq!(claims["roles"], json!([]));
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert_eq!(exp - iat, 900);

    // The access token opens an authenticated endpoint; garbage does not.
    let (status, _) = c.get("/auth/api-keys", Some(&access)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = c.get("/auth/api-keys", Some("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Wrong password and unknown email: the same answer.
    let (s1, wrong) = c.login("alice@example.com", "wrong password 99").await;
    let (s2, unknown) = c.login("nobody@example.com", "wrong password 99").await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    assert_eq!(s2, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"], "invalid_credentials");

    // Refresh rotates.
    let (status, pair2) = c
        .post("/auth/refresh", None, json!({ "refresh_token": refresh1 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{pair2}");
    let refresh2 = pair2["refresh_token"].as_str().expect("refresh").to_owned();
    assert_ne!(refresh2, refresh1);
    assert_eq!(
        verify(&svc, pair2["access_token"].as_str().expect("access"))["sub"],
        alice_id.as_str()
    );

    // Reusing the rotated token revokes the family: the new one dies too.
    let (status, body) = c
        .post("/auth/refresh", None, json!({ "refresh_token": refresh1 }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    let (status, _) = c
        .post("/auth/refresh", None, json!({ "refresh_token": refresh2 }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let kinds = audit_kinds(&store).await;
    for kind in ["login_ok", "login_failed", "refresh_reuse"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing in {kinds:?}"
        );
    }

    // Logout revokes that session's refresh token.
    let (_, pair3) = c.login("alice@example.com", GOOD_PASSWORD).await;
    let refresh3 = pair3["refresh_token"].as_str().expect("refresh").to_owned();
    let (status, _) = c
        .post("/auth/logout", None, json!({ "refresh_token": refresh3 }))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = c
        .post("/auth/refresh", None, json!({ "refresh_token": refresh3 }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Unknown paths answer JSON.
    let (status, body) = c.get("/auth/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
}

async fn api_keys(store: Store) {
    let svc = service(&store).await;
    let c = Client::new(serve(&svc).await);
    let (user_id, access, _) = c.account("keys@example.com").await;

    let (status, body) = c
        .post("/auth/api-keys", None, json!({ "name": "ci" }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let (status, created) = c
        .post(
            "/auth/api-keys",
            Some(&access),
            json!({ "name": "ci", "scopes": ["tools:read"], "expires_in": 3600 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("key shown once").to_owned();
    let key_id = created["id"].as_str().expect("id").to_owned();
    // mcpk_<8>_<32>
    let parts: Vec<&str> = key.split('_').collect();
    assert_eq!(parts.len(), 3, "{key}");
    assert_eq!(parts[0], "mcpk");
    assert_eq!(parts[1].len(), 8);
    assert_eq!(parts[2].len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    assert_eq!(created["prefix"], format!("mcpk_{}", parts[1]));

    // Listed without the secret.
    let (status, listed) = c.get("/auth/api-keys", Some(&access)).await;
    assert_eq!(status, StatusCode::OK);
    let text = listed.to_string();
    assert!(
        !text.contains(parts[2]),
        "secret leaked in the listing: {text}"
    );
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["keys"][0]["id"], key_id.as_str());
    assert!(listed["keys"][0].get("key").is_none());
    // Stored as a hash.
    let row = store
        .find_api_key_by_hash(&sha256_hex(&key))
        .await
        .expect("lookup")
        .expect("stored by its SHA-256");
    assert_eq!(row.id, key_id);

    let ident = svc
        .authenticate_api_key(&key)
        .await
        .expect("authenticate")
        .expect("the key authenticates");
    assert_eq!(ident.user_id, user_id);
    assert_eq!(ident.email, "keys@example.com");
    assert_eq!(ident.scopes, vec!["tools:read".to_owned()]);
    assert_eq!(ident.key_id, key_id);
    // A near miss and a malformed string do not.
    let mut wrong = key.clone();
    wrong.replace_range(key.len() - 1.., if key.ends_with('a') { "b" } else { "a" });
    assert_eq!(svc.authenticate_api_key(&wrong).await.expect("auth"), None);
    assert_eq!(
        svc.authenticate_api_key("mcpk_x").await.expect("auth"),
        None
    );

    // Revoked: gone at once in this process, despite the cache.
    let (status, _) = c
        .send(
            reqwest::Method::DELETE,
            &format!("/auth/api-keys/{key_id}"),
            Some(&access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(svc.authenticate_api_key(&key).await.expect("auth"), None);
    let (status, body) = c
        .send(
            reqwest::Method::DELETE,
            &format!("/auth/api-keys/{key_id}"),
            Some(&access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let kinds = audit_kinds(&store).await;
    assert!(kinds.iter().any(|k| k == "api_key_created"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "api_key_revoked"), "{kinds:?}");

    // Another user cannot revoke someone else's key.
    let (_, other_access, _) = c.account("other@example.com").await;
    let (_, created) = c
        .post("/auth/api-keys", Some(&access), json!({ "name": "second" }))
        .await;
    let second_id = created["id"].as_str().expect("id").to_owned();
    let second_key = created["key"].as_str().expect("key").to_owned();
    let (status, _) = c
        .send(
            reqwest::Method::DELETE,
            &format!("/auth/api-keys/{second_id}"),
            Some(&other_access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(svc
        .authenticate_api_key(&second_key)
        .await
        .expect("auth")
        .is_some());
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn credentials(store: Store) {
    let svc = service(&store).await;
    let c = Client::new(serve(&svc).await);
    let (user_id, access, _) = c.account("creds@example.com").await;
    let secret = "ghp_SuperSecretUpstreamToken123";

    let (status, _) = c
        .send(
            reqwest::Method::PUT,
            "/auth/credentials/github",
            None,
            Some(json!({ "token": secret })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = c
        .send(
            reqwest::Method::PUT,
            "/auth/credentials/github",
            Some(&access),
            Some(json!({ "token": secret })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(
        svc.service_credential(&user_id, "github")
            .await
            .expect("read"),
        Some(secret.to_owned())
    );
    assert_eq!(
        svc.service_credential(&user_id, "gitlab")
            .await
            .expect("read"),
        None
    );

    // At rest: sealed, under key k1, not the clear text.
    let row = store
        .get_credential(&user_id, "github")
        .await
        .expect("row")
        .expect("stored");
    assert_eq!(row.key_id, "k1");
    assert_eq!(row.nonce.len(), 12);
    assert!(!row
        .ciphertext
        .windows(secret.len())
        .any(|w| w == secret.as_bytes()));
    let raw = sqlx::query("SELECT ciphertext FROM service_credentials")
        .fetch_all(store.pool())
        .await
        .expect("raw rows");
    for r in raw {
        let bytes: Vec<u8> = r.try_get("ciphertext").expect("bytes");
        assert!(!String::from_utf8_lossy(&bytes).contains("SuperSecret"));
    }
    // No endpoint reads it back.
    let (status, _) = c.get("/auth/credentials/github", Some(&access)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // Replaced: the new value is served at once in this process.
    let (status, _) = c
        .send(
            reqwest::Method::PUT,
            "/auth/credentials/github",
            Some(&access),
            Some(json!({ "token": "second-value" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        svc.service_credential(&user_id, "github")
            .await
            .expect("read")
            .as_deref(),
        Some("second-value")
    );

    // A newer key seals; the old one still opens what it sealed.
    let mut rotated = config();
    rotated.credentials_keys = vec![("k2".to_owned(), [9u8; 32]), ("k1".to_owned(), KEY1)];
    let svc2 = IdentityService::new(store.clone(), rotated)
        .await
        .expect("service with two keys");
    assert_eq!(
        svc2.service_credential(&user_id, "github")
            .await
            .expect("read")
            .as_deref(),
        Some("second-value")
    );
    svc2.put_service_credential(&user_id, "jira", "jira-token")
        .await
        .expect("put");
    let row = store
        .get_credential(&user_id, "jira")
        .await
        .expect("row")
        .expect("stored");
    assert_eq!(row.key_id, "k2");
    // A service without k2 cannot open it (and says so rather than returning garbage).
    assert!(svc.service_credential(&user_id, "jira").await.is_err());

    // Deleted.
    let (status, _) = c
        .send(
            reqwest::Method::DELETE,
            "/auth/credentials/github",
            Some(&access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        svc.service_credential(&user_id, "github")
            .await
            .expect("read"),
        None
    );
}

async fn admin_and_jwks(store: Store) {
    let svc = service(&store).await;
    let c = Client::new(serve(&svc).await);
    let (user_id, user_access, user_refresh) = c.account("user@example.com").await;
    svc.create_user("root@example.com", GOOD_PASSWORD, &["admin".to_owned()])
        .await
        .expect("admin user");
    let (status, pair) = c.login("root@example.com", GOOD_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let admin_access = pair["access_token"].as_str().expect("access").to_owned();
    assert_eq!(verify(&svc, &admin_access)["roles"], json!(["admin"]));

    // JWKS lists the kid of issued tokens, as a public EC key only.
    let (status, jwks) = c.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let keys = jwks["keys"].as_array().expect("keys");
    let kid = kid_of(&user_access);
    let jwk = keys
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["use"], "sig");
    assert!(jwk["x"].is_string() && jwk["y"].is_string());
    assert!(jwk.get("d").is_none(), "private part published: {jwk}");
    // A JWKS-built key verifies the token (as an external verifier would).
    let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).expect("a JWK");
    let key = jsonwebtoken::DecodingKey::from_jwk(&parsed).expect("decoding key");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[AUDIENCE]);
    jsonwebtoken::decode::<Value>(&user_access, &key, &validation).expect("verifies");

    // Non-admins are refused.
    let (status, body) = c.get("/auth/admin/users", Some(&user_access)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden");
    let (status, _) = c
        .post(
            &format!("/auth/admin/users/{user_id}/disable"),
            Some(&user_access),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = c.get("/auth/admin/users", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Admins list, change roles, disable.
    let (status, body) = c.get("/auth/admin/users", Some(&admin_access)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let emails: Vec<&str> = body["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    assert!(emails.contains(&"user@example.com") && emails.contains(&"root@example.com"));
    assert!(!body.to_string().contains("argon2"), "hashes leaked");

    let (status, body) = c
        .send(
            reqwest::Method::PUT,
            &format!("/auth/admin/users/{user_id}/roles"),
            Some(&admin_access),
            Some(json!({ "roles": ["dev", "ops"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["roles"], json!(["dev", "ops"]));
    let (_, pair) = c.login("user@example.com", GOOD_PASSWORD).await;
    let access = pair["access_token"].as_str().expect("access");
    assert_eq!(verify(&svc, access)["roles"], json!(["dev", "ops"]));
    let (status, _) = c
        .send(
            reqwest::Method::PUT,
            "/auth/admin/users/00000000-0000-0000-0000-000000000000/roles",
            Some(&admin_access),
            Some(json!({ "roles": ["x"] })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = c
        .post(
            &format!("/auth/admin/users/{user_id}/disable"),
            Some(&admin_access),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["disabled"], true);
    // The disabled user: no login (same answer as a wrong password), no refresh, no API.
    let (status, disabled) = c.login("user@example.com", GOOD_PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, wrong) = c.login("user@example.com", "wrong password 99").await;
    assert_eq!(disabled, wrong);
    let (status, _) = c
        .post(
            "/auth/refresh",
            None,
            json!({ "refresh_token": user_refresh }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = c.get("/auth/api-keys", Some(&user_access)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let kinds = audit_kinds(&store).await;
    assert!(kinds.iter().any(|k| k == "roles_changed"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "user_disabled"), "{kinds:?}");
}

async fn rotation(store: Store) {
    let svc = service(&store).await;
    let user = svc
        .create_user("rot@example.com", GOOD_PASSWORD, &[])
        .await
        .expect("user");

    // The signing key is stored sealed, the JWK public.
    let rows = store.list_signing_keys().await.expect("keys");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].algorithm, "ES256");
    assert_eq!(rows[0].key_id, "k1");
    assert_eq!(rows[0].nonce.len(), 12);
    assert!(!rows[0].public_jwk.contains("\"d\""));

    let old = svc.issue_access_token(&user.id, None).await.expect("token");
    let kid1 = kid_of(&old);
    assert_eq!(kid1, rows[0].kid);

    // A second instance on the same database uses the same key (no new one).
    let again = service(&store).await;
    assert_eq!(again.current_kid().as_deref(), Some(kid1.as_str()));
    assert_eq!(store.list_signing_keys().await.expect("keys").len(), 1);

    let kid2 = svc.rotate_signing_key().await.expect("rotate");
    assert_ne!(kid2, kid1);
    let new = svc
        .issue_access_token(&user.id, Some(Duration::from_secs(60)))
        .await
        .expect("token");
    assert_eq!(kid_of(&new), kid2);
    let kids: Vec<String> = svc
        .verification_keys()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(kids.contains(&kid1) && kids.contains(&kid2), "{kids:?}");
    let jwks = svc.jwks().to_string();
    assert!(jwks.contains(&kid1) && jwks.contains(&kid2), "{jwks}");
    // The old token still verifies, and so does the new.
    assert_eq!(verify(&svc, &old)["sub"], user.id.as_str());
    assert_eq!(verify(&svc, &new)["sub"], user.id.as_str());

    // key_rotation = 0: a service started now replaces the current key.
    let mut eager = config();
    eager.key_rotation = Duration::ZERO;
    let eager = IdentityService::new(store.clone(), eager)
        .await
        .expect("start");
    let kid3 = eager.current_kid().expect("a signing key");
    assert!(kid3 != kid1 && kid3 != kid2);
    let kids: Vec<String> = eager
        .verification_keys()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(kids.contains(&kid1) && kids.contains(&kid2) && kids.contains(&kid3));

    // Once a retired key's window (access_ttl + reload interval) has passed, it leaves the
    // JWKS and is marked retired.
    sqlx::query("UPDATE signing_keys SET not_after = $1 WHERE kid = $2")
        .bind(mcp_proxy::store::now() - 24 * 3600)
        .bind(&kid1)
        .execute(store.pool())
        .await
        .expect("age the key");
    svc.maintain_keys().await.expect("maintain");
    let kids: Vec<String> = svc
        .verification_keys()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(!kids.contains(&kid1), "{kids:?}");
    assert!(kids.contains(&kid2));
    let retired = store
        .list_signing_keys()
        .await
        .expect("keys")
        .into_iter()
        .find(|k| k.kid == kid1)
        .expect("kept as a row");
    assert!(retired.retired_at.is_some());
    assert!(!svc.jwks().to_string().contains(&kid1));
}

async fn wrong_encryption_key(store: Store) {
    let _first = service(&store).await;
    let mut other = config();
    other.credentials_keys = vec![("k1".to_owned(), [1u8; 32])];
    let err = match IdentityService::new(store.clone(), other).await {
        Ok(_) => panic!("started with a key that cannot open the signing key"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("cannot open the private key"), "{err}");
}

on_both_backends!(accounts_and_tokens_on, super::accounts_and_tokens);
on_both_backends!(api_keys_on, super::api_keys);
on_both_backends!(credentials_on, super::credentials);
on_both_backends!(admin_and_jwks_on, super::admin_and_jwks);
on_both_backends!(rotation_on, super::rotation);
on_both_backends!(wrong_encryption_key_on, super::wrong_encryption_key);
