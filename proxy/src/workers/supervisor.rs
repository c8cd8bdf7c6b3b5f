//! Spawned workers: each slot of a `spawn` pool gets a process on its own port, checked ready
//! before it takes traffic, restarted with exponential backoff when it exits, and stopped
//! with SIGTERM then SIGKILL after a grace period.
//!
//! Children run in their own process group (so a stop reaches their descendants) and get
//! `PR_SET_PDEATHSIG(SIGKILL)`: if the gateway dies without cleaning up, even by SIGKILL, the
//! kernel kills them. The death signal fires when the *thread* that forked exits, so every
//! spawn happens on the control-plane thread, which lives as long as the process.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::admin::metrics::Metrics;
use crate::config::SpawnConfig;
use crate::routing::health::probe;
use crate::routing::pool::Endpoint;
use crate::routing::Pool;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A worker that ran this long before exiting restarts with the smallest backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Find the program: a bare name is looked up beside the gateway's own executable first
/// (so `mcp-worker` is found in the same build directory), then on `PATH`.
pub fn resolve_program(program: &str) -> PathBuf {
    if !program.contains('/') {
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        {
            let candidate = dir.join(program);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(program)
}

/// The argument list with `{port}` and `{id}` filled in; `--listen 127.0.0.1:{port}` is
/// appended when no argument mentions `{port}`.
pub fn render_args(command: &[String], port: u16, id: &str) -> Vec<String> {
    let mut args: Vec<String> = command
        .iter()
        .skip(1)
        .map(|a| a.replace("{port}", &port.to_string()).replace("{id}", id))
        .collect();
    if !command.iter().any(|a| a.contains("{port}")) {
        args.push("--listen".into());
        args.push(format!("127.0.0.1:{port}"));
    }
    args
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn spawn_child(spec: &SpawnConfig, port: u16, id: &str) -> std::io::Result<Child> {
    let program = resolve_program(&spec.command[0]);
    let mut cmd = Command::new(&program);
    cmd.args(render_args(&spec.command, port, id))
        .env("MCP_WORKER_ID", id)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The gateway died between fork and prctl: do not outlive it.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn signal_group(child: &Child, sig: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a negative pid signals the child's process group.
        unsafe {
            libc::kill(-(pid as libc::pid_t), sig);
        }
    }
}

/// SIGTERM the child's group, wait `grace`, then SIGKILL.
pub async fn terminate(child: &mut Child, grace: Duration) {
    signal_group(child, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(child, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

enum Ready {
    Yes,
    Exited,
    TimedOut,
    Stopped,
}

async fn wait_ready(
    child: &mut Child,
    addr: std::net::SocketAddr,
    pool: &Pool,
    timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Ready {
    let h = &pool.config.health;
    let deadline = Instant::now() + timeout;
    loop {
        if *stop.borrow() {
            return Ready::Stopped;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Ready::Exited;
        }
        if probe(h.kind, addr, &h.path, Duration::from_millis(500)).await {
            return Ready::Yes;
        }
        if Instant::now() >= deadline {
            return Ready::TimedOut;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Keep one slot of a spawned pool running until `stop` turns true.
pub async fn run_slot(
    pool: Arc<Pool>,
    slot: usize,
    spec: SpawnConfig,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let worker = pool.workers[slot].clone();
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    loop {
        if *stop.borrow() {
            return;
        }
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => { return; }
            }
        }
        first = false;
        let port = match free_port() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(worker = %worker.id, error = %e, "no free port for a worker");
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut child = match spawn_child(&spec, port, &worker.id) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(worker = %worker.id, program = %spec.command[0], error = %e, "cannot start worker");
                metrics
                    .worker_restarts
                    .with_label_values(&[&pool.name])
                    .inc();
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        match wait_ready(&mut child, addr, &pool, spec.ready_timeout, &mut stop).await {
            Ready::Yes => {}
            Ready::Stopped => {
                terminate(&mut child, spec.stop_grace).await;
                return;
            }
            Ready::Exited | Ready::TimedOut => {
                tracing::error!(worker = %worker.id, pid, %addr, "worker did not become ready; restarting");
                terminate(&mut child, spec.stop_grace).await;
                metrics
                    .worker_restarts
                    .with_label_values(&[&pool.name])
                    .inc();
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        }
        let instance = loop {
            let v: u64 = rand::random();
            if v != 0 {
                break v;
            }
        };
        worker.set_endpoint(Endpoint::new(addr, instance));
        worker.set_healthy(true);
        tracing::info!(pool = %pool.name, worker = %worker.id, pid, %addr, "worker ready");
        let started = Instant::now();
        let status = tokio::select! {
            s = child.wait() => Some(s),
            _ = stop.changed() => None,
        };
        worker.set_healthy(false);
        worker.set_endpoint(Endpoint::new(addr, 0));
        match status {
            None => {
                terminate(&mut child, spec.stop_grace).await;
                tracing::info!(worker = %worker.id, pid, "worker stopped");
                return;
            }
            Some(status) => {
                let status = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                tracing::warn!(pool = %pool.name, worker = %worker.id, pid, %status, "worker exited; restarting");
                worker
                    .restarts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics
                    .worker_restarts
                    .with_label_values(&[&pool.name])
                    .inc();
                backoff = if started.elapsed() >= STABLE_AFTER {
                    BACKOFF_MIN
                } else {
                    (backoff * 2).min(BACKOFF_MAX)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_get_port_and_id() {
        let cmd: Vec<String> = ["w", "tools", "--id", "{id}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            render_args(&cmd, 4100, "tools-0"),
            vec!["tools", "--id", "tools-0", "--listen", "127.0.0.1:4100"]
        );
        let cmd: Vec<String> = ["w", "--port={port}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(render_args(&cmd, 9, "x"), vec!["--port=9"]);
    }

    #[test]
    fn bare_names_fall_back_to_path() {
        assert_eq!(resolve_program("/bin/true"), PathBuf::from("/bin/true"));
        assert_eq!(
            resolve_program("surely-not-beside-us"),
            PathBuf::from("surely-not-beside-us")
        );
    }
}
