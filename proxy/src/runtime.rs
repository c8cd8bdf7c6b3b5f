//! The state every request phase reads: built from a validated configuration, held in an
//! `ArcSwap` so a reload can build a new one and swap it while requests in flight keep the
//! one they started with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::admin::metrics::Metrics;
use crate::auth::jwks::JwksSource;
use crate::auth::jwt::{Issuer, IssuerKey, Verifier};
use crate::config::{
    AuthConfig, CredentialRule, GatewayConfig, IdentityConfig, IssuerConfig, PoolSource, RouteAuth,
    ToolRuleConfig,
};
use crate::mcp::origin::OriginRule;
use crate::mcp::session::{parse_key, SessionSealer};
use crate::policy::tools::{ToolPolicy, ToolRule};
use crate::routing::pool::Endpoint;
use crate::routing::{Pool, Worker};

pub struct Route {
    pub path: String,
    pub upstream_path: String,
    pub pool: Arc<Pool>,
    pub auth: Option<RouteAuth>,
    pub tools: Option<Arc<ToolPolicy>>,
    pub credential: Option<CredentialRule>,
    pub log_bodies: Option<crate::config::BodyCapture>,
}

pub struct Runtime {
    pub config: Arc<GatewayConfig>,
    pub routes: HashMap<String, Arc<Route>>,
    pub pools: HashMap<String, Arc<Pool>>,
    pub sealer: Arc<SessionSealer>,
    pub origins: Vec<OriginRule>,
    pub verifier: Arc<Verifier>,
    /// The listener's certificate when `tls` is configured (`crate::tls`).
    pub tls: Option<Arc<crate::tls::ListenerTls>>,
}

/// Shared by the proxy phases, the admin listener and the control plane.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Arc<Metrics>,
    /// Requests between `request_filter` and `logging`.
    pub inflight: AtomicUsize,
    /// POST requests in progress (`limits.max_inflight_calls`).
    pub calls_inflight: AtomicUsize,
    /// Set when shutdown begins: readiness turns false.
    pub draining: AtomicBool,
    /// Set once the MCP listener accepts connections (`server::wait_listening`): readiness
    /// waits for it, since workers are often healthy before Pingora has bound the port.
    pub listening: AtomicBool,
    /// Woken when shutdown begins: detached GET streams end at once (`gateway::detach`).
    pub stopping: tokio::sync::Notify,
    /// The gateway's own identity service, once started (when configured).
    pub identity: arc_swap::ArcSwapOption<IdentityHandle>,
    /// Rate and concurrency limits (built from the configuration's `rate_limits`).
    pub ratelimit: ArcSwap<crate::ratelimit::RateLimiter>,
    /// What `/admin/config` shows: version, text in force, last reload error.
    pub reload_status: Arc<std::sync::Mutex<crate::reload::ReloadStatus>>,
    /// Requests to the control plane (reloads), once it runs.
    pub control: std::sync::OnceLock<crate::reload::ControlSender>,
    /// The shared rate-limit backend, when Redis is configured.
    pub ratelimit_redis: Option<Arc<crate::ratelimit::redis::RedisLimits>>,
    /// Request records and audit events on their way to the database (`logship`).
    pub logship: Arc<crate::logship::LogShip>,
    /// HTTP/2 connections to workers for detached GET streams (`gateway::detach`).
    pub h2c: crate::routing::h2c::H2cPool,
    /// HTTP/1.1 keep-alive connections to workers for forwarded POSTs (`gateway::forward`).
    pub h1: crate::routing::h1::H1Pool,
}

pub struct IdentityHandle {
    pub provider: Arc<dyn crate::auth::IdentityProvider>,
    /// Where the identity service's HTTP endpoints listen (loopback, internal).
    pub internal_addr: std::net::SocketAddr,
    /// The gateway database, for the admin API's read-only views.
    pub store: crate::store::Store,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("tool rule: {reason}")]
    ToolRule { reason: String },
    #[error("issuer {issuer}: {reason}")]
    IssuerKey { issuer: String, reason: String },
    #[error("the session key in ${var} is not usable: {reason}")]
    SessionKey { var: String, reason: String },
    #[error("tls: {0}")]
    Tls(String),
}

impl Runtime {
    pub fn build(config: GatewayConfig) -> Result<Runtime, BuildError> {
        Runtime::build_reusing(config, None)
    }

    /// Build the runtime of a reloaded configuration. What did not change is shared with
    /// `old`, so it keeps its state: pools (their workers, health, sessions), the session
    /// sealer (a random key would otherwise change) and the token verifier (keys, cache).
    pub fn rebuild(config: GatewayConfig, old: &Runtime) -> Result<Runtime, BuildError> {
        Runtime::build_reusing(config, Some(old))
    }

    fn build_reusing(config: GatewayConfig, old: Option<&Runtime>) -> Result<Runtime, BuildError> {
        let same_session = old.is_some_and(|o| {
            o.config.session_key_env == config.session_key_env
                && o.config.session_ttl == config.session_ttl
        });
        let sealer = match old {
            Some(o) if same_session => o.sealer.clone(),
            _ => Arc::new(build_sealer(&config)?),
        };
        let mut pools = HashMap::new();
        for pc in &config.pools {
            if let Some(kept) = old
                .and_then(|o| o.pools.get(&pc.name))
                .filter(|p| p.config == *pc)
            {
                pools.insert(pc.name.clone(), kept.clone());
                continue;
            }
            let old_pool = old.and_then(|o| o.pools.get(&pc.name));
            if let Some(workers) = old_pool.and_then(|op| reconciled_workers(op, pc)) {
                pools.insert(pc.name.clone(), Arc::new(Pool::new(pc.clone(), workers)));
                continue;
            }
            let workers = match &pc.source {
                PoolSource::Remote(addrs) => addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        // Remote workers start healthy; the health check ejects dead ones.
                        Arc::new(Worker::new(
                            remote_worker_id(pc, i, *a),
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
                        auth: rc.auth.clone(),
                        tools: build_tool_policy(rc.tools.as_deref())?,
                        credential: rc.credential.clone(),
                        log_bodies: rc.log_bodies.clone(),
                    }),
                );
            }
        }
        // Route resources are accepted audiences of the gateway's own (OAuth) tokens.
        let resources = crate::identity_link::oauth_resources(&config);
        let same_auth = old.is_some_and(|o| {
            o.config.auth == config.auth
                && o.config.identity == config.identity
                && crate::identity_link::oauth_resources(&o.config) == resources
        });
        let verifier = match old {
            Some(o) if same_auth => o.verifier.clone(),
            _ => {
                let v = build_verifier(&config.auth, config.identity.as_ref(), &resources)?;
                if let (Some(o), Some(id)) = (old, &config.identity) {
                    // The gateway's own keys arrive from the identity service once a minute:
                    // carry the current ones over so its tokens keep working meanwhile.
                    if let Some(issuer) = o.verifier.issuers().iter().find(|i| i.iss == id.issuer) {
                        let keys = issuer.keys.load();
                        v.set_keys(
                            &id.issuer,
                            keys.iter()
                                .map(|k| IssuerKey {
                                    kid: k.kid.clone(),
                                    key: k.key.clone(),
                                })
                                .collect(),
                        );
                    }
                }
                Arc::new(v)
            }
        };
        // An unchanged certificate keeps its acceptor (and the TLS session cache in it).
        let tls = match (&config.tls, old) {
            (None, _) => None,
            (Some(t), Some(o)) if o.config.tls.as_ref() == Some(t) => o.tls.clone(),
            (Some(t), _) => Some(Arc::new(
                crate::tls::ListenerTls::new(t).map_err(BuildError::Tls)?,
            )),
        };
        Ok(Runtime {
            verifier,
            tls,
            origins: config.origins.clone(),
            config: Arc::new(config),
            routes,
            pools,
            sealer,
        })
    }
}

fn build_sealer(config: &GatewayConfig) -> Result<SessionSealer, BuildError> {
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
    // During a key rotation the key before it still opens the ids it sealed.
    let previous_var = format!("{}_PREVIOUS", config.session_key_env);
    match std::env::var(&previous_var) {
        Ok(text) if !text.trim().is_empty() => {
            let old = parse_key(&text).map_err(|e| BuildError::SessionKey {
                var: previous_var.clone(),
                reason: e.to_string(),
            })?;
            tracing::info!(var = %previous_var, "session ids sealed with the previous key are accepted too");
            Ok(sealer.with_previous(&old))
        }
        _ => Ok(sealer),
    }
}

fn issuer_keys(ic: &IssuerConfig) -> Result<Vec<IssuerKey>, BuildError> {
    let fail = |reason: String| BuildError::IssuerKey {
        issuer: ic.name.clone(),
        reason,
    };
    if let Some(var) = &ic.secret_env {
        let secret = std::env::var(var).map_err(|_| fail(format!("${var} is not set")))?;
        if secret.len() < 32 {
            return Err(fail(format!("${var} is shorter than 32 bytes")));
        }
        return Ok(vec![IssuerKey {
            kid: None,
            key: jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        }]);
    }
    let family = ic.algorithms.first().map(|a| a.family());
    let mut keys = Vec::new();
    for (kid, path) in &ic.public_keys {
        let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read {path}: {e}")))?;
        use jsonwebtoken::AlgorithmFamily as F;
        let key = match family {
            Some(F::Rsa) => jsonwebtoken::DecodingKey::from_rsa_pem(&pem),
            Some(F::Ec) => jsonwebtoken::DecodingKey::from_ec_pem(&pem),
            Some(F::Ed) => jsonwebtoken::DecodingKey::from_ed_pem(&pem),
            _ => return Err(fail("no algorithm for public keys".into())),
        }
        .map_err(|e| {
            fail(format!(
                "{path}: not a usable public key for {family:?}: {e}"
            ))
        })?;
        keys.push(IssuerKey {
            kid: kid.clone(),
            key,
        });
    }
    Ok(keys)
}

fn build_tool_policy(
    rules: Option<&[ToolRuleConfig]>,
) -> Result<Option<Arc<ToolPolicy>>, BuildError> {
    let Some(rules) = rules else {
        return Ok(None);
    };
    let mut built = Vec::new();
    for r in rules {
        built.push(
            ToolRule::new(r.roles.clone(), &r.allow, &r.deny)
                .map_err(|reason| BuildError::ToolRule { reason })?,
        );
    }
    Ok(Some(Arc::new(ToolPolicy::new(built))))
}

/// Name of the gateway's own issuer in the verifier.
pub const GATEWAY_ISSUER: &str = "gateway";

fn build_verifier(
    auth: &AuthConfig,
    identity: Option<&IdentityConfig>,
    resources: &[String],
) -> Result<Verifier, BuildError> {
    let mut issuers = Vec::new();
    if let Some(id) = identity {
        // The general audience (login, API) and each route's resource (OAuth clients; the
        // route's own resource is then required, see gateway/authn.rs).
        let mut audiences = vec![id.audience.clone()];
        audiences.extend(resources.iter().cloned());
        // Keys arrive from the identity service once it has started, and on each rotation.
        issuers.push(Issuer::new(
            GATEWAY_ISSUER.to_string(),
            id.issuer.clone(),
            &audiences,
            vec![jsonwebtoken::Algorithm::ES256],
            Vec::new(),
            "roles".to_string(),
            std::time::Duration::from_secs(30),
        ));
    }
    for ic in &auth.issuers {
        let mut issuer = Issuer::new(
            ic.name.clone(),
            ic.issuer.clone(),
            &ic.audiences,
            ic.algorithms.clone(),
            issuer_keys(ic)?,
            ic.roles_claim.clone(),
            ic.leeway,
        );
        if let Some(uri) = &ic.jwks_uri {
            let src = JwksSource::new(uri.clone(), ic.jwks_max_age).map_err(|e| {
                BuildError::IssuerKey {
                    issuer: ic.name.clone(),
                    reason: e.to_string(),
                }
            })?;
            issuer = issuer.with_jwks(Arc::new(src));
        }
        issuers.push(issuer);
    }
    Ok(Verifier::new(issuers, auth.token_cache_entries))
}

/// The workers of a changed pool, keeping those of `old` that still belong: a spawned pool
/// whose command and environment did not change keeps its first workers (a smaller `count`
/// drops the last ones, a larger one adds new ones); a remote pool keeps the workers whose
/// address is still listed. `None` when nothing can be kept (the pool is built anew).
pub fn reconciled_workers(old: &Pool, new: &crate::config::PoolConfig) -> Option<Vec<Arc<Worker>>> {
    match (&old.config.source, &new.source) {
        (PoolSource::Spawn(a), PoolSource::Spawn(b))
            if a.command == b.command
                && a.env == b.env
                && a.ready_timeout == b.ready_timeout
                && a.stop_grace == b.stop_grace =>
        {
            Some(
                (0..b.count)
                    .map(|i| match old.workers.get(i) {
                        Some(w) => w.clone(),
                        None => Arc::new(Worker::new(
                            format!("{}-{i}", new.name),
                            Endpoint::new(([127, 0, 0, 1], 0).into(), 0),
                            false,
                        )),
                    })
                    .collect(),
            )
        }
        (PoolSource::Remote(_), PoolSource::Remote(addrs)) => Some(
            addrs
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    old.workers
                        .iter()
                        .find(|w| w.endpoint().addr == *a)
                        .cloned()
                        .unwrap_or_else(|| {
                            let mut id = remote_worker_id(new, i, *a);
                            if old.workers.iter().any(|w| w.id == id) {
                                id = format!("{}-{a}", new.name);
                            }
                            Arc::new(Worker::new(id, Endpoint::new(*a, 0), true))
                        })
                })
                .collect(),
        ),
        _ => None,
    }
}

/// A remote worker's id: `<pool>-<position>`, or `<pool>-<address>` in a pool with DNS
/// discovery, where members come and go and an id must keep naming the same address.
fn remote_worker_id(
    pc: &crate::config::PoolConfig,
    i: usize,
    addr: std::net::SocketAddr,
) -> String {
    if pc.discovery.is_some() {
        format!("{}-{addr}", pc.name)
    } else {
        format!("{}-{i}", pc.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn with_members(rt: &Runtime, members: &[SocketAddr]) -> Runtime {
        let mut cfg = (*rt.config).clone();
        cfg.pools[0].source = PoolSource::Remote(members.to_vec());
        Runtime::rebuild(cfg, rt).unwrap()
    }

    #[test]
    fn the_previous_session_key_from_the_environment_opens_old_ids() {
        use crate::mcp::session::SessionClaims;
        // Variable names of this test only (the environment is shared by the tests).
        let text = "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nsession: { key_env: ROTATION_TEST_KEY }\nroutes:\n  - { path: /mcp, pool: p }\npools:\n  p: { upstreams: [\"127.0.0.1:9\"] }\n";
        let cfg = crate::config::parse(text, "t.yaml").unwrap();
        let old_hex = "11".repeat(32);
        let new_hex = "22".repeat(32);
        let claims = SessionClaims {
            pool: "p".into(),
            worker: "127.0.0.1:9".into(),
            instance: 0,
            user: String::new(),
            upstream_id: "u".into(),
            issued_at: 0,
        };
        std::env::set_var("ROTATION_TEST_KEY", &old_hex);
        let old_id = build_sealer(&cfg).unwrap().seal(&claims).unwrap();
        std::env::set_var("ROTATION_TEST_KEY", &new_hex);
        let new_only = build_sealer(&cfg).unwrap();
        assert!(new_only.open(old_id.as_bytes()).is_err());
        std::env::set_var("ROTATION_TEST_KEY_PREVIOUS", &old_hex);
        let rotating = build_sealer(&cfg).unwrap();
        assert_eq!(rotating.open(old_id.as_bytes()).unwrap().upstream_id, "u");
        std::env::set_var("ROTATION_TEST_KEY_PREVIOUS", "not a key");
        assert!(matches!(
            build_sealer(&cfg),
            Err(BuildError::SessionKey { var, .. }) if var == "ROTATION_TEST_KEY_PREVIOUS"
        ));
    }

    #[test]
    fn discovered_members_keep_their_worker_and_an_id_per_address() {
        let text = "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nroutes:\n  - { path: /mcp, pool: p }\npools:\n  p:\n    discover: { dns: [ { name: w.svc, port: 80 } ] }\n";
        let rt = Runtime::build(crate::config::parse(text, "t.yaml").unwrap()).unwrap();
        assert!(rt.pools["p"].workers.is_empty(), "empty until resolved");
        let x: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let y: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let one = with_members(&rt, &[x]);
        let two = with_members(&one, &[x, y]);
        let wx = &one.pools["p"].workers[0];
        assert_eq!(wx.id, "p-10.0.0.1:80");
        assert!(Arc::ptr_eq(wx, &two.pools["p"].workers[0]), "x kept");
        assert_eq!(two.pools["p"].workers[1].id, "p-10.0.0.2:80");
        // The route follows the new pool.
        assert!(Arc::ptr_eq(&two.routes["/mcp"].pool, &two.pools["p"]));
        let only_y = with_members(&two, &[y]);
        let p = &only_y.pools["p"];
        assert_eq!(p.workers.len(), 1);
        assert!(
            Arc::ptr_eq(&p.workers[0], &two.pools["p"].workers[1]),
            "y kept"
        );
        assert!(p.find("10.0.0.1:80", 0).is_none(), "x left");
    }
}
