//! The control plane: one long-lived thread with its own runtime that runs the worker
//! supervisor, the health checks and the admin listener, apart from the proxy's threads.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::reload::{self, ControlMsg, Manager};
use crate::runtime::Shared;

pub struct ControlPlane {
    stop: watch::Sender<bool>,
    stopped: std::sync::mpsc::Receiver<()>,
}

impl ControlPlane {
    /// Start the thread. `admin` is already bound, so a taken port fails at start-up.
    ///
    /// When the configuration has `identity`, the database and the identity service are
    /// started first, and a failure there is returned: the gateway does not start half-way.
    pub fn start(
        shared: Arc<Shared>,
        admin: crate::admin::AdminListener,
    ) -> Result<ControlPlane, String> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (init_tx, init_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("mcp-control")
            .build()
            .map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("mcp-control".into())
            .spawn(move || {
                rt.block_on(async move {
                    let cfg = shared.runtime.load().config.clone();
                    if let (Some(db), Some(id)) = (&cfg.database, &cfg.identity) {
                        let started =
                            crate::identity_link::start(shared.clone(), db, id, cfg.redis.as_ref())
                                .await;
                        let failed = started.is_err();
                        let _ = init_tx.send(started);
                        if failed {
                            return;
                        }
                    } else {
                        let _ = init_tx.send(Ok(()));
                    }
                    crate::logship::start(
                        shared.logship.clone(),
                        shared.metrics.clone(),
                        &cfg.logging,
                        cfg.database.as_ref(),
                        cfg.redis.as_ref(),
                    );
                    tokio::spawn(crate::admin::serve_admin(admin, shared.clone()));
                    if let Some(r) = &shared.ratelimit_redis {
                        tokio::spawn(r.clone().maintain());
                    }
                    tokio::spawn(tidy_rate_limits(shared.clone()));
                    let status = shared.reload_status.clone();
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<ControlMsg>(16);
                    let mut manager =
                        Manager::new(shared.clone(), status.clone()).with_control(tx.clone());
                    manager.start_all();
                    let _ = shared.control.set(tx.clone());
                    tokio::spawn(reload::on_sighup(tx.clone()));
                    if let Some(path) = reload::config_path(&shared.runtime.load().config) {
                        tokio::spawn(reload::watch_tls_files(shared.clone(), tx.clone()));
                        tokio::spawn(reload::watch_file(path, status, tx));
                    }
                    let mut stop_rx = stop_rx;
                    loop {
                        tokio::select! {
                            msg = rx.recv() => match msg {
                                Some(ControlMsg::Reload { trigger, reply }) => {
                                    let out = manager.reload(trigger).await;
                                    if let Some(reply) = reply {
                                        let _ = reply.send(out);
                                    }
                                }
                                Some(ControlMsg::Members(m)) => manager.apply_members(m).await,
                                None => break,
                            },
                            _ = stop_rx.wait_for(|s| *s) => break,
                        }
                    }
                    manager.stop_all().await;
                    let _ = done_tx.send(());
                    // Keep answering /healthz and /metrics until the process exits.
                    std::future::pending::<()>().await;
                });
            })
            .map_err(|e| e.to_string())?;
        match init_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("the control plane did not start within 120 s".into()),
        }
        Ok(ControlPlane {
            stop: stop_tx,
            stopped: done_rx,
        })
    }

    /// Stop every spawned worker (SIGTERM, then SIGKILL after each pool's grace) and wait,
    /// at most `limit`.
    pub fn stop_workers(&self, limit: Duration) {
        let _ = self.stop.send(true);
        if self.stopped.recv_timeout(limit).is_err() {
            tracing::warn!("workers did not all stop within {limit:?}");
        }
    }
}

/// Fetch every JWKS-backed issuer's keys now, then again every `jwks_max_age`.
pub(crate) async fn refresh_key_sets(runtime: Arc<crate::runtime::Runtime>) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, issuer) in runtime.verifier.issuers().iter().enumerate() {
        let Some(src) = &issuer.jwks else { continue };
        let every = src.max_age.max(Duration::from_secs(10));
        let rt = runtime.clone();
        tasks.spawn(async move {
            loop {
                rt.verifier.issuers()[i].refresh_keys().await;
                tokio::time::sleep(every).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Local rate-limit state for keys that are back to full is dropped now and then, so memory
/// follows the active callers, not every caller ever seen.
async fn tidy_rate_limits(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        shared.ratelimit.load().tidy();
    }
}
