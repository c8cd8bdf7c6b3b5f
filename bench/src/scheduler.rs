//! Open-loop scheduling: request `k` is due at `k / rate` seconds after the
//! start, whatever happened to earlier requests. Latency is measured from
//! that intended time, so a slow server (or a slow generator) cannot hide
//! queueing delay (no coordinated omission). When the dispatcher sends a
//! request after its intended time, the lag is recorded.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

/// Fixed-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenSchedule {
    rate: f64,
}

impl OpenSchedule {
    /// A schedule of `rate` requests per second (finite, > 0).
    pub fn new(rate: f64) -> Result<OpenSchedule, String> {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(format!("--rate must be a positive number, got {rate}"));
        }
        if rate > 10_000_000.0 {
            return Err(format!("--rate {rate} is above 10 million per second"));
        }
        Ok(OpenSchedule { rate })
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Intended send time of request `k`, from the start (no drift: computed
    /// from `k`, not accumulated).
    pub fn offset(&self, k: u64) -> Duration {
        Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// Number of requests intended strictly before `horizon`.
    pub fn count_before(&self, horizon: Duration) -> u64 {
        // Estimate, then settle on exactly the `k`s with `offset(k) <
        // horizon`, as [`drive`] decides them (immune to float rounding).
        let mut n = (horizon.as_secs_f64() * self.rate).ceil() as u64;
        while self.offset(n) < horizon {
            n += 1;
        }
        while n > 0 && self.offset(n - 1) >= horizon {
            n -= 1;
        }
        n
    }
}

/// Behind-schedule accounting: how late requests were actually sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LagStats {
    /// Requests dispatched (in the measured window).
    pub dispatched: u64,
    /// Of which later than the tolerance.
    pub late: u64,
    /// Lag above which a request counts as late, microseconds.
    pub tolerance_us: u64,
    /// Largest lag, microseconds.
    pub max_lag_us: u64,
    /// Sum of lags, microseconds.
    pub total_lag_us: u64,
}

impl LagStats {
    /// Accounting that calls a request late beyond `tolerance`.
    pub fn new(tolerance: Duration) -> LagStats {
        LagStats {
            tolerance_us: duration_us(tolerance),
            ..LagStats::default()
        }
    }

    /// Record that a request intended at `intended` went out at `actual`
    /// (both from the start).
    pub fn observe(&mut self, intended: Duration, actual: Duration) {
        let lag = duration_us(actual.saturating_sub(intended));
        self.dispatched += 1;
        self.total_lag_us = self.total_lag_us.saturating_add(lag);
        self.max_lag_us = self.max_lag_us.max(lag);
        if lag > self.tolerance_us {
            self.late += 1;
        }
    }

    /// Mean lag, microseconds.
    pub fn mean_lag_us(&self) -> f64 {
        if self.dispatched == 0 {
            0.0
        } else {
            self.total_lag_us as f64 / self.dispatched as f64
        }
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Time source of the dispatcher: elapsed time since the start.
pub trait Clock {
    /// Time elapsed since the start.
    fn now(&self) -> Duration;
    /// Resolve once `now() >= t`.
    fn sleep_until(&self, t: Duration) -> impl Future<Output = ()> + Send;
}

/// What the dispatcher saw while driving a schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriveOutcome {
    /// Requests dispatched in total (warm-up included).
    pub dispatched: u64,
    /// Lag accounting of the measured window.
    pub lag: LagStats,
}

/// Dispatch every request of `schedule` intended before `end`.
///
/// For each `k`: wait for its intended time, then await `dispatch(k,
/// intended)` (which may block, e.g. on an in-flight limit; the time it takes
/// delays later requests and shows up as lag). Lag is recorded for requests
/// intended at or after `measure_from`, as the clock reads right after
/// `dispatch` returns.
pub async fn drive<C, F, Fut>(
    clock: &C,
    schedule: OpenSchedule,
    measure_from: Duration,
    end: Duration,
    tolerance: Duration,
    mut dispatch: F,
) -> DriveOutcome
where
    C: Clock,
    F: FnMut(u64, Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut lag = LagStats::new(tolerance);
    let mut k = 0u64;
    loop {
        let intended = schedule.offset(k);
        if intended >= end {
            break;
        }
        if clock.now() < intended {
            clock.sleep_until(intended).await;
        }
        dispatch(k, intended).await;
        if intended >= measure_from {
            lag.observe(intended, clock.now());
        }
        k += 1;
    }
    DriveOutcome { dispatched: k, lag }
}

/// The real clock: tokio's timer for the coarse wait, then yielding until
/// the exact instant (tokio's timer has millisecond granularity, which would
/// otherwise add up to 1 ms of lag to every request at high rates).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

/// Below this remaining wait, spin (yielding) instead of sleeping.
pub const SPIN_BELOW: Duration = Duration::from_micros(1_500);

impl TokioClock {
    /// A clock whose zero is `start`.
    pub fn new(start: tokio::time::Instant) -> TokioClock {
        TokioClock { start }
    }

    /// Its zero.
    pub fn start(&self) -> tokio::time::Instant {
        self.start
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn sleep_until(&self, t: Duration) -> impl Future<Output = ()> + Send {
        let start = self.start;
        async move {
            let target = start + t;
            let now = tokio::time::Instant::now();
            if target > now + SPIN_BELOW {
                tokio::time::sleep_until(target - SPIN_BELOW).await;
            }
            while tokio::time::Instant::now() < target {
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A clock that only moves when told: sleeping jumps to the target.
    struct FakeClock {
        now: Cell<Duration>,
    }

    impl FakeClock {
        fn new() -> FakeClock {
            FakeClock {
                now: Cell::new(Duration::ZERO),
            }
        }
        fn advance(&self, d: Duration) {
            self.now.set(self.now.get() + d);
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            self.now.get()
        }
        fn sleep_until(&self, t: Duration) -> impl Future<Output = ()> + Send {
            if self.now.get() < t {
                self.now.set(t);
            }
            std::future::ready(())
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn intended_times_follow_the_rate_without_drift() {
        let s = OpenSchedule::new(1000.0).expect("rate");
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), MS);
        assert_eq!(s.offset(1500), Duration::from_millis(1500));
        let s = OpenSchedule::new(3.0).expect("rate");
        // 1/3 s steps: the 3 000 000th request is exactly 1 000 000 s in.
        assert_eq!(s.offset(3_000_000), Duration::from_secs(1_000_000));
        assert!(s.offset(1) > Duration::from_millis(333));
        assert!(s.offset(1) < Duration::from_millis(334));
    }

    #[test]
    fn count_before_horizon() {
        let s = OpenSchedule::new(1000.0).expect("rate");
        assert_eq!(s.count_before(Duration::ZERO), 0);
        assert_eq!(s.count_before(Duration::from_micros(1)), 1);
        assert_eq!(s.count_before(Duration::from_millis(10)), 10);
        assert_eq!(s.count_before(Duration::from_micros(10_001)), 11);
        let s = OpenSchedule::new(3.0).expect("rate");
        assert_eq!(s.count_before(Duration::from_secs(1)), 3);
        assert_eq!(s.count_before(Duration::from_secs(10)), 30);
    }

    #[test]
    fn invalid_rates() {
        assert!(OpenSchedule::new(0.0).is_err());
        assert!(OpenSchedule::new(-1.0).is_err());
        assert!(OpenSchedule::new(f64::NAN).is_err());
        assert!(OpenSchedule::new(f64::INFINITY).is_err());
    }

    #[test]
    fn lag_accounting() {
        let mut lag = LagStats::new(MS);
        lag.observe(Duration::from_millis(10), Duration::from_millis(10));
        lag.observe(Duration::from_millis(11), Duration::from_micros(11_500));
        lag.observe(Duration::from_millis(12), Duration::from_millis(15));
        // Sent early (cannot happen, but must not underflow).
        lag.observe(Duration::from_millis(13), Duration::from_millis(12));
        assert_eq!(lag.dispatched, 4);
        assert_eq!(lag.late, 1);
        assert_eq!(lag.max_lag_us, 3_000);
        assert_eq!(lag.total_lag_us, 3_500);
        assert!((lag.mean_lag_us() - 875.0).abs() < 1e-9);
        assert_eq!(LagStats::new(MS).mean_lag_us(), 0.0);
    }

    #[test]
    fn on_time_dispatcher_has_no_lag() {
        let clock = FakeClock::new();
        let sent = std::cell::RefCell::new(Vec::new());
        let out = block_on(drive(
            &clock,
            OpenSchedule::new(1000.0).expect("rate"),
            Duration::from_millis(2),
            Duration::from_millis(10),
            MS,
            |k, intended| {
                sent.borrow_mut().push((k, intended, clock.now()));
                std::future::ready(())
            },
        ));
        assert_eq!(out.dispatched, 10);
        assert_eq!(out.lag.dispatched, 8, "only the measured window");
        assert_eq!(out.lag.late, 0);
        assert_eq!(out.lag.max_lag_us, 0);
        let sent = sent.into_inner();
        assert_eq!(sent.len(), 10);
        for (k, intended, at) in sent {
            assert_eq!(intended, Duration::from_millis(k));
            assert_eq!(at, intended, "sent exactly at the intended time");
        }
    }

    #[test]
    fn slow_dispatch_falls_behind_and_keeps_the_schedule() {
        // Each dispatch takes 2.5 ms (e.g. blocked on the in-flight limit)
        // against a 1 ms interval: the dispatcher falls further behind with
        // every request, but intended times stay on the 1 ms grid and
        // nothing is skipped.
        let clock = FakeClock::new();
        let intended_seen = std::cell::RefCell::new(Vec::new());
        let out = block_on(drive(
            &clock,
            OpenSchedule::new(1000.0).expect("rate"),
            Duration::ZERO,
            Duration::from_millis(4),
            MS,
            |_, intended| {
                intended_seen.borrow_mut().push(intended);
                clock.advance(Duration::from_micros(2_500));
                std::future::ready(())
            },
        ));
        assert_eq!(out.dispatched, 4);
        assert_eq!(
            intended_seen.into_inner(),
            vec![Duration::ZERO, MS, 2 * MS, 3 * MS]
        );
        // Completion clock: 2.5, 5.0, 7.5, 10.0 ms vs intended 0, 1, 2, 3 ms.
        assert_eq!(out.lag.dispatched, 4);
        assert_eq!(out.lag.late, 4);
        assert_eq!(out.lag.max_lag_us, 7_000);
        assert_eq!(out.lag.total_lag_us, 2_500 + 4_000 + 5_500 + 7_000);
    }

    #[test]
    fn a_single_stall_is_recovered() {
        // One dispatch stalls 5 ms; afterwards the dispatcher catches up by
        // sending the overdue requests back to back.
        let clock = FakeClock::new();
        let out = block_on(drive(
            &clock,
            OpenSchedule::new(1000.0).expect("rate"),
            Duration::ZERO,
            Duration::from_millis(20),
            MS,
            |k, _| {
                if k == 3 {
                    clock.advance(Duration::from_millis(5));
                }
                std::future::ready(())
            },
        ));
        assert_eq!(out.dispatched, 20);
        // k=3 ends at 8 ms (lag 5 ms); k=4..=7 go out at 8 ms (lags 4..1 ms);
        // from k=8 on the schedule is met again.
        assert_eq!(out.lag.late, 4, "lags of 5, 4, 3 and 2 ms exceed 1 ms");
        assert_eq!(out.lag.max_lag_us, 5_000);
        assert_eq!(out.lag.total_lag_us, 5_000 + 4_000 + 3_000 + 2_000 + 1_000);
    }
}
