//! The gateway's own identity service: users with passwords (argon2id), ES256 access tokens
//! with rotating signing keys, rotating refresh tokens with reuse detection, API keys,
//! per-user credentials for upstream services (AES-256-GCM at rest) and an audit trail.
//! Served as an axum [`Router`](axum::Router) by [`IdentityService::router`]; the gateway calls
//! the cheap methods ([`IdentityService::verification_keys`],
//! [`IdentityService::authenticate_api_key`], [`IdentityService::service_credential`]) on its
//! hot path. See docs/identity.md.

pub mod bus;
pub mod cli;
mod crypto;
mod http;
mod keys;
pub mod oauth;
pub mod revocation;

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::store::{self, NewAuditEvent, NewSigningKey, Store, StoreError, User};
use crypto::{sha256_hex, Envelope};
use keys::KeyRing;
use revocation::Invalidation;

/// Environment variable holding the current credentials key (32 bytes, base64 or hex).
pub const CREDENTIALS_KEY_ENV: &str = "MCP_GATEWAY_CREDENTIALS_KEY";
/// Environment variable naming that key (default `k1`).
pub const CREDENTIALS_KEY_ID_ENV: &str = "MCP_GATEWAY_CREDENTIALS_KEY_ID";
/// Prefix of every API key.
pub const API_KEY_PREFIX: &str = "mcpk_";
/// Prefix of every refresh token.
pub const REFRESH_TOKEN_PREFIX: &str = "mcpr_";

/// How long an API key lookup (positive or negative) is cached in process.
pub const API_KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// How long a decrypted service credential is cached in process.
pub const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(30);
/// How often the key ring is re-read from the database (keys rotated by another replica
/// appear within this interval) and rotation is checked.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(60);
/// How often each replica reads the token cutoffs (logout, role change, disable) from the
/// database: the path by which one reaches a replica that missed its Redis message (no
/// Redis configured, or Redis away when it was sent).
pub const CUTOFF_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Clock difference between replicas that the cutoff poll tolerates: each poll reads the
/// cutoffs set from this long before the previous one.
const CUTOFF_POLL_SKEW_SECS: i64 = 60;
/// Leeway on `exp`/`iat` when this service verifies its own access tokens.
const LEEWAY_SECS: u64 = 30;

/// How the service is set up.
#[derive(Clone)]
pub struct IdentityConfig {
    /// `iss` of the tokens it issues, e.g. `http://127.0.0.1:8080`.
    pub issuer: String,
    /// `aud` of the access tokens, e.g. the MCP resource URI.
    pub audience: String,
    /// Lifetime of access tokens (default 15 min).
    pub access_ttl: Duration,
    /// Lifetime of refresh tokens, renewed at each rotation (default 30 days).
    pub refresh_ttl: Duration,
    /// A signing key older than this is replaced (default 30 days).
    pub key_rotation: Duration,
    /// Keys sealing service credentials: the first seals, every one opens (by id).
    pub credentials_keys: Vec<(String, [u8; 32])>,
    /// Keys sealing the signing keys' private halves; `None`: the credentials keys.
    pub signing_key_encryption: Option<Vec<(String, [u8; 32])>>,
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("key_rotation", &self.key_rotation)
            .field(
                "credentials_keys",
                &self
                    .credentials_keys
                    .iter()
                    .map(|(id, _)| id)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl IdentityConfig {
    /// The defaults (15 min access tokens, 30 day refresh tokens, 30 day key rotation) with
    /// these names and keys.
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        credentials_keys: Vec<(String, [u8; 32])>,
    ) -> IdentityConfig {
        IdentityConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            key_rotation: Duration::from_secs(30 * 24 * 3600),
            credentials_keys,
            signing_key_encryption: None,
        }
    }
}

/// The credentials key from `MCP_GATEWAY_CREDENTIALS_KEY` (and its id from
/// `MCP_GATEWAY_CREDENTIALS_KEY_ID`, default `k1`), as the one-element key list.
pub fn credentials_keys_from_env() -> Result<Vec<(String, [u8; 32])>, IdentityError> {
    let text = std::env::var(CREDENTIALS_KEY_ENV).map_err(|_| {
        IdentityError::Config(format!(
            "{CREDENTIALS_KEY_ENV} is not set: it must hold 32 random bytes in base64 or hex \
             (for example `openssl rand -base64 32`); it encrypts stored credentials and \
             signing keys"
        ))
    })?;
    let key = crate::mcp::session::parse_key(&text)
        .map_err(|e| IdentityError::Config(format!("{CREDENTIALS_KEY_ENV}: {e}")))?;
    let id = std::env::var(CREDENTIALS_KEY_ID_ENV)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "k1".to_owned());
    Ok(vec![(id, key)])
}

/// What the identity service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("configuration: {0}")]
    Config(String),
    /// Input refused by a rule (email shape, password rule).
    #[error("invalid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("crypto: {0}")]
    Crypto(String),
    #[error("token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    #[error("no such user: {0}")]
    UnknownUser(String),
    #[error("user {0} is disabled")]
    UserDisabled(String),
    #[error("no signing key available")]
    NoSigningKey,
}

/// Who an API key belongs to and what it may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyIdentity {
    pub user_id: String,
    pub email: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub key_id: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct CachedKey {
    identity: ApiKeyIdentity,
    expires_at: Option<i64>,
    /// When the lookup was made (unix seconds): a user cut-off at or after it (disable, role
    /// change) makes the entry stale on every replica, whichever cache holds it.
    #[serde(default)]
    cached_at: i64,
}

/// Claims of the access tokens this service issues.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub email: String,
    pub roles: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// The identity service. Create with [`IdentityService::new`]; share the `Arc`.
pub struct IdentityService {
    store: Store,
    cfg: IdentityConfig,
    credentials: Envelope,
    signing_envelope: Envelope,
    ring: ArcSwap<KeyRing>,
    key_lock: tokio::sync::Mutex<()>,
    api_keys: moka::sync::Cache<String, Option<CachedKey>>,
    service_credentials: moka::sync::Cache<(String, String), Option<String>>,
    /// user id → access tokens issued at or before this second are refused.
    cutoffs: moka::sync::Cache<String, i64>,
    /// Where revocations are published for the other replicas (Redis), when configured.
    bus: std::sync::OnceLock<Arc<bus::RedisBus>>,
    /// Where audit events go when the gateway's log pipeline carries them (batched, spooled
    /// while the database is down); unset: written to the store directly.
    audit_sink: std::sync::OnceLock<Arc<dyn AuditSink>>,
    /// A hash of a random password, verified against for unknown emails so that a login
    /// with an unknown email costs what a login with a wrong password costs.
    dummy_hash: String,
    /// The OAuth authorization server's state (resources, fetched client documents).
    oauth: oauth::OAuthState,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Name of a credential's shared cache entry: a hash, so user ids and service names do not
/// show in Redis.
fn credential_cache_id(user_id: &str, service: &str) -> String {
    sha256_hex(format!("{user_id}\0{service}").as_bytes())
}

/// A stored credential as the shared cache holds it: still sealed.
#[derive(Serialize, Deserialize)]
struct SealedCredential {
    ciphertext: Vec<u8>,
    nonce: Vec<u8>,
    key_id: String,
}

fn credential_aad(user_id: &str, service: &str) -> Vec<u8> {
    format!("mcp-gateway/credential/v1\0{user_id}\0{service}").into_bytes()
}

impl IdentityService {
    /// Opens the service on a migrated store: loads the signing keys, creating the first one
    /// or rotating an old one as needed, and starts a task that re-reads the keys every
    /// [`KEY_RELOAD_INTERVAL`] (it ends when the service is dropped).
    pub async fn new(store: Store, cfg: IdentityConfig) -> Result<Arc<Self>, IdentityError> {
        if cfg.issuer.trim().is_empty() || cfg.audience.trim().is_empty() {
            return Err(IdentityError::Config(
                "issuer and audience must not be empty".into(),
            ));
        }
        let credentials = Envelope::new(&cfg.credentials_keys)?;
        let signing_envelope = match &cfg.signing_key_encryption {
            Some(keys) => Envelope::new(keys)?,
            None => Envelope::new(&cfg.credentials_keys)?,
        };
        let dummy_hash = crypto::hash_password_blocking(crypto::random_b64(24)).await?;
        let service = Arc::new(IdentityService {
            store,
            cfg,
            credentials,
            signing_envelope,
            ring: ArcSwap::from_pointee(KeyRing::default()),
            key_lock: tokio::sync::Mutex::new(()),
            api_keys: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(API_KEY_CACHE_TTL)
                .build(),
            service_credentials: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CREDENTIAL_CACHE_TTL)
                .build(),
            cutoffs: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            bus: std::sync::OnceLock::new(),
            audit_sink: std::sync::OnceLock::new(),
            dummy_hash,
            oauth: oauth::OAuthState::default(),
        });
        service.maintain_keys().await?;
        // Cutoffs that still matter: tokens issued before them may not have expired yet.
        let since =
            store::now().saturating_sub(secs(service.cfg.access_ttl) + LEEWAY_SECS as i64 + 60);
        service.load_cutoffs_since(since).await?;
        let weak = Arc::downgrade(&service);
        tokio::spawn(reload_loop(weak.clone()));
        tokio::spawn(cutoff_poll_loop(weak));
        Ok(service)
    }

    /// Apply the token cutoffs stored later than `since` (unix seconds) to this process.
    async fn load_cutoffs_since(&self, since: i64) -> Result<(), StoreError> {
        for (user_id, not_before) in self.store.token_cutoffs_since(since).await? {
            self.apply(&Invalidation::UserCutoff {
                user_id,
                not_before,
            });
        }
        Ok(())
    }

    /// Send audit events to `sink` from now on instead of writing them directly.
    pub fn attach_audit_sink(&self, sink: Arc<dyn AuditSink>) {
        let _ = self.audit_sink.set(sink);
    }

    /// Publish revocations to the other replicas through Redis from now on.
    pub fn attach_bus(&self, bus: Arc<bus::RedisBus>) {
        let _ = self.bus.set(bus);
    }

    /// Apply a revocation to this process's caches.
    pub fn apply(&self, ev: &Invalidation) {
        match ev {
            Invalidation::ApiKey { hash } => self.api_keys.invalidate(hash),
            Invalidation::AllApiKeys => self.api_keys.invalidate_all(),
            Invalidation::UserCutoff {
                user_id,
                not_before,
            } => {
                let current = self.cutoffs.get(user_id).unwrap_or(i64::MIN);
                if *not_before > current {
                    self.cutoffs.insert(user_id.clone(), *not_before);
                }
            }
            Invalidation::Credential { user_id, service } => self
                .service_credentials
                .invalidate(&(user_id.clone(), service.clone())),
        }
    }

    /// Apply here and tell every other replica. A Redis failure is logged: the event still
    /// holds here, and reaches the others within their cache lifetimes.
    pub async fn invalidate(&self, ev: Invalidation) {
        self.apply(&ev);
        if let Some(bus) = self.bus.get() {
            let stale = match &ev {
                Invalidation::ApiKey { hash } => vec![bus.cache_key("apikey", hash)],
                Invalidation::Credential { user_id, service } => {
                    vec![bus.cache_key("cred", &credential_cache_id(user_id, service))]
                }
                Invalidation::AllApiKeys | Invalidation::UserCutoff { .. } => Vec::new(),
            };
            bus.cache_del(stale).await;
            if let Err(e) = bus.publish(&ev).await {
                tracing::warn!(error = %e, event = ?ev, "could not publish a revocation");
            }
        }
    }

    /// End every access token of `user_id` issued until now (logout, role change, disable):
    /// stored, so replicas that start later know it too, and broadcast.
    pub async fn cut_off_tokens(&self, user_id: &str) -> Result<(), IdentityError> {
        let now = store::now();
        self.store.set_token_cutoff(user_id, now).await?;
        self.invalidate(Invalidation::UserCutoff {
            user_id: user_id.to_string(),
            not_before: now,
        })
        .await;
        Ok(())
    }

    /// Is an access token of `user_id` issued at `issued_at` (unix seconds) revoked?
    /// A cached API key lookup made before its user's latest cut-off is stale.
    fn still_valid(&self, cached: &Option<CachedKey>) -> bool {
        cached
            .as_ref()
            .is_none_or(|c| !self.token_revoked(&c.identity.user_id, c.cached_at))
    }

    pub fn token_revoked(&self, user_id: &str, issued_at: i64) -> bool {
        self.cutoffs
            .get(user_id)
            .is_some_and(|cutoff| issued_at <= cutoff)
    }

    /// The HTTP API (see docs/identity.md), to be served as is or nested.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(Arc::clone(self))
    }

    /// The store this service uses.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `iss` of the tokens this service issues.
    pub fn issuer(&self) -> &str {
        &self.cfg.issuer
    }

    /// `aud` of the access tokens this service issues.
    pub fn audience(&self) -> &str {
        &self.cfg.audience
    }

    /// The configuration.
    pub fn config(&self) -> &IdentityConfig {
        &self.cfg
    }

    /// Keys that verify this service's tokens now: the current one and retired ones still in
    /// their window. An in-memory read; no database access.
    pub fn verification_keys(&self) -> Vec<(String, DecodingKey)> {
        let now = store::now();
        self.ring
            .load()
            .valid_at(now)
            .map(|k| (k.kid.clone(), k.key.clone()))
            .collect()
    }

    /// The JWKS document (`{"keys": [...]}`) of [`Self::verification_keys`].
    pub fn jwks(&self) -> serde_json::Value {
        self.ring.load().jwks(store::now())
    }

    /// The kid that signs new tokens now.
    pub fn current_kid(&self) -> Option<String> {
        self.ring.load().signer.as_ref().map(|s| s.kid.clone())
    }

    /// Re-reads the keys; creates a key when none signs, replaces one older than
    /// `key_rotation`, and marks retired the keys whose verification window closed.
    pub async fn maintain_keys(&self) -> Result<(), IdentityError> {
        let _guard = self.key_lock.lock().await;
        self.reload_ring().await?;
        let now = store::now();
        let due = match &self.ring.load().signer {
            None => true,
            Some(s) => now.saturating_sub(s.created_at) >= secs(self.cfg.key_rotation),
        };
        if due {
            self.create_signing_key_locked(now).await?;
            self.reload_ring().await?;
        }
        Ok(())
    }

    /// Replaces the signing key now, whatever its age. The old key stops signing and keeps
    /// verifying for `access_ttl` plus [`KEY_RELOAD_INTERVAL`].
    pub async fn rotate_signing_key(&self) -> Result<String, IdentityError> {
        let _guard = self.key_lock.lock().await;
        self.reload_ring().await?;
        let kid = self.create_signing_key_locked(store::now()).await?;
        self.reload_ring().await?;
        Ok(kid)
    }

    /// How long a key verifies after it stopped signing.
    fn verify_window(&self) -> i64 {
        secs(self.cfg.access_ttl).saturating_add(secs(KEY_RELOAD_INTERVAL))
    }

    async fn reload_ring(&self) -> Result<(), IdentityError> {
        let rows = self.store.list_signing_keys().await?;
        let now = store::now();
        let (ring, expired) =
            KeyRing::build(&rows, &self.signing_envelope, self.verify_window(), now)?;
        for kid in expired {
            if let Err(e) = self.store.retire_signing_key(&kid).await {
                tracing::warn!(kid, error = %e, "could not mark a signing key retired");
            }
        }
        self.ring.store(Arc::new(ring));
        Ok(())
    }

    /// Inserts a new key and ends every other key still signing. Caller holds `key_lock`.
    async fn create_signing_key_locked(&self, now: i64) -> Result<String, IdentityError> {
        let generated = keys::generate()?;
        let sealed = self
            .signing_envelope
            .seal(&generated.pkcs8_der, &keys::signing_key_aad(&generated.kid))?;
        let jwk = generated.public_jwk.to_string();
        self.store
            .insert_signing_key(&NewSigningKey {
                kid: &generated.kid,
                algorithm: keys::ALGORITHM,
                private_key: &sealed.ciphertext,
                nonce: &sealed.nonce,
                key_id: &sealed.key_id,
                public_jwk: &jwk,
                not_after: None,
            })
            .await?;
        let old: Vec<String> = self
            .ring
            .load()
            .verifiers
            .iter()
            .filter(|k| k.until.is_none() && k.kid != generated.kid)
            .map(|k| k.kid.clone())
            .collect();
        for kid in old {
            self.store.end_signing_key(&kid, now).await?;
        }
        tracing::info!(kid = %generated.kid, "new token signing key");
        Ok(generated.kid)
    }

    /// Issues an access token for the user, with the user's roles (for the CLI and tests).
    pub async fn issue_access_token(
        &self,
        user_id: &str,
        ttl: Option<Duration>,
    ) -> Result<String, IdentityError> {
        self.issue_access_token_with_roles(user_id, None, ttl).await
    }

    /// Issues an access token for the user with `roles` instead of the stored ones when given.
    pub async fn issue_access_token_with_roles(
        &self,
        user_id: &str,
        roles: Option<&[String]>,
        ttl: Option<Duration>,
    ) -> Result<String, IdentityError> {
        let user = self
            .store
            .get_user(user_id)
            .await?
            .ok_or_else(|| IdentityError::UnknownUser(user_id.to_owned()))?;
        if user.disabled {
            return Err(IdentityError::UserDisabled(user.id));
        }
        let roles = roles.map(<[String]>::to_vec).unwrap_or(user.roles.clone());
        self.sign_access_token(&user, roles, ttl.unwrap_or(self.cfg.access_ttl))
            .await
    }

    async fn sign_access_token(
        &self,
        user: &User,
        roles: Vec<String>,
        ttl: Duration,
    ) -> Result<String, IdentityError> {
        let now = store::now();
        let stale = match &self.ring.load().signer {
            None => true,
            Some(s) => now.saturating_sub(s.created_at) >= secs(self.cfg.key_rotation),
        };
        if stale {
            self.maintain_keys().await?;
        }
        let ring = self.ring.load();
        let signer = ring.signer.as_ref().ok_or(IdentityError::NoSigningKey)?;
        let claims = AccessClaims {
            iss: self.cfg.issuer.clone(),
            aud: self.cfg.audience.clone(),
            sub: user.id.clone(),
            email: user.email.clone(),
            roles,
            // After any cutoff of this user, even one set in this same second.
            iat: now.max(
                self.cutoffs
                    .get(&user.id)
                    .map_or(i64::MIN, |c| c.saturating_add(1)),
            ),
            exp: now.saturating_add(secs(ttl)),
            jti: crypto::random_b64(12),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(signer.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &signer.key)?)
    }

    /// Verifies an access token issued by this service (signature, kid, iss, aud, exp).
    pub fn verify_access_token(&self, token: &str) -> Option<AccessClaims> {
        if token.len() > 16 * 1024 {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::ES256 {
            return None;
        }
        let kid = header.kid?;
        let ring = self.ring.load();
        let key = ring.valid_at(store::now()).find(|k| k.kid == kid)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[self.cfg.issuer.as_str()]);
        validation.set_audience(&[self.cfg.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        jsonwebtoken::decode::<AccessClaims>(token, &key.key, &validation)
            .ok()
            .map(|d| d.claims)
            .filter(|c| !self.token_revoked(&c.sub, c.iat))
    }

    /// The identity behind an API key, or `None` for an unknown, revoked or expired key or a
    /// disabled user. Lookups are cached by the key's hash for [`API_KEY_CACHE_TTL`]: a key
    /// revoked on another replica stops working here within that time (immediately when
    /// revoked through this process).
    pub async fn authenticate_api_key(
        &self,
        presented: &str,
    ) -> Result<Option<ApiKeyIdentity>, IdentityError> {
        if !looks_like_api_key(presented) {
            return Ok(None);
        }
        let hash = sha256_hex(presented.as_bytes());
        let now = store::now();
        if let Some(cached) = self.api_keys.get(&hash).filter(|c| self.still_valid(c)) {
            return Ok(cached
                .filter(|c| c.expires_at.is_none_or(|t| now < t))
                .map(|c| c.identity));
        }
        let shared_key = self
            .bus
            .get()
            .map(|b| (b.clone(), b.cache_key("apikey", &hash)));
        if let Some((bus, key)) = &shared_key {
            if let Some(bytes) = bus.cache_get(key).await {
                let found = serde_json::from_slice::<Option<CachedKey>>(&bytes)
                    .ok()
                    .filter(|c| self.still_valid(c));
                if let Some(found) = found {
                    self.api_keys.insert(hash, found.clone());
                    return Ok(found
                        .filter(|c| c.expires_at.is_none_or(|t| now < t))
                        .map(|c| c.identity));
                }
            }
        }
        let found = match self.store.find_api_key_by_hash(&hash).await? {
            Some(key) if key.is_usable(now) => match self.store.get_user(&key.user_id).await? {
                Some(user) if !user.disabled => {
                    if let Err(e) = self.store.touch_api_key(&key.id).await {
                        tracing::warn!(error = %e, "could not record API key use");
                    }
                    Some(CachedKey {
                        identity: ApiKeyIdentity {
                            user_id: user.id,
                            email: user.email,
                            roles: user.roles,
                            scopes: key.scopes,
                            key_id: key.id,
                        },
                        expires_at: key.expires_at,
                        cached_at: now,
                    })
                }
                _ => None,
            },
            _ => None,
        };
        if let Some((bus, key)) = shared_key {
            if let Ok(bytes) = serde_json::to_vec(&found) {
                bus.cache_put(&key, bytes, API_KEY_CACHE_TTL).await;
            }
        }
        self.api_keys.insert(hash, found.clone());
        Ok(found.map(|c| c.identity))
    }

    /// The user's credential for `service`, decrypted; cached for [`CREDENTIAL_CACHE_TTL`].
    pub async fn service_credential(
        &self,
        user_id: &str,
        service: &str,
    ) -> Result<Option<String>, IdentityError> {
        let cache_key = (user_id.to_owned(), service.to_owned());
        if let Some(cached) = self.service_credentials.get(&cache_key) {
            return Ok(cached);
        }
        // Replicas share the sealed row through Redis (never the clear text), then open it.
        let shared_key = self.bus.get().map(|b| {
            (
                b.clone(),
                b.cache_key("cred", &credential_cache_id(user_id, service)),
            )
        });
        let mut sealed: Option<Option<SealedCredential>> = None;
        if let Some((bus, key)) = &shared_key {
            if let Some(bytes) = bus.cache_get(key).await {
                sealed = serde_json::from_slice(&bytes).ok();
            }
        }
        let sealed = match sealed {
            Some(s) => s,
            None => {
                let row = self
                    .store
                    .get_credential(user_id, service)
                    .await?
                    .map(|row| SealedCredential {
                        ciphertext: row.ciphertext,
                        nonce: row.nonce,
                        key_id: row.key_id,
                    });
                if let Some((bus, key)) = &shared_key {
                    if let Ok(bytes) = serde_json::to_vec(&row) {
                        bus.cache_put(key, bytes, CREDENTIAL_CACHE_TTL).await;
                    }
                }
                row
            }
        };
        let value =
            match sealed {
                None => None,
                Some(row) => {
                    let plain = self.credentials.open(
                        &row.ciphertext,
                        &row.nonce,
                        &row.key_id,
                        &credential_aad(user_id, service),
                    )?;
                    Some(String::from_utf8(plain).map_err(|_| {
                        IdentityError::Crypto("stored credential is not UTF-8".into())
                    })?)
                }
            };
        self.service_credentials.insert(cache_key, value.clone());
        Ok(value)
    }

    /// Stores (replaces) the user's credential for `service`, sealed with the current key.
    pub async fn put_service_credential(
        &self,
        user_id: &str,
        service: &str,
        token: &str,
    ) -> Result<(), IdentityError> {
        let sealed = self
            .credentials
            .seal(token.as_bytes(), &credential_aad(user_id, service))?;
        self.store
            .put_credential(
                user_id,
                service,
                &sealed.ciphertext,
                &sealed.nonce,
                &sealed.key_id,
            )
            .await?;
        self.invalidate(Invalidation::Credential {
            user_id: user_id.to_owned(),
            service: service.to_owned(),
        })
        .await;
        Ok(())
    }

    /// Deletes the user's credential for `service`; false when there was none.
    pub async fn delete_service_credential(
        &self,
        user_id: &str,
        service: &str,
    ) -> Result<bool, IdentityError> {
        let deleted = self.store.delete_credential(user_id, service).await?;
        self.invalidate(Invalidation::Credential {
            user_id: user_id.to_owned(),
            service: service.to_owned(),
        })
        .await;
        Ok(deleted)
    }

    /// Creates a user with a hashed password (for the CLI). The email is normalised; the
    /// password must follow [`password_rule`].
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        roles: &[String],
    ) -> Result<User, IdentityError> {
        let email = normalize_email(email)
            .ok_or_else(|| IdentityError::Invalid(format!("not an email address: {email:?}")))?;
        if let Err(rule) = check_password(password) {
            return Err(IdentityError::Invalid(rule.to_owned()));
        }
        let hash = crypto::hash_password_blocking(password.to_owned()).await?;
        Ok(self.store.create_user(&email, &hash, roles).await?)
    }

    async fn audit(
        &self,
        kind: &str,
        user_id: Option<&str>,
        subject: Option<&str>,
        ip: Option<&str>,
        detail: serde_json::Value,
    ) {
        if let Some(sink) = self.audit_sink.get() {
            sink.audit(kind, user_id, subject, ip, detail);
            return;
        }
        let event = NewAuditEvent {
            kind,
            user_id,
            subject,
            ip,
            detail: &detail,
        };
        if let Err(e) = self.store.insert_audit_event(&event).await {
            tracing::warn!(kind, error = %e, "could not record an audit event");
        }
    }
}

/// A destination for audit events that never waits (the gateway's log pipeline).
pub trait AuditSink: Send + Sync {
    fn audit(
        &self,
        kind: &str,
        user_id: Option<&str>,
        subject: Option<&str>,
        ip: Option<&str>,
        detail: serde_json::Value,
    );
}

async fn reload_loop(service: Weak<IdentityService>) {
    let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        if let Err(e) = service.maintain_keys().await {
            tracing::warn!(error = %e, "signing key maintenance failed");
        }
    }
}

/// Apply the cutoffs other replicas wrote to the database since shortly before the last
/// poll (see [`CUTOFF_POLL_INTERVAL`]); ends when the service is dropped.
async fn cutoff_poll_loop(service: Weak<IdentityService>) {
    let mut tick = tokio::time::interval(CUTOFF_POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut since = store::now().saturating_sub(CUTOFF_POLL_SKEW_SECS);
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        let started = store::now();
        match service.load_cutoffs_since(since).await {
            Ok(()) => {
                since = started.saturating_sub(CUTOFF_POLL_SKEW_SECS);
                if failing {
                    tracing::info!("token cutoffs: the database answers again");
                    failing = false;
                }
            }
            Err(e) if !failing => {
                tracing::warn!(
                    error = %e,
                    "token cutoffs: cannot read the database; logouts made on other replicas \
                     wait for it unless Redis brings them"
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Is this shaped like a key this service issues (`mcpk_` + 8 + `_` + 32 base62)?
fn looks_like_api_key(s: &str) -> bool {
    let Some(rest) = s.strip_prefix(API_KEY_PREFIX) else {
        return false;
    };
    let Some((prefix, secret)) = rest.split_once('_') else {
        return false;
    };
    prefix.len() == 8
        && secret.len() == 32
        && prefix.bytes().all(|b| b.is_ascii_alphanumeric())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The password rule, as told to clients.
pub const PASSWORD_RULE: &str = "a password must have at least 12 characters (at most 1024) \
     and use at least two of: lowercase letters, uppercase letters, digits, other characters";

/// Checks the password rule; the error is [`PASSWORD_RULE`].
pub fn check_password(password: &str) -> Result<(), &'static str> {
    let len = password.chars().count();
    if !(12..=1024).contains(&len) {
        return Err(PASSWORD_RULE);
    }
    let mut classes = [false; 4];
    for c in password.chars() {
        let i = if c.is_lowercase() {
            0
        } else if c.is_uppercase() {
            1
        } else if c.is_numeric() {
            2
        } else {
            3
        };
        classes[i] = true;
    }
    if classes.iter().filter(|c| **c).count() < 2 {
        return Err(PASSWORD_RULE);
    }
    Ok(())
}

/// Trims and lowercases an email; `None` when it is not shaped like `local@domain`.
pub fn normalize_email(email: &str) -> Option<String> {
    let e = email.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(e)
}
