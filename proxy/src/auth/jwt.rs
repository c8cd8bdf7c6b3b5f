//! JWT verification. Each trusted issuer pins its algorithms and keys; a token's header and
//! unverified `iss` only choose which issuer's rules apply, and those rules decide. `alg: none`
//! cannot be expressed (jsonwebtoken has no such algorithm), an HMAC algorithm can never be
//! used with an issuer that has public keys (algorithm families are not mixed per issuer), and
//! `exp`, `iss`, `aud` and `sub` are required.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::cache::TokenCache;
use super::jwks::JwksSource;
use super::{AuthError, Identity};

pub struct IssuerKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
}

pub struct Issuer {
    pub name: String,
    pub iss: String,
    pub algorithms: Vec<Algorithm>,
    /// Swapped whole when keys rotate (the gateway's own issuer) or a key set is refetched.
    pub keys: ArcSwap<Vec<IssuerKey>>,
    /// Dotted path of the roles claim (`roles`, `app_metadata.roles`).
    pub roles_claim: String,
    /// Where the keys come from when the issuer publishes a JWKS.
    pub jwks: Option<Arc<JwksSource>>,
    validation: Validation,
}

impl Issuer {
    pub fn new(
        name: String,
        iss: String,
        audiences: &[String],
        algorithms: Vec<Algorithm>,
        keys: Vec<IssuerKey>,
        roles_claim: String,
        leeway: Duration,
    ) -> Issuer {
        let mut validation =
            Validation::new(algorithms.first().copied().unwrap_or(Algorithm::ES256));
        validation.algorithms = algorithms.clone();
        validation.set_issuer(&[iss.as_str()]);
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = leeway.as_secs();
        Issuer {
            name,
            iss,
            algorithms,
            keys: ArcSwap::from_pointee(keys),
            roles_claim,
            jwks: None,
            validation,
        }
    }

    pub fn with_jwks(mut self, source: Arc<JwksSource>) -> Issuer {
        self.jwks = Some(source);
        self
    }

    /// Refetch this issuer's key set and swap it in; on failure the last good set stays.
    pub async fn refresh_keys(&self) -> bool {
        let Some(src) = &self.jwks else {
            return false;
        };
        match src.fetch(&self.algorithms).await {
            Ok(keys) => {
                tracing::debug!(issuer = %self.name, keys = keys.len(), "key set fetched");
                self.keys.store(Arc::new(keys));
                true
            }
            Err(e) => {
                tracing::warn!(issuer = %self.name, error = %e, "key set fetch failed; keeping the last good set");
                false
            }
        }
    }
}

pub struct Verifier {
    issuers: Vec<Issuer>,
    cache: TokenCache,
}

#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    iss: Option<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn at_path<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(v, |cur, part| cur.get(part))
}

fn map_error(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::UnknownIssuer,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::AlgorithmNotAllowed
        }
        ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("a required claim is missing"),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed,
        _ => AuthError::Invalid("verification failed"),
    }
}

impl Verifier {
    pub fn new(issuers: Vec<Issuer>, cache_capacity: u64) -> Verifier {
        Verifier {
            issuers,
            cache: TokenCache::new(cache_capacity),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    pub fn issuers(&self) -> &[Issuer] {
        &self.issuers
    }

    /// Verify; when the only problem is a key id nobody knows and the token's issuer
    /// publishes a JWKS, refetch it (at most once per 10 s) and try once more.
    pub async fn verify_refreshing(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        match self.verify(token) {
            Err(AuthError::UnknownKey) => {
                let iss = jsonwebtoken::dangerous::insecure_decode::<Peek>(token)
                    .ok()
                    .and_then(|d| d.claims.iss);
                let issuer = iss.and_then(|iss| self.issuers.iter().find(|i| i.iss == iss));
                match issuer {
                    Some(i) if i.jwks.as_ref().is_some_and(|s| s.claim_forced_refetch()) => {
                        i.refresh_keys().await;
                        self.verify(token)
                    }
                    _ => Err(AuthError::UnknownKey),
                }
            }
            other => other,
        }
    }

    /// Replace the keys of the issuer whose `iss` is `iss` (rotation, refetched key sets).
    pub fn set_keys(&self, iss: &str, keys: Vec<IssuerKey>) -> bool {
        match self.issuers.iter().find(|i| i.iss == iss) {
            Some(i) => {
                i.keys.store(std::sync::Arc::new(keys));
                true
            }
            None => false,
        }
    }

    /// Verify a bearer token, from the cache when it was verified before.
    pub fn verify(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        if token.len() > 16 * 1024 {
            return Err(AuthError::Malformed);
        }
        if let Some(id) = self.cache.get(token) {
            return Ok(id);
        }
        let id = Arc::new(self.verify_uncached(token)?);
        self.cache.insert(token, id.clone());
        Ok(id)
    }

    pub fn verify_uncached(&self, token: &str) -> Result<Identity, AuthError> {
        let header = decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName => AuthError::AlgorithmNotAllowed,
            _ => AuthError::Malformed,
        })?;
        // Unverified: only picks whose rules apply; the signature check below decides.
        let peek: Peek = jsonwebtoken::dangerous::insecure_decode::<Peek>(token)
            .map(|d| d.claims)
            .map_err(|_| AuthError::Malformed)?;
        let iss = peek
            .iss
            .ok_or(AuthError::Invalid("the iss claim is missing"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.iss == iss)
            .ok_or(AuthError::UnknownIssuer)?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let keys = issuer.keys.load();
        let key = match &header.kid {
            Some(kid) => keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                .ok_or(AuthError::UnknownKey)?,
            None if keys.len() == 1 => &keys[0],
            None => return Err(AuthError::UnknownKey),
        };
        let data =
            decode::<Value>(token, &key.key, &issuer.validation).map_err(|e| map_error(&e))?;
        let c = &data.claims;
        let subject = c
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Invalid(
                "the sub claim must be a non-empty string",
            ))?
            .to_string();
        let expires_at = c
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::Invalid("the exp claim must be a number"))?;
        let mut scopes = strings(c.get("scope"));
        scopes.extend(strings(c.get("scp")));
        Ok(Identity {
            issuer: issuer.iss.clone(),
            subject,
            email: c.get("email").and_then(Value::as_str).map(str::to_owned),
            roles: strings(at_path(c, &issuer.roles_claim)),
            scopes,
            expires_at,
            issued_at: c.get("iat").and_then(Value::as_i64).unwrap_or(0),
            audiences: strings(c.get("aud")),
        })
    }
}

/// Parse an algorithm name from configuration (`none` is not one).
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    name.parse::<Algorithm>().ok()
}

/// Are all these algorithms of one family (HMAC, RSA, EC, EdDSA)?
pub fn one_family(algs: &[Algorithm]) -> bool {
    let family = |a: &Algorithm| a.family();
    algs.windows(2).all(|w| family(&w[0]) == family(&w[1]))
}
