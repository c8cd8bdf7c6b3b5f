//! The gateway's database: identity data (users, refresh tokens, API keys, per-user service
//! credentials, token signing keys, audit events) in PostgreSQL or an embedded SQLite file.
//!
//! One code path serves both backends through sqlx's `Any` driver. The schema keeps to types
//! that driver can carry on both sides (TEXT, BIGINT/INTEGER, BYTEA/BLOB, one boolean), and
//! the two migration sets in `migrations/postgres` and `migrations/sqlite` describe the same
//! tables and columns. See docs/data.md.

mod api_keys;
mod audit;
mod codec;
mod connect;
mod credentials;
mod cutoffs;
mod error;
mod oauth;
mod signing_keys;
mod tokens;
mod users;

pub use api_keys::{ApiKey, NewApiKey};
pub use audit::{AuditEvent, NewAuditEvent};
pub use codec::{new_id, now};
pub use connect::{
    migrate_blocking, sqlite_session, AppliedMigration, Backend, DEFAULT_DATABASE_URL,
};
pub use credentials::ServiceCredential;
pub use error::{Result, StoreError};
pub use oauth::{OAuthClient, OAuthCode, OAuthConsent, OAuthGrant};
pub use signing_keys::{NewSigningKey, SigningKey};
pub use tokens::{NewRefreshToken, RefreshToken};
pub use users::User;

use sqlx::AnyPool;

/// A pool of connections to the gateway database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool, for callers that need a query this module does not offer yet.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Close every connection; later queries fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
