//! `mcp-bench streams`: hold many idle MCP sessions, each with its
//! standalone SSE stream open (`GET` with `Accept: text/event-stream`), and
//! report what they cost the watched servers in memory.
//!
//! Steps: open `count` sessions (`initialize`, `notifications/initialized`),
//! then one stream per session; wait `settle`, hold them for `hold` while
//! reading whatever arrives (keep-alive comments), count streams that ended
//! on their own, close them all (dropping the connections), end the sessions
//! with `DELETE`. The RSS of every watched process is sampled before the
//! sessions, after them, after the streams opened, at the end of the hold and
//! after the close.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::mcp::{CallError, McpClient, Protocol, Session};
use crate::procstat;
use crate::rlimit;

/// File descriptors the generator keeps besides one per stream: pooled
/// connections of the opening phase, the runtime, stdio, spare.
pub const FD_RESERVE: u64 = 64;

/// What to do.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    pub url: String,
    pub count: usize,
    pub hold: Duration,
    pub settle: Duration,
    pub token: Option<String>,
    /// CA certificates (PEM) trusted for an https:// URL, besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    pub open_concurrency: usize,
    pub timeout: Duration,
    pub watch: Vec<(String, u32)>,
    pub label: Option<String>,
    pub progress: bool,
}

impl StreamsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.count == 0 {
            return Err("--count must be at least 1".into());
        }
        if self.open_concurrency == 0 {
            return Err("--open-concurrency must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be positive".into());
        }
        Ok(())
    }
}

/// Memory of one watched process through the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamProcMem {
    pub name: String,
    pub pid: u32,
    /// RSS before any session, KiB.
    pub rss_before_kib: u64,
    /// After the sessions opened, before the streams.
    pub rss_sessions_kib: u64,
    /// After the streams opened (and `settle`).
    pub rss_streams_kib: u64,
    /// At the end of the hold.
    pub rss_held_kib: u64,
    /// After the streams closed and the sessions ended (and `settle`).
    pub rss_closed_kib: u64,
    /// (held − sessions) / streams held: what one open stream costs.
    pub kib_per_stream: Option<f64>,
    /// (held − before) / streams held: one session with its stream.
    pub kib_per_session_and_stream: Option<f64>,
}

/// The outcome of a `streams` run (JSON report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamsReport {
    pub schema: u32,
    pub kind: String,
    pub label: Option<String>,
    pub url: String,
    pub count: usize,
    pub hold_s: f64,
    pub auth: bool,
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub sessions_opened: u64,
    pub sessions_failed: u64,
    pub streams_opened: u64,
    pub streams_failed: u64,
    /// Streams that ended before the end of the hold.
    pub streams_lost: u64,
    /// Streams still open at the end of the hold.
    pub streams_held: u64,
    /// Bytes received on all streams during the hold (keep-alives, priming).
    pub stream_bytes: u64,
    pub sessions_open_s: f64,
    pub streams_open_s: f64,
    pub deletes_ok: u64,
    pub deletes_failed: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub error_samples: BTreeMap<String, String>,
    pub processes: Vec<StreamProcMem>,
    pub warnings: Vec<String>,
}

/// File descriptors the generator needs for `count` streams.
pub fn fd_budget(count: usize, open_concurrency: usize) -> u64 {
    count as u64 + open_concurrency as u64 + FD_RESERVE
}

/// `(to − from) / n` in KiB, `None` when `n` is 0. A negative difference
/// (memory given back) is reported as is.
pub fn per_stream(from_kib: u64, to_kib: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| (to_kib as f64 - from_kib as f64) / n as f64)
}

#[derive(Default)]
struct Errors {
    by_kind: BTreeMap<String, u64>,
    samples: BTreeMap<String, String>,
}

impl Errors {
    fn add(&mut self, phase: &str, e: &CallError) {
        let kind = format!("{phase}_{}", e.kind());
        *self.by_kind.entry(kind.clone()).or_default() += 1;
        self.samples.entry(kind).or_insert_with(|| e.to_string());
    }
}

fn rss(watch: &[(String, u32)]) -> Vec<u64> {
    watch
        .iter()
        .map(|(_, pid)| procstat::sample(*pid).map(|s| s.rss_kib).unwrap_or(0))
        .collect()
}

fn progress(cfg: &StreamsConfig, msg: &str) {
    if cfg.progress {
        eprintln!("[streams] {msg}");
    }
}

async fn open_sessions(
    client: &Arc<McpClient>,
    cfg: &StreamsConfig,
    errors: &mut Errors,
) -> Vec<Session> {
    let permits = Arc::new(Semaphore::new(cfg.open_concurrency));
    let mut set = JoinSet::new();
    for _ in 0..cfg.count {
        let client = client.clone();
        let permits = permits.clone();
        let timeout = cfg.timeout;
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            match tokio::time::timeout(timeout, client.initialize()).await {
                Ok(r) => r,
                Err(_) => Err(CallError::Timeout),
            }
        });
    }
    let mut sessions = Vec::with_capacity(cfg.count);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(s)) => sessions.push(s),
            Ok(Err(e)) => errors.add("session", &e),
            Err(e) => errors.add("session", &CallError::Io(e.to_string())),
        }
    }
    sessions
}

async fn delete_sessions(
    client: &Arc<McpClient>,
    cfg: &StreamsConfig,
    sessions: Vec<Session>,
    errors: &mut Errors,
) -> (u64, u64) {
    let permits = Arc::new(Semaphore::new(cfg.open_concurrency));
    let mut set = JoinSet::new();
    for s in sessions {
        let client = client.clone();
        let permits = permits.clone();
        let timeout = cfg.timeout;
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            match tokio::time::timeout(timeout, client.delete(&s)).await {
                Ok(r) => r,
                Err(_) => Err(CallError::Timeout),
            }
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                failed += 1;
                errors.add("delete", &e);
            }
            Err(e) => {
                failed += 1;
                errors.add("delete", &CallError::Io(e.to_string()));
            }
        }
    }
    (ok, failed)
}

/// Run it.
pub async fn run(cfg: &StreamsConfig) -> Result<StreamsReport, String> {
    cfg.validate()?;
    let mut warnings = Vec::new();
    let limits = rlimit::nofile()?;
    let need = fd_budget(cfg.count, cfg.open_concurrency);
    if need > limits.soft {
        warnings.push(format!(
            "{} streams need about {need} file descriptors here, the limit is {} (hard {}): \
             streams past it will fail to connect",
            cfg.count, limits.soft, limits.hard
        ));
    }
    for w in &warnings {
        eprintln!("mcp-bench: warning: {w}");
    }
    let client = Arc::new(McpClient::new(
        &cfg.url,
        cfg.token.as_deref(),
        Protocol::V2025_06_18,
        cfg.ca_file.as_deref(),
    )?);
    let mut errors = Errors::default();

    let rss_before = rss(&cfg.watch);
    let t0 = Instant::now();
    let sessions = open_sessions(&client, cfg, &mut errors).await;
    let sessions_open_s = t0.elapsed().as_secs_f64();
    let sessions_failed = (cfg.count - sessions.len()) as u64;
    progress(
        cfg,
        &format!(
            "{} sessions open, {sessions_failed} failed, in {sessions_open_s:.1} s",
            sessions.len()
        ),
    );
    let rss_sessions = rss(&cfg.watch);

    // One task per stream: open it, report, then read until cancelled.
    let lost = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(cfg.open_concurrency));
    let (tx, mut rx) = mpsc::channel::<Result<(), CallError>>(1024);
    let mut holders = JoinSet::new();
    let t1 = Instant::now();
    for s in &sessions {
        let (client, permits, tx) = (client.clone(), permits.clone(), tx.clone());
        let (lost, bytes) = (lost.clone(), bytes.clone());
        let session = s.clone();
        let timeout = cfg.timeout;
        holders.spawn(async move {
            let permit = permits.acquire_owned().await;
            let opened = match tokio::time::timeout(timeout, client.open_stream(&session)).await {
                Ok(r) => r,
                Err(_) => Err(CallError::Timeout),
            };
            drop(permit);
            let mut resp = match opened {
                Ok(resp) => {
                    let _ = tx.send(Ok(())).await;
                    resp
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            drop(tx);
            while let Ok(Some(chunk)) = resp.chunk().await {
                bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            lost.fetch_add(1, Ordering::Relaxed);
        });
    }
    drop(tx);
    let (mut streams_opened, mut streams_failed) = (0u64, 0u64);
    while let Some(r) = rx.recv().await {
        match r {
            Ok(()) => streams_opened += 1,
            Err(e) => {
                streams_failed += 1;
                errors.add("stream", &e);
            }
        }
    }
    let streams_open_s = t1.elapsed().as_secs_f64();
    progress(
        cfg,
        &format!(
            "{streams_opened} streams open, {streams_failed} failed, in {streams_open_s:.1} s; \
             holding for {:?}",
            cfg.hold
        ),
    );
    tokio::time::sleep(cfg.settle).await;
    let rss_streams = rss(&cfg.watch);
    tokio::time::sleep(cfg.hold).await;
    let rss_held = rss(&cfg.watch);
    let streams_lost = lost.load(Ordering::Relaxed);
    let streams_held = streams_opened.saturating_sub(streams_lost);
    let stream_bytes = bytes.load(Ordering::Relaxed);

    holders.abort_all();
    while holders.join_next().await.is_some() {}
    let (deletes_ok, deletes_failed) = delete_sessions(&client, cfg, sessions, &mut errors).await;
    progress(
        cfg,
        &format!("closed; {deletes_ok} sessions deleted, {deletes_failed} failed"),
    );
    tokio::time::sleep(cfg.settle).await;
    let rss_closed = rss(&cfg.watch);

    let processes = cfg
        .watch
        .iter()
        .enumerate()
        .map(|(i, (name, pid))| StreamProcMem {
            name: name.clone(),
            pid: *pid,
            rss_before_kib: rss_before[i],
            rss_sessions_kib: rss_sessions[i],
            rss_streams_kib: rss_streams[i],
            rss_held_kib: rss_held[i],
            rss_closed_kib: rss_closed[i],
            kib_per_stream: per_stream(rss_sessions[i], rss_held[i], streams_held),
            kib_per_session_and_stream: per_stream(rss_before[i], rss_held[i], streams_held),
        })
        .collect();
    Ok(StreamsReport {
        schema: 1,
        kind: "streams".into(),
        label: cfg.label.clone(),
        url: cfg.url.clone(),
        count: cfg.count,
        hold_s: cfg.hold.as_secs_f64(),
        auth: cfg.token.is_some(),
        nofile_soft: limits.soft,
        nofile_hard: limits.hard,
        sessions_opened: (cfg.count as u64).saturating_sub(sessions_failed),
        sessions_failed,
        streams_opened,
        streams_failed,
        streams_lost,
        streams_held,
        stream_bytes,
        sessions_open_s,
        streams_open_s,
        deletes_ok,
        deletes_failed,
        errors_by_kind: errors.by_kind,
        error_samples: errors.samples,
        processes,
        warnings,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl StreamsReport {
    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "streams: {} requested, {} sessions ({} failed), {} streams opened ({} failed), \
             {} held {:.0} s ({} ended early), {} bytes received",
            self.count,
            self.sessions_opened,
            self.sessions_failed,
            self.streams_opened,
            self.streams_failed,
            self.streams_held,
            self.hold_s,
            self.streams_lost,
            self.stream_bytes
        );
        let _ = writeln!(
            t,
            "opening: sessions {:.1} s, streams {:.1} s; deleted {} ({} failed); \
             RLIMIT_NOFILE {} (hard {})",
            self.sessions_open_s,
            self.streams_open_s,
            self.deletes_ok,
            self.deletes_failed,
            self.nofile_soft,
            self.nofile_hard
        );
        for p in &self.processes {
            let _ = writeln!(
                t,
                "{} (pid {}): RSS MiB before {:.1}, sessions {:.1}, streams {:.1}, held {:.1}, \
                 closed {:.1}; KiB per stream {}, per session+stream {}",
                p.name,
                p.pid,
                mib(p.rss_before_kib),
                mib(p.rss_sessions_kib),
                mib(p.rss_streams_kib),
                mib(p.rss_held_kib),
                mib(p.rss_closed_kib),
                p.kib_per_stream
                    .map_or_else(|| "–".into(), |v| format!("{v:.1}")),
                p.kib_per_session_and_stream
                    .map_or_else(|| "–".into(), |v| format!("{v:.1}")),
            );
        }
        for (k, n) in &self.errors_by_kind {
            let sample = self.error_samples.get(k).map(String::as_str).unwrap_or("");
            let _ = writeln!(t, "error {k}: {n} (e.g. {sample})");
        }
        for w in &self.warnings {
            let _ = writeln!(t, "warning: {w}");
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_per_stream() {
        assert_eq!(fd_budget(1000, 64), 1000 + 64 + FD_RESERVE);
        assert_eq!(per_stream(1000, 3000, 100), Some(20.0));
        assert_eq!(per_stream(3000, 1000, 100), Some(-20.0));
        assert_eq!(per_stream(1000, 3000, 0), None);
    }

    #[test]
    fn errors_are_counted_by_phase() {
        let mut e = Errors::default();
        e.add("stream", &CallError::Timeout);
        e.add("stream", &CallError::Timeout);
        e.add(
            "session",
            &CallError::Http {
                status: 401,
                jsonrpc: None,
            },
        );
        assert_eq!(e.by_kind.get("stream_timeout"), Some(&2));
        assert_eq!(e.by_kind.get("session_http_401"), Some(&1));
        assert_eq!(
            e.samples.get("session_http_401").map(String::as_str),
            Some("HTTP 401")
        );
    }

    #[test]
    fn rejects_empty_runs() {
        let cfg = StreamsConfig {
            url: "http://127.0.0.1:1/mcp".into(),
            count: 0,
            hold: Duration::from_secs(1),
            settle: Duration::ZERO,
            token: None,
            ca_file: None,
            open_concurrency: 8,
            timeout: Duration::from_secs(1),
            watch: vec![],
            label: None,
            progress: false,
        };
        assert!(cfg.validate().is_err());
        let ok = StreamsConfig { count: 5, ..cfg };
        assert!(ok.validate().is_ok());
    }
}
