//! One stdio MCP server process of the bridge: started with its own process
//! group, fed newline-delimited JSON-RPC on stdin, its stdout lines routed to
//! the HTTP streams that wait for them, its stderr written to the log.
//!
//! Every request the bridge forwards gets a bridge-unique numeric id (and a
//! bridge-unique progress token), so clients sharing one child cannot collide;
//! answers are mapped back before they leave.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use crate::stdio_proto::{self as proto, Kind};

/// Messages queued for one HTTP stream before it is considered stuck.
pub const STREAM_QUEUE: usize = 512;
/// Messages kept for a session's GET stream while none is open.
pub const BACKLOG: usize = 256;
/// Bytes of a bad line shown in the log.
const EXCERPT: usize = 200;

/// How to start a child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// The complete environment of the child (values are never logged).
    pub env: Vec<(String, String)>,
    /// RLIMIT_AS in bytes.
    pub rlimit_as: Option<u64>,
    /// RLIMIT_CPU in seconds.
    pub rlimit_cpu: Option<u64>,
    /// Longest accepted stdout line; a longer one ends the child.
    pub max_line_bytes: usize,
    /// Non-JSON-RPC stdout lines tolerated before the child is ended.
    pub max_bad_lines: u64,
    /// Time between SIGTERM and SIGKILL when the child is stopped.
    pub stop_grace: Duration,
}

/// Names written with every log line about a child.
#[derive(Debug, Clone)]
pub struct Label {
    pub pool: Arc<str>,
    pub worker: Arc<str>,
    pub session: String,
}

/// Where messages for one client go: its open GET stream or a bounded backlog.
#[derive(Default)]
pub struct Sink {
    inner: Mutex<SinkInner>,
}

#[derive(Default)]
struct SinkInner {
    get: Option<mpsc::Sender<Value>>,
    backlog: VecDeque<Value>,
}

impl Sink {
    /// Open (or replace) the GET stream; the backlog is delivered first.
    pub fn open(&self) -> mpsc::Receiver<Value> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut s = lock(&self.inner);
        while let Some(v) = s.backlog.pop_front() {
            if tx.try_send(v).is_err() {
                break;
            }
        }
        s.get = Some(tx);
        rx
    }

    /// End the GET stream, if any.
    pub fn close(&self) {
        lock(&self.inner).get = None;
    }

    fn deliver(&self, v: Value, label: &Label) {
        let mut s = lock(&self.inner);
        if let Some(tx) = &s.get {
            match tx.try_send(v) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(pool = %label.pool, worker = %label.worker, session = %label.session,
                        "GET stream does not keep up; closing it");
                    s.get = None;
                }
                Err(mpsc::error::TrySendError::Closed(v)) => {
                    s.get = None;
                    push_backlog(&mut s.backlog, v);
                }
            }
        } else {
            push_backlog(&mut s.backlog, v);
        }
    }
}

fn push_backlog(b: &mut VecDeque<Value>, v: Value) {
    if b.len() >= BACKLOG {
        b.pop_front();
    }
    b.push_back(v);
}

/// Lock a mutex, recovering from poisoning (the data stays consistent: every
/// critical section here is a few map operations).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Pending {
    client_id: Value,
    tx: mpsc::Sender<Value>,
    owner: u64,
    token: Option<u64>,
    stateless: bool,
}

#[derive(Default)]
struct Routes {
    /// Bridge id → the stream waiting for the answer. Ordered: the oldest
    /// request in flight is the first entry.
    pending: BTreeMap<u64, Pending>,
    /// Bridge progress token → (client's token, bridge id of its request).
    progress: HashMap<u64, (Value, u64)>,
    /// (owner, client id key) → bridge id, to map `notifications/cancelled`.
    by_client: HashMap<(u64, String), u64>,
    /// Sessions fed by this child (one, or many for a shared child).
    owners: BTreeMap<u64, Arc<Sink>>,
}

/// A running child.
pub struct Child {
    pub label: Label,
    pub pid: u32,
    stdin: mpsc::Sender<Vec<u8>>,
    routes: Mutex<Routes>,
    next: AtomicU64,
    stop: watch::Sender<bool>,
    exited: watch::Receiver<bool>,
}

/// Why a message could not be sent to a child.
#[derive(Debug)]
pub struct Gone;

impl Child {
    /// Start a child. The permit (a slot of the bridge's child limit) is held
    /// until the process has exited.
    pub fn start(
        spec: &ChildSpec,
        label: Label,
        permit: OwnedSemaphorePermit,
    ) -> std::io::Result<Arc<Child>> {
        let mut cmd = tokio::process::Command::new(&spec.program);
        cmd.args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        #[cfg(unix)]
        limits::apply(&mut cmd, spec.rlimit_as, spec.rlimit_cpu);
        let mut proc = cmd.spawn()?;
        let pid = proc.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (proc.stdin.take(), proc.stdout.take(), proc.stderr.take())
        else {
            return Err(std::io::Error::other("child pipes missing"));
        };
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(256);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (exit_tx, exit_rx) = watch::channel(false);
        let child = Arc::new(Child {
            label,
            pid,
            stdin: in_tx,
            routes: Mutex::new(Routes::default()),
            next: AtomicU64::new(1),
            stop: stop_tx,
            exited: exit_rx,
        });
        tracing::info!(pool = %child.label.pool, worker = %child.label.worker,
            session = %child.label.session, pid, program = %spec.program, "stdio child started");
        tokio::spawn(write_stdin(stdin, in_rx));
        tokio::spawn(log_stderr(BufReader::new(stderr), child.label.clone()));
        tokio::spawn(read_stdout(
            BufReader::new(stdout),
            Arc::downgrade(&child),
            spec.max_line_bytes,
            spec.max_bad_lines,
            child.label.clone(),
        ));
        let weak = Arc::downgrade(&child);
        let grace = spec.stop_grace;
        let label = child.label.clone();
        tokio::spawn(async move {
            let status = supervise(&mut proc, stop_rx, grace, pid).await;
            tracing::info!(pool = %label.pool, worker = %label.worker, session = %label.session,
                pid, status = %status, "stdio child exited");
            if let Some(c) = weak.upgrade() {
                c.fail_all("the stdio server exited");
            }
            let _ = exit_tx.send(true);
            drop(permit);
        });
        Ok(child)
    }

    /// Resolves once the process has exited.
    pub async fn wait_exit(&self) {
        let mut rx = self.exited.clone();
        let _ = rx.wait_for(|e| *e).await;
    }

    /// Whether the process has exited.
    pub fn is_exited(&self) -> bool {
        *self.exited.borrow()
    }

    /// Ask the process (group) to stop: SIGTERM, SIGKILL after the grace.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Let `owner` receive this child's unsolicited messages.
    pub fn subscribe(&self, owner: u64, sink: Arc<Sink>) {
        lock(&self.routes).owners.insert(owner, sink);
    }

    /// Stop delivering to `owner`; its requests in flight are forgotten.
    pub fn unsubscribe(&self, owner: u64) {
        let mut r = lock(&self.routes);
        r.owners.remove(&owner);
        let ids: Vec<u64> = r
            .pending
            .iter()
            .filter(|(_, p)| p.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            r.forget(id);
        }
    }

    /// Requests of `owner` still waiting for an answer.
    pub fn in_flight(&self, owner: u64) -> usize {
        lock(&self.routes)
            .pending
            .values()
            .filter(|p| p.owner == owner)
            .count()
    }

    /// Forward a client's request. Its messages (related notifications and
    /// requests, then the answer with the client's id) arrive on the returned
    /// receiver, which ends after the answer.
    pub async fn request(
        &self,
        owner: u64,
        mut msg: Value,
        stateless: bool,
    ) -> Result<mpsc::Receiver<Value>, Gone> {
        if self.is_exited() {
            return Err(Gone);
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let client_id = msg.get("id").cloned().unwrap_or(Value::Null);
        {
            let mut r = lock(&self.routes);
            let token = proto::progress_token(&msg).cloned().map(|orig| {
                let t = self.next.fetch_add(1, Ordering::Relaxed);
                r.progress.insert(t, (orig, id));
                t
            });
            if let Some(t) = token {
                proto::set_progress_token(&mut msg, Value::from(t));
            }
            r.by_client.insert((owner, proto::id_key(&client_id)), id);
            r.pending.insert(
                id,
                Pending {
                    client_id,
                    tx,
                    owner,
                    token,
                    stateless,
                },
            );
        }
        proto::set_id(&mut msg, Value::from(id));
        if self.send_raw(&msg).await.is_err() {
            lock(&self.routes).forget(id);
            return Err(Gone);
        }
        Ok(rx)
    }

    /// Forward a notification or a response of `owner` (ids of cancellations
    /// are mapped to the bridge's ids).
    pub async fn notify(&self, owner: u64, mut msg: Value) -> Result<(), Gone> {
        if proto::method(&msg) == Some("notifications/cancelled") {
            let mapped = proto::cancelled_request_id(&msg).and_then(|cid| {
                lock(&self.routes)
                    .by_client
                    .get(&(owner, proto::id_key(cid)))
                    .copied()
            });
            match mapped {
                Some(id) => proto::set_cancelled_request_id(&mut msg, Value::from(id)),
                // Not in flight (any more): nothing to cancel.
                None => return Ok(()),
            }
        }
        self.send_raw(&msg).await
    }

    /// Write one message to the child's stdin.
    pub async fn send_raw(&self, msg: &Value) -> Result<(), Gone> {
        let mut line = serde_json::to_vec(msg).map_err(|_| Gone)?;
        line.push(b'\n');
        self.stdin.send(line).await.map_err(|_| Gone)
    }

    /// Answer every request in flight with an error (the child is gone).
    fn fail_all(&self, why: &str) {
        let mut r = lock(&self.routes);
        let pending = std::mem::take(&mut r.pending);
        r.progress.clear();
        r.by_client.clear();
        let owners = std::mem::take(&mut r.owners);
        drop(r);
        for (_, p) in pending {
            let _ = p.tx.try_send(proto::error_response(
                p.client_id,
                proto::ERR_CHILD_EXITED,
                why,
            ));
        }
        for sink in owners.values() {
            sink.close();
        }
    }

    /// Route one message the child wrote.
    fn route(&self, mut msg: Value, kind: Kind) {
        let mut r = lock(&self.routes);
        match kind {
            Kind::Response => {
                let Some(id) = msg.get("id").and_then(Value::as_u64) else {
                    tracing::warn!(pool = %self.label.pool, worker = %self.label.worker,
                        session = %self.label.session, "stdio server answered an unknown id; dropped");
                    return;
                };
                let Some(p) = r.forget(id) else {
                    tracing::debug!(id, "answer to a request no one waits for; dropped");
                    return;
                };
                proto::set_id(&mut msg, p.client_id);
                if p.stateless {
                    proto::mark_complete(&mut msg);
                }
                // The sender is dropped here: the stream ends after this answer.
                let _ = p.tx.try_send(msg);
            }
            Kind::Notification if proto::method(&msg) == Some("notifications/progress") => {
                let target = proto::notification_progress_token(&msg)
                    .and_then(Value::as_u64)
                    .and_then(|t| r.progress.get(&t).cloned());
                match target {
                    Some((orig, id)) => {
                        proto::set_notification_progress_token(&mut msg, orig);
                        if let Some(p) = r.pending.get(&id) {
                            send_or_drop(&p.tx, msg, &self.label);
                        }
                    }
                    None => tracing::debug!("progress for a finished request; dropped"),
                }
            }
            Kind::Notification | Kind::Request => {
                // Related to the oldest request in flight when there is one;
                // otherwise unsolicited: to the sessions' GET streams.
                if let Some(p) = r.pending.values().next() {
                    send_or_drop(&p.tx, msg, &self.label);
                } else if kind == Kind::Request {
                    // A server request needs exactly one answer: one session.
                    if let Some(sink) = r.owners.values().next() {
                        sink.deliver(msg, &self.label);
                    }
                } else {
                    for sink in r.owners.values() {
                        sink.deliver(msg.clone(), &self.label);
                    }
                }
            }
        }
    }
}

impl Routes {
    fn forget(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        if let Some(t) = p.token {
            self.progress.remove(&t);
        }
        self.by_client
            .remove(&(p.owner, proto::id_key(&p.client_id)));
        Some(p)
    }
}

fn send_or_drop(tx: &mpsc::Sender<Value>, msg: Value, label: &Label) {
    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(msg) {
        tracing::warn!(pool = %label.pool, worker = %label.worker, session = %label.session,
            "client stream does not keep up; message dropped");
    }
}

async fn write_stdin(mut stdin: tokio::process::ChildStdin, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(line) = rx.recv().await {
        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
            break;
        }
    }
}

/// Result of reading one bounded line.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A whole line (without the newline) is in the buffer.
    Full,
    /// The line was longer than the limit: the buffer holds its first bytes,
    /// the rest was discarded up to the newline.
    TooLong,
    /// End of the stream.
    Eof,
}

/// Read one line into `buf` (cleared first), keeping at most `max` bytes.
pub async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if buf.is_empty() {
                Line::Eof
            } else {
                Line::Full
            });
        }
        let (chunk, used, done) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (&avail[..i], i + 1, true),
            None => (avail, avail.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            too_long = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        r.consume(used);
        if done {
            if buf.last() == Some(&b'\r') && !too_long {
                buf.pop();
            }
            return Ok(if too_long { Line::TooLong } else { Line::Full });
        }
    }
}

async fn read_stdout<R: AsyncBufRead + Unpin>(
    mut out: R,
    child: std::sync::Weak<Child>,
    max_line: usize,
    max_bad: u64,
    label: Label,
) {
    let mut buf = Vec::new();
    let mut bad = 0u64;
    loop {
        let line = match read_line_bounded(&mut out, &mut buf, max_line).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(pool = %label.pool, worker = %label.worker, session = %label.session,
                    error = %e, "cannot read the stdio server's stdout");
                break;
            }
        };
        let Some(c) = child.upgrade() else { break };
        match line {
            Line::Eof => break,
            Line::TooLong => {
                tracing::error!(pool = %label.pool, worker = %label.worker, session = %label.session,
                    limit = max_line, "stdio server wrote a line longer than the limit; stopping it");
                c.stop();
                break;
            }
            Line::Full => {}
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = serde_json::from_slice::<Value>(&buf)
            .ok()
            .and_then(|v| proto::kind(&v).map(|k| (v, k)));
        match parsed {
            Some((v, k)) => c.route(v, k),
            None => {
                bad += 1;
                tracing::warn!(pool = %label.pool, worker = %label.worker, session = %label.session,
                    line = %proto::excerpt(&buf, EXCERPT), "stdio server wrote a line that is not JSON-RPC");
                if bad > max_bad {
                    tracing::error!(pool = %label.pool, worker = %label.worker, session = %label.session,
                        bad, "stdio server floods stdout with non-JSON-RPC lines; stopping it");
                    c.stop();
                    break;
                }
            }
        }
    }
}

async fn log_stderr<R: AsyncBufRead + Unpin>(mut err: R, label: Label) {
    let mut buf = Vec::new();
    loop {
        match read_line_bounded(&mut err, &mut buf, 8 * 1024).await {
            Ok(Line::Eof) | Err(_) => break,
            Ok(Line::Full) | Ok(Line::TooLong) => {
                tracing::info!(pool = %label.pool, worker = %label.worker, session = %label.session,
                    "stderr: {}", String::from_utf8_lossy(&buf));
            }
        }
    }
}

async fn supervise(
    proc: &mut tokio::process::Child,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    pid: u32,
) -> String {
    let status = tokio::select! {
        s = proc.wait() => s,
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            signal_group(pid, Signal::Term);
            match tokio::time::timeout(grace, proc.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    signal_group(pid, Signal::Kill);
                    proc.wait().await
                }
            }
        }
    };
    // Whatever the leader did, leave no process of its group behind.
    signal_group(pid, Signal::Kill);
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

enum Signal {
    Term,
    Kill,
}

#[cfg(unix)]
fn signal_group(pid: u32, sig: Signal) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    let sig = match sig {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    // SAFETY: kill(2) with a negative pid signals the child's own process group.
    unsafe {
        libc::kill(-pid, sig);
    }
}

#[cfg(not(unix))]
fn signal_group(_pid: u32, _sig: Signal) {}

#[cfg(unix)]
mod limits {
    /// Own process group (so the whole tree is stopped), death with the
    /// bridge, and the configured rlimits.
    pub fn apply(cmd: &mut tokio::process::Command, mem: Option<u64>, cpu: Option<u64>) {
        cmd.process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid, setrlimit, _exit) run
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                #[cfg(target_os = "linux")]
                {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                }
                let _ = parent;
                if let Some(bytes) = mem {
                    let l = libc::rlimit {
                        rlim_cur: bytes as libc::rlim_t,
                        rlim_max: bytes as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(secs) = cpu {
                    let l = libc::rlimit {
                        rlim_cur: secs as libc::rlim_t,
                        rlim_max: secs as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_CPU, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<(Line, String)> {
        let mut r = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let l = read_line_bounded(&mut r, &mut buf, max)
                .await
                .expect("read");
            if l == Line::Eof {
                return out;
            }
            out.push((l, String::from_utf8_lossy(&buf).into_owned()));
        }
    }

    #[tokio::test]
    async fn lines_are_split_and_bounded() {
        let got = lines(b"ab\r\ncdefghij\nk\n\nlast", 5).await;
        assert_eq!(
            got,
            vec![
                (Line::Full, "ab".into()),
                (Line::TooLong, "cdefg".into()),
                (Line::Full, "k".into()),
                (Line::Full, "".into()),
                (Line::Full, "last".into()),
            ]
        );
    }
}
