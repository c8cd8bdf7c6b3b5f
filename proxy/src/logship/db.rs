//! The database side: inserting batches (once per request id and audit id), reading logs back
//! for operators, and deleting old rows.

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::record::{Parts, RequestRecord};
use crate::store::Backend;

/// A statement waits at most this long for a connection: a down database must fail a batch
/// quickly (it is spooled), not hold the batcher for the pool's default 30 s.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a batch write (connect included) may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per INSERT statement (25 parameters each). On SQLite the placeholders are plain `?`:
/// with `$n`, sqlx asks SQLite for each parameter's name, a linear scan of the statement's
/// names, so binding cost grew with the square of the parameter count (at 400 rows that
/// alone took half the gateway's CPU; at 8 rows still a third of the database thread's,
/// docs/benchmarks.md).
const ROWS_PER_INSERT: usize = 64;
// `chunk_sizes` splits what is left of a batch into smaller powers of two.
const _: () = assert!(ROWS_PER_INSERT.is_power_of_two());

/// The log pool's SQLite connections: the store's settings (before, this pool kept SQLite's
/// `synchronous = FULL`, a WAL sync per batch), and statement journals in memory: a
/// multi-row INSERT in a transaction keeps one in case it fails halfway, by default in a
/// temporary file (8.5 % of a batch's time in `cargo bench -p mcp-proxy --bench logdb`).
const LOG_SQLITE_PRAGMAS: &[&str] = &["PRAGMA synchronous = NORMAL", "PRAGMA temp_store = MEMORY"];

const COLUMN_COUNT: usize = 25;
const COLUMNS: &str = "request_id, at, user_id, api_key_id, client_ip, user_agent, route, pool, \
     worker, http_method, rpc_method, tool, session_hash, protocol_version, status, rpc_error, \
     latency_us, upstream_us, bytes_in, bytes_out, rate_limit, auth, error, request_body, \
     response_body";

/// The log pipeline's connection pool, opened on first use and reopened after failures.
pub struct LogDb {
    url: String,
    /// Read from `url` once; it picks the placeholders (`write_batch`). A URL naming neither
    /// backend cannot open a pool: `$n` then.
    backend: Backend,
    migrate: bool,
    pool: Option<AnyPool>,
}

impl LogDb {
    pub fn new(url: &str, migrate: bool) -> LogDb {
        LogDb {
            url: url.to_owned(),
            backend: Backend::from_url(url).unwrap_or(Backend::Postgres),
            migrate,
            pool: None,
        }
    }

    /// The pool, connecting (and migrating, when configured) if there is none.
    pub async fn pool(&mut self) -> Result<AnyPool, String> {
        if let Some(p) = &self.pool {
            return Ok(p.clone());
        }
        let pool = connect(&self.url, self.migrate).await?;
        self.pool = Some(pool.clone());
        Ok(pool)
    }

    /// `Store::connect` (SQLite file, migrations) on a thread and runtime of its own: its future
    /// is not `Send` for every lifetime (sqlx's migrator), so it cannot run in a spawned task.
    async fn prepare(url: &str, migrate: bool) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let url = url.to_owned();
        std::thread::Builder::new()
            .name("mcp-logdb-open".into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|rt| {
                        rt.block_on(async {
                            let store = crate::store::Store::connect(&url, migrate)
                                .await
                                .map_err(|e| e.to_string())?;
                            store.close().await;
                            Ok(())
                        })
                    });
                let _ = tx.send(result);
            })
            .map_err(|e| e.to_string())?;
        rx.await
            .map_err(|_| "database open thread failed".to_string())?
    }

    /// Write a batch in one transaction. Entries already stored are skipped.
    pub async fn write(&mut self, entries: &Parts<'_>) -> Result<(), String> {
        // A database that does not answer (a dropped route, not a refused connect) must not
        // hold the batcher: past the limit the batch counts as failed and is kept (spool or
        // stream). If it did commit, the replay is absorbed by the unique ids.
        let result = match tokio::time::timeout(WRITE_TIMEOUT, async {
            let pool = self.pool().await?;
            write_batch(&pool, entries, self.backend)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer from the database within {WRITE_TIMEOUT:?}"
            )),
        };
        if result.is_err() {
            // Connections may be broken; the pool heals itself, but a fresh one is certain.
            if let Some(p) = self.pool.take() {
                tokio::spawn(async move { p.close().await });
            }
        }
        result
    }
}

/// Connect a pool with a short acquire timeout. The first connection goes through
/// `Store::connect`, which prepares an SQLite file and applies migrations.
pub async fn connect(url: &str, migrate: bool) -> Result<AnyPool, String> {
    LogDb::prepare(url, migrate).await?;
    let mut options = AnyPoolOptions::new();
    if Backend::from_url(url).ok() == Some(Backend::Sqlite) {
        options = crate::store::sqlite_session(options, LOG_SQLITE_PRAGMAS);
    }
    options
        .max_connections(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}

/// Row counts of the INSERTs that write `n` records: statements of `ROWS_PER_INSERT` rows,
/// then the rest as descending powers of two (100 → 64, 32, 4). Each connection prepares and
/// caches a statement per shape; with the rest in one statement, a batch of any size up to
/// 64 added a shape (64 of them per connection, each compiled once at ~1 million instructions
/// and kept with its 25 parameters per row), while these are at most 7.
fn chunk_sizes(n: usize) -> impl Iterator<Item = usize> {
    let full = n / ROWS_PER_INSERT;
    let rest = n % ROWS_PER_INSERT;
    std::iter::repeat_n(ROWS_PER_INSERT, full).chain(
        (0..usize::BITS)
            .rev()
            .map(|bit| 1usize << bit)
            .filter(move |size| rest & size != 0),
    )
}

pub async fn write_batch(
    pool: &AnyPool,
    entries: &Parts<'_>,
    backend: Backend,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut rest = &entries.requests[..];
    for rows in chunk_sizes(rest.len()) {
        let (chunk, tail) = rest.split_at(rows);
        rest = tail;
        // Written here rather than with sqlx's QueryBuilder, which writes `?` for the Any
        // driver whatever the database (PostgreSQL does not read it).
        let mut sql = format!("INSERT INTO request_logs ({COLUMNS}) VALUES ");
        let mut n = 0;
        for (row, _) in chunk.iter().enumerate() {
            if row > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for col in 0..COLUMN_COUNT {
                if col > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                // SQLite: anonymous `?`, in order (see `ROWS_PER_INSERT`).
                match backend {
                    Backend::Postgres => {
                        sql.push('$');
                        sql.push_str(&n.to_string());
                    }
                    Backend::Sqlite => sql.push('?'),
                }
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(r.request_id.clone())
                .bind(r.at)
                .bind(r.user_id.clone())
                .bind(r.api_key_id.clone())
                .bind(r.client_ip.clone())
                .bind(r.user_agent.clone())
                .bind(r.route.clone())
                .bind(r.pool.clone())
                .bind(r.worker.clone())
                .bind(r.http_method.to_string())
                .bind(r.rpc_method.clone())
                .bind(r.tool.clone())
                .bind(r.session_hash.clone())
                .bind(r.protocol_version.clone())
                .bind(i64::from(r.status))
                .bind(r.rpc_error)
                .bind(r.latency_us)
                .bind(r.upstream_us)
                .bind(r.bytes_in)
                .bind(r.bytes_out)
                .bind(r.rate_limit.as_ref().map(|w| w.to_string()))
                .bind(r.auth.to_string())
                .bind(r.error.as_ref().map(|w| w.to_string()))
                .bind(r.request_body.clone())
                .bind(r.response_body.clone());
        }
        q.execute(&mut *tx).await?;
    }
    for a in &entries.audits {
        sqlx::query(
            "INSERT INTO audit_events (id, at, kind, user_id, subject, ip, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(a.id.clone())
        .bind(a.at)
        .bind(a.kind.clone())
        .bind(a.user_id.clone())
        .bind(a.subject.clone())
        .bind(a.ip.clone())
        .bind(a.detail.to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Delete request log rows older than `cutoff_ms`; returns how many.
pub async fn delete_older_than(pool: &AnyPool, cutoff_ms: i64) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM request_logs WHERE at < $1")
        .bind(cutoff_ms)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

/// What an operator asks for (`GET /admin/logs`, `mcp-proxy logs`).
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub user: Option<String>,
    pub route: Option<String>,
    pub tool: Option<String>,
    pub status: Option<u16>,
    /// Unix milliseconds.
    pub since: Option<i64>,
    pub limit: i64,
}

fn from_row(row: &AnyRow) -> Result<RequestRecord, sqlx::Error> {
    let status: i64 = row.try_get("status")?;
    Ok(RequestRecord {
        request_id: row.try_get("request_id")?,
        at: row.try_get("at")?,
        user_id: row.try_get("user_id")?,
        api_key_id: row.try_get("api_key_id")?,
        client_ip: row.try_get("client_ip")?,
        user_agent: row.try_get("user_agent")?,
        route: row.try_get("route")?,
        pool: row.try_get("pool")?,
        worker: row.try_get("worker")?,
        http_method: row.try_get::<String, _>("http_method")?.into(),
        rpc_method: row.try_get("rpc_method")?,
        tool: row.try_get("tool")?,
        session_hash: row.try_get("session_hash")?,
        protocol_version: row.try_get("protocol_version")?,
        status: u16::try_from(status).unwrap_or(0),
        rpc_error: row.try_get("rpc_error")?,
        latency_us: row.try_get("latency_us")?,
        upstream_us: row.try_get("upstream_us")?,
        bytes_in: row.try_get("bytes_in")?,
        bytes_out: row.try_get("bytes_out")?,
        rate_limit: row
            .try_get::<Option<String>, _>("rate_limit")?
            .map(Into::into),
        auth: row.try_get::<String, _>("auth")?.into(),
        error: row.try_get::<Option<String>, _>("error")?.map(Into::into),
        request_body: row.try_get("request_body")?,
        response_body: row.try_get("response_body")?,
    })
}

/// Matching rows, newest first.
pub async fn query(pool: &AnyPool, q: &LogQuery) -> Result<Vec<RequestRecord>, sqlx::Error> {
    let mut sql = format!("SELECT {COLUMNS} FROM request_logs WHERE 1 = 1");
    let mut n = 0;
    let mut next = |sql: &mut String, cond: &str| {
        n += 1;
        sql.push_str(&format!(" AND {cond} ${n}"));
    };
    if q.user.is_some() {
        next(&mut sql, "user_id =");
    }
    if q.route.is_some() {
        next(&mut sql, "route =");
    }
    if q.tool.is_some() {
        next(&mut sql, "tool =");
    }
    if q.status.is_some() {
        next(&mut sql, "status =");
    }
    if q.since.is_some() {
        next(&mut sql, "at >=");
    }
    n += 1;
    sql.push_str(&format!(" ORDER BY at DESC, request_id DESC LIMIT ${n}"));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for v in [&q.user, &q.route, &q.tool].into_iter().flatten() {
        query = query.bind(v.clone());
    }
    if let Some(s) = q.status {
        query = query.bind(i64::from(s));
    }
    if let Some(s) = q.since {
        query = query.bind(s);
    }
    let rows = query.bind(q.limit).fetch_all(pool).await?;
    rows.iter().map(from_row).collect()
}

/// Largest `limit` a caller may ask for.
pub const MAX_LIMIT: i64 = 1000;

/// `since` as operators write it: a duration back from now (`10m`, `2h`) or a time
/// (`2026-11-26T14:00:00Z`). Returns unix milliseconds.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| {
            format!("since: expected a duration such as 10m or a time such as 2026-01-31T12:00:00Z, got {text:?}")
        })
}

#[cfg(test)]
mod tests {
    use super::{chunk_sizes, parse_since, ROWS_PER_INSERT};

    #[test]
    fn batches_are_written_in_a_few_statement_shapes() {
        let sizes = |n| chunk_sizes(n).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(64), [64]);
        assert_eq!(sizes(100), [64, 32, 4]);
        assert_eq!(sizes(127), [64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(sizes(200), [64, 64, 64, 8]);
        let mut shapes = std::collections::BTreeSet::new();
        for n in 0..=1000 {
            let s = sizes(n);
            assert_eq!(s.iter().sum::<usize>(), n, "{n}: {s:?}");
            assert!(s
                .iter()
                .all(|&r| r.is_power_of_two() && r <= ROWS_PER_INSERT));
            shapes.extend(s);
        }
        assert_eq!(shapes.len(), 7, "{shapes:?}");
    }

    #[test]
    fn since_takes_durations_and_times() {
        assert_eq!(parse_since("10m", 1_000_000), Ok(1_000_000 - 600_000));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", 0), Ok(1000));
        assert!(parse_since("yesterday", 0).is_err());
    }
}
