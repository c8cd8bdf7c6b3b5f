//! The store's error type and its mapping from sqlx errors.

use sqlx::error::ErrorKind;

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is neither `sqlite:` nor `postgres:`/`postgresql:`, or is malformed.
    #[error("unsupported or malformed database URL: {0}")]
    BadUrl(String),
    /// A unique constraint refused the write (duplicate email, token hash, key hash, kid, id).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A foreign key refused the write (for example, a token for a user that does not exist).
    #[error("referenced row does not exist: {0}")]
    MissingReference(String),
    /// The row to update does not exist.
    #[error("not found")]
    NotFound,
    /// A stored value could not be read back (bad JSON in `roles`, `scopes` or `detail`).
    #[error("corrupt value in {column}: {reason}")]
    Corrupt {
        column: &'static str,
        reason: String,
    },
    /// A local I/O step failed (creating the SQLite file's directory, starting a runtime).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database or connection error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => StoreError::Conflict(db.message().to_owned()),
                ErrorKind::ForeignKeyViolation => {
                    StoreError::MissingReference(db.message().to_owned())
                }
                _ => StoreError::Database(e),
            },
            sqlx::Error::RowNotFound => StoreError::NotFound,
            _ => StoreError::Database(e),
        }
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
