//! What replicas share through Redis. Revocations: PUBLISH on one channel, every replica
//! SUBSCRIBEs and applies what it hears. A cache: API key lookups and (still sealed) service
//! credentials, so replicas do not each ask the database; entries live 30 s and are deleted
//! when revoked or changed. Reads give up after 50 ms and fall back to the database. The subscriber reconnects by itself after a Redis outage; while
//! Redis is down, revocations apply on the replica that made them and reach the others
//! through their cache lifetimes (30 s) and the database.
//! Redis is reached through `crate::redis_conn` (one server, Sentinel or Cluster); in a
//! Cluster the subscriber listens on one node, as PUBLISH reaches every node.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use tokio::sync::Mutex;

use super::revocation::Invalidation;
use super::IdentityService;
use crate::config::RedisConfig;
use crate::redis_conn::{RedisConnection, RedisConnector};

pub struct RedisBus {
    connector: RedisConnector,
    channel: String,
    conn: Mutex<Option<RedisConnection>>,
}

const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// A cache read on the request path gives up quickly and falls back to the database.
const CACHE_TIMEOUT: Duration = Duration::from_millis(50);

impl RedisBus {
    pub fn new(cfg: &RedisConfig) -> Result<RedisBus, String> {
        let connector = RedisConnector::new(cfg).map_err(|e| e.to_string())?;
        Ok(RedisBus {
            connector,
            channel: format!("{}:invalidate", cfg.prefix),
            conn: Mutex::new(None),
        })
    }

    /// A shared connection (multiplexed, cheap to clone), made on first use.
    async fn conn(&self) -> Result<RedisConnection, String> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(OP_TIMEOUT, self.connector.connect(OP_TIMEOUT))
            .await
            .map_err(|_| "redis connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn forget_conn(&self) {
        *self.conn.lock().await = None;
    }

    /// Run one command with a time limit; a failure drops the connection for a fresh one.
    async fn run<T, F, Fut>(&self, limit: Duration, f: F) -> Result<T, String>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        match tokio::time::timeout(limit, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.forget_conn().await;
                Err(e.to_string())
            }
            Err(_) => Err("redis timed out".into()),
        }
    }

    /// Publish one event; errors are returned, never retried forever.
    pub async fn publish(&self, ev: &Invalidation) -> Result<(), String> {
        let payload = ev.encode();
        let channel = self.channel.clone();
        self.run(OP_TIMEOUT, |mut c| async move {
            c.publish::<_, _, i64>(channel, payload).await
        })
        .await
        .map(|_| ())
    }

    /// The full Redis key for a shared cache entry.
    pub fn cache_key(&self, kind: &str, id: &str) -> String {
        format!(
            "{}:{kind}:{id}",
            self.channel.trim_end_matches(":invalidate")
        )
    }

    /// A shared cache read; any failure is a miss.
    pub async fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        let key = key.to_string();
        match self
            .run(CACHE_TIMEOUT, |mut c| async move {
                c.get::<_, Option<Vec<u8>>>(key).await
            })
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "redis cache read failed");
                None
            }
        }
    }

    /// A shared cache write with a lifetime; failures are logged and ignored.
    pub async fn cache_put(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        let key = key.to_string();
        let secs = ttl.as_secs().max(1);
        if let Err(e) = self
            .run(OP_TIMEOUT, |mut c| async move {
                c.set_ex::<_, _, ()>(key, value, secs).await
            })
            .await
        {
            tracing::debug!(error = %e, "redis cache write failed");
        }
    }

    /// Drop shared cache entries.
    pub async fn cache_del(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        if let Err(e) = self
            .run(
                OP_TIMEOUT,
                |mut c| async move { c.del::<_, ()>(keys).await },
            )
            .await
        {
            tracing::warn!(error = %e, "redis cache delete failed");
        }
    }

    /// Subscribe and apply events to `svc` until the process ends, reconnecting with backoff.
    pub async fn run_subscriber(self: Arc<Self>, svc: Arc<IdentityService>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.connector.subscriber().await {
                Ok(mut pubsub) => match pubsub.subscribe(&self.channel).await {
                    Ok(()) => {
                        tracing::info!(channel = %self.channel, "listening for revocations");
                        backoff = Duration::from_millis(100);
                        let mut stream = pubsub.on_message();
                        while let Some(msg) = stream.next().await {
                            match Invalidation::decode(msg.get_payload_bytes()) {
                                Some(ev) => svc.apply(&ev),
                                None => tracing::warn!("ignored a malformed revocation message"),
                            }
                        }
                        tracing::warn!("revocation subscription ended; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, "redis subscribe failed"),
                },
                Err(e) => tracing::warn!(error = %e, "redis unreachable for revocations"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
