//! Allowance taken from Redis in blocks, so a busy key does not cost a round trip per request
//! (docs/configuration.md "prefetch", docs/decisions.md "Rate limits: allowance in blocks").
//!
//! A replica asks the shared GCRA for up to `size` requests at once and admits them from
//! memory. Redis charges the whole block when it grants it, so across all replicas no more
//! is ever granted than the limit allows; what a replica holds but does not use within
//! `HOLD_FOR` is dropped (counted against the caller, never given twice). The block size
//! adapts per key: it doubles while blocks are used up quickly and halves when one expires
//! half-used, so a replica that sees a trickle of a key's traffic holds little of it.

use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Unused allowance is dropped this long after Redis granted it.
pub const HOLD_FOR: Duration = Duration::from_secs(1);
/// A block used up within this long after it was granted doubles the next one.
pub const FAST: Duration = Duration::from_millis(250);
/// The automatic block limit is what the limit allows in this long.
pub const AUTO_SPAN: Duration = Duration::from_millis(50);
/// The largest automatic block.
pub const MAX_AUTO: u64 = 256;

/// The automatic block limit of a policy: a tenth of its burst, or what the limit allows in
/// `AUTO_SPAN`, whichever is less; at least 1 (one round trip per request, exact).
pub fn auto_size(limit: u64, period: Duration, burst: u64) -> u64 {
    let per_span = (limit as u128 * AUTO_SPAN.as_nanos() / period.as_nanos().max(1)) as u64;
    (burst / 10).min(per_span).clamp(1, MAX_AUTO)
}

/// What one replica holds for one key.
#[derive(Debug, Clone, Copy)]
struct Held {
    left: u64,
    /// The size to ask for next.
    size: u64,
    granted_at: Instant,
    /// From Redis's answer when the block was granted: allowance left there, and when the
    /// key would be full again.
    remaining: u64,
    reset: Duration,
}

/// A request admitted from held allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Allowance left for the caller: held here plus what Redis had left at the grant.
    pub remaining: u64,
    pub reset: Duration,
}

/// Held allowance per key, for one policy.
pub struct Prefetch {
    max: u64,
    held: DashMap<String, Held>,
}

impl Prefetch {
    pub fn new(max: u64) -> Prefetch {
        Prefetch {
            max: max.max(1),
            held: DashMap::new(),
        }
    }

    /// Does this policy take more than one request's allowance at a time?
    pub fn enabled(&self) -> bool {
        self.max > 1
    }

    /// Admit one request from held allowance, if any is left and fresh.
    pub fn take(&self, key: &str, now: Instant) -> Option<Taken> {
        let mut h = self.held.get_mut(key)?;
        if h.left == 0 || now.saturating_duration_since(h.granted_at) >= HOLD_FOR {
            return None;
        }
        h.left -= 1;
        Some(Taken {
            remaining: h.remaining + h.left,
            reset: h.reset,
        })
    }

    /// How much to ask Redis for now: the key's current block size, adjusted by how the last
    /// block went.
    pub fn want(&self, key: &str, now: Instant) -> u64 {
        let Some(mut h) = self.held.get_mut(key) else {
            return 1;
        };
        let age = now.saturating_duration_since(h.granted_at);
        if h.left == 0 && age < FAST {
            h.size = (h.size * 2).min(self.max);
        } else if h.left * 2 >= h.size && age >= HOLD_FOR {
            h.size = (h.size / 2).max(1);
        }
        h.size
    }

    /// Redis granted `granted` (one of which the current request uses).
    pub fn granted(&self, key: &str, granted: u64, remaining: u64, reset: Duration, now: Instant) {
        let left = granted.saturating_sub(1);
        let mut h = self.held.entry(key.to_owned()).or_insert(Held {
            left: 0,
            size: 1,
            granted_at: now,
            remaining,
            reset,
        });
        // Another request of the same key may have fetched at the same moment: keep both.
        let fresh = now.saturating_duration_since(h.granted_at) < HOLD_FOR;
        h.left = if fresh { h.left + left } else { left };
        h.granted_at = now;
        h.remaining = remaining;
        h.reset = reset;
    }

    /// Redis refused: the caller is at its limit. Whatever was held is stale, and the next
    /// grant starts from one request again (replicas share what refills evenly).
    pub fn refused(&self, key: &str, now: Instant) {
        if let Some(mut h) = self.held.get_mut(key) {
            h.left = 0;
            h.size = 1;
            h.granted_at = now.checked_sub(HOLD_FOR).unwrap_or(h.granted_at);
        }
    }

    /// Forget keys idle for longer than the hold (memory stays bounded by active keys).
    pub fn tidy(&self, now: Instant) {
        self.held
            .retain(|_, h| now.saturating_duration_since(h.granted_at) < HOLD_FOR * 2);
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_size_is_exact_for_small_limits_and_capped_for_large_ones() {
        let min = Duration::from_secs(60);
        let s = Duration::from_secs(1);
        assert_eq!(
            auto_size(600, min, 600),
            1,
            "10/s: half a request per 50 ms"
        );
        assert_eq!(auto_size(1000, s, 1000), 50, "1000/s: 50 per 50 ms");
        assert_eq!(auto_size(1000, s, 100), 10, "a tenth of the burst");
        assert_eq!(auto_size(100_000_000, s, 100_000_000), MAX_AUTO);
        assert_eq!(auto_size(5, s, 5), 1);
    }

    #[test]
    fn blocks_grow_while_used_up_fast_and_are_spent_one_by_one() {
        let p = Prefetch::new(8);
        let t0 = Instant::now();
        assert_eq!(p.want("k", t0), 1, "a new key starts exact");
        p.granted("k", 1, 99, Duration::ZERO, t0);
        assert_eq!(
            p.take("k", t0),
            None,
            "a block of one is used by its own request"
        );
        assert_eq!(p.want("k", t0), 2);
        p.granted("k", 2, 97, Duration::ZERO, t0);
        assert_eq!(
            p.take("k", t0),
            Some(Taken {
                remaining: 97,
                reset: Duration::ZERO
            })
        );
        assert_eq!(p.take("k", t0), None);
        assert_eq!(p.want("k", t0), 4);
        p.granted("k", 4, 93, Duration::ZERO, t0);
        assert_eq!(p.want("k", t0), 4, "not used up yet: no growth");
        for _ in 0..3 {
            assert!(p.take("k", t0).is_some());
        }
        assert_eq!(p.want("k", t0), 8);
        p.granted("k", 8, 85, Duration::ZERO, t0);
        for _ in 0..7 {
            assert!(p.take("k", t0).is_some());
        }
        assert_eq!(p.want("k", t0), 8, "never past the policy's limit");
    }

    #[test]
    fn held_allowance_expires_and_a_half_used_block_halves_the_next() {
        let p = Prefetch::new(8);
        let t0 = Instant::now();
        for n in [1, 2, 4, 8] {
            assert_eq!(p.want("k", t0), n);
            p.granted("k", n, 0, Duration::ZERO, t0);
            while p.take("k", t0).is_some() {}
        }
        p.granted("k", 8, 0, Duration::ZERO, t0);
        assert!(p.take("k", t0).is_some());
        let later = t0 + HOLD_FOR;
        assert_eq!(p.take("k", later), None, "six left, but too old to use");
        assert_eq!(p.want("k", later), 4);
        p.tidy(t0 + HOLD_FOR * 3);
        assert!(p.is_empty());
    }

    #[test]
    fn a_refusal_drops_what_was_held_and_starts_over_from_one() {
        let p = Prefetch::new(8);
        let t0 = Instant::now();
        for n in [1, 2] {
            assert_eq!(p.want("k", t0), n);
            p.granted("k", n, 0, Duration::ZERO, t0);
            while p.take("k", t0).is_some() {}
        }
        p.granted("k", 3, 0, Duration::ZERO, t0);
        p.refused("k", t0);
        assert_eq!(p.take("k", t0), None);
        assert_eq!(p.want("k", t0), 1, "after a refusal, one at a time again");
        p.granted("k", 2, 0, Duration::ZERO, t0);
        assert!(p.take("k", t0).is_some());
        assert_eq!(p.take("k", t0), None);
        assert!(!Prefetch::new(1).enabled());
    }
}
