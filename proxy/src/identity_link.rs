//! Starting the gateway's identity service on the control plane, and adapting it to what the
//! proxy phases need (`auth::IdentityProvider`).

use std::sync::Arc;

use crate::auth::jwt::IssuerKey;
use crate::auth::{Identity, IdentityProvider};
use crate::config::{DatabaseConfig, IdentityConfig, RedisConfig};
use crate::identity::bus::RedisBus;
use crate::identity::{self, IdentityService};
use crate::runtime::{IdentityHandle, Shared};
use crate::store::Store;

/// The identity service, and the log pipeline that carries the proxy phases' audit events
/// (batched, spooled to disk while the database is down, inserted once by id).
struct Provider(Arc<IdentityService>, Arc<crate::logship::LogShip>);

#[async_trait::async_trait]
impl IdentityProvider for Provider {
    fn issuer(&self) -> &str {
        self.0.issuer()
    }

    async fn authenticate_api_key(&self, presented: &str) -> Result<Option<Identity>, String> {
        let found = self
            .0
            .authenticate_api_key(presented)
            .await
            .map_err(|e| e.to_string())?;
        Ok(found.map(|k| Identity {
            issuer: self.0.issuer().to_string(),
            subject: k.user_id,
            email: Some(k.email),
            roles: k.roles,
            scopes: k.scopes,
            expires_at: 0,
            issued_at: 0,
            audiences: Vec::new(),
        }))
    }

    fn token_revoked(&self, user_id: &str, issued_at: i64) -> bool {
        self.0.token_revoked(user_id, issued_at)
    }

    fn audit(
        &self,
        kind: &'static str,
        user_id: Option<&str>,
        ip: Option<String>,
        detail: serde_json::Value,
    ) {
        self.1.audit(kind, user_id, None, ip.as_deref(), detail);
    }

    async fn service_credential(
        &self,
        user_id: &str,
        service: &str,
    ) -> Result<Option<String>, String> {
        self.0
            .service_credential(user_id, service)
            .await
            .map_err(|e| e.to_string())
    }
}

struct LogShipAudit(Arc<crate::logship::LogShip>);

impl identity::AuditSink for LogShipAudit {
    fn audit(
        &self,
        kind: &str,
        user_id: Option<&str>,
        subject: Option<&str>,
        ip: Option<&str>,
        detail: serde_json::Value,
    ) {
        self.0.audit(kind, user_id, subject, ip, detail);
    }
}

/// Hand the service's current verification keys to the proxy's verifier.
fn publish_keys(shared: &Shared, svc: &IdentityService) {
    let keys = svc
        .verification_keys()
        .into_iter()
        .map(|(kid, key)| IssuerKey {
            kid: Some(kid),
            key,
        })
        .collect();
    shared.runtime.load().verifier.set_keys(svc.issuer(), keys);
}

/// The RFC 8707 resources the gateway's authorization server binds tokens to: the identity
/// issuer (`public_url`) followed by the path of every route that authenticates, as the
/// protected-resource metadata announces them.
pub fn oauth_resources(config: &crate::config::GatewayConfig) -> Vec<String> {
    let Some(id) = &config.identity else {
        return Vec::new();
    };
    config
        .routes
        .iter()
        .filter(|r| r.auth.is_some())
        .map(|r| format!("{}{}", id.issuer, r.path))
        .collect()
}

/// Connect the database, start the service and its internal HTTP listener, publish its keys,
/// and keep the keys fresh (rotation) for as long as the process lives.
pub async fn start(
    shared: Arc<Shared>,
    db: &DatabaseConfig,
    cfg: &IdentityConfig,
    redis: Option<&RedisConfig>,
) -> Result<(), String> {
    let keys = std::env::var(&cfg.credentials_key_env)
        .map_err(|_| {
            format!(
                "identity needs ${} set to 32 random bytes in base64 or hex (for example \
                 `openssl rand -base64 32`): it encrypts stored credentials and signing keys",
                cfg.credentials_key_env
            )
        })
        .and_then(|text| {
            crate::mcp::session::parse_key(&text)
                .map_err(|e| format!("${}: {e}", cfg.credentials_key_env))
        })?;
    let key_id = std::env::var("MCP_GATEWAY_CREDENTIALS_KEY_ID").unwrap_or_else(|_| "k1".into());
    let store = Store::connect(&db.url, db.migrate)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let mut icfg = identity::IdentityConfig::new(
        cfg.issuer.clone(),
        cfg.audience.clone(),
        vec![(key_id, keys)],
    );
    icfg.access_ttl = cfg.access_ttl;
    icfg.refresh_ttl = cfg.refresh_ttl;
    icfg.key_rotation = cfg.key_rotation;
    let svc = IdentityService::new(store, icfg)
        .await
        .map_err(|e| format!("identity: {e}"))?;
    let weak_shared = Arc::downgrade(&shared);
    svc.set_oauth_resources(Arc::new(move || match weak_shared.upgrade() {
        Some(shared) => oauth_resources(&shared.runtime.load().config),
        None => Vec::new(),
    }));
    svc.attach_audit_sink(Arc::new(LogShipAudit(shared.logship.clone())));
    if let Some(r) = redis {
        let bus = Arc::new(RedisBus::new(r)?);
        svc.attach_bus(bus.clone());
        tokio::spawn(bus.run_subscriber(svc.clone()));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("identity listener: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let router = svc.router();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "identity service stopped");
        }
    });
    publish_keys(&shared, &svc);
    shared.identity.store(Some(Arc::new(IdentityHandle {
        provider: Arc::new(Provider(svc.clone(), shared.logship.clone())),
        internal_addr: addr,
        store: svc.store().clone(),
    })));
    tracing::info!(internal = %addr, issuer = %svc.issuer(), "identity service started");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(identity::KEY_RELOAD_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = svc.maintain_keys().await {
                tracing::error!(error = %e, "signing key maintenance failed");
            }
            publish_keys(&shared, &svc);
        }
    });
    Ok(())
}
