//! The state every request phase reads: built from a validated configuration, held in an
//! `ArcSwap` so a reload can build a new one and swap it while requests in flight keep the
//! one they started with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::admin::metrics::Metrics;
use crate::config::{GatewayConfig, PoolSource};
use crate::mcp::origin::OriginRule;
use crate::mcp::session::{parse_key, SessionSealer};
use crate::routing::pool::Endpoint;
use crate::routing::{Pool, Worker};

pub struct Route {
    pub path: String,
    pub upstream_path: String,
    pub pool: Arc<Pool>,
}

pub struct Runtime {
    pub config: Arc<GatewayConfig>,
    pub routes: HashMap<String, Arc<Route>>,
    pub pools: HashMap<String, Arc<Pool>>,
    pub sealer: SessionSealer,
    pub origins: Vec<OriginRule>,
}

/// Shared by the proxy phases, the admin listener and the control plane.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Arc<Metrics>,
    /// Requests between `request_filter` and `logging`.
    pub inflight: AtomicUsize,
    /// Set when shutdown begins: readiness turns false.
    pub draining: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the session key in ${var} is not usable: {reason}")]
    SessionKey { var: String, reason: String },
}

impl Runtime {
    pub fn build(config: GatewayConfig) -> Result<Runtime, BuildError> {
        let key = match std::env::var(&config.session_key_env) {
            Ok(text) => parse_key(&text).map_err(|e| BuildError::SessionKey {
                var: config.session_key_env.clone(),
                reason: e.to_string(),
            })?,
            Err(_) => {
                tracing::warn!(
                    var = %config.session_key_env,
                    "no session key set: using a random one, so sessions end when this process \
                     does and are not shared with other replicas"
                );
                SessionSealer::random_key()
            }
        };
        let sealer = SessionSealer::new(&key, config.session_ttl.as_secs());
        let mut pools = HashMap::new();
        for pc in &config.pools {
            let workers = match &pc.source {
                PoolSource::Remote(addrs) => addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        // Remote workers start healthy; the health check ejects dead ones.
                        Arc::new(Worker::new(
                            format!("{}-{i}", pc.name),
                            Endpoint::new(*a, 0),
                            true,
                        ))
                    })
                    .collect(),
                PoolSource::Spawn(s) => (0..s.count)
                    .map(|i| {
                        // Not running yet: the supervisor sets the endpoint once it is ready.
                        Arc::new(Worker::new(
                            format!("{}-{i}", pc.name),
                            Endpoint::new(([127, 0, 0, 1], 0).into(), 0),
                            false,
                        ))
                    })
                    .collect(),
            };
            pools.insert(pc.name.clone(), Arc::new(Pool::new(pc.clone(), workers)));
        }
        let mut routes = HashMap::new();
        for rc in &config.routes {
            if let Some(pool) = pools.get(&rc.pool) {
                routes.insert(
                    rc.path.clone(),
                    Arc::new(Route {
                        path: rc.path.clone(),
                        upstream_path: rc.upstream_path.clone(),
                        pool: pool.clone(),
                    }),
                );
            }
        }
        Ok(Runtime {
            origins: config.origins.clone(),
            config: Arc::new(config),
            routes,
            pools,
            sealer,
        })
    }
}
