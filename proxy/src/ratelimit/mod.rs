//! Rate and concurrency limits (docs/configuration.md "rate_limits", docs/operations.md for
//! what happens while Redis is away).
//!
//! Each policy counts requests per key (user, API key, client address, route, tool, or a
//! combination) with one of two kinds: a smooth rate with a burst (GCRA) or a number of
//! requests in flight. The backend is this process (`local`) or Redis (`redis`, shared by
//! every replica, one atomic script per check). Checks happen at three points: the identity
//! service's paths (`check_path`), an MCP route once the caller is known (`check_route`),
//! and each `tools/call` once the body is parsed (`check_tool`).

pub mod local;
pub mod prefetch;
pub mod redis;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use prometheus::IntCounter;

use crate::admin::metrics::Metrics;
use crate::config::{
    OnRedisError, RateBackend, RateKeyPart, RateKind, RateLimitConfig, RatePolicyConfig,
};
use local::{LocalRate, LocalSlot, LocalSlots};
use prefetch::Prefetch;
use redis::{GcraAnswer, RedisLimits};

/// Who and what a check is about.
#[derive(Default, Clone, Copy)]
pub struct Subject<'a> {
    pub user: Option<&'a str>,
    pub api_key: Option<&'a str>,
    pub ip: Option<IpAddr>,
    pub route: Option<&'a str>,
    pub path: &'a str,
    pub roles: &'a [String],
    pub tool: Option<&'a str>,
}

/// The state of one policy after a check, for the `RateLimit` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub policy: Arc<str>,
    /// Requests per window (or slots).
    pub quota: u64,
    pub window_secs: u64,
    pub remaining: u64,
    pub reset_secs: u64,
}

/// A refused request: which policy and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub quota: Quota,
    pub retry_after_secs: u64,
    /// Refused because Redis was unavailable and the policy says `deny`.
    pub redis_down: bool,
}

impl Limited {
    pub fn message(&self) -> String {
        if self.redis_down {
            format!(
                "rate limit {} cannot be checked right now; retry after {} s",
                self.quota.policy, self.retry_after_secs
            )
        } else if self.quota.window_secs == 0 {
            format!(
                "too many requests in progress (limit {}: {} at once); retry after {} s",
                self.quota.policy, self.quota.quota, self.retry_after_secs
            )
        } else {
            format!(
                "rate limit exceeded (limit {}: {} per {} s); retry after {} s",
                self.quota.policy, self.quota.quota, self.quota.window_secs, self.retry_after_secs
            )
        }
    }

    /// `Retry-After`, `RateLimit-Policy` and `RateLimit` for the 429 answer.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        let [p, r] = quota_headers(&self.quota);
        [("retry-after", self.retry_after_secs.to_string()), p, r]
    }
}

/// The IETF `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers).
/// Written piece by piece: they go on every answer a limit let through, and three `format!`s
/// cost ~3,500 instructions per request (`bench/instructions.sh`), most of `add_headers`.
pub fn quota_headers(q: &Quota) -> [(&'static str, String); 2] {
    let mut digits = itoa::Buffer::new();
    let mut policy = quoted(&q.policy, 16);
    policy.push_str(";q=");
    policy.push_str(digits.format(q.quota));
    if q.window_secs != 0 {
        policy.push_str(";w=");
        policy.push_str(digits.format(q.window_secs));
    }
    let mut now = quoted(&q.policy, 24);
    now.push_str(";r=");
    now.push_str(digits.format(q.remaining));
    now.push_str(";t=");
    now.push_str(digits.format(q.reset_secs));
    [("ratelimit-policy", policy), ("ratelimit", now)]
}

/// `"name"` with room for `extra` more bytes.
fn quoted(name: &str, extra: usize) -> String {
    let mut s = String::with_capacity(name.len() + 2 + extra);
    s.push('"');
    s.push_str(name);
    s.push('"');
    s
}

/// A held concurrency slot; dropping it gives it back.
pub enum Permit {
    Local(#[allow(dead_code)] LocalSlot),
    Redis {
        store: Arc<RedisLimits>,
        key: String,
        token: String,
    },
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Permit::Redis { store, key, token } = self {
            let (store, key, token) = (store.clone(), std::mem::take(key), std::mem::take(token));
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { store.release(&key, &token).await });
            }
        }
    }
}

/// What a request gathered from the checks that let it through.
#[derive(Default)]
pub struct Admission {
    /// The policy closest to its limit, for the response headers.
    pub tightest: Option<Quota>,
    pub permits: Vec<Permit>,
}

impl Admission {
    fn note(&mut self, q: Quota) {
        let tighter = match &self.tightest {
            None => true,
            Some(t) => q.remaining < t.remaining,
        };
        if tighter {
            self.tightest = Some(q);
        }
    }
}

#[derive(Clone, Copy)]
enum Outcome {
    Allowed,
    Limited,
    RedisDownAllowed,
    RedisDownDenied,
    FallbackAllowed,
    FallbackLimited,
}

struct Counters {
    allowed: IntCounter,
    limited: IntCounter,
    redis_down_allowed: IntCounter,
    redis_down_denied: IntCounter,
    fallback_allowed: IntCounter,
    fallback_limited: IntCounter,
}

impl Counters {
    fn new(m: &Metrics, policy: &str) -> Counters {
        let c = |o: &str| m.ratelimit_decisions.with_label_values(&[policy, o]);
        Counters {
            allowed: c("allowed"),
            limited: c("limited"),
            redis_down_allowed: c("redis_down_allowed"),
            redis_down_denied: c("redis_down_denied"),
            fallback_allowed: c("fallback_allowed"),
            fallback_limited: c("fallback_limited"),
        }
    }

    fn count(&self, o: Outcome) {
        match o {
            Outcome::Allowed => &self.allowed,
            Outcome::Limited => &self.limited,
            Outcome::RedisDownAllowed => &self.redis_down_allowed,
            Outcome::RedisDownDenied => &self.redis_down_denied,
            Outcome::FallbackAllowed => &self.fallback_allowed,
            Outcome::FallbackLimited => &self.fallback_limited,
        }
        .inc()
    }
}

enum State {
    Rate {
        interval: Duration,
        burst: u64,
        /// The local backend, or the fallback (limit ÷ replicas) of a Redis one.
        local: LocalRate,
        /// Allowance held from Redis (`prefetch`).
        held: Prefetch,
    },
    Slots {
        max: u64,
        lease: Duration,
        local: LocalSlots,
        /// limit ÷ replicas, for the fallback of a Redis policy.
        fallback_max: u64,
    },
}

struct Policy {
    cfg: RatePolicyConfig,
    name: Arc<str>,
    tools: Option<GlobSet>,
    tool_scoped: bool,
    window_secs: u64,
    quota: u64,
    state: State,
    counters: Counters,
}

pub struct RateLimiter {
    policies: Vec<Policy>,
    redis: Option<Arc<RedisLimits>>,
}

fn glob_set(globs: &[String]) -> Option<GlobSet> {
    if globs.is_empty() {
        return None;
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        // Validated already; a bad glob here matches nothing rather than everything.
        if let Ok(g) = Glob::new(g) {
            b.add(g);
        }
    }
    b.build().ok()
}

fn secs_up(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s + 1
    } else {
        s
    }
}

impl RateLimiter {
    /// Build the policies. `redis` is the shared backend when Redis is configured.
    pub fn new(
        cfg: &RateLimitConfig,
        redis: Option<Arc<RedisLimits>>,
        metrics: &Metrics,
    ) -> RateLimiter {
        let replicas = cfg.replicas.max(1);
        let policies = cfg
            .policies
            .iter()
            .map(|p| {
                let uses_redis = p.backend == RateBackend::Redis && redis.is_some();
                let divide = if uses_redis { replicas } else { 1 };
                let (state, window_secs, quota) = match p.kind {
                    RateKind::Rate {
                        limit,
                        period,
                        burst,
                    } => {
                        let interval = period / (limit.clamp(1, u32::MAX as u64) as u32);
                        // The fallback of a Redis policy: limit ÷ replicas on each node.
                        let local = LocalRate::new(
                            interval * divide.min(u32::MAX as u64) as u32,
                            burst.div_ceil(divide),
                        );
                        (
                            State::Rate {
                                interval,
                                burst,
                                local,
                                held: Prefetch::new(if uses_redis { p.prefetch } else { 1 }),
                            },
                            secs_up(period),
                            limit,
                        )
                    }
                    RateKind::Concurrency { max, lease } => (
                        State::Slots {
                            max,
                            lease,
                            local: LocalSlots::default(),
                            fallback_max: max.div_ceil(divide),
                        },
                        0,
                        max,
                    ),
                };
                Policy {
                    name: Arc::from(p.name.as_str()),
                    tools: glob_set(&p.tools),
                    tool_scoped: !p.tools.is_empty() || p.key.contains(&RateKeyPart::Tool),
                    window_secs,
                    quota,
                    state,
                    counters: Counters::new(metrics, &p.name),
                    cfg: p.clone(),
                }
            })
            .collect();
        RateLimiter { policies, redis }
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The identity service's paths (`/auth/login`, …): policies that name the path.
    pub async fn check_path(&self, s: &Subject<'_>, adm: &mut Admission) -> Result<(), Limited> {
        for p in &self.policies {
            if p.cfg.paths.iter().any(|x| x == s.path) {
                self.check(p, s, adm).await?;
            }
        }
        Ok(())
    }

    /// An MCP route, once the caller is known: policies that do not depend on the tool.
    pub async fn check_route(&self, s: &Subject<'_>, adm: &mut Admission) -> Result<(), Limited> {
        for p in &self.policies {
            if p.cfg.paths.is_empty() && !p.tool_scoped && route_applies(p, s.route) {
                self.check(p, s, adm).await?;
            }
        }
        Ok(())
    }

    /// One `tools/call` (`s.tool` set): policies keyed on or filtered by the tool.
    pub async fn check_tool(&self, s: &Subject<'_>, adm: &mut Admission) -> Result<(), Limited> {
        let Some(tool) = s.tool else {
            return Ok(());
        };
        for p in &self.policies {
            if !(p.cfg.paths.is_empty() && p.tool_scoped && route_applies(p, s.route)) {
                continue;
            }
            if p.tools.as_ref().is_some_and(|g| !g.is_match(tool)) {
                continue;
            }
            self.check(p, s, adm).await?;
        }
        Ok(())
    }

    /// Does any policy look at tools (so the body phase must call `check_tool`)?
    pub fn has_tool_policies(&self) -> bool {
        self.policies.iter().any(|p| p.tool_scoped)
    }

    async fn check(&self, p: &Policy, s: &Subject<'_>, adm: &mut Admission) -> Result<(), Limited> {
        if !p.cfg.roles.is_empty() && !s.roles.iter().any(|r| p.cfg.roles.contains(r)) {
            return Ok(());
        }
        if s.roles.iter().any(|r| p.cfg.exempt_roles.contains(r)) {
            return Ok(());
        }
        let Some(key) = key_for(p, s) else {
            // The request lacks what the policy counts by (an anonymous caller for a
            // per-user policy, say): the policy does not apply.
            return Ok(());
        };
        let redis = match (p.cfg.backend, &self.redis) {
            (RateBackend::Redis, Some(r)) => {
                r.warm_proxy_connection();
                Some(r)
            }
            _ => None,
        };
        match &p.state {
            State::Rate {
                interval,
                burst,
                local,
                held,
            } => {
                let (answer, outcome_ok, outcome_no) = match redis {
                    None => (local.check(&key), Outcome::Allowed, Outcome::Limited),
                    Some(r) => match self.redis_rate(r, held, &key, *interval, *burst).await {
                        Ok(a) => (a, Outcome::Allowed, Outcome::Limited),
                        Err(_) => match p.cfg.on_redis_error {
                            OnRedisError::Allow => {
                                p.counters.count(Outcome::RedisDownAllowed);
                                return Ok(());
                            }
                            OnRedisError::Deny => {
                                p.counters.count(Outcome::RedisDownDenied);
                                return Err(self.limited(p, 1, true));
                            }
                            OnRedisError::Local => (
                                local.check(&key),
                                Outcome::FallbackAllowed,
                                Outcome::FallbackLimited,
                            ),
                        },
                    },
                };
                self.rate_answer(p, answer, outcome_ok, outcome_no, adm)
            }
            State::Slots {
                max,
                lease,
                local,
                fallback_max,
            } => {
                let local_take =
                    |limit: u64, ok: Outcome, no: Outcome, adm: &mut Admission| match local
                        .acquire(&key, limit)
                    {
                        Ok((slot, used)) => {
                            p.counters.count(ok);
                            adm.note(self.quota(p, limit.saturating_sub(used), 0));
                            adm.permits.push(Permit::Local(slot));
                            Ok(())
                        }
                        Err(_) => {
                            p.counters.count(no);
                            Err(self.limited(p, 1, false))
                        }
                    };
                let Some(r) = redis else {
                    return local_take(*max, Outcome::Allowed, Outcome::Limited, adm);
                };
                let rkey = r.key("slots", &key);
                let token = uuid::Uuid::new_v4().simple().to_string();
                match r.acquire(&rkey, *max, *lease, &token).await {
                    Ok((true, used)) => {
                        p.counters.count(Outcome::Allowed);
                        adm.note(self.quota(p, max.saturating_sub(used), 0));
                        adm.permits.push(Permit::Redis {
                            store: r.clone(),
                            key: rkey,
                            token,
                        });
                        Ok(())
                    }
                    Ok((false, _)) => {
                        p.counters.count(Outcome::Limited);
                        Err(self.limited(p, 1, false))
                    }
                    Err(_) => match p.cfg.on_redis_error {
                        OnRedisError::Allow => {
                            p.counters.count(Outcome::RedisDownAllowed);
                            Ok(())
                        }
                        OnRedisError::Deny => {
                            p.counters.count(Outcome::RedisDownDenied);
                            Err(self.limited(p, 1, true))
                        }
                        OnRedisError::Local => local_take(
                            *fallback_max,
                            Outcome::FallbackAllowed,
                            Outcome::FallbackLimited,
                            adm,
                        ),
                    },
                }
            }
        }
    }

    /// A Redis rate check, answered from held allowance when the policy prefetches and some
    /// is left.
    async fn redis_rate(
        &self,
        r: &RedisLimits,
        held: &Prefetch,
        key: &str,
        interval: Duration,
        burst: u64,
    ) -> Result<GcraAnswer, redis::RedisDown> {
        if !held.enabled() {
            return r.gcra(&r.key("rate", key), interval, burst, 1, None).await;
        }
        let now = std::time::Instant::now();
        if let Some(t) = held.take(key, now) {
            return Ok(GcraAnswer {
                allowed: true,
                granted: 1,
                remaining: t.remaining,
                retry_after: Duration::ZERO,
                reset: t.reset,
            });
        }
        let want = held.want(key, now);
        let a = r
            .gcra(&r.key("rate", key), interval, burst, want, None)
            .await?;
        if a.allowed {
            held.granted(key, a.granted, a.remaining, a.reset, now);
            Ok(GcraAnswer {
                remaining: a.remaining + a.granted.saturating_sub(1),
                ..a
            })
        } else {
            held.refused(key, now);
            Ok(a)
        }
    }

    fn rate_answer(
        &self,
        p: &Policy,
        a: GcraAnswer,
        ok: Outcome,
        no: Outcome,
        adm: &mut Admission,
    ) -> Result<(), Limited> {
        if a.allowed {
            p.counters.count(ok);
            adm.note(self.quota(p, a.remaining, secs_up(a.reset)));
            Ok(())
        } else {
            p.counters.count(no);
            let mut l = self.limited(p, secs_up(a.retry_after).max(1), false);
            l.quota.reset_secs = secs_up(a.reset);
            Err(l)
        }
    }

    fn quota(&self, p: &Policy, remaining: u64, reset_secs: u64) -> Quota {
        Quota {
            policy: p.name.clone(),
            quota: p.quota,
            window_secs: p.window_secs,
            remaining,
            reset_secs,
        }
    }

    fn limited(&self, p: &Policy, retry_after_secs: u64, redis_down: bool) -> Limited {
        Limited {
            quota: self.quota(p, 0, retry_after_secs),
            retry_after_secs,
            redis_down,
        }
    }

    /// Keys with local state for `policy` (its own counts, or its fallback's).
    pub fn local_keys(&self, policy: &str) -> usize {
        self.policies
            .iter()
            .find(|p| &*p.name == policy)
            .map(|p| match &p.state {
                State::Rate { local, .. } => local.len(),
                State::Slots { local, .. } => local.len(),
            })
            .unwrap_or(0)
    }

    /// Forget idle local state; called now and then from the control plane.
    pub fn tidy(&self) {
        for p in &self.policies {
            match &p.state {
                State::Rate { local, held, .. } => {
                    local.tidy();
                    held.tidy(std::time::Instant::now());
                }
                State::Slots { local, .. } => local.tidy(),
            }
        }
    }
}

fn route_applies(p: &Policy, route: Option<&str>) -> bool {
    let Some(route) = route else {
        return false;
    };
    (p.cfg.routes.is_empty() || p.cfg.routes.iter().any(|r| r == route))
        && !p.cfg.except_routes.iter().any(|r| r == route)
}

/// `policy|user=…|tool=…`; `None` when the request lacks a part the policy counts by.
fn key_for(p: &Policy, s: &Subject<'_>) -> Option<String> {
    use std::fmt::Write;
    let mut key = String::with_capacity(64);
    key.push_str(&p.name);
    // Text parts appended as they are (no formatting machinery on every request's path).
    for part in &p.cfg.key {
        let (label, text) = match part {
            RateKeyPart::User => ("|user=", s.user?),
            RateKeyPart::ApiKey => ("|key=", s.api_key?),
            RateKeyPart::Route => ("|route=", s.route.unwrap_or(s.path)),
            RateKeyPart::Tool => ("|tool=", s.tool?),
            RateKeyPart::Ip => {
                let _ = write!(key, "|ip={}", s.ip?);
                continue;
            }
        };
        key.push_str(label);
        key.push_str(text);
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::{quota_headers, Quota};

    #[test]
    fn quota_headers_follow_the_draft_syntax() {
        let mut q = Quota {
            policy: "calls".into(),
            quota: 5,
            window_secs: 3600,
            remaining: 4,
            reset_secs: 3599,
        };
        assert_eq!(
            quota_headers(&q),
            [
                ("ratelimit-policy", "\"calls\";q=5;w=3600".to_string()),
                ("ratelimit", "\"calls\";r=4;t=3599".to_string()),
            ]
        );
        // A concurrency limit has no window.
        (q.window_secs, q.remaining, q.reset_secs) = (0, 0, 0);
        assert_eq!(quota_headers(&q)[0].1, "\"calls\";q=5");
        assert_eq!(quota_headers(&q)[1].1, "\"calls\";r=0;t=0");
    }
}
