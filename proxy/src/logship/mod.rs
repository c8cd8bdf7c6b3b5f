//! Log shipping: one record per request and the audit trail, from the proxy phases to the
//! database without ever making a request wait.
//!
//! ```text
//! logging phase ─try_send─▶ bounded queue ─▶ batcher ─▶ Redis Stream ─▶ shipper ─▶ database
//!  (full: dropped,            (control-plane    │  (XADD MAXLEN ~)   (group, XACK after
//!   counted)                   runtime)         │                     commit, XAUTOCLAIM)
//!                                               └─ no Redis: straight to the database
//!                          sink down: disk spool (fsync per batch) ─ replayed in order
//! ```
//! See docs/logging.md for the guarantees.

pub mod db;
pub mod record;
pub mod spool;
pub mod stream;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::admin::metrics::Metrics;
use crate::config::{DatabaseConfig, LoggingConfig, RedisConfig};
pub use record::{AuditRecord, Batch, Entry, Parts, RequestRecord};

/// Audit events have a queue of their own, so a flood of requests cannot crowd them out.
const AUDIT_QUEUE: usize = 16_384;
/// Spooled batches replayed per tick (the batcher stays responsive while catching up).
const REPLAY_PER_TICK: usize = 256;
/// Batches a replica keeps for its own shipper (`Handoff`); older ones are decoded instead.
const HANDOFF_BATCHES: usize = 32;

/// The proxy side of the pipeline: cheap to call from any phase, never blocks.
pub struct LogShip {
    tx: mpsc::Sender<Entry>,
    audit_tx: mpsc::Sender<Entry>,
    receivers: Mutex<Option<(mpsc::Receiver<Entry>, mpsc::Receiver<Entry>)>>,
    capacity: usize,
    dropped_queue: IntCounter,
    dropped_audit: IntCounter,
    flush: tokio::sync::Notify,
    flushed: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    flushed_tx: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    started: AtomicBool,
    enabled: bool,
    /// Records the batcher holds in its current batch (taken off the queue, not yet shipped).
    buffered: AtomicUsize,
    batch_size: usize,
    /// Woken when a full batch waits in the queue. The batcher does not wait on the queue
    /// itself: that would wake its thread once per request (a futex and a context switch on
    /// the proxy's core, docs/benchmarks.md); otherwise it drains the queue on its tick.
    batch_ready: tokio::sync::Notify,
    batch_ready_sent: AtomicBool,
}

impl LogShip {
    pub fn new(cfg: &LoggingConfig, metrics: &Metrics) -> LogShip {
        let (tx, rx) = mpsc::channel(cfg.queue_size.max(1));
        let (audit_tx, audit_rx) = mpsc::channel(AUDIT_QUEUE);
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        LogShip {
            tx,
            audit_tx,
            receivers: Mutex::new(Some((rx, audit_rx))),
            capacity: cfg.queue_size.max(1),
            dropped_queue: metrics.log_dropped.with_label_values(&["queue_full"]),
            dropped_audit: metrics.log_dropped.with_label_values(&["audit_queue_full"]),
            flush: tokio::sync::Notify::new(),
            flushed: Mutex::new(Some(done_rx)),
            flushed_tx: Mutex::new(Some(done_tx)),
            started: AtomicBool::new(false),
            enabled: cfg.enabled,
            buffered: AtomicUsize::new(0),
            batch_size: cfg.batch_size.max(1),
            batch_ready: tokio::sync::Notify::new(),
            batch_ready_sent: AtomicBool::new(false),
        }
    }

    /// False when `logging.enabled` is off: the logging phase builds no record.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Hand a request record over. Never waits: a full queue drops it and counts.
    pub fn record(&self, r: RequestRecord) {
        if self.tx.try_send(Entry::Request(Box::new(r))).is_err() {
            self.dropped_queue.inc();
        }
        if self.queued() >= self.batch_size && !self.batch_ready_sent.swap(true, Ordering::AcqRel) {
            self.batch_ready.notify_one();
        }
    }

    /// Hand an audit event over (its own queue; full: dropped, counted and logged).
    pub fn audit(
        &self,
        kind: &str,
        user_id: Option<&str>,
        subject: Option<&str>,
        ip: Option<&str>,
        detail: serde_json::Value,
    ) {
        let ev = AuditRecord {
            id: crate::store::new_id(),
            at: crate::store::now(),
            kind: kind.to_owned(),
            user_id: user_id.map(str::to_owned),
            subject: subject.map(str::to_owned),
            ip: ip.map(str::to_owned),
            detail,
        };
        if self.audit_tx.try_send(Entry::Audit(Box::new(ev))).is_err() {
            self.dropped_audit.inc();
            tracing::warn!(kind, "audit queue full; event dropped");
        }
    }

    /// Records in the queue, not yet taken by the batcher.
    fn queued(&self) -> usize {
        self.capacity.saturating_sub(self.tx.capacity())
    }

    /// Records waiting in memory: in the queue and in the batch being filled.
    pub fn depth(&self) -> usize {
        self.queued() + self.buffered.load(Ordering::Relaxed)
    }

    /// At shutdown, once requests are done: ship (or spool) what is queued, waiting at most
    /// `limit`. Returns false when the batcher did not confirm in time.
    pub fn flush_blocking(&self, limit: Duration) -> bool {
        if !self.started.load(Ordering::Acquire) {
            return true;
        }
        self.flush.notify_one();
        let rx = self.flushed.lock().ok().and_then(|mut g| g.take());
        match rx {
            Some(rx) => rx.recv_timeout(limit).is_ok(),
            None => false,
        }
    }
}

/// Where batches go from the batcher.
enum Sink {
    /// No database and no Redis: each record becomes a tracing line.
    Trace,
    Db(db::LogDb),
    Redis {
        conn: Box<stream::Conn>,
        key: String,
        maxlen: u64,
    },
}

impl Sink {
    fn name(&self) -> &'static str {
        match self {
            Sink::Trace => "trace",
            Sink::Db(_) => "database",
            Sink::Redis { .. } => "redis",
        }
    }

    async fn ship(&mut self, batch: &Parts<'_>, payload: &[u8]) -> Result<(), String> {
        match self {
            Sink::Trace => {
                for line in batch.lines().flatten() {
                    tracing::info!(target: "mcp_gateway::request_log", "{line}");
                }
                Ok(())
            }
            Sink::Db(d) => d.write(batch).await,
            Sink::Redis { conn, key, maxlen } => stream::add(conn, key, *maxlen, payload).await,
        }
    }
}

struct Batcher {
    sink: Sink,
    spool: Option<Arc<Mutex<spool::Spool>>>,
    metrics: Arc<Metrics>,
    /// Set when this process also ships the stream into the database.
    handoff: Option<Arc<Handoff>>,
}

/// The batches this replica adds to the Redis stream, kept for its own shipper, which
/// otherwise reads each one back and decodes the JSON it was just encoded into (1.6 µs per
/// record, the largest item of the shipper after the database write). A batch is found by
/// its payload, compared byte for byte, so what is written is exactly what the stream
/// entry holds; it is put here before the `XADD`, since the shipper's blocked read may get
/// the entry before the batcher sees Redis's answer. Only a shortcut: an entry not found
/// here (added by another replica, read again after a failed database write, or pushed
/// out by newer batches while the shipper lagged) is decoded from its payload.
#[derive(Default)]
struct Handoff {
    batches: Mutex<VecDeque<(bytes::Bytes, Vec<Entry>)>>,
}

impl Handoff {
    fn put(&self, payload: bytes::Bytes, entries: Vec<Entry>) {
        if let Ok(mut b) = self.batches.lock() {
            if b.len() >= HANDOFF_BATCHES {
                b.pop_front();
            }
            b.push_back((payload, entries));
        }
    }

    fn take(&self, payload: &[u8]) -> Option<Vec<Entry>> {
        let mut b = self.batches.lock().ok()?;
        let at = b.iter().position(|(p, _)| p[..] == *payload)?;
        b.remove(at).map(|(_, entries)| entries)
    }
}

async fn blocking<T: Send + 'static>(
    spool: &Arc<Mutex<spool::Spool>>,
    f: impl FnOnce(&mut spool::Spool) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = spool
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
        f(&mut guard)
    })
    .await
    .map_err(std::io::Error::other)?
}

impl Batcher {
    fn sink_error(&self, e: &str) {
        match self.sink {
            Sink::Db(_) => self
                .metrics
                .database_errors
                .with_label_values(&["write"])
                .inc(),
            Sink::Redis { .. } => self.metrics.redis_errors.with_label_values(&["xadd"]).inc(),
            Sink::Trace => {}
        }
        tracing::warn!(sink = self.sink.name(), error = %e, "log sink failed; spooling");
    }

    async fn spool_backlog(&self) -> bool {
        match &self.spool {
            Some(s) => !blocking(s, |s| Ok(s.is_empty())).await.unwrap_or(true),
            None => false,
        }
    }

    /// Ship one batch, or spool it when the sink fails (or older batches wait in the spool).
    async fn flush(&mut self, batch: &mut Vec<Entry>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let payload = match Parts::of(batch).encode() {
            Ok(p) => bytes::Bytes::from(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a log batch; dropped");
                self.metrics
                    .log_dropped
                    .with_label_values(&["encode"])
                    .inc_by(n);
                batch.clear();
                return;
            }
        };
        if !self.spool_backlog().await {
            let handoff = self.handoff.clone();
            let shipped = match (&handoff, &mut self.sink) {
                // Handed over before the XADD (see `Handoff`). Should the XADD fail, it stays
                // there: a replay of the spooled copy is the same bytes, the same records.
                (Some(h), Sink::Redis { conn, key, maxlen }) => {
                    let capacity = batch.capacity();
                    h.put(
                        payload.clone(),
                        std::mem::replace(batch, Vec::with_capacity(capacity)),
                    );
                    stream::add(conn, key, *maxlen, &payload).await
                }
                (_, sink) => sink.ship(&Parts::of(batch), &payload).await,
            };
            match shipped {
                Ok(()) => {
                    self.metrics
                        .log_shipped
                        .with_label_values(&[self.sink.name()])
                        .inc_by(n);
                    batch.clear();
                    return;
                }
                Err(e) => self.sink_error(&e),
            }
        }
        self.to_spool(payload, n).await;
        batch.clear();
    }

    async fn to_spool(&self, payload: bytes::Bytes, n: u64) {
        let Some(spool) = &self.spool else {
            self.metrics
                .log_dropped
                .with_label_values(&["no_spool"])
                .inc_by(n);
            return;
        };
        match blocking(spool, move |s| s.append(&payload)).await {
            Ok(true) => self.metrics.log_spooled.inc_by(n),
            Ok(false) => {
                tracing::error!(records = n, "log spool full; batch dropped");
                self.metrics
                    .log_dropped
                    .with_label_values(&["spool_full"])
                    .inc_by(n);
            }
            Err(e) => {
                tracing::error!(error = %e, records = n, "cannot write the log spool; batch dropped");
                self.metrics
                    .log_dropped
                    .with_label_values(&["spool_error"])
                    .inc_by(n);
            }
        }
    }

    /// Replay spooled batches, oldest first, until the sink fails or the spool is empty.
    async fn replay(&mut self) {
        let Some(spool) = self.spool.clone() else {
            return;
        };
        for _ in 0..REPLAY_PER_TICK {
            let next = match blocking(&spool, |s| s.peek()).await {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the log spool");
                    break;
                }
            };
            let (payload, len) = next;
            let batch = match Batch::decode(&payload) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable batch in the log spool; skipped");
                    let _ = blocking(&spool, move |s| s.advance(len)).await;
                    continue;
                }
            };
            if let Err(e) = self.sink.ship(&batch.parts(), &payload).await {
                self.sink_error(&e);
                break;
            }
            if let Err(e) = blocking(&spool, move |s| s.advance(len)).await {
                tracing::error!(error = %e, "cannot move the log spool cursor");
                break;
            }
            let n = batch.len() as u64;
            self.metrics
                .log_shipped
                .with_label_values(&[self.sink.name()])
                .inc_by(n);
            self.metrics.log_replayed.inc_by(n);
        }
        if let Ok(bytes) = blocking(&spool, |s| Ok(s.bytes())).await {
            self.metrics.log_spool_bytes.set(bytes as i64);
        }
    }
}

/// Start the batcher (and, with Redis and a database, the shipper; with a database and a
/// retention, the retention task) on the current runtime (the control plane's).
pub fn start(
    ship: Arc<LogShip>,
    metrics: Arc<Metrics>,
    cfg: &LoggingConfig,
    database: Option<&DatabaseConfig>,
    redis: Option<&RedisConfig>,
) {
    let Some((rx, audit_rx)) = ship.receivers.lock().ok().and_then(|mut g| g.take()) else {
        return;
    };
    let sink = match (redis, database) {
        (Some(r), _) => match stream::Conn::new(r) {
            Ok(conn) => Sink::Redis {
                conn: Box::new(conn),
                key: stream::stream_key(&r.prefix, &cfg.stream),
                maxlen: cfg.stream_maxlen,
            },
            Err(e) => {
                tracing::error!(error = %e, "log shipping: bad Redis configuration; records go to the tracing log");
                Sink::Trace
            }
        },
        (None, Some(d)) => Sink::Db(db::LogDb::new(&d.url, d.migrate)),
        (None, None) => {
            tracing::info!(
                "no database configured: request records go to the tracing log only \
                 (target mcp_gateway::request_log)"
            );
            Sink::Trace
        }
    };
    let spool = match sink {
        Sink::Trace => None,
        _ => match spool::Spool::open(&cfg.spool_dir, cfg.spool_max_bytes) {
            Ok(s) => Some(Arc::new(Mutex::new(s))),
            Err(e) => {
                tracing::error!(
                    dir = %cfg.spool_dir.display(),
                    error = %e,
                    "cannot open the log spool: batches that cannot be shipped are dropped"
                );
                None
            }
        },
    };
    let ships_here = redis.is_some() && database.is_some() && cfg.ship;
    let handoff =
        (ships_here && matches!(sink, Sink::Redis { .. })).then(|| Arc::new(Handoff::default()));
    let batcher = Batcher {
        sink,
        spool,
        metrics: metrics.clone(),
        handoff: handoff.clone(),
    };
    let done = ship.flushed_tx.lock().ok().and_then(|mut g| g.take());
    ship.started.store(true, Ordering::Release);
    tokio::spawn(run_batcher(
        batcher,
        ship.clone(),
        rx,
        audit_rx,
        cfg.batch_interval,
        done,
    ));
    if let (Some(r), Some(d), true) = (redis, database, cfg.ship) {
        tokio::spawn(run_shipper(
            r.clone(),
            stream::stream_key(&r.prefix, &cfg.stream),
            cfg.claim_idle,
            db::LogDb::new(&d.url, d.migrate),
            metrics.clone(),
            handoff,
        ));
    }
    if let (Some(d), Some(age)) = (database, cfg.retention) {
        tokio::spawn(run_retention(
            d.url.clone(),
            d.migrate,
            age,
            cfg.retention_check,
            metrics,
        ));
    }
}

async fn run_batcher(
    mut b: Batcher,
    ship: Arc<LogShip>,
    mut rx: mpsc::Receiver<Entry>,
    mut audit_rx: mpsc::Receiver<Entry>,
    interval: Duration,
    done: Option<std::sync::mpsc::SyncSender<()>>,
) {
    // The same size the proxy side wakes the batcher at (`LogShip::record`).
    let batch_size = ship.batch_size;
    let mut batch: Vec<Entry> = Vec::with_capacity(batch_size);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut replay_tick = tokio::time::interval(Duration::from_millis(500));
    replay_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut done = done;
    loop {
        tokio::select! {
            _ = ship.flush.notified() => {
                while let Ok(e) = audit_rx.try_recv() {
                    batch.push(e);
                }
                let open = drain(&mut b, &mut rx, &mut batch, batch_size).await;
                b.flush(&mut batch).await;
                if let Some(d) = done.take() {
                    let _ = d.send(());
                }
                if !open {
                    return;
                }
            }
            _ = ship.batch_ready.notified() => {
                ship.batch_ready_sent.store(false, Ordering::Release);
                if !drain(&mut b, &mut rx, &mut batch, batch_size).await {
                    b.flush(&mut batch).await;
                    return;
                }
            }
            Some(e) = audit_rx.recv() => {
                batch.push(e);
                if batch.len() >= batch_size {
                    b.flush(&mut batch).await;
                }
            }
            _ = tick.tick() => {
                let open = drain(&mut b, &mut rx, &mut batch, batch_size).await;
                b.flush(&mut batch).await;
                if !open {
                    return;
                }
            }
            _ = replay_tick.tick() => b.replay().await,
        }
        ship.buffered.store(batch.len(), Ordering::Relaxed);
    }
}

/// Take what the queue holds, shipping each full batch; a partial one stays in `batch`.
/// False once every sender is gone (the process is ending).
async fn drain(
    b: &mut Batcher,
    rx: &mut mpsc::Receiver<Entry>,
    batch: &mut Vec<Entry>,
    batch_size: usize,
) -> bool {
    loop {
        match rx.try_recv() {
            Ok(e) => {
                batch.push(e);
                if batch.len() >= batch_size {
                    b.flush(batch).await;
                }
            }
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}-{}", std::process::id(), crate::store::new_id())
}

/// Consumer group name of the shippers.
pub const GROUP: &str = "shippers";

/// Stream → database. Own pending entries first (left by a failed database write), then
/// entries a dead consumer left pending for `claim_idle`, then new ones. Acknowledged only
/// after the database committed them.
async fn run_shipper(
    redis: RedisConfig,
    key: String,
    claim_idle: Duration,
    mut db: db::LogDb,
    metrics: Arc<Metrics>,
    handoff: Option<Arc<Handoff>>,
) {
    let mut conn = match stream::Conn::new(&redis) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "log shipper not started");
            return;
        }
    };
    let me = consumer_name();
    let mut have_group = false;
    let pause = Duration::from_millis(500);
    tracing::info!(consumer = %me, stream = %key, "log shipper started");
    loop {
        if !have_group {
            match stream::ensure_group(&mut conn, &key, GROUP).await {
                Ok(()) => have_group = true,
                Err(e) => {
                    metrics.redis_errors.with_label_values(&["xgroup"]).inc();
                    tracing::debug!(error = %e, "log shipper: Redis unavailable");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
        }
        let mut entries = match stream::read_group(&mut conn, &key, GROUP, &me, false).await {
            Ok(e) => e,
            Err(e) => {
                redis_failed(&metrics, "xreadgroup", &e, &mut have_group);
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if entries.is_empty() {
            match stream::autoclaim(&mut conn, &key, GROUP, &me, claim_idle).await {
                Ok(e) => entries = e,
                Err(e) => {
                    redis_failed(&metrics, "xautoclaim", &e, &mut have_group);
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
        }
        if entries.is_empty() {
            match stream::read_group(&mut conn, &key, GROUP, &me, true).await {
                Ok(e) => entries = e,
                Err(e) => {
                    redis_failed(&metrics, "xreadgroup", &e, &mut have_group);
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
        }
        if entries.is_empty() {
            continue;
        }
        let mut batches = Vec::with_capacity(entries.len());
        let mut own = Vec::new();
        let mut ids = Vec::with_capacity(entries.len());
        for (id, payload) in entries {
            let own_batch = match (&handoff, &payload) {
                (Some(h), Some(p)) => h.take(p),
                _ => None,
            };
            if let Some(e) = own_batch {
                own.push(e);
                ids.push(id);
                continue;
            }
            match payload.map(|p| Batch::decode(&p)) {
                Some(Ok(b)) => batches.push(b),
                _ => {
                    tracing::error!(id = %id, "unreadable log batch in the stream; acknowledged and skipped")
                }
            }
            ids.push(id);
        }
        let mut parts = Parts::default();
        for b in &batches {
            parts.add(b);
        }
        for e in &own {
            parts.add_entries(e);
        }
        if let Err(e) = db.write(&parts).await {
            metrics.database_errors.with_label_values(&["write"]).inc();
            tracing::warn!(error = %e, "log shipper: database write failed; will retry");
            tokio::time::sleep(pause).await;
            continue;
        }
        metrics.log_stored.inc_by(parts.len() as u64);
        if let Err(e) = stream::ack(&mut conn, &key, GROUP, &ids).await {
            // Not acknowledged: shipped again later, and skipped by the database as duplicates.
            redis_failed(&metrics, "xack", &e, &mut have_group);
        }
    }
}

fn redis_failed(metrics: &Metrics, op: &str, e: &str, have_group: &mut bool) {
    metrics.redis_errors.with_label_values(&[op]).inc();
    if e.contains("NOGROUP") {
        // Redis restarted without its data: the group must be made again.
        *have_group = false;
    }
    tracing::debug!(error = %e, op, "log shipper: Redis failed");
}

async fn run_retention(
    url: String,
    migrate: bool,
    age: Duration,
    every: Duration,
    metrics: Arc<Metrics>,
) {
    let mut conn = db::LogDb::new(&url, migrate);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pool = match conn.pool().await {
            Ok(p) => p,
            Err(e) => {
                metrics
                    .database_errors
                    .with_label_values(&["retention"])
                    .inc();
                tracing::debug!(error = %e, "retention: database unavailable");
                continue;
            }
        };
        let cutoff = record::now_ms() - age.as_millis() as i64;
        match db::delete_older_than(&pool, cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "retention: old request logs deleted"),
            Err(e) => {
                metrics
                    .database_errors
                    .with_label_values(&["retention"])
                    .inc();
                tracing::warn!(error = %e, "retention failed");
            }
        }
    }
}

/// `mcp-proxy logs`: print stored records (newest first) from the configuration's database,
/// one line each, or one JSON object per line with `json`.
pub fn print_logs(
    database: Option<&DatabaseConfig>,
    q: &db::LogQuery,
    json: bool,
) -> Result<usize, String> {
    let d = database
        .ok_or("the configuration has no database: request records go to the tracing log only")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let rows = rt.block_on(async {
        let pool = db::connect(&d.url, d.migrate).await?;
        let rows = db::query(&pool, q).await.map_err(|e| e.to_string());
        pool.close().await;
        rows
    })?;
    for r in &rows {
        if json {
            println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
        } else {
            let at =
                std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(r.at).unwrap_or(0));
            println!(
                "{} {} {} {} {} {} {} user={} {}us",
                humantime::format_rfc3339_millis(at),
                r.request_id,
                r.status,
                r.http_method,
                r.route.as_deref().unwrap_or("-"),
                r.rpc_method.as_deref().unwrap_or("-"),
                r.tool.as_deref().unwrap_or("-"),
                r.user_id.as_deref().unwrap_or("-"),
                r.latency_us,
            );
        }
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: usize, n: usize) -> Vec<Entry> {
        (first..first + n)
            .map(|i| {
                Entry::Request(Box::new(RequestRecord {
                    request_id: format!("r{i}"),
                    ..RequestRecord::default()
                }))
            })
            .collect()
    }

    #[test]
    fn handoff_gives_each_batch_once_by_its_bytes_and_keeps_only_the_newest() {
        let h = Handoff::default();
        let payload = |b: &[Entry]| bytes::Bytes::from(Parts::of(b).encode().unwrap_or_default());
        let (a, b) = (batch(0, 3), batch(3, 2));
        h.put(payload(&a), a.clone());
        h.put(payload(&b), b.clone());
        assert_eq!(h.take(&payload(&b)), Some(b.clone()));
        assert_eq!(h.take(&payload(&b)), None, "taken once");
        assert_eq!(
            h.take(&payload(&batch(7, 3))),
            None,
            "another replica's batch"
        );
        assert_eq!(h.take(&payload(&a)), Some(a));
        let many: Vec<Vec<Entry>> = (0..HANDOFF_BATCHES + 2)
            .map(|i| batch(100 + i, 1))
            .collect();
        for m in &many {
            h.put(payload(m), m.clone());
        }
        // The two oldest were pushed out: their entries are decoded from the stream instead.
        assert_eq!(h.take(&payload(&many[0])), None);
        assert_eq!(h.take(&payload(&many[1])), None);
        assert_eq!(h.take(&payload(&many[2])), Some(many[2].clone()));
        let last = &many[HANDOFF_BATCHES + 1];
        assert_eq!(h.take(&payload(last)), Some(last.clone()));
    }
}
