//! The audit trail: append-only security events.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::codec::{new_id, now};
use super::error::{Result, StoreError};
use super::Store;

/// A row of `audit_events`.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub id: String,
    pub at: i64,
    /// A dotted event name, e.g. `login.failed`, `refresh.reuse`, `api_key.revoked`.
    pub kind: String,
    pub user_id: Option<String>,
    /// Who or what the event is about when not a user id (an email tried, a key prefix).
    pub subject: Option<String>,
    pub ip: Option<String>,
    pub detail: serde_json::Value,
}

/// What the caller records; the store adds the id and the time.
#[derive(Clone, Copy, Debug)]
pub struct NewAuditEvent<'a> {
    pub kind: &'a str,
    pub user_id: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub detail: &'a serde_json::Value,
}

fn from_row(row: &AnyRow) -> Result<AuditEvent> {
    let detail: String = row.try_get("detail")?;
    Ok(AuditEvent {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        user_id: row.try_get("user_id")?,
        subject: row.try_get("subject")?,
        ip: row.try_get("ip")?,
        detail: serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt {
            column: "audit_events.detail",
            reason: e.to_string(),
        })?,
    })
}

impl Store {
    /// Appends an event.
    pub async fn insert_audit_event(&self, new: &NewAuditEvent<'_>) -> Result<AuditEvent> {
        let event = AuditEvent {
            id: new_id(),
            at: now(),
            kind: new.kind.to_owned(),
            user_id: new.user_id.map(str::to_owned),
            subject: new.subject.map(str::to_owned),
            ip: new.ip.map(str::to_owned),
            detail: new.detail.clone(),
        };
        sqlx::query(
            "INSERT INTO audit_events (id, at, kind, user_id, subject, ip, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&event.id)
        .bind(event.at)
        .bind(&event.kind)
        .bind(event.user_id.as_deref())
        .bind(event.subject.as_deref())
        .bind(event.ip.as_deref())
        .bind(event.detail.to_string())
        .execute(&self.pool)
        .await?;
        Ok(event)
    }

    /// The latest `limit` events, of one user when `user_id` is given, newest first.
    pub async fn list_audit_events(
        &self,
        user_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT id, at, kind, user_id, subject, ip, detail FROM audit_events \
             WHERE ($1 IS NULL OR user_id = $1) ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }
}
