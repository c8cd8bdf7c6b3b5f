//! Refresh tokens: stored by hash, grouped in rotation families.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::codec::{new_id, now};
use super::error::Result;
use super::Store;

/// A row of `refresh_tokens`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: String,
    pub user_id: String,
    /// Lowercase hex SHA-256 of the token; the token itself is never stored.
    pub token_hash: String,
    /// Shared by a login's first token and every token rotated from it.
    pub family_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// The token this one was exchanged for; a second use of a replaced token is reuse.
    pub replaced_by: Option<String>,
}

impl RefreshToken {
    /// Neither revoked, replaced nor expired at `now`.
    pub fn is_usable(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.replaced_by.is_none() && now < self.expires_at
    }
}

/// What the caller decides for a new refresh token; the store adds the id.
#[derive(Clone, Copy, Debug)]
pub struct NewRefreshToken<'a> {
    pub user_id: &'a str,
    pub token_hash: &'a str,
    pub family_id: &'a str,
    pub issued_at: i64,
    pub expires_at: i64,
}

const INSERT_TOKEN: &str =
    "INSERT INTO refresh_tokens (id, user_id, token_hash, family_id, issued_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

fn from_row(row: &AnyRow) -> Result<RefreshToken> {
    Ok(RefreshToken {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        token_hash: row.try_get("token_hash")?,
        family_id: row.try_get("family_id")?,
        issued_at: row.try_get("issued_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        replaced_by: row.try_get("replaced_by")?,
    })
}

impl Store {
    /// Stores a refresh token. A duplicate hash gives `Conflict`, an unknown user
    /// `MissingReference`.
    pub async fn insert_refresh_token(&self, new: &NewRefreshToken<'_>) -> Result<RefreshToken> {
        let token = RefreshToken {
            id: new_id(),
            user_id: new.user_id.to_owned(),
            token_hash: new.token_hash.to_owned(),
            family_id: new.family_id.to_owned(),
            issued_at: new.issued_at,
            expires_at: new.expires_at,
            revoked_at: None,
            replaced_by: None,
        };
        sqlx::query(INSERT_TOKEN)
            .bind(&token.id)
            .bind(&token.user_id)
            .bind(&token.token_hash)
            .bind(&token.family_id)
            .bind(token.issued_at)
            .bind(token.expires_at)
            .execute(&self.pool)
            .await?;
        Ok(token)
    }

    /// The token with this hash, whatever its state (the caller checks [`RefreshToken::is_usable`]
    /// and treats a replaced token as reuse).
    pub async fn find_refresh_by_hash(&self, token_hash: &str) -> Result<Option<RefreshToken>> {
        let row = sqlx::query(
            "SELECT id, user_id, token_hash, family_id, issued_at, expires_at, revoked_at, \
             replaced_by FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Revokes every not yet revoked token of the family; returns how many it revoked.
    pub async fn revoke_family(&self, family_id: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(family_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records that token `id` was exchanged for token `replaced_by` (which must exist).
    /// Only succeeds for a token neither revoked nor already replaced, and returns whether it
    /// did: of two concurrent rotations of one token, exactly one gets `true`.
    pub async fn mark_replaced(&self, id: &str, replaced_by: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET replaced_by = $1 \
             WHERE id = $2 AND replaced_by IS NULL AND revoked_at IS NULL",
        )
        .bind(replaced_by)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Rotation in one transaction: stores `new` and marks `old_id` replaced by it, or does
    /// neither and returns `None` when `old_id` is already revoked or replaced (reuse, or a
    /// concurrent rotation that won).
    pub async fn rotate_refresh_token(
        &self,
        old_id: &str,
        new: &NewRefreshToken<'_>,
    ) -> Result<Option<RefreshToken>> {
        let id = new_id();
        let mut tx = self.pool.begin().await?;
        sqlx::query(INSERT_TOKEN)
            .bind(&id)
            .bind(new.user_id)
            .bind(new.token_hash)
            .bind(new.family_id)
            .bind(new.issued_at)
            .bind(new.expires_at)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(
            "UPDATE refresh_tokens SET replaced_by = $1 \
             WHERE id = $2 AND replaced_by IS NULL AND revoked_at IS NULL",
        )
        .bind(&id)
        .bind(old_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(RefreshToken {
            id,
            user_id: new.user_id.to_owned(),
            token_hash: new.token_hash.to_owned(),
            family_id: new.family_id.to_owned(),
            issued_at: new.issued_at,
            expires_at: new.expires_at,
            revoked_at: None,
            replaced_by: None,
        }))
    }

    /// Revokes every not yet revoked refresh token of the user; returns how many it revoked.
    pub async fn revoke_user_refresh_tokens(&self, user_id: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
