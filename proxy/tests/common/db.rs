//! Test databases: an SQLite file in a directory of its own, and a schema of its own in the
//! PostgreSQL test database (`postgres://postgres@127.0.0.1:5432/test`, override with
//! `MCP_PROXY_TEST_POSTGRES`); both removed on drop. An unreachable PostgreSQL fails the test.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A name no other test (in this or a parallel run) uses.
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// An SQLite database file in a directory of its own, removed on drop.
pub struct SqliteDb {
    pub dir: PathBuf,
}

impl SqliteDb {
    pub fn new(prefix: &str) -> SqliteDb {
        SqliteDb {
            dir: std::env::temp_dir().join(unique_name(prefix)),
        }
    }

    /// A URL whose parent directories do not exist yet: `Store::connect` creates them.
    pub fn url(&self) -> String {
        format!("sqlite://{}/nested/gateway.db", self.dir.display())
    }
}

impl Drop for SqliteDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A schema of its own in the test database, dropped (with everything in it) on drop.
pub struct PgSchema {
    admin_url: String,
    schema: String,
}

impl PgSchema {
    pub async fn new(prefix: &str) -> PgSchema {
        let admin_url =
            std::env::var("MCP_PROXY_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_PG_URL.into());
        let mut conn = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&admin_url))
            .await
            .unwrap_or_else(|_| panic!("PostgreSQL did not answer within 10 s at {admin_url}; start it (scripts/services does) or set MCP_PROXY_TEST_POSTGRES"))
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin_url}: {e}; start it (scripts/services does) or set MCP_PROXY_TEST_POSTGRES"));
        let schema = unique_name(prefix);
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .await
            .unwrap_or_else(|e| panic!("create the test schema: {e}"));
        let _ = conn.close().await;
        PgSchema { admin_url, schema }
    }

    /// The test database with `search_path` set to this schema at connection start-up.
    pub fn url(&self) -> String {
        let sep = if self.admin_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}options=-c%20search_path%3D{}",
            self.admin_url, self.schema
        )
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop runs inside a test's runtime: do the async cleanup on a thread of its own.
        let url = self.admin_url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&url).await {
                    let _ = conn.execute(sqlx::AssertSqlSafe(sql)).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Rows of `request_logs` whose request id starts with `<tag>-` (0 while the database is
/// unreachable).
pub async fn count_log_rows(url: &str, tag: &str) -> i64 {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let Ok(p) = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect(url)
        .await
    else {
        return 0;
    };
    let n = sqlx::query("SELECT COUNT(*) AS n FROM request_logs WHERE request_id LIKE $1")
        .bind(format!("{tag}-%"))
        .fetch_one(&p)
        .await
        .and_then(|r| r.try_get::<i64, _>("n"))
        .unwrap_or(0);
    p.close().await;
    n
}
