//! OAuth 2.1 authorization server data: registered clients, authorization codes (and the
//! consents waiting for the user's answer), remembered consents, and the refresh-token
//! families that belong to an OAuth grant.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::codec::{decode_list, encode_list, get_flag, now};
use super::error::Result;
use super::Store;

/// A client registered through dynamic client registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub client_uri: Option<String>,
    pub created_at: i64,
}

/// An authorization code, or a consent waiting for the user (`approved == false`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthCode {
    pub code_hash: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: String,
    /// The S256 PKCE challenge (base64url of the verifier's SHA-256).
    pub code_challenge: String,
    /// RFC 8707 resource the token will be bound to (its `aud`).
    pub resource: String,
    /// Granted scopes, space separated.
    pub scope: String,
    pub state: Option<String>,
    pub approved: bool,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// The refresh-token family issued for this code, once exchanged.
    pub family_id: Option<String>,
}

/// A remembered consent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthConsent {
    pub user_id: String,
    pub client_id: String,
    pub scope: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The OAuth grant a refresh-token family belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthGrant {
    pub family_id: String,
    pub user_id: String,
    pub client_id: String,
    pub resource: String,
    pub scope: String,
    pub created_at: i64,
}

fn client_from_row(row: &AnyRow) -> Result<OAuthClient> {
    Ok(OAuthClient {
        client_id: row.try_get("client_id")?,
        client_name: row.try_get("client_name")?,
        redirect_uris: decode_list(
            &row.try_get::<String, _>("redirect_uris")?,
            "oauth_clients.redirect_uris",
        )?,
        client_uri: row.try_get("client_uri")?,
        created_at: row.try_get("created_at")?,
    })
}

const SELECT_CODE: &str = "SELECT code_hash, client_id, user_id, redirect_uri, code_challenge, \
     resource, scope, state, approved, created_at, expires_at, used_at, family_id \
     FROM oauth_codes WHERE code_hash = $1";

fn code_from_row(row: &AnyRow) -> Result<OAuthCode> {
    Ok(OAuthCode {
        code_hash: row.try_get("code_hash")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        redirect_uri: row.try_get("redirect_uri")?,
        code_challenge: row.try_get("code_challenge")?,
        resource: row.try_get("resource")?,
        scope: row.try_get("scope")?,
        state: row.try_get("state")?,
        approved: get_flag(row, "approved")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        used_at: row.try_get("used_at")?,
        family_id: row.try_get("family_id")?,
    })
}

fn consent_from_row(row: &AnyRow) -> Result<OAuthConsent> {
    Ok(OAuthConsent {
        user_id: row.try_get("user_id")?,
        client_id: row.try_get("client_id")?,
        scope: row.try_get("scope")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn grant_from_row(row: &AnyRow) -> Result<OAuthGrant> {
    Ok(OAuthGrant {
        family_id: row.try_get("family_id")?,
        user_id: row.try_get("user_id")?,
        client_id: row.try_get("client_id")?,
        resource: row.try_get("resource")?,
        scope: row.try_get("scope")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Stores a registered client.
    pub async fn insert_oauth_client(&self, client: &OAuthClient) -> Result<()> {
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, client_name, redirect_uris, client_uri, \
             created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&client.client_id)
        .bind(&client.client_name)
        .bind(encode_list(&client.redirect_uris))
        .bind(&client.client_uri)
        .bind(client.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The registered client with this id.
    pub async fn get_oauth_client(&self, client_id: &str) -> Result<Option<OAuthClient>> {
        let row = sqlx::query(
            "SELECT client_id, client_name, redirect_uris, client_uri, created_at \
             FROM oauth_clients WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// Stores a code (or a pending consent, `approved == false`).
    pub async fn insert_oauth_code(&self, code: &OAuthCode) -> Result<()> {
        sqlx::query(
            "INSERT INTO oauth_codes (code_hash, client_id, user_id, redirect_uri, \
             code_challenge, resource, scope, state, approved, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&code.code_hash)
        .bind(&code.client_id)
        .bind(&code.user_id)
        .bind(&code.redirect_uri)
        .bind(&code.code_challenge)
        .bind(&code.resource)
        .bind(&code.scope)
        .bind(&code.state)
        .bind(code.approved)
        .bind(code.created_at)
        .bind(code.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The code (or pending consent) with this hash, whatever its state.
    pub async fn get_oauth_code(&self, code_hash: &str) -> Result<Option<OAuthCode>> {
        let row = sqlx::query(SELECT_CODE)
            .bind(code_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(code_from_row).transpose()
    }

    /// Turns the pending consent keyed by `ticket_hash` into an approved code keyed by
    /// `code_hash`, valid until `expires_at`. Only once, and only before the pending
    /// consent expires: returns the code, or `None` when the ticket is unknown, used or
    /// expired.
    pub async fn approve_oauth_code(
        &self,
        ticket_hash: &str,
        code_hash: &str,
        expires_at: i64,
    ) -> Result<Option<OAuthCode>> {
        let done = sqlx::query(
            "UPDATE oauth_codes SET code_hash = $1, approved = $2, expires_at = $3 \
             WHERE code_hash = $4 AND approved = $5 AND expires_at > $6",
        )
        .bind(code_hash)
        .bind(true)
        .bind(expires_at)
        .bind(ticket_hash)
        .bind(false)
        .bind(now())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        self.get_oauth_code(code_hash).await
    }

    /// Deletes a pending consent (denied); returns it when it was there and pending.
    pub async fn take_pending_oauth_code(&self, ticket_hash: &str) -> Result<Option<OAuthCode>> {
        let Some(code) = self.get_oauth_code(ticket_hash).await? else {
            return Ok(None);
        };
        let done = sqlx::query("DELETE FROM oauth_codes WHERE code_hash = $1 AND approved = $2")
            .bind(ticket_hash)
            .bind(false)
            .execute(&self.pool)
            .await?;
        Ok((done.rows_affected() == 1 && !code.approved).then_some(code))
    }

    /// Marks an approved, unexpired code used. Of two concurrent exchanges exactly one gets
    /// `true`.
    pub async fn use_oauth_code(&self, code_hash: &str, family_id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE oauth_codes SET used_at = $1, family_id = $2 \
             WHERE code_hash = $3 AND approved = $4 AND used_at IS NULL AND expires_at > $5",
        )
        .bind(now())
        .bind(family_id)
        .bind(code_hash)
        .bind(true)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes codes and pending consents that expired before `before`, except used codes
    /// younger than a day (kept to detect a code's reuse); returns how many.
    pub async fn purge_oauth_codes(&self, before: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM oauth_codes WHERE expires_at < $1 AND \
             (used_at IS NULL OR used_at < $2)",
        )
        .bind(before)
        .bind(before.saturating_sub(24 * 3600))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records (or widens) the user's consent to the client.
    pub async fn put_oauth_consent(
        &self,
        user_id: &str,
        client_id: &str,
        scope: &str,
    ) -> Result<()> {
        let at = now();
        sqlx::query(
            "INSERT INTO oauth_consents (user_id, client_id, scope, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, client_id) \
             DO UPDATE SET scope = excluded.scope, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(scope)
        .bind(at)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user's consent to the client, if any.
    pub async fn get_oauth_consent(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> Result<Option<OAuthConsent>> {
        let row = sqlx::query(
            "SELECT user_id, client_id, scope, created_at, updated_at FROM oauth_consents \
             WHERE user_id = $1 AND client_id = $2",
        )
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(consent_from_row).transpose()
    }

    /// Every consent of the user, oldest first.
    pub async fn list_oauth_consents(&self, user_id: &str) -> Result<Vec<OAuthConsent>> {
        let rows = sqlx::query(
            "SELECT user_id, client_id, scope, created_at, updated_at FROM oauth_consents \
             WHERE user_id = $1 ORDER BY created_at, client_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(consent_from_row).collect()
    }

    /// Deletes the consent and revokes every refresh token of the client's grants for the
    /// user, in one transaction. Returns `None` when there was no consent, else how many
    /// refresh tokens it revoked.
    pub async fn revoke_oauth_consent(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> Result<Option<u64>> {
        let mut tx = self.pool.begin().await?;
        let deleted =
            sqlx::query("DELETE FROM oauth_consents WHERE user_id = $1 AND client_id = $2")
                .bind(user_id)
                .bind(client_id)
                .execute(&mut *tx)
                .await?;
        if deleted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let revoked = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND family_id IN \
             (SELECT family_id FROM oauth_grants WHERE user_id = $2 AND client_id = $3)",
        )
        .bind(now())
        .bind(user_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        // Codes not yet exchanged die with the consent too.
        sqlx::query(
            "DELETE FROM oauth_codes WHERE user_id = $1 AND client_id = $2 AND used_at IS NULL",
        )
        .bind(user_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(revoked.rows_affected()))
    }

    /// Records that refresh-token family `grant.family_id` belongs to an OAuth grant.
    pub async fn insert_oauth_grant(&self, grant: &OAuthGrant) -> Result<()> {
        sqlx::query(
            "INSERT INTO oauth_grants (family_id, user_id, client_id, resource, scope, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&grant.family_id)
        .bind(&grant.user_id)
        .bind(&grant.client_id)
        .bind(&grant.resource)
        .bind(&grant.scope)
        .bind(grant.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The OAuth grant of a refresh-token family; `None` for a family of the auth API.
    pub async fn get_oauth_grant(&self, family_id: &str) -> Result<Option<OAuthGrant>> {
        let row = sqlx::query(
            "SELECT family_id, user_id, client_id, resource, scope, created_at \
             FROM oauth_grants WHERE family_id = $1",
        )
        .bind(family_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(grant_from_row).transpose()
    }
}
