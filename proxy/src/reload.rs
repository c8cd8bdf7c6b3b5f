//! Hot reload: the control plane's pool manager and the configuration reload.
//!
//! A reload reads the file, validates it like `mcp-proxy validate`, builds the whole new
//! runtime (sharing what did not change with the old one), starts the workers of new or
//! changed pools and waits for them, swaps the runtime in one step, then drains and stops
//! the pools that left. Requests in flight keep the runtime they started with. A broken file
//! changes nothing: the error is logged, kept for `/admin/config`, and returned.
//!
//! Triggers: SIGHUP, `POST /admin/reload`, a change of the file or of the listener's
//! certificate files (polled every second, debounced), all sent to the manager on the
//! control plane, one reload at a time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{self, GatewayConfig, PoolSource};
use crate::ratelimit::RateLimiter;
use crate::routing::discovery::{self, Members};
use crate::routing::{health, Pool};
use crate::runtime::{Runtime, Shared};
use crate::workers::supervisor;

/// What `/admin/config` shows.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// 1 for the configuration the process started with, +1 per successful reload.
    pub version: u64,
    pub source: String,
    /// Unix seconds of the last successful load.
    pub loaded_at: u64,
    /// SHA-256 of the file text in force (empty for the embedded default).
    pub sha256: String,
    /// The text in force.
    pub text: String,
    /// The last failed reload's errors, until a reload succeeds.
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    /// Fields that changed in the file but take effect only after a restart.
    pub pending_restart: Vec<String>,
}

/// A request to the manager.
pub enum ControlMsg {
    /// Reload; the answer is the new version or the errors.
    Reload {
        trigger: &'static str,
        reply: Option<oneshot::Sender<Result<u64, String>>>,
    },
    /// A pool's DNS names resolved to a new member list (routing/discovery.rs).
    Members(Members),
}

pub type ControlSender = mpsc::Sender<ControlMsg>;

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The status of the configuration the process started with.
pub fn initial_status(config: &GatewayConfig) -> ReloadStatus {
    let text = config_path(config)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| config::EMBEDDED_DEFAULT.to_string());
    ReloadStatus {
        version: 1,
        source: config.source.clone(),
        loaded_at: now_unix(),
        sha256: sha256_hex(&text),
        text,
        ..ReloadStatus::default()
    }
}

/// The file a configuration came from (`None` for the embedded default).
pub fn config_path(config: &GatewayConfig) -> Option<PathBuf> {
    (!config.source.starts_with('<')).then(|| PathBuf::from(&config.source))
}

/// A task with its own stop switch.
struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Task {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

struct PoolTasks {
    pool: Arc<Pool>,
    health: Task,
    /// One supervisor per worker slot of a spawned pool (empty for remote pools).
    slots: Vec<Task>,
    /// The DNS discovery of a remote pool with `discover`, and its task number.
    discovery: Option<(u64, Task)>,
}

impl PoolTasks {
    /// Tell every task to stop (workers get SIGTERM, then SIGKILL after the pool's grace).
    fn signal_stop(&self) {
        let _ = self.health.stop.send(true);
        for slot in &self.slots {
            let _ = slot.stop.send(true);
        }
        if let Some((_, d)) = &self.discovery {
            let _ = d.stop.send(true);
        }
    }

    /// Wait for every task to end.
    async fn join(self) {
        let _ = self.health.handle.await;
        for slot in self.slots {
            let _ = slot.handle.await;
        }
        if let Some((_, d)) = self.discovery {
            let _ = d.handle.await;
        }
    }
}
/// Owns the health checks and worker supervisors of every pool.
pub struct Manager {
    shared: Arc<Shared>,
    pools: HashMap<String, PoolTasks>,
    key_refresh: Option<JoinHandle<()>>,
    status: Arc<Mutex<ReloadStatus>>,
    /// Where discovery tasks send their member lists (the control plane's channel).
    control: Option<ControlSender>,
    /// Numbers discovery tasks, so a replaced task's late message is recognised.
    next_discovery: std::sync::atomic::AtomicU64,
}

impl Manager {
    pub fn new(shared: Arc<Shared>, status: Arc<Mutex<ReloadStatus>>) -> Manager {
        Manager {
            shared,
            pools: HashMap::new(),
            key_refresh: None,
            status,
            control: None,
            next_discovery: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The channel discovery tasks send member lists to (set before `start_all`).
    pub fn with_control(mut self, tx: ControlSender) -> Manager {
        self.control = Some(tx);
        self
    }

    /// Start the tasks of every pool of the runtime in force.
    pub fn start_all(&mut self) {
        let rt = self.shared.runtime.load_full();
        for pool in rt.pools.values() {
            self.start_pool(pool.clone());
        }
        self.restart_key_refresh(&rt);
    }

    fn start_pool(&mut self, pool: Arc<Pool>) {
        let t = self.spawn_tasks(pool);
        self.pools.insert(t.pool.name.clone(), t);
    }

    /// The health check and, for spawned pools, one supervisor per worker slot.
    fn spawn_tasks(&self, pool: Arc<Pool>) -> PoolTasks {
        let slots = (0..pool.workers.len())
            .filter_map(|slot| self.spawn_slot(&pool, slot))
            .collect();
        PoolTasks {
            health: spawn_health(pool.clone()),
            discovery: self.spawn_discovery(&pool),
            pool,
            slots,
        }
    }

    /// The DNS discovery task of a remote pool with `discover`.
    fn spawn_discovery(&self, pool: &Pool) -> Option<(u64, Task)> {
        let cfg = pool.config.discovery.clone()?;
        let tx = self.control.clone()?;
        let id = self
            .next_discovery
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (stop, mut stop_rx) = watch::channel(false);
        let run = discovery::run(pool.name.clone(), id, cfg, tx, self.shared.metrics.clone());
        let handle = tokio::spawn(async move {
            tokio::select! {
                _ = run => {}
                _ = stop_rx.wait_for(|s| *s) => {}
            }
        });
        Some((id, Task { stop, handle }))
    }

    fn spawn_slot(&self, pool: &Arc<Pool>, slot: usize) -> Option<Task> {
        let PoolSource::Spawn(spec) = &pool.config.source else {
            return None;
        };
        let (stop, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(supervisor::run_slot(
            pool.clone(),
            slot,
            spec.clone(),
            self.shared.metrics.clone(),
            stop_rx,
        ));
        Some(Task { stop, handle })
    }

    /// Tasks for `new`, a changed pool that shares workers with `old`: supervisors of kept
    /// workers go on, new slots get new ones, and the slots beyond the new count are returned
    /// to be drained and stopped with their workers.
    fn reconcile_tasks(
        &self,
        mut old: PoolTasks,
        new: Arc<Pool>,
    ) -> (PoolTasks, Vec<(Arc<crate::routing::Worker>, Task)>) {
        let mut slots = Vec::new();
        let mut leaving = Vec::new();
        let kept_slots = if matches!(new.config.source, PoolSource::Spawn(_)) {
            new.workers.len().min(old.slots.len())
        } else {
            0
        };
        for (i, t) in old.slots.drain(..).enumerate() {
            if i < kept_slots {
                slots.push(t);
            } else if let Some(w) = old.pool.workers.get(i) {
                leaving.push((w.clone(), t));
            }
        }
        for slot in kept_slots..new.workers.len() {
            if let Some(t) = self.spawn_slot(&new, slot) {
                slots.push(t);
            }
        }
        // The old health check is replaced by one over the new worker list.
        tokio::spawn(old.health.stop());
        // Discovery goes on (with what it knows) while its names and resolver stay the same.
        let discovery = match old.discovery {
            Some(d) if old.pool.config.discovery == new.config.discovery => Some(d),
            other => {
                if let Some((_, t)) = other {
                    tokio::spawn(t.stop());
                }
                self.spawn_discovery(&new)
            }
        };
        (
            PoolTasks {
                health: spawn_health(new.clone()),
                discovery,
                pool: new,
                slots,
            },
            leaving,
        )
    }

    fn restart_key_refresh(&mut self, rt: &Arc<Runtime>) {
        if let Some(h) = self.key_refresh.take() {
            h.abort();
        }
        self.key_refresh = Some(tokio::spawn(crate::control::refresh_key_sets(rt.clone())));
    }

    /// Stop every pool's workers (shutdown) and wait for them.
    pub async fn stop_all(&mut self) {
        let tasks: Vec<PoolTasks> = self.pools.drain().map(|(_, t)| t).collect();
        for t in &tasks {
            t.signal_stop();
        }
        for t in tasks {
            t.join().await;
        }
    }

    /// Reload the configuration file. Returns the new version, or every error.
    pub async fn reload(&mut self, trigger: &str) -> Result<u64, String> {
        let out = self.try_reload().await;
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        match &out {
            Ok(v) => {
                tracing::info!(trigger, version = v, pending_restart = ?st.pending_restart, "configuration reloaded");
                self.shared.logship.audit(
                    "config_reloaded",
                    None,
                    None,
                    None,
                    serde_json::json!({
                        "trigger": trigger,
                        "version": v,
                        "sha256": st.sha256,
                        "pending_restart": st.pending_restart,
                    }),
                );
            }
            Err(e) => {
                tracing::error!(trigger, errors = %e, "configuration reload refused; the previous configuration stays in force");
                st.last_error = Some(e.clone());
                st.last_error_at = Some(now_unix());
                self.shared.logship.audit(
                    "config_reload_refused",
                    None,
                    None,
                    None,
                    serde_json::json!({ "trigger": trigger, "errors": e }),
                );
            }
        }
        out
    }

    async fn try_reload(&mut self) -> Result<u64, String> {
        let old = self.shared.runtime.load_full();
        let path = config_path(&old.config).ok_or(
            "the embedded default configuration cannot be reloaded: start with --config FILE",
        )?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: cannot read the file: {e}", path.display()))?;
        let mut cfg = config::parse(&text, &old.config.source).map_err(|e| e.to_string())?;
        let pending = keep_restart_only(&mut cfg, &old.config);
        keep_discovered_members(&mut cfg, &old.config);
        let new = Arc::new(Runtime::rebuild(cfg, &old).map_err(|e| e.to_string())?);
        self.install(old, new).await;

        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.version += 1;
        st.loaded_at = now_unix();
        st.sha256 = sha256_hex(&text);
        st.text = text;
        st.last_error = None;
        st.last_error_at = None;
        st.pending_restart = pending;
        Ok(st.version)
    }

    /// Apply a discovered member list: the runtime is rebuilt with the pool's new members
    /// and installed like a reload's, so kept addresses keep their workers.
    pub async fn apply_members(&mut self, m: Members) {
        let current = self
            .pools
            .get(&m.pool)
            .and_then(|t| t.discovery.as_ref())
            .map(|(id, _)| *id);
        if current != Some(m.task) {
            return; // from a task that was replaced meanwhile
        }
        let old = self.shared.runtime.load_full();
        let Some(d) = old
            .pools
            .get(&m.pool)
            .and_then(|p| p.config.discovery.as_ref())
        else {
            return;
        };
        let members = discovery::merge(&d.fixed, &m.discovered);
        let mut cfg = (*old.config).clone();
        let Some(pc) = cfg.pools.iter_mut().find(|p| p.name == m.pool) else {
            return;
        };
        if pc.source == PoolSource::Remote(members.clone()) {
            return;
        }
        pc.source = PoolSource::Remote(members.clone());
        match Runtime::rebuild(cfg, &old) {
            Ok(new) => {
                tracing::info!(pool = %m.pool, members = ?members, "DNS discovery: pool members changed");
                self.install(old, Arc::new(new)).await;
            }
            Err(e) => {
                tracing::error!(pool = %m.pool, error = %e, "DNS discovery: cannot rebuild the runtime; members unchanged");
            }
        }
    }

    /// Put `new` in force in place of `old`: start the tasks of new and changed pools, wait
    /// for them, swap, then drain and stop what left.
    async fn install(&mut self, old: Arc<Runtime>, new: Arc<Runtime>) {
        let limits_changed = new.config.rate_limits != old.config.rate_limits;

        // Start what is new, and wait (each pool's ready timeout at most) until it serves.
        // A changed pool that keeps some workers (same command, or remote addresses still
        // listed) is reconciled: kept workers go on, added ones start, the others leave.
        // Any other changed pool is a new one under the same name: both run meanwhile.
        let mut fresh = Vec::new();
        let mut leaving = Vec::new();
        for (name, pool) in &new.pools {
            let old_pool = old.pools.get(name);
            if old_pool.is_some_and(|o| Arc::ptr_eq(o, pool)) {
                continue;
            }
            let shares = old_pool.is_some_and(|o| {
                pool.workers
                    .iter()
                    .any(|w| o.workers.iter().any(|ow| Arc::ptr_eq(w, ow)))
                    // Remote pools own no processes: always reconciled, discovery kept.
                    || (is_remote(o) && is_remote(pool))
            });
            if let Some(o) = old_pool.filter(|o| is_remote(o)) {
                for w in o
                    .workers
                    .iter()
                    .filter(|w| !pool.workers.iter().any(|n| Arc::ptr_eq(w, n)))
                {
                    tracing::info!(pool = %name, worker = %w.id, inflight = w.inflight(), "remote worker left the pool; requests in flight finish");
                    if !pool.workers.iter().any(|n| n.id == w.id) {
                        self.shared.metrics.forget_worker(name, &w.id);
                    }
                }
            }
            match self.pools.remove(name) {
                Some(t) if shares => {
                    let (tasks, gone) = self.reconcile_tasks(t, pool.clone());
                    fresh.push(tasks);
                    leaving.extend(gone);
                }
                Some(t) => {
                    // Put back: swept (drained and stopped) after the swap.
                    self.pools.insert(name.clone(), t);
                    fresh.push(self.spawn_tasks(pool.clone()));
                }
                None => fresh.push(self.spawn_tasks(pool.clone())),
            }
        }
        for t in &fresh {
            wait_serving(&t.pool).await;
        }
        if limits_changed {
            let limiter = RateLimiter::new(
                &new.config.rate_limits,
                self.shared.ratelimit_redis.clone(),
                &self.shared.metrics,
            );
            self.shared.ratelimit.store(Arc::new(limiter));
        }
        if !Arc::ptr_eq(&new.verifier, &old.verifier) {
            self.restart_key_refresh(&new);
        }
        self.shared.runtime.store(new.clone());
        if new.tls.as_ref().map(Arc::as_ptr) != old.tls.as_ref().map(Arc::as_ptr) {
            tracing::info!(
                tls = new.tls.is_some(),
                "the listener's TLS settings changed; new connections use them"
            );
            crate::tls::note_certificate(new.tls.as_deref(), &self.shared.metrics);
        }

        // Pools no longer in force: drain, then stop, in the background.
        let gone: Vec<String> = self
            .pools
            .iter()
            .filter(|(name, t)| {
                !new.pools
                    .get(*name)
                    .is_some_and(|p| Arc::ptr_eq(p, &t.pool))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(t) = self.pools.remove(&name) {
                tokio::spawn(drain_and_stop(t, old.config.shutdown_grace));
            }
        }
        for t in fresh {
            // Registered after the sweep above so the new tasks are not mistaken for old.
            self.pools.insert(t.pool.name.clone(), t);
        }
        let grace = old.config.shutdown_grace;
        for (worker, task) in leaving {
            tokio::spawn(async move {
                let start = Instant::now();
                while worker.inflight() > 0 && start.elapsed() < grace {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tracing::info!(worker = %worker.id, "worker left the configuration; stopping it");
                task.stop().await;
            });
        }
    }
}

fn is_remote(p: &Pool) -> bool {
    matches!(p.config.source, PoolSource::Remote(_))
}

/// A reloaded file lists only a pool's fixed `upstreams`: a pool whose DNS names stay the
/// same keeps the members discovered so far (its discovery task goes on and corrects them).
fn keep_discovered_members(new: &mut GatewayConfig, old: &GatewayConfig) {
    for pc in &mut new.pools {
        let Some(d) = &pc.discovery else { continue };
        let Some(op) = old.pools.iter().find(|o| o.name == pc.name) else {
            continue;
        };
        let (Some(od), PoolSource::Remote(members)) = (&op.discovery, &op.source) else {
            continue;
        };
        if od.targets == d.targets && od.resolver == d.resolver {
            let found = discovery::discovered_part(&od.fixed, members);
            pc.source = PoolSource::Remote(discovery::merge(&d.fixed, &found));
        }
    }
}

/// Fields read once at start: a change is reported, and the value in force is kept.
fn keep_restart_only(new: &mut GatewayConfig, old: &GatewayConfig) -> Vec<String> {
    let mut pending = Vec::new();
    macro_rules! keep {
        ($($field:ident),*) => {$(
            if new.$field != old.$field {
                pending.push(stringify!($field).to_string());
                new.$field = old.$field.clone();
            }
        )*};
    }
    keep!(
        listen,
        admin,
        threads,
        database,
        redis,
        identity,
        public_url,
        session_key_env,
        shutdown_grace,
        upgrade_sock,
        logging
    );
    if new.rate_limits.redis_timeout != old.rate_limits.redis_timeout {
        pending.push("rate_limits.redis_timeout".into());
        new.rate_limits.redis_timeout = old.rate_limits.redis_timeout;
    }
    pending
}

/// Wait until a new pool has a healthy worker (its spawn ready timeout, or 10 s, at most).
async fn wait_serving(pool: &Pool) {
    if pool.workers.is_empty() {
        return; // a discovered pool whose names did not resolve yet: nothing to wait for
    }
    let limit = match &pool.config.source {
        PoolSource::Spawn(s) => s.ready_timeout,
        PoolSource::Remote(_) => Duration::from_secs(10),
    };
    let start = Instant::now();
    while pool.healthy_count() == 0 && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drain_and_stop(t: PoolTasks, grace: Duration) {
    let start = Instant::now();
    while t.pool.workers.iter().any(|w| w.inflight() > 0) && start.elapsed() < grace {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(pool = %t.pool.name, "pool left the configuration; stopping its workers");
    t.signal_stop();
    t.join().await;
}

fn spawn_health(pool: Arc<Pool>) -> Task {
    let (stop, mut stop_rx) = watch::channel(false);
    let spawned = matches!(pool.config.source, PoolSource::Spawn(_));
    let handle = tokio::spawn(async move {
        tokio::select! {
            _ = health::run(pool, spawned) => {}
            _ = stop_rx.wait_for(|s| *s) => {}
        }
    });
    Task { stop, handle }
}

/// Send a reload on SIGHUP.
pub async fn on_sighup(tx: ControlSender) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; reload with POST /admin/reload");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let _ = tx
            .send(ControlMsg::Reload {
                trigger: "sighup",
                reply: None,
            })
            .await;
    }
}

/// Reload when the file's text changes (polled every second; a change must hold still for
/// half a second, so an editor's partial writes are not loaded).
pub async fn watch_file(path: PathBuf, status: Arc<Mutex<ReloadStatus>>, tx: ControlSender) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tried = String::new();
    loop {
        tick.tick().await;
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let hash = sha256_hex(&text);
        let in_force = status.lock().map(|s| s.sha256.clone()).unwrap_or_default();
        if hash == in_force || hash == last_tried {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        match std::fs::read_to_string(&path) {
            Ok(again) if sha256_hex(&again) == hash => {}
            _ => continue,
        }
        last_tried = hash;
        let _ = tx
            .send(ControlMsg::Reload {
                trigger: "file_changed",
                reply: None,
            })
            .await;
    }
}

/// Reload when the listener's certificate or key file changes (`tls`; polled every second,
/// the change must hold still for half a second): certificates renewed by certbot or a
/// secret mount take effect without a signal. A pair caught halfway through a renewal
/// fails the reload (the old certificate stays) and is tried again when the files change.
pub async fn watch_tls_files(shared: Arc<Shared>, tx: ControlSender) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The pair a reload was last asked for (a broken pair is not asked for again).
    let mut last_tried: Option<(Vec<u8>, Vec<u8>)> = None;
    let read = |t: &config::TlsConfig| {
        let cert = std::fs::read(&t.cert_file).ok()?;
        let key = std::fs::read(&t.key_file).ok()?;
        Some((cert, key))
    };
    loop {
        tick.tick().await;
        let rt = shared.runtime.load_full();
        let Some(tls) = rt.config.tls.as_ref() else {
            continue;
        };
        let Some(files) = read(tls) else {
            continue;
        };
        if (files.0 == tls.cert_pem && files.1 == tls.key_pem)
            || last_tried.as_ref() == Some(&files)
        {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if read(tls).as_ref() != Some(&files) {
            continue;
        }
        last_tried = Some(files);
        tracing::info!(cert_file = %tls.cert_file, "the listener's certificate files changed: reloading");
        let _ = tx
            .send(ControlMsg::Reload {
                trigger: "tls_files_changed",
                reply: None,
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(upstreams: &str, name: &str) -> GatewayConfig {
        let text = format!(
            "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nroutes:\n  - {{ path: /mcp, pool: p }}\npools:\n  p:\n    upstreams: [{upstreams}]\n    discover: {{ dns: [ {{ name: {name}, port: 80 }} ] }}\n"
        );
        config::parse(&text, "t.yaml").unwrap()
    }

    fn members(c: &GatewayConfig) -> Vec<std::net::SocketAddr> {
        match &c.pools[0].source {
            PoolSource::Remote(m) => m.clone(),
            other => panic!("not remote: {other:?}"),
        }
    }

    #[test]
    fn a_reload_keeps_discovered_members_while_the_names_stay() {
        let a: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: std::net::SocketAddr = "127.0.0.1:2".parse().unwrap();
        let found: std::net::SocketAddr = "10.1.0.7:80".parse().unwrap();
        let mut old = cfg("\"127.0.0.1:1\"", "w.svc");
        old.pools[0].source = PoolSource::Remote(vec![a, found]);

        let mut same = cfg("\"127.0.0.1:1\"", "w.svc");
        keep_discovered_members(&mut same, &old);
        assert_eq!(members(&same), vec![a, found]);

        let mut other_fixed = cfg("\"127.0.0.1:2\"", "w.svc");
        keep_discovered_members(&mut other_fixed, &old);
        assert_eq!(members(&other_fixed), vec![b, found]);

        let mut other_name = cfg("\"127.0.0.1:1\"", "v.svc");
        keep_discovered_members(&mut other_name, &old);
        assert_eq!(members(&other_name), vec![a]);
    }
}
