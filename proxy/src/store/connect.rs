//! Opening the store and applying the embedded migrations.

use std::str::FromStr;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::AnyConnection;
use sqlx::{ConnectOptions, Connection, Executor};

use super::error::{Result, StoreError};
use super::Store;

/// The database used when none is configured: an SQLite file under the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/gateway.db";

/// The bookkeeping table sqlx keeps the applied versions in (sqlx's default name).
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");

/// The two supported databases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a URL names: `sqlite:…` or `postgres:…`/`postgresql:…`.
    pub fn from_url(url: &str) -> Result<Backend> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("sqlite") => Ok(Backend::Sqlite),
            Some("postgres") | Some("postgresql") => Ok(Backend::Postgres),
            _ => Err(StoreError::BadUrl(redact(url))),
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }
}

/// One migration recorded in the database after [`Store::migrate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
    /// True when this call applied it, false when it was already there.
    pub newly_applied: bool,
}

impl Store {
    /// Opens a pool on `url` (`sqlite://path`, `sqlite::memory:`, `postgres://…`) and, when
    /// `run_migrations` is set, brings the schema up to date.
    ///
    /// For an SQLite file, the parent directory and the file are created when missing and the
    /// database is switched to WAL mode.
    pub async fn connect(url: &str, run_migrations: bool) -> Result<Store> {
        let backend = Backend::from_url(url)?;
        sqlx::any::install_default_drivers();
        let mut options = AnyPoolOptions::new();
        if backend == Backend::Sqlite {
            if sqlite_in_memory(url) {
                // Every connection to `:memory:` is its own database: keep exactly one, forever.
                options = options
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            } else {
                prepare_sqlite_file(url).await?;
            }
            options = sqlite_session(options, SQLITE_PRAGMAS);
        }
        if backend == Backend::Postgres {
            // One direct connection first: its error names the cause (refused, auth, TLS),
            // where the pool would only report a timeout after retrying for 30 s.
            AnyConnection::connect(url).await?.close().await?;
        }
        let pool = options.connect(url).await?;
        let store = Store { pool, backend };
        if run_migrations {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Applies the embedded migrations for this backend that the database lacks, and returns
    /// every version now recorded. Safe to run concurrently (PostgreSQL serialises on an
    /// advisory lock) and repeatedly.
    pub async fn migrate(&self) -> Result<Vec<AppliedMigration>> {
        let mut conn = self.pool.acquire().await?;
        let result = migrate_on(&mut conn, self.backend.migrator()).await;
        if result.is_err() && self.backend == Backend::Postgres {
            // The session may still hold the advisory lock: never hand it back to the pool.
            conn.close_on_drop();
        }
        result
    }
}

/// For the `migrate` command: connects to `url`, applies the migrations and closes, on a
/// runtime of its own.
pub fn migrate_blocking(url: &str) -> Result<Vec<AppliedMigration>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| StoreError::Io {
            context: "cannot start a runtime".to_owned(),
            source,
        })?;
    runtime.block_on(async {
        let store = Store::connect(url, false).await?;
        let applied = store.migrate().await;
        store.close().await;
        applied
    })
}

async fn migrate_on(
    conn: &mut AnyConnection,
    migrator: &'static Migrator,
) -> Result<Vec<AppliedMigration>> {
    // Hold the migration lock across the before/after listing so the report is exact; the
    // migrator takes the same (re-entrant) lock again inside.
    conn.lock().await?;
    conn.ensure_migrations_table(MIGRATIONS_TABLE).await?;
    let before = conn.list_applied_migrations(MIGRATIONS_TABLE).await?;
    migrator.run(&mut *conn).await?;
    let after = conn.list_applied_migrations(MIGRATIONS_TABLE).await?;
    conn.unlock().await?;

    Ok(after
        .iter()
        .map(|applied| AppliedMigration {
            version: applied.version,
            description: migrator
                .iter()
                .find(|m| m.version == applied.version)
                .map(|m| m.description.to_string())
                .unwrap_or_default(),
            newly_applied: !before.iter().any(|b| b.version == applied.version),
        })
        .collect())
}

fn sqlite_in_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// Creates the file's directory, the file itself and switches it to WAL (a persistent
/// setting of the file, so pool connections need not repeat it).
async fn prepare_sqlite_file(url: &str) -> Result<()> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let path = options.get_filename();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            context: format!("cannot create directory {}", dir.display()),
            source,
        })?;
    }
    let conn = options.connect().await?;
    conn.close().await?;
    Ok(())
}

/// What every SQLite connection of the store's pool sets: `synchronous = NORMAL`, safe with
/// WAL (a crash may lose the last commits, never corrupt the file). SQLite's default (`FULL`)
/// syncs the WAL on every commit.
const SQLITE_PRAGMAS: &[&str] = &["PRAGMA synchronous = NORMAL"];

/// Run `pragmas` on every new connection of an SQLite pool.
pub fn sqlite_session(options: AnyPoolOptions, pragmas: &'static [&'static str]) -> AnyPoolOptions {
    options.after_connect(move |conn, _meta| {
        Box::pin(async move {
            for p in pragmas {
                conn.execute(*p).await?;
            }
            Ok(())
        })
    })
}

/// A URL fit for an error message: the password, if any, replaced.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_from_url() {
        assert_eq!(
            Backend::from_url("sqlite://x.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("PostgreSQL://h/db").ok(),
            Some(Backend::Postgres)
        );
        assert!(Backend::from_url("mysql://h/db").is_err());
        assert!(Backend::from_url("data/gateway.db").is_err());
    }

    #[test]
    fn in_memory_detection() {
        assert!(sqlite_in_memory("sqlite::memory:"));
        assert!(sqlite_in_memory("sqlite://?mode=memory"));
        assert!(!sqlite_in_memory("sqlite://data/gateway.db"));
    }

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("mysql://h/db"), "mysql://h/db");
    }
}
