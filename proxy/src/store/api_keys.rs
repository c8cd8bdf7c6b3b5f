//! API keys: stored by hash, found by a short visible prefix or the full hash.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::codec::{decode_list, encode_list, new_id, now};
use super::error::Result;
use super::Store;

/// A row of `api_keys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The first characters of the key, shown in listings so a user can tell keys apart.
    pub prefix: String,
    /// Lowercase hex SHA-256 of the whole key; the key itself is never stored.
    pub key_hash: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl ApiKey {
    /// Neither revoked nor expired at `now`.
    pub fn is_usable(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now < t)
    }
}

/// What the caller decides for a new API key; the store adds the id and creation time.
#[derive(Clone, Copy, Debug)]
pub struct NewApiKey<'a> {
    pub user_id: &'a str,
    pub name: &'a str,
    pub prefix: &'a str,
    pub key_hash: &'a str,
    pub scopes: &'a [String],
    pub expires_at: Option<i64>,
}

macro_rules! select_keys {
    ($tail:literal) => {
        concat!(
            "SELECT id, user_id, name, prefix, key_hash, scopes, created_at, expires_at, ",
            "revoked_at, last_used_at FROM api_keys ",
            $tail
        )
    };
}

fn from_row(row: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        key_hash: row.try_get("key_hash")?,
        scopes: decode_list(&row.try_get::<String, _>("scopes")?, "api_keys.scopes")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

impl Store {
    /// Stores an API key. A duplicate hash gives `Conflict`, an unknown user `MissingReference`.
    pub async fn insert_api_key(&self, new: &NewApiKey<'_>) -> Result<ApiKey> {
        let key = ApiKey {
            id: new_id(),
            user_id: new.user_id.to_owned(),
            name: new.name.to_owned(),
            prefix: new.prefix.to_owned(),
            key_hash: new.key_hash.to_owned(),
            scopes: new.scopes.to_vec(),
            created_at: now(),
            expires_at: new.expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.id)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(encode_list(&key.scopes))
        .bind(key.created_at)
        .bind(key.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(key)
    }

    /// The key with this hash, whatever its state (the caller checks [`ApiKey::is_usable`]).
    pub async fn find_api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(select_keys!("WHERE key_hash = $1"))
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every key of the user, revoked ones included, oldest first.
    pub async fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(select_keys!("WHERE user_id = $1 ORDER BY created_at, id"))
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Revokes the user's key `id`; false when the user has no such unrevoked key.
    pub async fn revoke_api_key(&self, user_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 \
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records that key `id` was just used.
    pub async fn touch_api_key(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
