//! The identity service's HTTP API (axum): JSON in, JSON out, errors as
//! `{"error": "<code>", "message": "<text>"}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::crypto::{self, sha256_hex};
use super::revocation::Invalidation;
use super::{
    check_password, normalize_email, AccessClaims, IdentityError, IdentityService, API_KEY_PREFIX,
    REFRESH_TOKEN_PREFIX,
};
use crate::store::{self, ApiKey, NewApiKey, NewRefreshToken, StoreError, User};

type Svc = Arc<IdentityService>;

/// The same answer for every failed login, whatever the reason.
const BAD_CREDENTIALS: &str = "the email or password is incorrect";
const BAD_REFRESH: &str = "the refresh token is invalid, expired or revoked";

pub(super) fn router(service: Svc) -> Router {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/api-keys", get(list_api_keys).post(create_api_key))
        .route("/auth/api-keys/{id}", delete(revoke_api_key))
        .route(
            "/auth/credentials/{service}",
            put(put_credential).delete(delete_credential),
        )
        .route("/.well-known/jwks.json", get(jwks))
        .route("/auth/admin/users", get(admin_list_users))
        .route("/auth/admin/users/{id}/roles", put(admin_set_roles))
        .route("/auth/admin/users/{id}/disable", post(admin_disable))
        .merge(super::oauth::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(service)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answer.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            message: message.into(),
        }
    }

    fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn unprocessable(error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error, message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.error, "message": self.message }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> ApiError {
        tracing::error!(error = %e, "identity service error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the gateway's log",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::from(IdentityError::Store(e))
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this endpoint",
    )
}

/// Parses a JSON body, answering 400 with the reason when it does not fit.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the request body is not the expected JSON: {e}"),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Extractors

/// The client's address: behind the gateway, the `X-Forwarded-For` the gateway set (it
/// replaces any the client sent, and this listener is on loopback only); otherwise the peer
/// address when the server was started with connect info.
struct ClientIp(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let from_loopback = peer.is_none_or(|ip| ip.is_loopback());
        Ok(ClientIp(match (forwarded, from_loopback) {
            (Some(f), true) => Some(f),
            _ => peer.map(|ip| ip.to_string()),
        }))
    }
}

/// A caller authenticated by an access token of this service, whose user exists and is
/// enabled.
pub(super) struct Caller {
    claims: AccessClaims,
    pub(super) user: User,
}

impl FromRequestParts<Svc> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, svc: &Svc) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("a bearer access token is required"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(ApiError::unauthorized("a bearer access token is required")),
        };
        let claims = svc
            .verify_access_token(token)
            .ok_or_else(|| ApiError::unauthorized("the access token is invalid or expired"))?;
        let user = svc
            .store
            .get_user(&claims.sub)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| ApiError::unauthorized("the user is unknown or disabled"))?;
        Ok(Caller { claims, user })
    }
}

/// A caller whose access token carries the `admin` role.
struct Admin(Caller);

impl FromRequestParts<Svc> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, svc: &Svc) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, svc).await?;
        if !caller.claims.roles.iter().any(|r| r == "admin") {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the admin role is required",
            ));
        }
        Ok(Admin(caller))
    }
}

// ---------------------------------------------------------------------------------------------
// Accounts and sessions

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

async fn register(
    State(svc): State<Svc>,
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: Credentials = parse(&body)?;
    let email = normalize_email(&req.email).ok_or_else(|| {
        ApiError::unprocessable("invalid_email", "the email must look like name@domain")
    })?;
    check_password(&req.password).map_err(|rule| ApiError::unprocessable("weak_password", rule))?;
    let hash = crypto::hash_password_blocking(req.password).await?;
    let user = match svc.store.create_user(&email, &hash, &[]).await {
        Ok(u) => u,
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "email_taken",
                "an account with this email already exists",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    svc.audit(
        "user_registered",
        Some(&user.id),
        Some(&user.email),
        ip.as_deref(),
        json!({}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": user.id, "email": user.email })),
    )
        .into_response())
}

/// Issues an access token and stores a new refresh token of family `family_id`.
async fn token_pair(
    svc: &IdentityService,
    user: &User,
    family_id: &str,
) -> Result<Value, ApiError> {
    let (refresh_token, hash) = new_refresh_token();
    let now = store::now();
    svc.store
        .insert_refresh_token(&NewRefreshToken {
            user_id: &user.id,
            token_hash: &hash,
            family_id,
            issued_at: now,
            expires_at: now.saturating_add(super::secs(svc.cfg.refresh_ttl)),
        })
        .await?;
    pair_body(svc, user, refresh_token).await
}

async fn pair_body(
    svc: &IdentityService,
    user: &User,
    refresh_token: String,
) -> Result<Value, ApiError> {
    let access_token = svc
        .sign_access_token(user, user.roles.clone(), svc.cfg.access_ttl)
        .await?;
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": svc.cfg.access_ttl.as_secs(),
        "refresh_token": refresh_token,
    }))
}

fn new_refresh_token() -> (String, String) {
    let token = format!("{REFRESH_TOKEN_PREFIX}{}", crypto::random_b64(32));
    let hash = sha256_hex(token.as_bytes());
    (token, hash)
}

async fn login(
    State(svc): State<Svc>,
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: Credentials = parse(&body)?;
    let email = normalize_email(&req.email);
    let user = match &email {
        Some(e) => svc.store.find_user_by_email(e).await?,
        None => None,
    };
    // Always one argon2 verification, against a dummy hash when the email is unknown.
    let phc = user
        .as_ref()
        .map_or_else(|| svc.dummy_hash.clone(), |u| u.password_hash.clone());
    let password_ok = crypto::verify_password_blocking(req.password, phc).await?;
    let user = match user {
        Some(u) if password_ok && !u.disabled => u,
        other => {
            let reason = match &other {
                None => "unknown_email",
                Some(u) if u.disabled && password_ok => "user_disabled",
                Some(_) => "wrong_password",
            };
            svc.audit(
                "login_failed",
                other.as_ref().map(|u| u.id.as_str()),
                Some(email.as_deref().unwrap_or(req.email.trim())),
                ip.as_deref(),
                json!({ "reason": reason }),
            )
            .await;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                BAD_CREDENTIALS,
            ));
        }
    };
    let body = token_pair(&svc, &user, &store::new_id()).await?;
    svc.audit(
        "login_ok",
        Some(&user.id),
        Some(&user.email),
        ip.as_deref(),
        json!({}),
    )
    .await;
    Ok(Json(body))
}

#[derive(Deserialize)]
struct RefreshRequest {
    refresh_token: String,
}

fn bad_refresh() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_grant", BAD_REFRESH)
}

async fn refresh(
    State(svc): State<Svc>,
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: RefreshRequest = parse(&body)?;
    let hash = sha256_hex(req.refresh_token.as_bytes());
    let Some(old) = svc.store.find_refresh_by_hash(&hash).await? else {
        return Err(bad_refresh());
    };
    // An OAuth client's refresh token stays bound to its client and resource: it is
    // refreshed at /oauth/token only.
    if svc.store.get_oauth_grant(&old.family_id).await?.is_some() {
        return Err(bad_refresh());
    }
    let reuse = |svc: Svc, old: store::RefreshToken, ip: Option<String>| async move {
        let revoked = svc.store.revoke_family(&old.family_id).await?;
        svc.audit(
            "refresh_reuse",
            Some(&old.user_id),
            None,
            ip.as_deref(),
            json!({ "family_id": old.family_id, "token_id": old.id, "revoked": revoked }),
        )
        .await;
        Err::<Json<Value>, ApiError>(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "this refresh token was already used: every token of its session is revoked",
        ))
    };
    if old.replaced_by.is_some() {
        return reuse(svc.clone(), old, ip).await;
    }
    let now = store::now();
    if !old.is_usable(now) {
        return Err(bad_refresh());
    }
    let Some(user) = svc
        .store
        .get_user(&old.user_id)
        .await?
        .filter(|u| !u.disabled)
    else {
        svc.store.revoke_family(&old.family_id).await?;
        return Err(bad_refresh());
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
        // Replaced or revoked between the read and the rotation: a concurrent use.
        return reuse(svc.clone(), old, ip).await;
    }
    Ok(Json(pair_body(&svc, &user, token).await?))
}

async fn logout(State(svc): State<Svc>, body: Bytes) -> Result<StatusCode, ApiError> {
    let req: RefreshRequest = parse(&body)?;
    let hash = sha256_hex(req.refresh_token.as_bytes());
    if let Some(token) = svc.store.find_refresh_by_hash(&hash).await? {
        svc.store.revoke_family(&token.family_id).await?;
        // Access tokens already handed out end now too, on every replica.
        svc.cut_off_tokens(&token.user_id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// API keys

fn key_view(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "scopes": k.scopes,
        "created_at": k.created_at,
        "expires_at": k.expires_at,
        "revoked_at": k.revoked_at,
        "last_used_at": k.last_used_at,
    })
}

async fn list_api_keys(State(svc): State<Svc>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let keys = svc.store.list_api_keys(&caller.user.id).await?;
    Ok(Json(
        json!({ "keys": keys.iter().map(key_view).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
struct NewKeyRequest {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    /// Seconds from now.
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Names, roles and scopes: 1 to 64 characters of `A-Z a-z 0-9 _ - . :`.
fn is_label(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

const MAX_KEY_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

async fn create_api_key(
    State(svc): State<Svc>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewKeyRequest = parse(&body)?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::unprocessable(
            "invalid_name",
            "name must have 1 to 100 characters",
        ));
    }
    if req.scopes.len() > 50 || !req.scopes.iter().all(|s| is_label(s)) {
        return Err(ApiError::unprocessable(
            "invalid_scopes",
            "at most 50 scopes, each 1 to 64 characters of A-Z a-z 0-9 _ - . :",
        ));
    }
    let expires_at = match req.expires_in {
        None => None,
        Some(s) if (1..=MAX_KEY_LIFETIME_SECS).contains(&s) => {
            Some(store::now().saturating_add(i64::try_from(s).unwrap_or(i64::MAX)))
        }
        Some(_) => {
            return Err(ApiError::unprocessable(
                "invalid_expires_in",
                "expires_in must be a number of seconds from 1 to 315360000 (10 years)",
            ))
        }
    };
    let prefix = format!("{API_KEY_PREFIX}{}", crypto::random_base62(8));
    let key = format!("{prefix}_{}", crypto::random_base62(32));
    let stored = svc
        .store
        .insert_api_key(&NewApiKey {
            user_id: &caller.user.id,
            name,
            prefix: &prefix,
            key_hash: &sha256_hex(key.as_bytes()),
            scopes: &req.scopes,
            expires_at,
        })
        .await?;
    svc.audit(
        "api_key_created",
        Some(&caller.user.id),
        Some(&prefix),
        ip.as_deref(),
        json!({ "key_id": stored.id, "name": stored.name }),
    )
    .await;
    let mut view = key_view(&stored);
    if let Some(obj) = view.as_object_mut() {
        obj.insert("key".into(), Value::String(key));
    }
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn revoke_api_key(
    State(svc): State<Svc>,
    ClientIp(ip): ClientIp,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let keys = svc.store.list_api_keys(&caller.user.id).await?;
    let Some(key) = keys.iter().find(|k| k.id == id) else {
        return Err(ApiError::not_found("you have no API key with this id"));
    };
    if !svc.store.revoke_api_key(&caller.user.id, &id).await? {
        return Err(ApiError::not_found("this API key is already revoked"));
    }
    svc.invalidate(Invalidation::ApiKey {
        hash: key.key_hash.clone(),
    })
    .await;
    svc.audit(
        "api_key_revoked",
        Some(&caller.user.id),
        Some(&key.prefix),
        ip.as_deref(),
        json!({ "key_id": key.id }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Service credentials

#[derive(Deserialize)]
struct CredentialRequest {
    token: String,
}

const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;

fn check_service(service: &str) -> Result<(), ApiError> {
    if is_label(service) {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "invalid_service",
            "the service name must have 1 to 64 characters of A-Z a-z 0-9 _ - . :",
        ))
    }
}

async fn put_credential(
    State(svc): State<Svc>,
    caller: Caller,
    Path(service): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    check_service(&service)?;
    let req: CredentialRequest = parse(&body)?;
    if req.token.is_empty() || req.token.len() > MAX_CREDENTIAL_BYTES {
        return Err(ApiError::unprocessable(
            "invalid_token",
            "token must be a non-empty string of at most 16384 bytes",
        ));
    }
    svc.put_service_credential(&caller.user.id, &service, &req.token)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_credential(
    State(svc): State<Svc>,
    caller: Caller,
    Path(service): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_service(&service)?;
    svc.delete_service_credential(&caller.user.id, &service)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// JWKS

async fn jwks(State(svc): State<Svc>) -> Response {
    let mut response = Json(svc.jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Administration

fn user_view(u: &User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "roles": u.roles,
        "disabled": u.disabled,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
    })
}

/// `limit` (1..=1000, default 100) and `offset` (default 0) from the query string.
fn paging(query: Option<&str>) -> Result<(i64, i64), ApiError> {
    let (mut limit, mut offset) = (100i64, 0i64);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n: Option<i64> = v.parse().ok();
        match (k, n) {
            ("limit", Some(n)) if (1..=1000).contains(&n) => limit = n,
            ("offset", Some(n)) if n >= 0 => offset = n,
            ("limit", _) | ("offset", _) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "limit must be 1 to 1000 and offset a non-negative integer",
                ))
            }
            _ => {}
        }
    }
    Ok((limit, offset))
}

async fn admin_list_users(
    State(svc): State<Svc>,
    _admin: Admin,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (limit, offset) = paging(query.as_deref())?;
    let users = svc.store.list_users(limit, offset).await?;
    Ok(Json(
        json!({ "users": users.iter().map(user_view).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
struct RolesRequest {
    roles: Vec<String>,
}

async fn admin_set_roles(
    State(svc): State<Svc>,
    ClientIp(ip): ClientIp,
    Admin(admin): Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: RolesRequest = parse(&body)?;
    if req.roles.len() > 50 || !req.roles.iter().all(|r| is_label(r)) {
        return Err(ApiError::unprocessable(
            "invalid_roles",
            "at most 50 roles, each 1 to 64 characters of A-Z a-z 0-9 _ - . :",
        ));
    }
    let mut roles = req.roles;
    roles.sort();
    roles.dedup();
    match svc.store.set_roles(&id, &roles).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(ApiError::not_found("no user with this id")),
        Err(e) => return Err(e.into()),
    }
    // Cached API key identities carry roles.
    svc.invalidate(Invalidation::AllApiKeys).await;
    svc.cut_off_tokens(&id).await?;
    svc.audit(
        "roles_changed",
        Some(&id),
        Some(&admin.user.id),
        ip.as_deref(),
        json!({ "roles": roles, "by": admin.user.id }),
    )
    .await;
    let user = svc
        .store
        .get_user(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no user with this id"))?;
    Ok(Json(user_view(&user)))
}

async fn admin_disable(
    State(svc): State<Svc>,
    ClientIp(ip): ClientIp,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match svc.store.set_disabled(&id, true).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(ApiError::not_found("no user with this id")),
        Err(e) => return Err(e.into()),
    }
    let revoked = svc.store.revoke_user_refresh_tokens(&id).await?;
    svc.invalidate(Invalidation::AllApiKeys).await;
    svc.cut_off_tokens(&id).await?;
    svc.audit(
        "user_disabled",
        Some(&id),
        Some(&admin.user.id),
        ip.as_deref(),
        json!({ "by": admin.user.id, "refresh_tokens_revoked": revoked }),
    )
    .await;
    let user = svc
        .store
        .get_user(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no user with this id"))?;
    Ok(Json(user_view(&user)))
}
