//! Token signing keys: ES256 (P-256) key generation, the in-memory key ring built from the
//! `signing_keys` table, and the JWKS document.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use p256::ecdsa::SigningKey as P256SigningKey;
use p256::pkcs8::EncodePrivateKey;
use rand::RngCore;
use serde_json::{json, Value};

use super::crypto::Envelope;
use super::IdentityError;
use crate::store::SigningKey;

/// The only algorithm this service signs with.
pub(crate) const ALGORITHM: &str = "ES256";

/// A freshly generated key pair: the PKCS#8 DER private key and the public JWK.
pub(crate) struct GeneratedKey {
    pub kid: String,
    pub pkcs8_der: Vec<u8>,
    pub public_jwk: Value,
}

/// Additional data binding a sealed private key to its row.
pub(crate) fn signing_key_aad(kid: &str) -> Vec<u8> {
    format!("mcp-gateway/signing-key/v1\0{kid}").into_bytes()
}

/// Generates a P-256 key pair with a random kid.
pub(crate) fn generate() -> Result<GeneratedKey, IdentityError> {
    let mut rng = rand::rng();
    // A random 32-byte string is a valid scalar except with negligible probability; retry.
    let mut key = None;
    for _ in 0..16 {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        if let Ok(k) = P256SigningKey::from_slice(&bytes) {
            key = Some(k);
            break;
        }
    }
    let key = key.ok_or_else(|| IdentityError::Crypto("could not generate a P-256 key".into()))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| IdentityError::Crypto(format!("PKCS#8 encoding failed: {e}")))?;
    let point = key.verifying_key().to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        return Err(IdentityError::Crypto(
            "public key has no coordinates".into(),
        ));
    };
    let mut kid_bytes = [0u8; 12];
    rng.fill_bytes(&mut kid_bytes);
    let kid = URL_SAFE_NO_PAD.encode(kid_bytes);
    let public_jwk = json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    });
    Ok(GeneratedKey {
        kid,
        pkcs8_der: der.as_bytes().to_vec(),
        public_jwk,
    })
}

/// The key that signs new tokens.
#[derive(Clone)]
pub(crate) struct Signer {
    pub kid: String,
    pub key: EncodingKey,
    pub created_at: i64,
}

/// A key that verifies tokens, until `until` (None: while it is current).
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub kid: String,
    pub key: DecodingKey,
    pub jwk: Value,
    pub until: Option<i64>,
}

/// The keys in force, as read from the database at one instant.
#[derive(Clone, Default)]
pub(crate) struct KeyRing {
    pub signer: Option<Signer>,
    pub verifiers: Vec<VerifyKey>,
}

impl KeyRing {
    /// Builds the ring from the stored rows (newest first). Returns the ring and the kids of
    /// keys whose verification window has closed (to be marked retired).
    ///
    /// `verify_for` is how long a key keeps verifying after it stopped signing.
    pub fn build(
        rows: &[SigningKey],
        envelope: &Envelope,
        verify_for: i64,
        now: i64,
    ) -> Result<(KeyRing, Vec<String>), IdentityError> {
        let mut ring = KeyRing::default();
        let mut expired = Vec::new();
        for row in rows {
            if row.retired_at.is_some() || row.algorithm != ALGORITHM {
                continue;
            }
            let until = row.not_after.map(|t| t.saturating_add(verify_for));
            if until.is_some_and(|u| u <= now) {
                expired.push(row.kid.clone());
                continue;
            }
            let jwk: Value = serde_json::from_str(&row.public_jwk).map_err(|e| {
                IdentityError::Crypto(format!("signing key {}: bad public JWK: {e}", row.kid))
            })?;
            let (Some(x), Some(y)) = (
                jwk.get("x").and_then(Value::as_str),
                jwk.get("y").and_then(Value::as_str),
            ) else {
                return Err(IdentityError::Crypto(format!(
                    "signing key {}: public JWK lacks x or y",
                    row.kid
                )));
            };
            let key = DecodingKey::from_ec_components(x, y).map_err(|e| {
                IdentityError::Crypto(format!("signing key {}: bad public key: {e}", row.kid))
            })?;
            let may_sign = row.not_after.is_none_or(|t| now < t);
            if may_sign && ring.signer.is_none() {
                let der = envelope
                    .open(
                        &row.private_key,
                        &row.nonce,
                        &row.key_id,
                        &signing_key_aad(&row.kid),
                    )
                    .map_err(|e| {
                        IdentityError::Crypto(format!(
                            "signing key {}: cannot open the private key: {e}",
                            row.kid
                        ))
                    })?;
                ring.signer = Some(Signer {
                    kid: row.kid.clone(),
                    key: EncodingKey::from_ec_der(&der),
                    created_at: row.created_at,
                });
            }
            ring.verifiers.push(VerifyKey {
                kid: row.kid.clone(),
                key,
                jwk,
                until,
            });
        }
        Ok((ring, expired))
    }

    /// The verification keys still valid at `now`.
    pub fn valid_at(&self, now: i64) -> impl Iterator<Item = &VerifyKey> {
        self.verifiers
            .iter()
            .filter(move |k| k.until.is_none_or(|u| now < u))
    }

    /// The JWKS document at `now`.
    pub fn jwks(&self, now: i64) -> Value {
        json!({ "keys": self.valid_at(now).map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }
}
