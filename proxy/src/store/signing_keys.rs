//! Token signing keys: the private half sealed by the caller, the public half as a JWK.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::codec::{found, now};
use super::error::Result;
use super::Store;

/// A row of `signing_keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    /// The JWS `alg`, e.g. `EdDSA` or `ES256`.
    pub algorithm: String,
    /// The PKCS#8 DER private key, sealed by the caller (AEAD ciphertext; never plain).
    pub private_key: Vec<u8>,
    pub nonce: Vec<u8>,
    /// Which encryption key sealed `private_key`.
    pub key_id: String,
    /// The public key as a JWK (JSON text), served on the JWKS endpoint.
    pub public_jwk: String,
    pub created_at: i64,
    /// Stop signing with it after this instant.
    pub not_after: Option<i64>,
    /// Withdrawn: neither signs nor verifies any more.
    pub retired_at: Option<i64>,
}

/// What the caller supplies for a new signing key; the store adds the creation time.
#[derive(Clone, Copy, Debug)]
pub struct NewSigningKey<'a> {
    pub kid: &'a str,
    pub algorithm: &'a str,
    pub private_key: &'a [u8],
    pub nonce: &'a [u8],
    pub key_id: &'a str,
    pub public_jwk: &'a str,
    pub not_after: Option<i64>,
}

fn from_row(row: &AnyRow) -> Result<SigningKey> {
    Ok(SigningKey {
        kid: row.try_get("kid")?,
        algorithm: row.try_get("algorithm")?,
        private_key: row.try_get("private_key")?,
        nonce: row.try_get("nonce")?,
        key_id: row.try_get("key_id")?,
        public_jwk: row.try_get("public_jwk")?,
        created_at: row.try_get("created_at")?,
        not_after: row.try_get("not_after")?,
        retired_at: row.try_get("retired_at")?,
    })
}

impl Store {
    /// Stores a signing key. A duplicate kid gives `Conflict`.
    pub async fn insert_signing_key(&self, new: &NewSigningKey<'_>) -> Result<SigningKey> {
        let key = SigningKey {
            kid: new.kid.to_owned(),
            algorithm: new.algorithm.to_owned(),
            private_key: new.private_key.to_vec(),
            nonce: new.nonce.to_vec(),
            key_id: new.key_id.to_owned(),
            public_jwk: new.public_jwk.to_owned(),
            created_at: now(),
            not_after: new.not_after,
            retired_at: None,
        };
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, nonce, key_id, public_jwk, \
             created_at, not_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(key.private_key.clone())
        .bind(key.nonce.clone())
        .bind(&key.key_id)
        .bind(&key.public_jwk)
        .bind(key.created_at)
        .bind(key.not_after)
        .execute(&self.pool)
        .await?;
        Ok(key)
    }

    /// Every signing key, retired ones included, newest first.
    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKey>> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, private_key, nonce, key_id, public_jwk, created_at, \
             not_after, retired_at FROM signing_keys ORDER BY created_at DESC, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Retires key `kid` now (if not retired yet). `NotFound` when there is no such key.
    pub async fn retire_signing_key(&self, kid: &str) -> Result<()> {
        let done = sqlx::query(
            "UPDATE signing_keys SET retired_at = COALESCE(retired_at, $1) WHERE kid = $2",
        )
        .bind(now())
        .bind(kid)
        .execute(&self.pool)
        .await?;
        found(done.rows_affected())
    }

    /// Stops key `kid` signing from `at` on (it still verifies): sets `not_after` unless an
    /// earlier one is already set. `NotFound` when there is no such key.
    pub async fn end_signing_key(&self, kid: &str, at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE signing_keys SET not_after = $1 \
             WHERE kid = $2 AND (not_after IS NULL OR not_after > $1)",
        )
        .bind(at)
        .bind(kid)
        .execute(&self.pool)
        .await?;
        let exists = sqlx::query("SELECT kid FROM signing_keys WHERE kid = $1")
            .bind(kid)
            .fetch_optional(&self.pool)
            .await?;
        found(u64::from(exists.is_some()))
    }
}
