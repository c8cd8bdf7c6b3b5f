//! Runs a load test: opens sessions, drives the closed or open loop, and
//! collects statistics for the measured window (after the warm-up).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::mcp::{CallError, McpClient, Protocol, Session};
use crate::procstat::{self, ProcUsage};
use crate::scheduler::{self, LagStats, OpenSchedule, TokioClock};
use crate::stats::Stats;
use crate::workload::{Mix, Op, Requests};

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadMode {
    /// `concurrency` workers, each sending its next request when the
    /// previous one is answered.
    Closed {
        /// Number of workers.
        concurrency: usize,
    },
    /// Requests sent at a fixed rate regardless of answers.
    Open {
        /// Requests per second.
        rate: f64,
    },
}

/// A validated run description.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// MCP endpoint.
    pub url: String,
    /// Closed or open loop.
    pub mode: LoadMode,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Sessions opened up front (2025 protocol).
    pub sessions: usize,
    /// Operation mix.
    pub mix: Mix,
    /// Text size of the large call.
    pub payload_bytes: usize,
    /// Bearer token.
    pub token: Option<String>,
    /// CA certificates (PEM) trusted for an https:// URL, besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// Protocol revision.
    pub protocol: Protocol,
    /// Per-operation timeout.
    pub timeout: Duration,
    /// Open loop: most requests in flight at once.
    pub max_in_flight: usize,
    /// Open loop: lag beyond which a request counts as sent late.
    pub late_tolerance: Duration,
    /// Print a progress line every second on stderr.
    pub progress_line: bool,
    /// Free-form label copied into reports.
    pub label: Option<String>,
    /// Processes whose CPU and memory to report (`name`, `pid`).
    pub watch: Vec<(String, u32)>,
}

impl RunConfig {
    /// Check the combination of options.
    pub fn validate(&self) -> Result<(), String> {
        match self.mode {
            LoadMode::Closed { concurrency: 0 } => {
                return Err("--concurrency must be at least 1".into())
            }
            LoadMode::Open { rate } => {
                OpenSchedule::new(rate)?;
            }
            LoadMode::Closed { .. } => {}
        }
        if self.duration.is_zero() {
            return Err("--duration must be above 0".into());
        }
        if self.sessions == 0 {
            return Err("--sessions must be at least 1".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > Semaphore::MAX_PERMITS.min(1 << 20) {
            return Err("--max-in-flight must be between 1 and 1048576".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be above 0".into());
        }
        if self.protocol.stateless() && self.mix.weight(Op::Churn) > 0 {
            return Err(format!(
                "the churn operation opens and deletes sessions, which protocol {} does not have; set churn=0",
                self.protocol
            ));
        }
        Ok(())
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Requests whose (intended) start fell in the measured window.
    pub stats: Stats,
    /// Open loop: dispatch lag in the measured window.
    pub lag: Option<LagStats>,
    /// Open loop: requests the schedule intended in the measured window.
    pub intended: Option<u64>,
    /// From the start of the measured window to the last answer recorded.
    pub elapsed: Duration,
    /// Sessions opened up front.
    pub sessions_opened: usize,
    /// Watched processes.
    pub watch: Vec<ProcUsage>,
    /// Warnings (e.g. a watched process could not be read).
    pub warnings: Vec<String>,
}

/// Live counters for the progress line.
#[derive(Debug, Default)]
struct Live {
    done: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
}

struct Ctx {
    client: McpClient,
    requests: Requests,
    mix: Mix,
    timeout: Duration,
    live: Live,
    pick: AtomicU64,
}

/// A completed operation.
#[derive(Debug, Clone, Copy)]
struct Done {
    /// Progress notifications seen.
    notifications: u32,
    /// When the answer arrived.
    answered_at: Instant,
    /// When the response body ended (`None`: not in time).
    ended_at: Option<Instant>,
}

/// Result of one operation.
type OpResult = Result<Done, CallError>;

impl Ctx {
    async fn exec(&self, op: Op, k: u64, session: &Session) -> OpResult {
        let work = async {
            match self.requests.for_op(op, k) {
                Some(spec) => self.client.call(session, &spec).await.map(|r| Done {
                    notifications: r.notifications,
                    answered_at: r.answered_at,
                    ended_at: r.ended_at,
                }),
                None => {
                    let s = self.client.initialize().await?;
                    let called = self.client.call(&s, &self.requests.small(k)).await;
                    let deleted = self.client.delete(&s).await;
                    let reply = called?;
                    deleted?;
                    Ok(Done {
                        notifications: reply.notifications,
                        answered_at: Instant::now(),
                        ended_at: reply.ended_at.map(|e| e.max(reply.answered_at)),
                    })
                }
            }
        };
        self.live.in_flight.fetch_add(1, Ordering::Relaxed);
        let res = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout),
        };
        self.live.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.live.done.fetch_add(1, Ordering::Relaxed);
        if res.is_err() {
            self.live.errors.fetch_add(1, Ordering::Relaxed);
        }
        res
    }
}

fn record(
    stats: &mut Stats,
    op: Op,
    res: OpResult,
    origin: Instant,
    sent: Option<Instant>,
) -> Option<Instant> {
    match res {
        Ok(done) => {
            let at = done.answered_at;
            let latency = at.saturating_duration_since(origin);
            let service = sent.map(|s| at.saturating_duration_since(s));
            stats.record_ok(op, latency, service, done.notifications);
            if op != Op::Churn {
                stats.record_body_end(done.ended_at.map(|e| e.saturating_duration_since(at)));
            }
            Some(at)
        }
        Err(e) => {
            stats.record_error(op, &e.kind(), || e.to_string());
            None
        }
    }
}

async fn open_sessions(client: &McpClient, n: usize) -> Result<Vec<Session>, String> {
    if client.protocol().stateless() {
        return Ok(vec![Session::stateless(client.protocol())]);
    }
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let s = client
            .initialize()
            .await
            .map_err(|e| format!("cannot open session {} of {n}: {e}", i + 1))?;
        sessions.push(s);
    }
    Ok(sessions)
}

async fn close_sessions(client: &McpClient, sessions: &[Session]) {
    for s in sessions {
        let _ = tokio::time::timeout(Duration::from_secs(2), client.delete(s)).await;
    }
}

fn spawn_progress_line(
    ctx: Arc<Ctx>,
    start: Instant,
    warmup: Duration,
    end: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = 0u64;
        loop {
            tick.tick().await;
            let t = start.elapsed();
            let done = ctx.live.done.load(Ordering::Relaxed);
            let phase = if t < warmup {
                "warmup"
            } else if t < end {
                "measure"
            } else {
                "drain"
            };
            let line = format!(
                "[{:>6.1}s] {phase:<7} done={done} rate={}/s errors={} in_flight={}",
                t.as_secs_f64(),
                done - last,
                ctx.live.errors.load(Ordering::Relaxed),
                ctx.live.in_flight.load(Ordering::Relaxed),
            );
            last = done;
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    })
}

/// Samples watched processes at the start and end of the measured window.
struct Watcher {
    procs: Vec<(String, u32, Option<procstat::ProcSample>)>,
    warnings: Vec<String>,
}

impl Watcher {
    fn begin(watch: &[(String, u32)]) -> Watcher {
        let mut warnings = Vec::new();
        let procs = watch
            .iter()
            .map(|(name, pid)| {
                let s = match procstat::sample(*pid) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        warnings.push(format!("watch {name}: {e}"));
                        None
                    }
                };
                (name.clone(), *pid, s)
            })
            .collect();
        Watcher { procs, warnings }
    }

    fn end(mut self, window_secs: f64, requests: u64) -> (Vec<ProcUsage>, Vec<String>) {
        let mut out = Vec::new();
        for (name, pid, before) in &self.procs {
            let Some(before) = before else { continue };
            match procstat::sample(*pid) {
                Ok(after) => out.push(procstat::usage(
                    name,
                    *pid,
                    *before,
                    after,
                    window_secs,
                    requests,
                )),
                Err(e) => self.warnings.push(format!("watch {name}: {e}")),
            }
        }
        (out, self.warnings)
    }
}

/// Run the load test described by `cfg`.
pub async fn run(cfg: &RunConfig) -> Result<RunOutcome, String> {
    cfg.validate()?;
    let client = McpClient::new(
        &cfg.url,
        cfg.token.as_deref(),
        cfg.protocol,
        cfg.ca_file.as_deref(),
    )?;
    let sessions = open_sessions(&client, cfg.sessions).await?;
    let sessions_opened = if cfg.protocol.stateless() {
        0
    } else {
        sessions.len()
    };
    let ctx = Arc::new(Ctx {
        client,
        requests: Requests::new(cfg.payload_bytes),
        mix: cfg.mix.clone(),
        timeout: cfg.timeout,
        live: Live::default(),
        pick: AtomicU64::new(0),
    });
    let sessions: Arc<[Session]> = sessions.into();
    let start = Instant::now();
    let measure_from = cfg.warmup;
    let end = cfg.warmup + cfg.duration;
    let progress = cfg
        .progress_line
        .then(|| spawn_progress_line(ctx.clone(), start, measure_from, end));

    // Sample watched processes when the measured window opens and closes.
    let watch = cfg.watch.clone();
    let watcher = tokio::spawn(async move {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + measure_from)).await;
        let w = Watcher::begin(&watch);
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + end)).await;
        w
    });

    let (stats, lag, intended, last_answer) = match cfg.mode {
        LoadMode::Closed { concurrency } => {
            let (stats, last) =
                closed_loop(&ctx, &sessions, concurrency, start, measure_from, end).await;
            (stats, None, None, last)
        }
        LoadMode::Open { rate } => {
            let schedule = OpenSchedule::new(rate)?;
            let (stats, lag, last) = open_loop(&ctx, &sessions, schedule, cfg, start).await;
            let intended = schedule.count_before(end) - schedule.count_before(measure_from);
            (stats, Some(lag), Some(intended), last)
        }
    };
    let elapsed = last_answer
        .map(|t| t.saturating_duration_since(start + measure_from))
        .unwrap_or(cfg.duration)
        .max(cfg.duration);
    let watcher = watcher
        .await
        .map_err(|e| format!("process watcher failed: {e}"))?;
    let (watch, warnings) = watcher.end(elapsed.as_secs_f64(), stats.requests());
    if let Some(p) = progress {
        p.abort();
    }
    close_sessions(&ctx.client, &sessions).await;
    Ok(RunOutcome {
        stats,
        lag,
        intended,
        elapsed,
        sessions_opened,
        watch,
        warnings,
    })
}

async fn closed_loop(
    ctx: &Arc<Ctx>,
    sessions: &Arc<[Session]>,
    concurrency: usize,
    start: Instant,
    measure_from: Duration,
    end: Duration,
) -> (Stats, Option<Instant>) {
    let measure_at = start + measure_from;
    let end_at = start + end;
    let mut handles = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let ctx = ctx.clone();
        let session = sessions[w % sessions.len()].clone();
        handles.push(tokio::spawn(async move {
            let mut stats = Stats::new();
            let mut last: Option<Instant> = None;
            loop {
                let t0 = Instant::now();
                if t0 >= end_at {
                    break;
                }
                let k = ctx.pick.fetch_add(1, Ordering::Relaxed);
                let op = ctx.mix.pick(k);
                let res = ctx.exec(op, k, &session).await;
                if t0 >= measure_at {
                    if let Some(at) = record(&mut stats, op, res, t0, None) {
                        last = last.max(Some(at));
                    }
                }
            }
            (stats, last)
        }));
    }
    let mut stats = Stats::new();
    let mut last = None;
    for h in handles {
        if let Ok((s, l)) = h.await {
            stats.merge(&s);
            last = last.max(l);
        }
    }
    (stats, last)
}

async fn open_loop(
    ctx: &Arc<Ctx>,
    sessions: &Arc<[Session]>,
    schedule: OpenSchedule,
    cfg: &RunConfig,
    start: Instant,
) -> (Stats, LagStats, Option<Instant>) {
    let shared = Arc::new(Mutex::new((Stats::new(), None::<Instant>)));
    let sem = Arc::new(Semaphore::new(cfg.max_in_flight));
    let clock = TokioClock::new(tokio::time::Instant::from_std(start));
    let measure_from = cfg.warmup;
    let outcome = scheduler::drive(
        &clock,
        schedule,
        measure_from,
        cfg.warmup + cfg.duration,
        cfg.late_tolerance,
        |k, intended| {
            let ctx = ctx.clone();
            let sem = sem.clone();
            let shared = shared.clone();
            let session = sessions[(k % sessions.len() as u64) as usize].clone();
            async move {
                let Ok(permit) = sem.acquire_owned().await else {
                    return;
                };
                let sent = Instant::now();
                tokio::spawn(async move {
                    let _permit = permit;
                    let op = ctx.mix.pick(k);
                    let res = ctx.exec(op, k, &session).await;
                    if intended >= measure_from {
                        let mut guard = match shared.lock() {
                            Ok(g) => g,
                            Err(poisoned) => poisoned.into_inner(),
                        };
                        let (stats, last) = &mut *guard;
                        if let Some(at) = record(stats, op, res, start + intended, Some(sent)) {
                            *last = (*last).max(Some(at));
                        }
                    }
                });
            }
        },
    )
    .await;
    // Wait for the requests still in flight (each is bounded by the timeout).
    let all = u32::try_from(cfg.max_in_flight).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(cfg.timeout + Duration::from_secs(1), sem.acquire_many(all)).await;
    let (stats, last) = match shared.lock() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    (stats, outcome.lag, last)
}
