//! The OAuth 2.1 authorization server MCP clients log in through (see docs/oauth.md):
//! metadata (RFC 8414, OpenID discovery), dynamic client registration (RFC 7591, public
//! clients), client-id metadata documents, the authorization endpoint with a server-rendered
//! login and consent page (PKCE S256 only), the token endpoint (authorization code and
//! refresh token grants), and the user's remembered consents.
//!
//! Access tokens are this service's own ES256 JWTs with `aud` set to the RFC 8707 resource
//! the client asked for (a route of this gateway), so the gateway's usual checks apply and
//! a token for one route is refused on another. Refresh tokens are the auth API's rotating
//! refresh tokens; `oauth_grants` records which client and resource a family belongs to.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::crypto::{self, sha256_hex};
use super::IdentityService;
use crate::store::{self, NewRefreshToken, OAuthClient, OAuthCode, OAuthGrant, User};

type Svc = Arc<IdentityService>;

/// The product name shown on the pages.
pub const PRODUCT: &str = "MCP Gateway";
/// How long an authorization code can be exchanged.
pub const CODE_TTL_SECS: i64 = 60;
/// How long the user has to answer the consent page.
pub const CONSENT_TTL_SECS: i64 = 600;
/// How long a fetched client-id metadata document is trusted.
pub const CLIENT_DOCUMENT_TTL: Duration = Duration::from_secs(300);
/// Largest client-id metadata document accepted.
const MAX_CLIENT_DOCUMENT: usize = 64 * 1024;
const MAX_REDIRECT_URIS: usize = 10;
const CSRF_COOKIE: &str = "mcp_oauth_csrf";

/// The resources (RFC 8707) tokens can be bound to: `issuer + route path` of every route
/// that authenticates. Read live, so a configuration reload is seen at once.
pub type ResourceSource = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// The authorization server's state inside the identity service.
#[derive(Default)]
pub struct OAuthState {
    resources: OnceLock<ResourceSource>,
    documents: OnceLock<moka::sync::Cache<String, Arc<ClientInfo>>>,
    http: OnceLock<Option<reqwest::Client>>,
}

impl OAuthState {
    fn documents(&self) -> &moka::sync::Cache<String, Arc<ClientInfo>> {
        self.documents.get_or_init(|| {
            moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CLIENT_DOCUMENT_TTL)
                .build()
        })
    }

    fn http(&self) -> Option<&reqwest::Client> {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| tracing::error!(error = %e, "no HTTP client for client documents"))
                    .ok()
            })
            .as_ref()
    }
}

impl IdentityService {
    /// Where the authorization server learns which resources exist (the gateway's routes).
    /// Without it, the only resource is the service's audience.
    pub fn set_oauth_resources(&self, source: ResourceSource) {
        let _ = self.oauth.resources.set(source);
    }

    /// The resources tokens can be bound to now.
    pub fn oauth_resources(&self) -> Vec<String> {
        match self.oauth.resources.get() {
            Some(f) => f(),
            None => vec![self.cfg.audience.clone()],
        }
    }

    /// Signs an access token bound to `resource` for `client_id` with the granted roles.
    async fn sign_oauth_token(
        &self,
        user: &User,
        roles: &[String],
        resource: &str,
        client_id: &str,
    ) -> Result<String, super::IdentityError> {
        let now = store::now();
        let stale = match &self.ring.load().signer {
            None => true,
            Some(s) => now.saturating_sub(s.created_at) >= super::secs(self.cfg.key_rotation),
        };
        if stale {
            self.maintain_keys().await?;
        }
        let ring = self.ring.load();
        let signer = ring
            .signer
            .as_ref()
            .ok_or(super::IdentityError::NoSigningKey)?;
        let claims = OAuthClaims {
            iss: &self.cfg.issuer,
            aud: resource,
            sub: &user.id,
            email: &user.email,
            roles,
            scope: roles.join(" "),
            client_id,
            iat: now.max(
                self.cutoffs
                    .get(&user.id)
                    .map_or(i64::MIN, |c| c.saturating_add(1)),
            ),
            exp: now.saturating_add(super::secs(self.cfg.access_ttl)),
            jti: crypto::random_b64(12),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(signer.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &signer.key)?)
    }
}

#[derive(Serialize)]
struct OAuthClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    email: &'a str,
    roles: &'a [String],
    scope: String,
    client_id: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
}

pub(super) fn routes() -> Router<Svc> {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/oauth/register", post(register))
        .route("/oauth/authorize", get(authorize).post(login))
        .route("/oauth/consent", post(consent))
        .route("/oauth/token", post(token))
        .route("/auth/consents", get(list_consents))
        .route("/auth/consents/{client_id}", delete(revoke_consent))
}

// ---------------------------------------------------------------------------------------------
// Metadata

fn endpoint(svc: &IdentityService, path: &str) -> String {
    format!("{}{path}", svc.cfg.issuer)
}

async fn metadata(State(svc): State<Svc>) -> Response {
    let doc = json!({
        "issuer": svc.cfg.issuer,
        "authorization_endpoint": endpoint(&svc, "/oauth/authorize"),
        "token_endpoint": endpoint(&svc, "/oauth/token"),
        "registration_endpoint": endpoint(&svc, "/oauth/register"),
        "jwks_uri": endpoint(&svc, "/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "client_id_metadata_document_supported": true,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "resource_indicators_supported": true,
        "protected_resources": svc.oauth_resources(),
    });
    let mut response = Json(doc).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An OAuth error answered as JSON (`error`, `error_description`), RFC 6749 §5.2 / RFC 7591 §3.2.2.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

fn oauth_error(
    status: StatusCode,
    error: &'static str,
    description: impl Into<String>,
) -> OAuthError {
    OAuthError {
        status,
        error,
        description: description.into(),
    }
}

fn invalid_grant(description: impl Into<String>) -> OAuthError {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn invalid_request(description: impl Into<String>) -> OAuthError {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.error, "error_description": self.description }));
        let mut response = (self.status, body).into_response();
        no_store(response.headers_mut());
        response
    }
}

impl From<super::IdentityError> for OAuthError {
    fn from(e: super::IdentityError) -> OAuthError {
        tracing::error!(error = %e, "authorization server error");
        oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error; see the gateway's log",
        )
    }
}

impl From<store::StoreError> for OAuthError {
    fn from(e: store::StoreError) -> OAuthError {
        OAuthError::from(super::IdentityError::Store(e))
    }
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A client as the authorization endpoint needs it: registered, or described by its
/// client-id metadata document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub client_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub client_uri: Option<String>,
    /// Identified by a metadata document (its `client_id` is the document's URL).
    pub from_document: bool,
}

/// Is `uri` acceptable as a redirect URI: `https://…`, or `http://` to a loopback address
/// (RFC 8252 §7.3), absolute, without a fragment?
pub fn redirect_uri_allowed(uri: &str) -> Result<(), String> {
    let parsed =
        url::Url::parse(uri).map_err(|e| format!("{uri:?} is not an absolute URL: {e}"))?;
    if parsed.fragment().is_some() {
        return Err(format!("{uri:?} must not have a fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("{uri:?} must not carry credentials"));
    }
    match parsed.scheme() {
        "https" if parsed.host().is_some() => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => Err(format!(
            "{uri:?}: plain http is only allowed to a loopback address (127.0.0.1, [::1], localhost)"
        )),
        _ => Err(format!("{uri:?}: the scheme must be https, or http to a loopback address")),
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Does the presented redirect URI match a registered one: exactly, or, for loopback http
/// URIs, in everything but the port (RFC 8252 §7.3: native apps pick a free port)?
pub fn redirect_uri_matches(registered: &[String], presented: &str) -> bool {
    if registered.iter().any(|r| r == presented) {
        return true;
    }
    let Ok(p) = url::Url::parse(presented) else {
        return false;
    };
    if p.scheme() != "http" || !is_loopback(&p) {
        return false;
    }
    registered.iter().any(|r| {
        url::Url::parse(r).is_ok_and(|r| {
            r.scheme() == "http"
                && r.host() == p.host()
                && r.path() == p.path()
                && r.query() == p.query()
                && r.fragment().is_none()
        })
    })
}

/// Can `client_id` name a client-id metadata document: an https URL with a path, no
/// fragment, no credentials, not an address on this machine or a private network?
pub fn client_document_url_allowed(client_id: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(client_id).map_err(|e| format!("not a URL: {e}"))?;
    if u.scheme() != "https" {
        return Err("a client-id metadata document URL must use https".into());
    }
    if u.path().is_empty() || u.path() == "/" {
        return Err("a client-id metadata document URL must have a path".into());
    }
    if u.fragment().is_some() || !u.username().is_empty() || u.password().is_some() {
        return Err(
            "a client-id metadata document URL must not have a fragment or credentials".into(),
        );
    }
    let internal = match u.host() {
        Some(url::Host::Ipv4(ip)) => {
            ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
        }
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.is_unspecified() || (ip.segments()[0] & 0xfe00) == 0xfc00
        }
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        None => true,
    };
    if internal {
        return Err(
            "a client-id metadata document must not be on a local or private address".into(),
        );
    }
    Ok(u)
}

/// Validates a fetched client-id metadata document for `url`.
pub fn parse_client_document(url: &str, body: &[u8]) -> Result<ClientInfo, String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("the document is not JSON: {e}"))?;
    let obj = doc.as_object().ok_or("the document is not a JSON object")?;
    if obj.get("client_id").and_then(Value::as_str) != Some(url) {
        return Err("the document's client_id is not its own URL".into());
    }
    match obj
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
    {
        None | Some("none") => {}
        Some(other) => {
            return Err(format!(
                "token_endpoint_auth_method {other:?}: only public clients (none) are accepted"
            ))
        }
    }
    if obj.contains_key("client_secret") || obj.contains_key("client_secret_expires_at") {
        return Err("a metadata document must not carry a client secret".into());
    }
    let redirect_uris =
        string_list(obj.get("redirect_uris")).ok_or("redirect_uris must be a list of strings")?;
    check_redirect_uris(&redirect_uris)?;
    let name = obj
        .get("client_name")
        .and_then(Value::as_str)
        .map(|s| s.trim().chars().take(100).collect::<String>())
        .filter(|s| !s.is_empty());
    let client_uri = obj
        .get("client_uri")
        .and_then(Value::as_str)
        .filter(|s| s.starts_with("https://"))
        .map(str::to_owned);
    Ok(ClientInfo {
        client_id: url.to_owned(),
        name: name.unwrap_or_else(|| url.to_owned()),
        redirect_uris,
        client_uri,
        from_document: true,
    })
}

fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|i| i.as_str().map(str::to_owned))
        .collect()
}

fn check_redirect_uris(uris: &[String]) -> Result<(), String> {
    if uris.is_empty() || uris.len() > MAX_REDIRECT_URIS {
        return Err(format!(
            "redirect_uris must list 1 to {MAX_REDIRECT_URIS} URIs"
        ));
    }
    for u in uris {
        if u.len() > 2000 {
            return Err("a redirect URI is longer than 2000 characters".into());
        }
        redirect_uri_allowed(u)?;
    }
    Ok(())
}

/// The client named `client_id`: `Ok(None)` when unknown; `Err` with the reason when a
/// metadata document cannot be used.
async fn find_client(
    svc: &IdentityService,
    client_id: &str,
) -> Result<Option<Arc<ClientInfo>>, String> {
    if client_id.starts_with("https://") {
        if let Some(found) = svc.oauth.documents().get(client_id) {
            return Ok(Some(found));
        }
        let url = client_document_url_allowed(client_id)?;
        let http = svc.oauth.http().ok_or("cannot fetch client documents")?;
        let response = http
            .get(url)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("fetching the client's metadata document failed: {e}"))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!(
                "the client's metadata document answered {}",
                response.status()
            ));
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the client's metadata document failed: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_CLIENT_DOCUMENT {
                return Err("the client's metadata document is larger than 64 KiB".into());
            }
        }
        let info = Arc::new(parse_client_document(client_id, &body)?);
        svc.oauth
            .documents()
            .insert(client_id.to_owned(), info.clone());
        return Ok(Some(info));
    }
    match svc.store.get_oauth_client(client_id).await {
        Ok(found) => Ok(found.map(|c| {
            Arc::new(ClientInfo {
                client_id: c.client_id,
                name: c.client_name,
                redirect_uris: c.redirect_uris,
                client_uri: c.client_uri,
                from_document: false,
            })
        })),
        Err(e) => {
            tracing::error!(error = %e, "client lookup failed");
            Err("internal error; see the gateway's log".into())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Registration (RFC 7591)

fn invalid_metadata(description: impl Into<String>) -> OAuthError {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
        description,
    )
}

async fn register(
    State(svc): State<Svc>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let req: Value = serde_json::from_slice(&body)
        .map_err(|e| invalid_metadata(format!("the body is not JSON: {e}")))?;
    let obj = req
        .as_object()
        .ok_or_else(|| invalid_metadata("the body must be a JSON object"))?;
    let redirect_uris = string_list(obj.get("redirect_uris")).ok_or_else(|| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "redirect_uris must be a list of strings",
        )
    })?;
    check_redirect_uris(&redirect_uris)
        .map_err(|e| oauth_error(StatusCode::BAD_REQUEST, "invalid_redirect_uri", e))?;
    if let Some(grants) = obj.get("grant_types") {
        let grants = string_list(Some(grants))
            .ok_or_else(|| invalid_metadata("grant_types must be a list of strings"))?;
        if let Some(g) = grants
            .iter()
            .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
        {
            return Err(invalid_metadata(format!(
                "grant type {g:?} is not supported (authorization_code, refresh_token)"
            )));
        }
    }
    if let Some(types) = obj.get("response_types") {
        let types = string_list(Some(types))
            .ok_or_else(|| invalid_metadata("response_types must be a list of strings"))?;
        if types.iter().any(|t| t != "code") {
            return Err(invalid_metadata("only the response type code is supported"));
        }
    }
    let name = match obj.get("client_name") {
        None | Some(Value::Null) => "Unnamed client".to_owned(),
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 100 => {
            s.trim().to_owned()
        }
        Some(_) => {
            return Err(invalid_metadata(
                "client_name must be a string of 1 to 100 characters",
            ))
        }
    };
    let client_uri = match obj.get("client_uri") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.starts_with("https://") && s.len() <= 2000 => Some(s.clone()),
        Some(_) => return Err(invalid_metadata("client_uri must be an https URL")),
    };
    // Public clients only: a request for a secret-based method gets `none` (RFC 7591
    // §3.2.1 lets the server replace requested metadata).
    let client = OAuthClient {
        client_id: format!("mcpc_{}", crypto::random_base62(24)),
        client_name: name,
        redirect_uris,
        client_uri,
        created_at: store::now(),
    };
    svc.store.insert_oauth_client(&client).await?;
    let ip = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    svc.audit(
        "oauth_client_registered",
        None,
        Some(&client.client_id),
        ip.as_deref(),
        json!({ "client_name": client.client_name, "redirect_uris": client.redirect_uris }),
    )
    .await;
    let mut doc = json!({
        "client_id": client.client_id,
        "client_id_issued_at": client.created_at,
        "client_name": client.client_name,
        "redirect_uris": client.redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    if let (Some(uri), Some(o)) = (&client.client_uri, doc.as_object_mut()) {
        o.insert("client_uri".into(), Value::String(uri.clone()));
    }
    if let (Some(scope), Some(o)) = (
        obj.get("scope").and_then(Value::as_str),
        doc.as_object_mut(),
    ) {
        o.insert("scope".into(), Value::String(scope.to_owned()));
    }
    let mut response = (StatusCode::CREATED, Json(doc)).into_response();
    no_store(response.headers_mut());
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// Authorization request

/// Query or form parameters; a parameter given twice is an error (RFC 6749 §3.1).
fn parse_params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("the parameter {k} is given more than once"));
        }
    }
    Ok(out)
}

/// A checked authorization request.
#[derive(Clone, Debug)]
struct AuthRequest {
    client: Arc<ClientInfo>,
    redirect_uri: String,
    state: Option<String>,
    code_challenge: String,
    resource: String,
    /// Requested scopes (`None`: the parameter was absent).
    scope: Option<Vec<String>>,
    prompt_consent: bool,
}

/// What is wrong with a request: shown to the user when the redirect URI cannot be trusted,
/// else sent to the client in the redirect.
enum AuthFailure {
    Page(StatusCode, String),
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

const FORWARDED_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "scope",
    "prompt",
];

fn is_challenge(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

async fn check_request(
    svc: &IdentityService,
    p: &HashMap<String, String>,
) -> Result<AuthRequest, AuthFailure> {
    let page = |msg: String| AuthFailure::Page(StatusCode::BAD_REQUEST, msg);
    let client_id = p
        .get("client_id")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| page("The request names no client (client_id is missing).".into()))?;
    let client = match find_client(svc, client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Err(page(
                "The application that sent you here is not registered with this gateway.".into(),
            ))
        }
        Err(reason) => {
            return Err(page(format!(
                "The application that sent you here cannot be identified: {reason}."
            )))
        }
    };
    let redirect_uri = p
        .get("redirect_uri")
        .ok_or_else(|| page("The request has no redirect_uri.".into()))?;
    if !redirect_uri_matches(&client.redirect_uris, redirect_uri) {
        return Err(page(format!(
            "The address this request would send you back to ({redirect_uri}) is not one the application {} registered. The request was stopped.",
            client.name
        )));
    }
    let state = p.get("state").cloned();
    let fail = |error: &'static str, description: String| AuthFailure::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        error,
        description,
    };
    if p.get("response_type").map(String::as_str) != Some("code") {
        return Err(fail(
            "unsupported_response_type",
            "response_type must be code".into(),
        ));
    }
    let code_challenge = p.get("code_challenge").ok_or_else(|| {
        fail(
            "invalid_request",
            "PKCE is required: code_challenge is missing".into(),
        )
    })?;
    if p.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return Err(fail(
            "invalid_request",
            "code_challenge_method must be S256 (plain is not accepted)".into(),
        ));
    }
    if !is_challenge(code_challenge) {
        return Err(fail(
            "invalid_request",
            "code_challenge is malformed".into(),
        ));
    }
    let served = svc.oauth_resources();
    let resource = match p.get("resource") {
        Some(r) if served.iter().any(|s| s == r) => r.clone(),
        Some(r) => {
            return Err(fail(
                "invalid_target",
                format!("{r} is not a resource this gateway serves"),
            ))
        }
        None if served.len() == 1 => served[0].clone(),
        None => {
            return Err(fail(
                "invalid_target",
                "resource is required: this gateway serves several resources".into(),
            ))
        }
    };
    let scope = p.get("scope").map(|s| {
        let mut v: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
        v.sort();
        v.dedup();
        v
    });
    Ok(AuthRequest {
        client,
        redirect_uri: redirect_uri.clone(),
        state,
        code_challenge: code_challenge.clone(),
        resource,
        scope,
        prompt_consent: p
            .get("prompt")
            .is_some_and(|v| v.split_whitespace().any(|x| x == "consent")),
    })
}

fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The redirect address is not usable.",
        );
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(url.as_str()) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    no_store(response.headers_mut());
    response
}

fn failure_response(f: AuthFailure) -> Response {
    match f {
        AuthFailure::Page(status, message) => error_page(status, &message),
        AuthFailure::Redirect {
            redirect_uri,
            state,
            error,
            description,
        } => {
            let mut pairs = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(s) = &state {
                pairs.push(("state", s.as_str()));
            }
            redirect_with(&redirect_uri, &pairs)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pages

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#111}\
h1{font-size:1.4rem}label{display:block;margin-top:1rem;font-weight:600}\
input[type=email],input[type=password]{width:100%;padding:.5rem;font-size:1rem;box-sizing:border-box}\
button{margin-top:1.25rem;padding:.5rem 1.25rem;font-size:1rem;margin-right:.5rem}\
.error{border:2px solid #b00020;padding:.5rem .75rem;color:#b00020}\
.product{color:#555;font-size:.9rem}code{word-break:break-all}";

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} – {PRODUCT}</title><style>{STYLE}</style></head>\
         <body><main><p class=\"product\">{PRODUCT}</p><h1>{title}</h1>{body}</main></body></html>\n",
        title = esc(title),
    );
    let mut response = (status, html).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    no_store(h);
    response
}

fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Sign-in stopped",
        &format!(
            "<p class=\"error\" role=\"alert\">{}</p><p>You can close this window and try again from your application.</p>",
            esc(message)
        ),
    )
}

fn hidden_fields(p: &HashMap<String, String>) -> String {
    FORWARDED_PARAMS
        .iter()
        .filter_map(|k| p.get(*k).map(|v| (k, v)))
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(k),
                esc(v)
            )
        })
        .collect()
}

fn login_page(
    status: StatusCode,
    req: &AuthRequest,
    p: &HashMap<String, String>,
    csrf: &str,
    error: Option<&str>,
    email: &str,
) -> Response {
    let alert = error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default();
    let described = if error.is_some() {
        " aria-describedby=\"login-error\""
    } else {
        ""
    };
    let body = format!(
        "<p><strong>{client}</strong> wants to connect to this gateway on your behalf. Sign in to continue.</p>\
         {alert}\
         <form method=\"post\" action=\"/oauth/authorize\">\
         {hidden}<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"email\">Email</label>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required value=\"{email}\"{described}>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required{described}>\
         <button type=\"submit\">Sign in</button>\
         </form>",
        client = esc(&req.client.name),
        hidden = hidden_fields(p),
        csrf = esc(csrf),
        email = esc(email),
    );
    page(status, "Sign in", &body)
}

fn consent_page(
    req: &AuthRequest,
    user: &User,
    scopes: &[String],
    ticket: &str,
    csrf: &str,
) -> Response {
    let scope_list = if scopes.is_empty() {
        "<li>your identity (no roles)</li>".to_owned()
    } else {
        scopes
            .iter()
            .map(|s| format!("<li><code>{}</code></li>", esc(s)))
            .collect()
    };
    let origin = if req.client.from_document {
        format!(
            " (described at <code>{}</code>)",
            esc(&req.client.client_id)
        )
    } else {
        String::new()
    };
    let body = format!(
        "<p>Signed in as <strong>{email}</strong>.</p>\
         <p>The application <strong>{client}</strong>{origin} asks to use <code>{resource}</code> as you, with these roles:</p>\
         <ul>{scope_list}</ul>\
         <p>After you allow it, you are sent back to <code>{redirect}</code>.</p>\
         <form method=\"post\" action=\"/oauth/consent\">\
         <input type=\"hidden\" name=\"ticket\" value=\"{ticket}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\
         </form>",
        email = esc(&user.email),
        client = esc(&req.client.name),
        resource = esc(&req.resource),
        redirect = esc(&req.redirect_uri),
        ticket = esc(ticket),
        csrf = esc(csrf),
    );
    page(StatusCode::OK, "Allow access?", &body)
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| {
            v.len() >= 20
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn set_csrf_cookie(svc: &IdentityService, response: &mut Response, value: &str) {
    let secure = if svc.cfg.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!("{CSRF_COOKIE}={value}; Path=/oauth; HttpOnly; SameSite=Strict{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The form's CSRF token must equal the cookie's (double submit; the cookie is
/// SameSite=Strict, so another site cannot make the browser send it).
fn csrf_ok(headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    match (cookie_value(headers, CSRF_COOKIE), form.get("csrf")) {
        (Some(c), Some(f)) => {
            let (a, b) = (sha256_hex(c.as_bytes()), sha256_hex(f.as_bytes()));
            a.bytes()
                .zip(b.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Authorization endpoint

async fn authorize(
    State(svc): State<Svc>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let p = match parse_params(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("The request is malformed: {e}."),
            )
        }
    };
    if let Err(e) = svc.store.purge_oauth_codes(store::now()).await {
        tracing::warn!(error = %e, "could not purge expired authorization codes");
    }
    let req = match check_request(&svc, &p).await {
        Ok(r) => r,
        Err(f) => return failure_response(f),
    };
    let csrf = cookie_value(&headers, CSRF_COOKIE).unwrap_or_else(|| crypto::random_base62(32));
    let mut response = login_page(StatusCode::OK, &req, &p, &csrf, None, "");
    set_csrf_cookie(&svc, &mut response, &csrf);
    response
}

/// The login form's answer: check the password, then ask for consent (or go straight back
/// to the client when the user already consented to these scopes).
async fn login(State(svc): State<Svc>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match parse_params(&body) {
        Ok(p) => p,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("The form is malformed: {e}."),
            )
        }
    };
    if !csrf_ok(&headers, &form) {
        return error_page(
            StatusCode::FORBIDDEN,
            "This form was not sent from this sign-in page (or your browser blocked its cookie). Start again from your application.",
        );
    }
    let req = match check_request(&svc, &form).await {
        Ok(r) => r,
        Err(f) => return failure_response(f),
    };
    let csrf = form.get("csrf").cloned().unwrap_or_default();
    let email_given = form.get("email").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let ip = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let user = match check_password(&svc, &email_given, password, ip.as_deref()).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return login_page(
                StatusCode::UNAUTHORIZED,
                &req,
                &form,
                &csrf,
                Some("The email or password is incorrect."),
                &email_given,
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "login check failed");
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error; see the gateway's log.",
            );
        }
    };
    let granted = granted_scopes(&req.scope, &user.roles);
    let scope_text = granted.join(" ");
    let remembered = match svc
        .store
        .get_oauth_consent(&user.id, &req.client.client_id)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "consent lookup failed");
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error; see the gateway's log.",
            );
        }
    };
    let covered = remembered.is_some_and(|c| {
        let had: Vec<&str> = c.scope.split_whitespace().collect();
        granted.iter().all(|g| had.contains(&g.as_str()))
    });
    let now = store::now();
    let mut row = OAuthCode {
        code_hash: String::new(),
        client_id: req.client.client_id.clone(),
        user_id: user.id.clone(),
        redirect_uri: req.redirect_uri.clone(),
        code_challenge: req.code_challenge.clone(),
        resource: req.resource.clone(),
        scope: scope_text,
        state: req.state.clone(),
        approved: false,
        created_at: now,
        expires_at: now + CONSENT_TTL_SECS,
        used_at: None,
        family_id: None,
    };
    if covered && !req.prompt_consent {
        let code = crypto::random_b64(32);
        row.code_hash = sha256_hex(code.as_bytes());
        row.approved = true;
        row.expires_at = now + CODE_TTL_SECS;
        if let Err(e) = svc.store.insert_oauth_code(&row).await {
            tracing::error!(error = %e, "could not store an authorization code");
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error; see the gateway's log.",
            );
        }
        return code_redirect(&req.redirect_uri, &code, req.state.as_deref());
    }
    let ticket = crypto::random_b64(32);
    row.code_hash = sha256_hex(ticket.as_bytes());
    if let Err(e) = svc.store.insert_oauth_code(&row).await {
        tracing::error!(error = %e, "could not store a pending consent");
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error; see the gateway's log.",
        );
    }
    consent_page(&req, &user, &granted, &ticket, &csrf)
}

fn code_redirect(redirect_uri: &str, code: &str, state: Option<&str>) -> Response {
    let mut pairs = vec![("code", code)];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    redirect_with(redirect_uri, &pairs)
}

/// Requested scopes the user holds as roles; every role when no scope was requested.
fn granted_scopes(requested: &Option<Vec<String>>, roles: &[String]) -> Vec<String> {
    let mut out: Vec<String> = match requested {
        None => roles.to_vec(),
        Some(req) => req.iter().filter(|s| roles.contains(s)).cloned().collect(),
    };
    out.sort();
    out.dedup();
    out
}

/// The user behind an email and password, or `None` (one argon2 verification either way).
async fn check_password(
    svc: &IdentityService,
    email: &str,
    password: String,
    ip: Option<&str>,
) -> Result<Option<User>, super::IdentityError> {
    let normalized = super::normalize_email(email);
    let user = match &normalized {
        Some(e) => svc.store.find_user_by_email(e).await?,
        None => None,
    };
    let phc = user
        .as_ref()
        .map_or_else(|| svc.dummy_hash.clone(), |u| u.password_hash.clone());
    let ok = crypto::verify_password_blocking(password, phc).await?;
    match user {
        Some(u) if ok && !u.disabled => {
            svc.audit(
                "login_ok",
                Some(&u.id),
                Some(&u.email),
                ip,
                json!({ "via": "oauth" }),
            )
            .await;
            Ok(Some(u))
        }
        other => {
            let reason = match &other {
                None => "unknown_email",
                Some(u) if u.disabled && ok => "user_disabled",
                Some(_) => "wrong_password",
            };
            svc.audit(
                "login_failed",
                other.as_ref().map(|u| u.id.as_str()),
                Some(normalized.as_deref().unwrap_or(email.trim())),
                ip,
                json!({ "reason": reason, "via": "oauth" }),
            )
            .await;
            Ok(None)
        }
    }
}

async fn consent(State(svc): State<Svc>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match parse_params(&body) {
        Ok(p) => p,
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("The form is malformed: {e}."),
            )
        }
    };
    if !csrf_ok(&headers, &form) {
        return error_page(
            StatusCode::FORBIDDEN,
            "This form was not sent from this sign-in page (or your browser blocked its cookie). Start again from your application.",
        );
    }
    let Some(ticket) = form.get("ticket") else {
        return error_page(StatusCode::BAD_REQUEST, "The form is incomplete.");
    };
    let ticket_hash = sha256_hex(ticket.as_bytes());
    let expired =
        "This sign-in request expired or was already answered. Start again from your application.";
    match form.get("decision").map(String::as_str) {
        Some("allow") => {
            let code = crypto::random_b64(32);
            let now = store::now();
            let row = match svc
                .store
                .approve_oauth_code(
                    &ticket_hash,
                    &sha256_hex(code.as_bytes()),
                    now + CODE_TTL_SECS,
                )
                .await
            {
                Ok(Some(row)) => row,
                Ok(None) => return error_page(StatusCode::BAD_REQUEST, expired),
                Err(e) => {
                    tracing::error!(error = %e, "could not approve a consent");
                    return error_page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal error; see the gateway's log.",
                    );
                }
            };
            if let Err(e) = svc
                .store
                .put_oauth_consent(&row.user_id, &row.client_id, &row.scope)
                .await
            {
                tracing::error!(error = %e, "could not remember a consent");
            }
            svc.audit(
                "oauth_consent_granted",
                Some(&row.user_id),
                Some(&row.client_id),
                None,
                json!({ "scope": row.scope, "resource": row.resource }),
            )
            .await;
            code_redirect(&row.redirect_uri, &code, row.state.as_deref())
        }
        Some("deny") => match svc.store.take_pending_oauth_code(&ticket_hash).await {
            Ok(Some(row)) => {
                let mut pairs = vec![
                    ("error", "access_denied"),
                    ("error_description", "the user denied the request"),
                ];
                if let Some(s) = &row.state {
                    pairs.push(("state", s.as_str()));
                }
                redirect_with(&row.redirect_uri, &pairs)
            }
            Ok(None) => error_page(StatusCode::BAD_REQUEST, expired),
            Err(e) => {
                tracing::error!(error = %e, "could not deny a consent");
                error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error; see the gateway's log.",
                )
            }
        },
        _ => error_page(StatusCode::BAD_REQUEST, "Choose Allow or Deny."),
    }
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

/// base64url(SHA-256(verifier)) == challenge, with a well-formed verifier (RFC 7636 §4.1).
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    if !is_challenge(verifier) {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.len() == challenge.len()
        && computed
            .bytes()
            .zip(challenge.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn token(
    State(svc): State<Svc>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = parse_params(&body).map_err(invalid_request)?;
    let ip = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "clients of this server are public: send client_id, no client authentication",
        ));
    }
    let client_id = form
        .get("client_id")
        .ok_or_else(|| invalid_request("client_id is required"))?;
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => code_grant(&svc, &form, client_id, ip.as_deref()).await,
        Some("refresh_token") => refresh_grant(&svc, &form, client_id, ip.as_deref()).await,
        Some(other) => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant type {other:?} is not supported"),
        )),
        None => Err(invalid_request("grant_type is required")),
    }
}

async fn code_grant(
    svc: &IdentityService,
    form: &HashMap<String, String>,
    client_id: &str,
    ip: Option<&str>,
) -> Result<Response, OAuthError> {
    let code = form
        .get("code")
        .ok_or_else(|| invalid_request("code is required"))?;
    let verifier = form
        .get("code_verifier")
        .ok_or_else(|| invalid_request("code_verifier is required (PKCE)"))?;
    let redirect_uri = form
        .get("redirect_uri")
        .ok_or_else(|| invalid_request("redirect_uri is required"))?;
    let hash = sha256_hex(code.as_bytes());
    let Some(row) = svc.store.get_oauth_code(&hash).await? else {
        return Err(invalid_grant("the authorization code is invalid"));
    };
    if !row.approved {
        return Err(invalid_grant("the authorization code is invalid"));
    }
    if row.used_at.is_some() {
        // A second use: the code leaked; whatever was issued for it is revoked.
        let revoked = match &row.family_id {
            Some(f) => svc.store.revoke_family(f).await?,
            None => 0,
        };
        svc.audit(
            "oauth_code_reuse",
            Some(&row.user_id),
            Some(&row.client_id),
            ip,
            json!({ "refresh_tokens_revoked": revoked }),
        )
        .await;
        return Err(invalid_grant(
            "the authorization code was already used: the tokens issued for it are revoked",
        ));
    }
    if row.expires_at <= store::now() {
        return Err(invalid_grant("the authorization code expired"));
    }
    if row.client_id != client_id {
        return Err(invalid_grant(
            "the authorization code was issued to another client",
        ));
    }
    if &row.redirect_uri != redirect_uri {
        return Err(invalid_grant(
            "redirect_uri differs from the one of the authorization request",
        ));
    }
    if let Some(r) = form.get("resource") {
        if r != &row.resource {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "resource differs from the one of the authorization request",
            ));
        }
    }
    if !pkce_s256_matches(verifier, &row.code_challenge) {
        return Err(invalid_grant(
            "the code_verifier does not match the code_challenge",
        ));
    }
    let family = store::new_id();
    if !svc.store.use_oauth_code(&hash, &family).await? {
        return Err(invalid_grant(
            "the authorization code was already used or expired",
        ));
    }
    let Some(user) = svc
        .store
        .get_user(&row.user_id)
        .await?
        .filter(|u| !u.disabled)
    else {
        return Err(invalid_grant("the user is unknown or disabled"));
    };
    svc.store
        .insert_oauth_grant(&OAuthGrant {
            family_id: family.clone(),
            user_id: user.id.clone(),
            client_id: row.client_id.clone(),
            resource: row.resource.clone(),
            scope: row.scope.clone(),
            created_at: store::now(),
        })
        .await?;
    let (refresh, refresh_hash) = new_refresh_token();
    let now = store::now();
    svc.store
        .insert_refresh_token(&NewRefreshToken {
            user_id: &user.id,
            token_hash: &refresh_hash,
            family_id: &family,
            issued_at: now,
            expires_at: now.saturating_add(super::secs(svc.cfg.refresh_ttl)),
        })
        .await?;
    svc.audit(
        "oauth_token_issued",
        Some(&user.id),
        Some(&row.client_id),
        ip,
        json!({ "resource": row.resource, "scope": row.scope }),
    )
    .await;
    token_response(
        svc,
        &user,
        &row.scope,
        &row.resource,
        &row.client_id,
        refresh,
    )
    .await
}

fn new_refresh_token() -> (String, String) {
    let token = format!("{}{}", super::REFRESH_TOKEN_PREFIX, crypto::random_b64(32));
    let hash = sha256_hex(token.as_bytes());
    (token, hash)
}

async fn token_response(
    svc: &IdentityService,
    user: &User,
    scope: &str,
    resource: &str,
    client_id: &str,
    refresh: String,
) -> Result<Response, OAuthError> {
    // The granted scopes the user still holds (a role taken away is not handed out again).
    let roles: Vec<String> = scope
        .split_whitespace()
        .filter(|s| user.roles.iter().any(|r| r == s))
        .map(str::to_owned)
        .collect();
    let access = svc
        .sign_oauth_token(user, &roles, resource, client_id)
        .await?;
    let mut response = Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": svc.cfg.access_ttl.as_secs(),
        "refresh_token": refresh,
        "scope": roles.join(" "),
    }))
    .into_response();
    no_store(response.headers_mut());
    Ok(response)
}

async fn refresh_grant(
    svc: &IdentityService,
    form: &HashMap<String, String>,
    client_id: &str,
    ip: Option<&str>,
) -> Result<Response, OAuthError> {
    const BAD: &str = "the refresh token is invalid, expired or revoked";
    let presented = form
        .get("refresh_token")
        .ok_or_else(|| invalid_request("refresh_token is required"))?;
    let Some(old) = svc
        .store
        .find_refresh_by_hash(&sha256_hex(presented.as_bytes()))
        .await?
    else {
        return Err(invalid_grant(BAD));
    };
    let Some(grant) = svc.store.get_oauth_grant(&old.family_id).await? else {
        return Err(invalid_grant(
            "this refresh token was not issued by the OAuth token endpoint",
        ));
    };
    if grant.client_id != client_id {
        return Err(invalid_grant(
            "this refresh token was issued to another client",
        ));
    }
    if let Some(r) = form.get("resource") {
        if r != &grant.resource {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                "resource differs from the one this grant is bound to",
            ));
        }
    }
    let reuse = || async {
        let revoked = svc.store.revoke_family(&old.family_id).await?;
        svc.audit(
            "refresh_reuse",
            Some(&old.user_id),
            Some(&grant.client_id),
            ip,
            json!({ "family_id": old.family_id, "token_id": old.id, "revoked": revoked, "via": "oauth" }),
        )
        .await;
        Err::<Response, OAuthError>(invalid_grant(
            "this refresh token was already used: every token of its grant is revoked",
        ))
    };
    if old.replaced_by.is_some() {
        return reuse().await;
    }
    let now = store::now();
    if !old.is_usable(now) {
        return Err(invalid_grant(BAD));
    }
    let scope = match form.get("scope") {
        None => grant.scope.clone(),
        Some(s) => {
            let had: Vec<&str> = grant.scope.split_whitespace().collect();
            if let Some(extra) = s.split_whitespace().find(|x| !had.contains(x)) {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    format!("{extra} was not granted"),
                ));
            }
            s.split_whitespace().collect::<Vec<_>>().join(" ")
        }
    };
    let Some(user) = svc
        .store
        .get_user(&old.user_id)
        .await?
        .filter(|u| !u.disabled)
    else {
        svc.store.revoke_family(&old.family_id).await?;
        return Err(invalid_grant(BAD));
    };
    let (token, new_hash) = new_refresh_token();
    let rotated = svc
        .store
        .rotate_refresh_token(
            &old.id,
            &NewRefreshToken {
                user_id: &user.id,
                token_hash: &new_hash,
                family_id: &old.family_id,
                issued_at: now,
                expires_at: now.saturating_add(super::secs(svc.cfg.refresh_ttl)),
            },
        )
        .await?;
    if rotated.is_none() {
        return reuse().await;
    }
    token_response(svc, &user, &scope, &grant.resource, &grant.client_id, token).await
}

// ---------------------------------------------------------------------------------------------
// The user's consents

async fn list_consents(
    State(svc): State<Svc>,
    caller: super::http::Caller,
) -> Result<Json<Value>, super::http::ApiError> {
    let consents = svc.store.list_oauth_consents(&caller.user.id).await?;
    let mut out = Vec::with_capacity(consents.len());
    for c in consents {
        let name = match find_client(&svc, &c.client_id).await {
            Ok(Some(info)) => info.name.clone(),
            _ => c.client_id.clone(),
        };
        out.push(json!({
            "client_id": c.client_id,
            "client_name": name,
            "scope": c.scope,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
        }));
    }
    Ok(Json(json!({ "consents": out })))
}

async fn revoke_consent(
    State(svc): State<Svc>,
    caller: super::http::Caller,
    Path(client_id): Path<String>,
) -> Result<StatusCode, super::http::ApiError> {
    let Some(revoked) = svc
        .store
        .revoke_oauth_consent(&caller.user.id, &client_id)
        .await?
    else {
        return Err(super::http::ApiError::not_found(
            "you have not given this client consent",
        ));
    };
    svc.audit(
        "oauth_consent_revoked",
        Some(&caller.user.id),
        Some(&client_id),
        None,
        json!({ "refresh_tokens_revoked": revoked }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_loopback_http_or_https_only() {
        assert!(redirect_uri_allowed("http://127.0.0.1:33418/callback").is_ok());
        assert!(redirect_uri_allowed("http://localhost/cb").is_ok());
        assert!(redirect_uri_allowed("http://[::1]:9/cb").is_ok());
        assert!(redirect_uri_allowed("https://app.example.com/cb").is_ok());
        assert!(redirect_uri_allowed("http://example.com/cb").is_err());
        assert!(redirect_uri_allowed("http://10.0.0.1/cb").is_err());
        assert!(redirect_uri_allowed("https://app.example.com/cb#frag").is_err());
        assert!(redirect_uri_allowed("javascript:alert(1)").is_err());
        assert!(redirect_uri_allowed("/relative").is_err());
        assert!(redirect_uri_allowed("https://user:pw@app.example.com/cb").is_err());
    }

    #[test]
    fn loopback_redirects_match_on_any_port_others_exactly() {
        let reg = vec![
            "http://127.0.0.1:1234/callback".to_owned(),
            "https://app.example.com/cb".to_owned(),
        ];
        assert!(redirect_uri_matches(&reg, "http://127.0.0.1:1234/callback"));
        assert!(redirect_uri_matches(&reg, "http://127.0.0.1:5555/callback"));
        assert!(!redirect_uri_matches(&reg, "http://127.0.0.1:5555/other"));
        assert!(!redirect_uri_matches(
            &reg,
            "http://localhost:1234/callback"
        ));
        assert!(redirect_uri_matches(&reg, "https://app.example.com/cb"));
        assert!(!redirect_uri_matches(&reg, "https://app.example.com/cb/"));
        assert!(!redirect_uri_matches(
            &reg,
            "https://app.example.com:8443/cb"
        ));
    }

    #[test]
    fn pkce_s256() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_s256_matches(verifier, challenge));
        assert!(!pkce_s256_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXx",
            challenge
        ));
        assert!(!pkce_s256_matches("short", challenge));
    }

    #[test]
    fn client_documents() {
        assert!(client_document_url_allowed("https://app.example.com/client.json").is_ok());
        assert!(client_document_url_allowed("http://app.example.com/client.json").is_err());
        assert!(client_document_url_allowed("https://app.example.com/").is_err());
        assert!(client_document_url_allowed("https://127.0.0.1/c.json").is_err());
        assert!(client_document_url_allowed("https://192.168.1.2/c.json").is_err());
        assert!(client_document_url_allowed("https://localhost/c.json").is_err());
        let url = "https://app.example.com/client.json";
        let good = json!({
            "client_id": url,
            "client_name": "Example",
            "redirect_uris": ["http://127.0.0.1:3000/callback"],
            "token_endpoint_auth_method": "none",
        });
        let info = parse_client_document(url, good.to_string().as_bytes()).expect("valid");
        assert_eq!(info.name, "Example");
        assert!(info.from_document);
        let mut wrong_id = good.clone();
        wrong_id["client_id"] = json!("https://evil.example.com/client.json");
        assert!(parse_client_document(url, wrong_id.to_string().as_bytes()).is_err());
        let mut secret = good.clone();
        secret["token_endpoint_auth_method"] = json!("client_secret_basic");
        assert!(parse_client_document(url, secret.to_string().as_bytes()).is_err());
        let mut bad_redirect = good.clone();
        bad_redirect["redirect_uris"] = json!(["http://evil.example.com/cb"]);
        assert!(parse_client_document(url, bad_redirect.to_string().as_bytes()).is_err());
        assert!(parse_client_document(url, b"not json").is_err());
    }

    #[test]
    fn duplicate_parameters_are_refused() {
        assert!(parse_params(b"a=1&b=2").is_ok());
        assert!(parse_params(b"a=1&a=2").is_err());
    }

    #[test]
    fn granted_scopes_are_held_roles() {
        let roles = vec!["admin".to_owned(), "user".to_owned()];
        assert_eq!(granted_scopes(&None, &roles), roles);
        assert_eq!(
            granted_scopes(&Some(vec!["user".into(), "root".into()]), &roles),
            vec!["user".to_owned()]
        );
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
