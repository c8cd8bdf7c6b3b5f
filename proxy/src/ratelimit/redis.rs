//! The Redis backend: one Lua script per check (one round trip), so the check and the update
//! are atomic and every replica sharing the Redis shares the limit.
//!
//! The request path never waits for a connection: a background task keeps one multiplexed
//! connection (reconnecting every 250 ms while Redis is away), a check without a connection
//! fails at once, and a failed or slow check (past `redis_timeout`) opens a short circuit
//! during which checks do not try Redis at all. After it, the next check tries again, so the
//! gateway returns to the shared limit by itself when Redis is back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus::{IntCounter, IntGauge};

use crate::config::RedisConfig;
use crate::redis_conn::{RedisConnection, RedisConnector};

/// GCRA: the key holds the theoretical arrival time (TAT, µs). A request is allowed when
/// the new TAT is at most `burst × interval` ahead of now. Up to `ARGV[4]` requests are
/// granted at once (the allowance a replica holds, `prefetch`), as many as fit. Returns
/// `{granted, remaining, retry_after_µs, reset_µs}`; `granted` 0 is a refusal. `now` comes
/// from Redis (`TIME`) unless the caller passes one (tests drive a fake clock that way).
const GCRA: &str = r#"
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local want = tonumber(ARGV[4])
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local fit = math.floor((capacity - (tat - now)) / interval)
if fit < 1 then
  return {0, 0, tat + interval - now - capacity, tat - now}
end
if fit > want then fit = want end
local ahead = tat + fit * interval - now
redis.call('SET', KEYS[1], string.format('%d', tat + fit * interval), 'PX', math.ceil(ahead / 1000) + 1)
return {fit, math.floor((capacity - ahead) / interval), 0, ahead}
"#;

/// Concurrency slots: a sorted set of request tokens scored by their lease expiry.
/// Returns `{acquired, in_use}`.
const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[1]) then return {0, n} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return {1, n + 1}
"#;

/// How long checks skip Redis after a failure.
const CIRCUIT: Duration = Duration::from_millis(500);
const RECONNECT_EVERY: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The client's own reply limit; checks have their shorter `redis_timeout` on top.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a Redis check gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisDown {
    /// No connection, or the circuit is open after a recent failure.
    Unavailable,
    TimedOut,
    Failed(String),
}

/// A GCRA answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraAnswer {
    pub allowed: bool,
    /// Requests granted (1 for a check of one; up to the asked block with `prefetch`).
    pub granted: u64,
    pub remaining: u64,
    pub retry_after: Duration,
    pub reset: Duration,
}

pub struct RedisLimits {
    connector: RedisConnector,
    prefix: String,
    timeout: Duration,
    conn: ArcSwapOption<RedisConnection>,
    /// A second connection made from the proxy's own runtime, so a check does not hop to
    /// the control-plane thread (where `conn`'s driver task runs) and back.
    proxy_conn: ArcSwapOption<RedisConnection>,
    proxy_connecting: AtomicBool,
    /// Checks skip Redis until this instant (ms since `epoch`).
    open_until_ms: AtomicU64,
    epoch: Instant,
    down: AtomicBool,
    gcra: redis::Script,
    acquire: redis::Script,
    errors: IntCounter,
    /// GCRA scripts run (one per request, or one per block with `prefetch`).
    calls: IntCounter,
    down_gauge: IntGauge,
}

impl RedisLimits {
    pub fn new(
        cfg: &RedisConfig,
        timeout: Duration,
        errors: IntCounter,
        calls: IntCounter,
        down_gauge: IntGauge,
    ) -> Result<RedisLimits, String> {
        let connector = RedisConnector::new(cfg).map_err(|e| e.to_string())?;
        down_gauge.set(1);
        Ok(RedisLimits {
            connector,
            prefix: cfg.prefix.clone(),
            timeout,
            conn: ArcSwapOption::empty(),
            proxy_conn: ArcSwapOption::empty(),
            proxy_connecting: AtomicBool::new(false),
            open_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            down: AtomicBool::new(true),
            gcra: redis::Script::new(GCRA),
            acquire: redis::Script::new(ACQUIRE),
            errors,
            calls,
            down_gauge,
        })
    }

    /// A limit's key. Every script and command here names exactly one key (the GCRA
    /// script, the slot script, ZREM), so in a Redis Cluster each runs on the node of that
    /// key's slot; the subject is the hash tag, so limits spread over the cluster.
    pub fn key(&self, kind: &str, key: &str) -> String {
        format!("{}:rl:{kind}:{{{key}}}", self.prefix)
    }

    /// Keep a connection; runs for the life of the process (on the control plane).
    /// A failed connect is a warning when its reason is new (a wrong address, a TLS
    /// certificate the gateway does not trust), not on every retry.
    pub async fn maintain(self: Arc<Self>) {
        let mut last_error = String::new();
        loop {
            if self.conn.load().is_none() {
                match self.connect().await {
                    Ok(()) => last_error.clear(),
                    Err(e) if e != last_error => {
                        tracing::warn!(error = %e, "rate limits: cannot connect to Redis");
                        last_error = e;
                    }
                    Err(e) => tracing::debug!(error = %e, "rate limits: Redis connect failed"),
                }
            }
            tokio::time::sleep(RECONNECT_EVERY).await;
        }
    }

    /// Make the connection checks use (again).
    pub async fn connect(&self) -> Result<(), String> {
        let c = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.connector.connect(self.response_timeout()),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
        self.conn.store(Some(Arc::new(c)));
        self.open_until_ms.store(0, Ordering::Release);
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("rate limits: Redis reachable, shared limits in force");
        }
        self.down_gauge.set(0);
        Ok(())
    }

    fn response_timeout(&self) -> Duration {
        self.timeout.max(RESPONSE_TIMEOUT)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn failed(&self, why: &RedisDown) {
        self.errors.inc();
        self.open_until_ms.store(
            self.now_ms() + CIRCUIT.as_millis() as u64,
            Ordering::Release,
        );
        if let RedisDown::Failed(_) = why {
            // The connection is broken: drop it so `maintain` makes a new one.
            self.conn.store(None);
            self.proxy_conn.store(None);
        }
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(reason = ?why, "rate limits: Redis unavailable, on_redis_error applies");
        }
        self.down_gauge.set(1);
    }

    /// Is Redis usable right now (a connection and no open circuit)?
    pub fn available(&self) -> bool {
        self.conn.load().is_some() && self.now_ms() >= self.open_until_ms.load(Ordering::Acquire)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisDown> {
        if !self.available() {
            return Err(RedisDown::Unavailable);
        }
        let Some(conn) = self
            .proxy_conn
            .load_full()
            .or_else(|| self.conn.load_full())
        else {
            return Err(RedisDown::Unavailable);
        };
        let mut conn = (*conn).clone();
        let out = match tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => RedisDown::Failed(e.to_string()),
            Err(_) => RedisDown::TimedOut,
        };
        self.failed(&out);
        Err(out)
    }

    /// Make the proxy-side connection in the background, from the runtime the caller runs
    /// on (the proxy's), once Redis is known to be reachable. Never waits.
    pub fn warm_proxy_connection(self: &Arc<Self>) {
        if self.proxy_conn.load().is_some()
            || !self.available()
            || self.proxy_connecting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let me = self.clone();
        let spawned = tokio::runtime::Handle::try_current().map(|rt| {
            rt.spawn(async move {
                if let Ok(Ok(c)) = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    me.connector.connect(me.response_timeout()),
                )
                .await
                {
                    me.proxy_conn.store(Some(Arc::new(c)));
                }
                me.proxy_connecting.store(false, Ordering::Release);
            })
        });
        if spawned.is_err() {
            self.proxy_connecting.store(false, Ordering::Release);
        }
    }

    /// One GCRA check: `burst` at once, then one per `interval`; up to `want` requests are
    /// granted together.
    pub async fn gcra(
        &self,
        key: &str,
        interval: Duration,
        burst: u64,
        want: u64,
        now_us: Option<u64>,
    ) -> Result<GcraAnswer, RedisDown> {
        let interval_us = (interval.as_micros() as u64).max(1);
        let mut inv = self.gcra.key(key);
        inv.arg(interval_us)
            .arg(interval_us.saturating_mul(burst))
            .arg(now_us.map(|n| n.to_string()).unwrap_or_default())
            .arg(want.max(1));
        let answer = self.invoke(inv).await;
        // Counted when the script went to Redis: not while there is no connection or the
        // circuit is open.
        if !matches!(answer, Err(RedisDown::Unavailable)) {
            self.calls.inc();
        }
        let (granted, remaining, retry_us, reset_us): (i64, i64, i64, i64) = answer?;
        Ok(GcraAnswer {
            allowed: granted >= 1,
            granted: granted.max(0) as u64,
            remaining: remaining.max(0) as u64,
            retry_after: Duration::from_micros(retry_us.max(0) as u64),
            reset: Duration::from_micros(reset_us.max(0) as u64),
        })
    }

    /// Take one of `max` slots under `token` for at most `lease`. Returns whether it was
    /// taken and how many are in use.
    pub async fn acquire(
        &self,
        key: &str,
        max: u64,
        lease: Duration,
        token: &str,
    ) -> Result<(bool, u64), RedisDown> {
        let mut inv = self.acquire.key(key);
        inv.arg(max).arg(lease.as_millis() as u64).arg(token);
        let (ok, n): (i64, i64) = self.invoke(inv).await?;
        Ok((ok == 1, n.max(0) as u64))
    }

    /// Give a slot back (best effort; the lease frees it otherwise).
    pub async fn release(&self, key: &str, token: &str) {
        let Some(conn) = self.conn.load_full() else {
            return;
        };
        let mut conn = (*conn).clone();
        let cmd = redis::cmd("ZREM").arg(key).arg(token).to_owned();
        let res: Result<Result<i64, _>, _> = tokio::time::timeout(
            Duration::from_millis(500),
            cmd.query_async::<i64>(&mut conn),
        )
        .await;
        if !matches!(res, Ok(Ok(_))) {
            tracing::debug!(
                key,
                "rate limits: slot release failed; its lease will free it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(url: &str) -> RedisLimits {
        let errors = IntCounter::new("e", "e").unwrap();
        let calls = IntCounter::new("c", "c").unwrap();
        let down = IntGauge::new("d", "d").unwrap();
        let cfg = RedisConfig {
            topology: crate::config::RedisTopology::Standalone { url: url.into() },
            prefix: "rl-test".into(),
            tls: Default::default(),
        };
        RedisLimits::new(&cfg, Duration::from_millis(200), errors, calls, down).unwrap()
    }

    fn unique(name: &str) -> String {
        format!("{name}-{}", uuid::Uuid::new_v4().simple())
    }

    /// The script on a real Redis, driven by an explicit clock: exactly the burst, then one
    /// per interval, and a full refill never exceeds the burst.
    #[tokio::test]
    async fn gcra_script_counts_exactly_on_a_fake_clock() {
        let r = limits("redis://127.0.0.1:6379");
        r.connect()
            .await
            .expect("Redis at 127.0.0.1:6379 (scripts/services starts it)");
        let key = r.key("rate", &unique("exact"));
        let interval = Duration::from_secs(2);
        let t0: u64 = 1_000_000_000_000;
        let mut allowed = 0;
        for _ in 0..12 {
            if r.gcra(&key, interval, 5, 1, Some(t0))
                .await
                .unwrap()
                .allowed
            {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5);
        let denied = r.gcra(&key, interval, 5, 1, Some(t0)).await.unwrap();
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, interval);
        let early = r
            .gcra(&key, interval, 5, 1, Some(t0 + 1_999_999))
            .await
            .unwrap();
        assert!(!early.allowed);
        let on_time = r
            .gcra(&key, interval, 5, 1, Some(t0 + 2_000_000))
            .await
            .unwrap();
        assert!(on_time.allowed);
        assert_eq!(on_time.remaining, 0);
        let later = t0 + 600_000_000;
        let mut refilled = 0;
        for _ in 0..12 {
            if r.gcra(&key, interval, 5, 1, Some(later))
                .await
                .unwrap()
                .allowed
            {
                refilled += 1;
            }
        }
        assert_eq!(refilled, 5);
    }

    /// A block is granted only as far as the burst has room, and charged in full.
    #[tokio::test]
    async fn gcra_grants_blocks_as_far_as_they_fit() {
        let r = limits("redis://127.0.0.1:6379");
        r.connect().await.expect("Redis at 127.0.0.1:6379");
        let key = r.key("rate", &unique("block"));
        let interval = Duration::from_secs(1);
        let t0: u64 = 2_000_000_000_000;
        let a = r.gcra(&key, interval, 5, 3, Some(t0)).await.unwrap();
        assert_eq!((a.allowed, a.granted, a.remaining), (true, 3, 2));
        let b = r.gcra(&key, interval, 5, 3, Some(t0)).await.unwrap();
        assert_eq!((b.allowed, b.granted, b.remaining), (true, 2, 0));
        let c = r.gcra(&key, interval, 5, 3, Some(t0)).await.unwrap();
        assert_eq!((c.allowed, c.granted), (false, 0));
        assert_eq!(c.retry_after, interval);
        let d = r
            .gcra(&key, interval, 5, 3, Some(t0 + 2_000_000))
            .await
            .unwrap();
        assert_eq!(d.granted, 2, "two intervals later, two more");
        assert_eq!(r.calls.get(), 4);
    }

    #[tokio::test]
    async fn concurrency_slots_are_shared_and_released() {
        let r = limits("redis://127.0.0.1:6379");
        r.connect().await.unwrap();
        let key = r.key("slots", &unique("slots"));
        let lease = Duration::from_secs(60);
        assert_eq!(r.acquire(&key, 2, lease, "a").await.unwrap(), (true, 1));
        assert_eq!(r.acquire(&key, 2, lease, "b").await.unwrap(), (true, 2));
        assert!(!r.acquire(&key, 2, lease, "c").await.unwrap().0);
        r.release(&key, "a").await;
        assert!(r.acquire(&key, 2, lease, "c").await.unwrap().0);
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_and_opens_the_circuit() {
        // Port 1 on loopback: nothing listens.
        let r = limits("redis://127.0.0.1:1");
        assert!(r.connect().await.is_err());
        // No connection: the check does not wait for one, it reports Redis unavailable.
        let out = r.gcra("k", Duration::from_secs(1), 1, 1, None).await;
        assert_eq!(out, Err(RedisDown::Unavailable));
        assert_eq!(r.calls.get(), 0, "nothing was sent to Redis");
        assert!(!r.available());
    }
}
