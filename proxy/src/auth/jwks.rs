//! Key sets fetched from an outside issuer's `jwks_uri` (OIDC: Keycloak, Auth0, Supabase with
//! asymmetric keys). Refreshed in the background every `max_age`; a token with an unknown
//! `kid` triggers one refetch at most every 10 s (so a rotation at the provider is picked up
//! without a restart, and a flood of made-up kids cannot hammer it); when the provider is
//! down, the last good set stays in use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::jwt::IssuerKey;

/// Fewest seconds between two refetches caused by unknown key ids.
pub const UNKNOWN_KID_REFETCH_SECS: u64 = 10;
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_JWKS_BYTES: usize = 1024 * 1024;

pub struct JwksSource {
    pub uri: String,
    pub max_age: Duration,
    client: reqwest::Client,
    last_forced: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching {uri}: {reason}")]
    Fetch { uri: String, reason: String },
    #[error("{uri} is not a JWK set: {reason}")]
    Parse { uri: String, reason: String },
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Make rustls's process-wide default provider ring (reqwest brings its own aws-lc-rs; this
/// keeps any `ClientConfig::builder()` elsewhere from finding two providers and none chosen).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl JwksSource {
    pub fn new(uri: String, max_age: Duration) -> Result<JwksSource, JwksError> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| JwksError::Fetch {
                uri: uri.clone(),
                reason: e.to_string(),
            })?;
        Ok(JwksSource {
            uri,
            max_age,
            client,
            last_forced: AtomicU64::new(0),
        })
    }

    /// May an unknown kid trigger a refetch now? Claims the slot when it may.
    pub fn claim_forced_refetch(&self) -> bool {
        let now = now_secs();
        let last = self.last_forced.load(Ordering::Acquire);
        now.saturating_sub(last) >= UNKNOWN_KID_REFETCH_SECS
            && self
                .last_forced
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Fetch and convert the keys usable with `algorithms`.
    pub async fn fetch(&self, algorithms: &[Algorithm]) -> Result<Vec<IssuerKey>, JwksError> {
        let fail = |reason: String| JwksError::Fetch {
            uri: self.uri.clone(),
            reason,
        };
        let resp = self
            .client
            .get(&self.uri)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(fail("the key set is larger than 1 MiB".into()));
        }
        keys_from_jwks(&body, algorithms).map_err(|reason| JwksError::Parse {
            uri: self.uri.clone(),
            reason,
        })
    }
}

/// The keys of a JWKS document that fit the pinned algorithms (others are skipped).
pub fn keys_from_jwks(body: &[u8], algorithms: &[Algorithm]) -> Result<Vec<IssuerKey>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let families: Vec<_> = algorithms.iter().map(|a| a.family()).collect();
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        if !families.contains(&key.family()) {
            continue;
        }
        keys.push(IssuerKey {
            kid: jwk.common.key_id.clone(),
            key,
        });
    }
    Ok(keys)
}
