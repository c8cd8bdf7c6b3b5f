//! The control plane: one long-lived thread with its own runtime that runs the worker
//! supervisor, the health checks and the admin listener, apart from the proxy's threads.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::PoolSource;
use crate::routing::health;
use crate::runtime::Shared;
use crate::workers::supervisor;

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
        admin: std::net::TcpListener,
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
                    tokio::spawn(crate::admin::serve(admin, shared.clone()));
                    tokio::spawn(refresh_key_sets(shared.clone()));
                    let runtime = shared.runtime.load_full();
                    let mut slots = tokio::task::JoinSet::new();
                    for pool in runtime.pools.values() {
                        let spawned = matches!(pool.config.source, PoolSource::Spawn(_));
                        tokio::spawn(health::run(pool.clone(), spawned));
                        if let PoolSource::Spawn(spec) = &pool.config.source {
                            for slot in 0..pool.workers.len() {
                                slots.spawn(supervisor::run_slot(
                                    pool.clone(),
                                    slot,
                                    spec.clone(),
                                    shared.metrics.clone(),
                                    stop_rx.clone(),
                                ));
                            }
                        }
                    }
                    let mut stop_rx = stop_rx;
                    let _ = stop_rx.wait_for(|s| *s).await;
                    while slots.join_next().await.is_some() {}
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
async fn refresh_key_sets(shared: Arc<Shared>) {
    let runtime = shared.runtime.load_full();
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
