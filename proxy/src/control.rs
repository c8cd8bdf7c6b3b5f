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
    pub fn start(
        shared: Arc<Shared>,
        admin: std::net::TcpListener,
    ) -> std::io::Result<ControlPlane> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("mcp-control")
            .build()?;
        std::thread::Builder::new()
            .name("mcp-control".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::spawn(crate::admin::serve(admin, shared.clone()));
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
            })?;
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
