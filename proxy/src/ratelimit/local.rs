//! The in-process backend: governor's keyed GCRA (lock-free per key, sharded map) for rates,
//! and counters in a sharded map for concurrency.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::redis::GcraAnswer;

/// A keyed GCRA over a clock (the real one in service, a fake one in tests).
pub struct LocalRate<C: Clock = DefaultClock> {
    limiter: RateLimiter<String, DashMapStateStore<String>, C, StateInformationMiddleware>,
    clock: C,
    interval: Duration,
    burst: u64,
}

impl LocalRate<DefaultClock> {
    pub fn new(interval: Duration, burst: u64) -> LocalRate<DefaultClock> {
        LocalRate::with_clock(interval, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LocalRate<C> {
    pub fn with_clock(interval: Duration, burst: u64, clock: C) -> LocalRate<C> {
        let interval = interval.max(Duration::from_nanos(1));
        let burst32 =
            NonZeroU32::new(burst.clamp(1, u32::MAX as u64) as u32).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst32);
        LocalRate {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            clock,
            interval,
            burst: burst32.get() as u64,
        }
    }

    pub fn check(&self, key: &str) -> GcraAnswer {
        match self.limiter.check_key(&key.to_string()) {
            Ok(snap) => {
                let remaining = snap.remaining_burst_capacity() as u64;
                GcraAnswer {
                    allowed: true,
                    granted: 1,
                    remaining,
                    retry_after: Duration::ZERO,
                    reset: self.interval * (self.burst - remaining.min(self.burst)) as u32,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                GcraAnswer {
                    allowed: false,
                    granted: 0,
                    remaining: 0,
                    retry_after: wait,
                    reset: wait + self.interval * (self.burst.saturating_sub(1)) as u32,
                }
            }
        }
    }

    /// Forget keys whose state is back to full (memory stays bounded by active keys).
    pub fn tidy(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// In-flight counters per key.
#[derive(Default)]
pub struct LocalSlots {
    counts: DashMap<String, Arc<AtomicU64>>,
}

/// A held slot; dropping it gives the slot back.
pub struct LocalSlot {
    count: Arc<AtomicU64>,
}

impl Drop for LocalSlot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LocalSlots {
    /// Take a slot when fewer than `max` are held; returns it and the count in use.
    pub fn acquire(&self, key: &str, max: u64) -> Result<(LocalSlot, u64), u64> {
        let count = match self.counts.get(key) {
            Some(c) => c.clone(),
            None => self.counts.entry(key.to_string()).or_default().clone(),
        };
        let before = count.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(before);
        }
        Ok((LocalSlot { count }, before + 1))
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn in_use(&self, key: &str) -> u64 {
        self.counts
            .get(key)
            .map(|c| c.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    /// Drop idle counters.
    pub fn tidy(&self) {
        self.counts
            .retain(|_, c| c.load(Ordering::Acquire) > 0 || Arc::strong_count(c) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn exactly_burst_then_refills_at_the_pace() {
        let clock = FakeRelativeClock::default();
        // 5 per 10 s: one every 2 s, 5 at once.
        let rate = LocalRate::with_clock(Duration::from_secs(2), 5, clock.clone());
        let allowed = (0..20).filter(|_| rate.check("k").allowed).count();
        assert_eq!(allowed, 5);
        let denied = rate.check("k");
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_secs(2));
        clock.advance(Duration::from_millis(1999));
        assert!(!rate.check("k").allowed, "not before the interval");
        clock.advance(Duration::from_millis(1));
        assert!(rate.check("k").allowed, "one more after one interval");
        assert!(!rate.check("k").allowed);
        // A whole period refills the whole burst, no more (no double burst at an edge).
        clock.advance(Duration::from_secs(60));
        let allowed = (0..20).filter(|_| rate.check("k").allowed).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn keys_are_independent_and_remaining_counts_down() {
        let clock = FakeRelativeClock::default();
        let rate = LocalRate::with_clock(Duration::from_secs(1), 3, clock);
        assert_eq!(rate.check("a").remaining, 2);
        assert_eq!(rate.check("a").remaining, 1);
        assert_eq!(rate.check("a").remaining, 0);
        assert!(!rate.check("a").allowed);
        assert!(rate.check("b").allowed);
    }

    #[test]
    fn slots_are_given_back_on_drop() {
        let slots = LocalSlots::default();
        let a = slots.acquire("u", 2).map(|s| s.0);
        let b = slots.acquire("u", 2).map(|s| s.0);
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(slots.acquire("u", 2).err(), Some(2));
        drop(a);
        assert_eq!(slots.in_use("u"), 1);
        assert!(slots.acquire("u", 2).is_ok());
        drop(b);
        slots.tidy();
        assert_eq!(slots.in_use("u"), 0);
    }
}
