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
}

pub struct Runtime {
    pub config: Arc<GatewayConfig>,
    pub routes: HashMap<String, Arc<Route>>,
    pub pools: HashMap<String, Arc<Pool>>,
    pub sealer: SessionSealer,
    pub origins: Vec<OriginRule>,
    pub verifier: Verifier,
}

/// Shared by the proxy phases, the admin listener and the control plane.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Arc<Metrics>,
    /// Requests between `request_filter` and `logging`.
    pub inflight: AtomicUsize,
    /// Set when shutdown begins: readiness turns false.
    pub draining: AtomicBool,
    /// The gateway's own identity service, once started (when configured).
    pub identity: arc_swap::ArcSwapOption<IdentityHandle>,
    /// Request records and audit events on their way to the database (`logship`).
    pub logship: Arc<crate::logship::LogShip>,
}

pub struct IdentityHandle {
    pub provider: Arc<dyn crate::auth::IdentityProvider>,
    /// Where the identity service's HTTP endpoints listen (loopback, internal).
    pub internal_addr: std::net::SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("tool rule: {reason}")]
    ToolRule { reason: String },
    #[error("issuer {issuer}: {reason}")]
    IssuerKey { issuer: String, reason: String },
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
                        auth: rc.auth.clone(),
                        tools: build_tool_policy(rc.tools.as_deref())?,
                        credential: rc.credential.clone(),
                    }),
                );
            }
        }
        let verifier = build_verifier(&config.auth, config.identity.as_ref())?;
        Ok(Runtime {
            verifier,
            origins: config.origins.clone(),
            config: Arc::new(config),
            routes,
            pools,
            sealer,
        })
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
) -> Result<Verifier, BuildError> {
    let mut issuers = Vec::new();
    if let Some(id) = identity {
        // Keys arrive from the identity service once it has started, and on each rotation.
        issuers.push(Issuer::new(
            GATEWAY_ISSUER.to_string(),
            id.issuer.clone(),
            std::slice::from_ref(&id.audience),
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
