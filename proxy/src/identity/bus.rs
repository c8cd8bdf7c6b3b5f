//! The Redis side of revocation: PUBLISH on one channel, every replica SUBSCRIBEs and
//! applies what it hears. The subscriber reconnects by itself after a Redis outage; while
//! Redis is down, revocations apply on the replica that made them and reach the others
//! through their cache lifetimes (30 s) and the database.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use tokio::sync::Mutex;

use super::revocation::Invalidation;
use super::IdentityService;

pub struct RedisBus {
    client: redis::Client,
    channel: String,
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

const OP_TIMEOUT: Duration = Duration::from_millis(500);

impl RedisBus {
    pub fn new(url: &str, prefix: &str) -> Result<RedisBus, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        Ok(RedisBus {
            client,
            channel: format!("{prefix}:invalidate"),
            conn: Mutex::new(None),
        })
    }

    /// Publish one event; errors are returned, never retried forever.
    pub async fn publish(&self, ev: &Invalidation) -> Result<(), String> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let c =
                tokio::time::timeout(OP_TIMEOUT, self.client.get_multiplexed_async_connection())
                    .await
                    .map_err(|_| "redis connect timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            *guard = Some(c);
        }
        let Some(conn) = guard.as_mut() else {
            return Err("no redis connection".into());
        };
        let sent: Result<Result<i64, redis::RedisError>, _> =
            tokio::time::timeout(OP_TIMEOUT, conn.publish(&self.channel, ev.encode())).await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                *guard = None;
                Err(e.to_string())
            }
            Err(_) => {
                *guard = None;
                Err("redis publish timed out".into())
            }
        }
    }

    /// Subscribe and apply events to `svc` until the process ends, reconnecting with backoff.
    pub async fn run_subscriber(self: Arc<Self>, svc: Arc<IdentityService>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.client.get_async_pubsub().await {
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
