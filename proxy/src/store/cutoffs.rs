//! Per-user token cutoffs: access tokens issued at or before `not_before` are refused.

use sqlx::Row;

use super::error::Result;
use super::Store;

impl Store {
    /// Set (or move forward) the user's cutoff.
    pub async fn set_token_cutoff(&self, user_id: &str, not_before: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO token_cutoffs (user_id, not_before) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET not_before = excluded.not_before \
             WHERE token_cutoffs.not_before < excluded.not_before",
        )
        .bind(user_id)
        .bind(not_before)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Cutoffs later than `since` (older ones no longer matter: their tokens have expired).
    pub async fn token_cutoffs_since(&self, since: i64) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT user_id, not_before FROM token_cutoffs WHERE not_before > $1")
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("user_id")?, r.try_get("not_before")?)))
            .collect()
    }
}
