//! The gateway's OAuth 2.1 authorization server, driven over HTTP through the real gateway
//! (no browser: the forms are filled by hand): discovery, registration rules, the
//! authorization request's checks, login and consent, PKCE, code reuse, resource binding,
//! refresh rotation and reuse, remembered and revoked consent.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "http://127.0.0.1:45678/callback";

async fn start() -> Gateway {
    std::env::set_var(
        "MCP_GATEWAY_CREDENTIALS_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let db = temp_path("oauth.db");
    let (port, admin) = (free_port(), free_port());
    let extra = format!(
        "public_url: http://127.0.0.1:{port}\ndatabase: {{ url: \"sqlite://{}\" }}\nidentity: {{}}\n# Many flows from one address: the built-in login limit is not what these tests check.\nrate_limits: {{ defaults: false }}\n",
        db.display()
    );
    let config = spawn_pool_config(port, admin, 1, &extra).replace(
        "    upstream_path: /mcp\n",
        "    upstream_path: /mcp\n  - path: /other\n    pool: tools\n    upstream_path: /mcp\n",
    );
    Gateway::start_with(&config, port, admin).await
}

fn base(gw: &Gateway) -> String {
    format!("http://127.0.0.1:{}", gw.port)
}

/// A client that does not follow redirects (the redirects are what is tested).
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn register_user(gw: &Gateway, email: &str) {
    let r = http()
        .post(format!("{}/auth/register", base(gw)))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 201);
}

async fn login_token(gw: &Gateway, email: &str) -> String {
    let r = http()
        .post(format!("{}/auth/login", base(gw)))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap_or_default();
    v["access_token"].as_str().unwrap_or_default().to_string()
}

async fn register_client(gw: &Gateway, body: Value) -> (u16, Value) {
    let r = http()
        .post(format!("{}/oauth/register", base(gw)))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn new_client(gw: &Gateway) -> String {
    let (status, v) = register_client(
        gw,
        json!({"client_name": "Test <IDE>", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    v["client_id"].as_str().unwrap_or_default().to_string()
}

fn authorize_url(gw: &Gateway, params: &[(&str, &str)]) -> String {
    let mut url =
        url::Url::parse(&format!("{}/oauth/authorize", base(gw))).unwrap_or_else(|e| panic!("{e}"));
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

fn standard_params<'a>(gw_resource: &'a str, client_id: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("state", "st-123"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("resource", gw_resource),
    ]
}

/// The value of `name`'s hidden input in a page.
fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn csrf_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("mcp_oauth_csrf="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

fn location_params(r: &reqwest::Response) -> HashMap<String, String> {
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Location in a {} answer", r.status()));
    assert!(loc.starts_with(REDIRECT), "{loc}");
    url::Url::parse(loc)
        .unwrap_or_else(|e| panic!("{e}"))
        .query_pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The login form posted as a browser would, with the page's hidden fields.
async fn post_login(
    gw: &Gateway,
    page: &str,
    cookie: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let mut form: Vec<(String, String)> = [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "resource",
        "scope",
        "prompt",
        "csrf",
    ]
    .iter()
    .filter_map(|k| hidden(page, k).map(|v| (k.to_string(), v)))
    .collect();
    form.push(("email".into(), email.into()));
    form.push(("password".into(), password.into()));
    http()
        .post(format!("{}/oauth/authorize", base(gw)))
        .header("cookie", format!("mcp_oauth_csrf={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(
            form.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn post_consent(gw: &Gateway, page: &str, cookie: &str, decision: &str) -> reqwest::Response {
    let form = [
        ("ticket", hidden(page, "ticket").unwrap_or_default()),
        ("csrf", hidden(page, "csrf").unwrap_or_default()),
        ("decision", decision.to_string()),
    ];
    http()
        .post(format!("{}/oauth/consent", base(gw)))
        .header("cookie", format!("mcp_oauth_csrf={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(form.iter().map(|(k, v)| (*k, v.as_str()))))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The whole browser part: authorize page, login, consent when asked. Returns the
/// redirect's query parameters.
async fn authorize(
    gw: &Gateway,
    params: &[(&str, &str)],
    email: &str,
    decision: &str,
) -> HashMap<String, String> {
    let r = http()
        .get(authorize_url(gw, params))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let cookie = csrf_cookie(&r).expect("a CSRF cookie");
    let page = r.text().await.unwrap_or_default();
    assert!(page.contains("MCP Gateway"), "{page}");
    assert!(
        page.contains("Test &lt;IDE&gt;"),
        "client name escaped: {page}"
    );
    let r = post_login(gw, &page, &cookie, email, PASSWORD).await;
    if r.status() == 303 {
        return location_params(&r);
    }
    assert_eq!(r.status(), 200);
    let consent = r.text().await.unwrap_or_default();
    assert!(consent.contains("Allow access?"), "{consent}");
    let r = post_consent(gw, &consent, &cookie, decision).await;
    assert_eq!(r.status(), 303);
    location_params(&r)
}

async fn exchange(gw: &Gateway, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http()
        .post(format!("{}/oauth/token", base(gw)))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(form.iter().copied()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

fn form_body<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Status of an `initialize` to `url` with `token`.
async fn initialize_status(url: &str, token: &str) -> u16 {
    bearer_client(token)
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status()
        .as_u16()
}

#[tokio::test]
async fn discovery_documents_are_consistent() {
    let gw = start().await;
    let anon = http()
        .post(gw.url())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(anon.status(), 401);
    let challenge = anon
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let prm_url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no resource_metadata in {challenge:?}"));
    let prm: Value = http()
        .get(prm_url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(prm["resource"], format!("{}/mcp", base(&gw)));
    let issuer = prm["authorization_servers"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(issuer, base(&gw));
    for doc in ["oauth-authorization-server", "openid-configuration"] {
        let r = http()
            .get(format!("{issuer}/.well-known/{doc}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200, "{doc}");
        let m: Value = r.json().await.unwrap_or_default();
        assert_eq!(m["issuer"], issuer, "{m}");
        assert_eq!(
            m["authorization_endpoint"],
            format!("{issuer}/oauth/authorize")
        );
        assert_eq!(m["token_endpoint"], format!("{issuer}/oauth/token"));
        assert_eq!(
            m["registration_endpoint"],
            format!("{issuer}/oauth/register")
        );
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(m["token_endpoint_auth_methods_supported"], json!(["none"]));
        assert_eq!(m["client_id_metadata_document_supported"], json!(true));
        let resources = m["protected_resources"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(resources.contains(&prm["resource"]), "{m}");
    }
}

#[tokio::test]
async fn registration_is_validated() {
    let gw = start().await;
    for (body, error) in [
        (
            json!({"redirect_uris": ["http://example.com/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://app.example.com/cb#x"]}),
            "invalid_redirect_uri",
        ),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (json!({"client_name": "x"}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": ["javascript:alert(1)"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "response_types": ["token"]}),
            "invalid_client_metadata",
        ),
        (json!(["not an object"]), "invalid_client_metadata"),
    ] {
        let (status, v) = register_client(&gw, body.clone()).await;
        assert_eq!(status, 400, "{body} → {v}");
        assert_eq!(v["error"], error, "{body} → {v}");
    }
    // Loopback on any port, https, and a secret-based method downgraded to a public client.
    let (status, v) = register_client(
        &gw,
        json!({"redirect_uris": ["http://localhost:9999/cb", "https://app.example.com/cb"],
               "token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["token_endpoint_auth_method"], "none");
    assert!(v.get("client_secret").is_none(), "{v}");
    assert!(v["client_id"]
        .as_str()
        .is_some_and(|c| c.starts_with("mcpc_")));
}

#[tokio::test]
async fn authorization_request_checks() {
    let gw = start().await;
    let client = new_client(&gw).await;
    let resource = format!("{}/mcp", base(&gw));
    let get = |params: Vec<(&str, &str)>| {
        let url = authorize_url(&gw, &params);
        async move {
            http()
                .get(url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };

    // Untrusted redirect: shown to the user, no redirect.
    let mut p = standard_params(&resource, &client);
    p[2] = ("redirect_uri", "http://127.0.0.1:45678/elsewhere");
    let r = get(p).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    assert!(r
        .text()
        .await
        .unwrap_or_default()
        .contains("is not one the application"));

    let mut p = standard_params(&resource, &client);
    p[1] = ("client_id", "mcpc_unknown");
    let r = get(p).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());

    // A client-id metadata document must be https and not on this machine.
    for cid in [
        "http://app.example.com/client.json",
        "https://127.0.0.1/client.json",
    ] {
        let mut p = standard_params(&resource, &client);
        p[1] = ("client_id", cid);
        let r = get(p).await;
        assert_eq!(r.status(), 400, "{cid}");
        assert!(r.headers().get("location").is_none(), "{cid}");
    }

    // Any port on a loopback redirect URI (RFC 8252).
    let mut p = standard_params(&resource, &client);
    p[2] = ("redirect_uri", "http://127.0.0.1:50001/callback");
    assert_eq!(get(p).await.status(), 200);

    // Trusted redirect: the client gets the OAuth error.
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            {
                let mut p = standard_params(&resource, &client);
                p[5] = ("code_challenge_method", "plain");
                p
            },
            "invalid_request",
        ),
        (
            standard_params(&resource, &client)
                .into_iter()
                .filter(|(k, _)| *k != "code_challenge")
                .collect(),
            "invalid_request",
        ),
        (
            {
                let mut p = standard_params(&resource, &client);
                p[0] = ("response_type", "token");
                p
            },
            "unsupported_response_type",
        ),
        (
            {
                let mut p = standard_params(&resource, &client);
                p[6] = ("resource", "https://elsewhere.example.com/mcp");
                p
            },
            "invalid_target",
        ),
        (
            // Two routes are served: the resource must be named.
            standard_params(&resource, &client)
                .into_iter()
                .filter(|(k, _)| *k != "resource")
                .collect(),
            "invalid_target",
        ),
    ];
    for (params, error) in cases {
        let r = get(params.clone()).await;
        assert_eq!(r.status(), 303, "{params:?}");
        let q = location_params(&r);
        assert_eq!(
            q.get("error").map(String::as_str),
            Some(error),
            "{params:?}"
        );
        assert_eq!(q.get("state").map(String::as_str), Some("st-123"));
        assert!(!q.contains_key("code"));
    }
}

#[tokio::test]
async fn login_consent_token_and_every_refusal() {
    let gw = start().await;
    register_user(&gw, "olivia@example.test").await;
    let client = new_client(&gw).await;
    let resource = format!("{}/mcp", base(&gw));
    let params = standard_params(&resource, &client);

    // Wrong password: the page says so; no redirect.
    let r = http()
        .get(authorize_url(&gw, &params))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cookie = csrf_cookie(&r).expect("a CSRF cookie");
    assert!(r.headers().get("content-security-policy").is_some_and(|v| v
        .to_str()
        .unwrap_or_default()
        .contains("frame-ancestors 'none'")));
    let page = r.text().await.unwrap_or_default();
    let r = post_login(
        &gw,
        &page,
        &cookie,
        "olivia@example.test",
        "not the password 1",
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(r
        .text()
        .await
        .unwrap_or_default()
        .contains("The email or password is incorrect."));
    // Without the CSRF cookie the form is refused.
    let r = post_login(
        &gw,
        &page,
        "forgedforgedforgedforged",
        "olivia@example.test",
        PASSWORD,
    )
    .await;
    assert_eq!(r.status(), 403);

    // Denied consent: access_denied to the client.
    let q = authorize(&gw, &params, "olivia@example.test", "deny").await;
    assert_eq!(q.get("error").map(String::as_str), Some("access_denied"));
    assert_eq!(q.get("state").map(String::as_str), Some("st-123"));

    // Granted.
    let q = authorize(&gw, &params, "olivia@example.test", "allow").await;
    assert_eq!(q.get("state").map(String::as_str), Some("st-123"));
    let code = q.get("code").cloned().expect("a code");

    // Wrong verifier, other redirect_uri, other client, other resource: refused, code intact.
    for (form, error) in [
        (
            vec![
                ("code_verifier", "x".repeat(43)),
                ("redirect_uri", REDIRECT.into()),
                ("client_id", client.clone()),
            ],
            "invalid_grant",
        ),
        (
            vec![
                ("code_verifier", VERIFIER.into()),
                ("redirect_uri", "http://127.0.0.1:45678/other".into()),
                ("client_id", client.clone()),
            ],
            "invalid_grant",
        ),
        (
            vec![
                ("code_verifier", VERIFIER.into()),
                ("redirect_uri", REDIRECT.into()),
                ("client_id", "mcpc_other".into()),
            ],
            "invalid_grant",
        ),
        (
            vec![
                ("code_verifier", VERIFIER.into()),
                ("redirect_uri", REDIRECT.into()),
                ("client_id", client.clone()),
                ("resource", format!("{}/other", base(&gw))),
            ],
            "invalid_target",
        ),
    ] {
        let mut full: Vec<(&str, &str)> =
            vec![("grant_type", "authorization_code"), ("code", &code)];
        full.extend(form.iter().map(|(k, v)| (*k, v.as_str())));
        let (status, v) = exchange(&gw, &full).await;
        assert_eq!(status, 400, "{form:?} → {v}");
        assert_eq!(v["error"], error, "{form:?} → {v}");
    }

    let good = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", VERIFIER),
        ("redirect_uri", REDIRECT),
        ("client_id", client.as_str()),
        ("resource", resource.as_str()),
    ];
    let (status, tokens) = exchange(&gw, &good).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let refresh = tokens["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // Bound to /mcp: accepted there, refused on the other route.
    assert_eq!(initialize_status(&gw.url(), &access).await, 200);
    assert_eq!(
        initialize_status(&format!("{}/other", base(&gw)), &access).await,
        401
    );
    // Not a token of the auth API either.
    let r = bearer_client(&access)
        .get(format!("{}/auth/api-keys", base(&gw)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401);

    // The auth API's refresh endpoint does not take an OAuth refresh token.
    let r = http()
        .post(format!("{}/auth/refresh", base(&gw)))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 401);

    // Refresh: rotation, with the same binding.
    let (status, v) = exchange(
        &gw,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let access2 = v["access_token"].as_str().unwrap_or_default().to_string();
    let refresh2 = v["refresh_token"].as_str().unwrap_or_default().to_string();
    assert_ne!(refresh2, refresh);
    assert_eq!(initialize_status(&gw.url(), &access2).await, 200);
    // Another client cannot use it.
    let (status, v) = exchange(
        &gw,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh2),
            ("client_id", "mcpc_x"),
        ],
    )
    .await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")));
    // Reuse of the rotated token revokes the grant: the newest token dies too.
    let (status, v) = exchange(
        &gw,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client),
        ],
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    let (status, _) = exchange(
        &gw,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh2),
            ("client_id", &client),
        ],
    )
    .await;
    assert_eq!(status, 400);

    // The code is single use; its second use revokes what it gave.
    let (status, v) = exchange(&gw, &good).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );

    // Consent is remembered: no consent page the second time.
    let q = authorize(&gw, &params, "olivia@example.test", "allow").await;
    let code = q.get("code").cloned().expect("a code without asking again");
    let good = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", VERIFIER),
        ("redirect_uri", REDIRECT),
        ("client_id", client.as_str()),
    ];
    let (status, tokens) = exchange(&gw, &good).await;
    assert_eq!(status, 200, "{tokens}");
    let refresh = tokens["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // A code exchanged twice: the second exchange also revokes the first one's grant.
    let (status, _) = exchange(&gw, &good).await;
    assert_eq!(status, 400);
    let (status, v) = exchange(
        &gw,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client),
        ],
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );

    // The user sees and revokes the consent; the client's refresh tokens stop working.
    let q = authorize(&gw, &params, "olivia@example.test", "allow").await;
    let code = q.get("code").cloned().expect("a code");
    let (status, tokens) = exchange(
        &gw,
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", VERIFIER),
            ("redirect_uri", REDIRECT),
            ("client_id", client.as_str()),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let refresh = tokens["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let login = login_token(&gw, "olivia@example.test").await;
    // A token of the auth API (general audience) still works on every route.
    assert_eq!(initialize_status(&gw.url(), &login).await, 200);
    assert_eq!(
        initialize_status(&format!("{}/other", base(&gw)), &login).await,
        200
    );
    let user = bearer_client(&login);
    let list: Value = user
        .get(format!("{}/auth/consents", base(&gw)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(list["consents"][0]["client_id"], client.as_str(), "{list}");
    assert_eq!(list["consents"][0]["client_name"], "Test <IDE>", "{list}");
    let r = user
        .delete(format!("{}/auth/consents/{client}", base(&gw)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 204);
    let r = user
        .delete(format!("{}/auth/consents/{client}", base(&gw)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 404);
    let (status, v) = exchange(
        &gw,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", &client),
        ],
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
    // And the consent page is shown again.
    let r = http()
        .get(authorize_url(&gw, &params))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cookie = csrf_cookie(&r).expect("a CSRF cookie");
    let page = r.text().await.unwrap_or_default();
    let r = post_login(&gw, &page, &cookie, "olivia@example.test", PASSWORD).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap_or_default().contains("Allow access?"));
}

#[tokio::test]
async fn token_endpoint_refuses_malformed_requests() {
    let gw = start().await;
    for (form, status, error) in [
        (
            vec![("grant_type", "password"), ("client_id", "c")],
            400,
            "unsupported_grant_type",
        ),
        (vec![("client_id", "c")], 400, "invalid_request"),
        (
            vec![("grant_type", "authorization_code")],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("client_id", "c"),
                ("code", "nope"),
                ("code_verifier", VERIFIER),
                ("redirect_uri", REDIRECT),
            ],
            400,
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", "c"),
                ("refresh_token", "mcpr_nope"),
            ],
            400,
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("grant_type", "refresh_token"),
                ("client_id", "c"),
            ],
            400,
            "invalid_request",
        ),
    ] {
        let (s, v) = exchange(&gw, &form).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(error)),
            "{form:?} → {v}"
        );
    }
}
