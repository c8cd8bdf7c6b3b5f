//! Per-user credentials for upstream services, stored sealed: the store moves ciphertext.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::codec::now;
use super::error::Result;
use super::Store;

/// A row of `service_credentials`. Encryption and decryption are the caller's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceCredential {
    pub user_id: String,
    pub service: String,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    /// Which encryption key sealed it, so keys can be rotated.
    pub key_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn from_row(row: &AnyRow) -> Result<ServiceCredential> {
    Ok(ServiceCredential {
        user_id: row.try_get("user_id")?,
        service: row.try_get("service")?,
        ciphertext: row.try_get("ciphertext")?,
        nonce: row.try_get("nonce")?,
        key_id: row.try_get("key_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Creates or replaces the user's credential for `service` (keeping its `created_at`).
    pub async fn put_credential(
        &self,
        user_id: &str,
        service: &str,
        ciphertext: &[u8],
        nonce: &[u8],
        key_id: &str,
    ) -> Result<()> {
        let at = now();
        sqlx::query(
            "INSERT INTO service_credentials \
             (user_id, service, ciphertext, nonce, key_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) \
             ON CONFLICT (user_id, service) DO UPDATE SET ciphertext = excluded.ciphertext, \
             nonce = excluded.nonce, key_id = excluded.key_id, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(service)
        .bind(ciphertext.to_vec())
        .bind(nonce.to_vec())
        .bind(key_id)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user's credential for `service`.
    pub async fn get_credential(
        &self,
        user_id: &str,
        service: &str,
    ) -> Result<Option<ServiceCredential>> {
        let row = sqlx::query(
            "SELECT user_id, service, ciphertext, nonce, key_id, created_at, updated_at \
             FROM service_credentials WHERE user_id = $1 AND service = $2",
        )
        .bind(user_id)
        .bind(service)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Deletes the user's credential for `service`; false when there was none.
    pub async fn delete_credential(&self, user_id: &str, service: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM service_credentials WHERE user_id = $1 AND service = $2")
                .bind(user_id)
                .bind(service)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
