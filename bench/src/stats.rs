//! Latency histograms (microseconds) and error counts.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::workload::Op;

/// Highest trackable latency: 10 minutes, in microseconds.
pub const MAX_LATENCY_US: u64 = 600_000_000;
/// Significant decimal digits kept by the histograms.
pub const SIGFIG: u8 = 3;

/// Quantiles of the percentile curve in reports (1.0 = max).
pub const CURVE_QUANTILES: &[f64] = &[
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98,
    0.99, 0.993, 0.995, 0.997, 0.999, 0.9995, 0.9999, 0.99999, 1.0,
];

/// An empty latency histogram (1 µs .. [`MAX_LATENCY_US`], 3 digits).
pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: construction cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGFIG)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// A duration in whole microseconds, at least 1 and at most the maximum.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_US)
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

/// Summarize `h` (all zeros when empty).
pub fn summarize(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    Summary {
        count: h.len(),
        min: h.min(),
        mean: h.mean(),
        stdev: h.stdev(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}

/// One point of a percentile curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Percentile, 0..=100.
    pub percentile: f64,
    /// Latency at that percentile, microseconds.
    pub latency_us: u64,
}

/// The latency at each of [`CURVE_QUANTILES`] (empty for an empty histogram).
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<CurvePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    CURVE_QUANTILES
        .iter()
        .map(|&q| CurvePoint {
            // Rounded so that 0.99999 reads 99.999, not 99.99900000000001.
            percentile: (q * 100.0 * 1e6).round() / 1e6,
            latency_us: if q >= 1.0 {
                h.max()
            } else {
                h.value_at_quantile(q)
            },
        })
        .collect()
}

/// Outcomes of one operation kind.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Latency of successful requests.
    pub latency: Histogram<u64>,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            latency: new_histogram(),
            ok: 0,
            errors: 0,
        }
    }
}

/// Everything recorded during the measured window.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of successful requests (open loop: from the intended send time).
    pub latency: Histogram<u64>,
    /// Open loop only: latency from the actual send time.
    pub service: Histogram<u64>,
    /// Per operation.
    pub by_op: BTreeMap<Op, OpStats>,
    /// Error counts by [`crate::mcp::CallError::kind`].
    pub errors: BTreeMap<String, u64>,
    /// First message seen for each error kind.
    pub error_samples: BTreeMap<String, String>,
    /// Time from the answer to the end of its response body.
    pub body_end: Histogram<u64>,
    /// Response bodies that did not end within the drain timeout.
    pub unended_bodies: u64,
    /// Successful requests.
    pub ok: u64,
    /// Progress notifications received.
    pub progress_notifications: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: new_histogram(),
            service: new_histogram(),
            by_op: BTreeMap::new(),
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            body_end: new_histogram(),
            unended_bodies: 0,
            ok: 0,
            progress_notifications: 0,
        }
    }
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Stats {
        Stats::default()
    }

    /// Record a success. `service` is the time from the actual send (open
    /// loop), `None` in closed loop where it equals `latency`.
    pub fn record_ok(
        &mut self,
        op: Op,
        latency: Duration,
        service: Option<Duration>,
        notifications: u32,
    ) {
        let us = micros(latency);
        self.latency.saturating_record(us);
        if let Some(s) = service {
            self.service.saturating_record(micros(s));
        }
        let o = self.by_op.entry(op).or_default();
        o.latency.saturating_record(us);
        o.ok += 1;
        self.ok += 1;
        self.progress_notifications += u64::from(notifications);
    }

    /// Record how long after the answer its response body ended (`None`:
    /// it did not end within the drain timeout).
    pub fn record_body_end(&mut self, after_answer: Option<Duration>) {
        match after_answer {
            Some(d) => {
                self.body_end.saturating_record(micros(d));
            }
            None => self.unended_bodies += 1,
        }
    }

    /// Record a failure of kind `kind` (with a sample message).
    pub fn record_error(&mut self, op: Op, kind: &str, message: impl FnOnce() -> String) {
        *self.errors.entry(kind.to_owned()).or_insert(0) += 1;
        if !self.error_samples.contains_key(kind) {
            self.error_samples.insert(kind.to_owned(), message());
        }
        self.by_op.entry(op).or_default().errors += 1;
    }

    /// Total failures.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successes plus failures.
    pub fn requests(&self) -> u64 {
        self.ok + self.error_count()
    }

    /// Add `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides: `add` cannot fail on range.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        for (op, o) in &other.by_op {
            let mine = self.by_op.entry(*op).or_default();
            let _ = mine.latency.add(&o.latency);
            mine.ok += o.ok;
            mine.errors += o.errors;
        }
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += n;
        }
        for (k, m) in &other.error_samples {
            self.error_samples
                .entry(k.clone())
                .or_insert_with(|| m.clone());
        }
        let _ = self.body_end.add(&other.body_end);
        self.unended_bodies += other.unended_bodies;
        self.ok += other.ok;
        self.progress_notifications += other.progress_notifications;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: u64, expected: u64) -> bool {
        // 3 significant digits: relative error below 0.1 %.
        let tol = (expected as f64 * 0.001).max(1.0);
        (actual as f64 - expected as f64).abs() <= tol
    }

    #[test]
    fn percentiles_of_uniform_values() {
        let mut s = Stats::new();
        for v in 1..=10_000u64 {
            s.record_ok(Op::SmallCall, Duration::from_micros(v), None, 0);
        }
        let sum = summarize(&s.latency);
        assert_eq!(sum.count, 10_000);
        assert_eq!(sum.min, 1);
        assert!(within(sum.p50, 5_000), "p50 {}", sum.p50);
        assert!(within(sum.p90, 9_000), "p90 {}", sum.p90);
        assert!(within(sum.p99, 9_900), "p99 {}", sum.p99);
        assert!(within(sum.p999, 9_990), "p999 {}", sum.p999);
        assert!(within(sum.max, 10_000), "max {}", sum.max);
        assert!((sum.mean - 5_000.5).abs() < 10.0);
        assert!(sum.p50 <= sum.p90 && sum.p90 <= sum.p99 && sum.p99 <= sum.max);
    }

    #[test]
    fn empty_summary_and_curve() {
        let h = new_histogram();
        assert_eq!(summarize(&h), Summary::default());
        assert!(percentile_curve(&h).is_empty());
    }

    #[test]
    fn micros_clamps() {
        assert_eq!(micros(Duration::ZERO), 1);
        assert_eq!(micros(Duration::from_millis(2)), 2_000);
        assert_eq!(micros(Duration::from_secs(100_000)), MAX_LATENCY_US);
    }

    #[test]
    fn merge_adds_counts_and_keeps_extremes() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for v in 1..=100u64 {
            a.record_ok(Op::SmallCall, Duration::from_micros(v), None, 0);
        }
        for v in 1_000..=1_100u64 {
            b.record_ok(Op::Progress, Duration::from_micros(v), None, 3);
        }
        b.record_error(Op::Progress, "timeout", || "timed out".into());
        b.record_error(Op::Progress, "http_503", || "HTTP 503".into());
        a.record_error(Op::SmallCall, "timeout", || "first".into());
        a.record_body_end(Some(Duration::from_micros(5)));
        b.record_body_end(Some(Duration::from_millis(40)));
        b.record_body_end(None);
        a.merge(&b);
        assert_eq!(a.ok, 201);
        assert_eq!(a.latency.len(), 201);
        assert_eq!(a.latency.min(), 1);
        assert!(within(a.latency.max(), 1_100));
        assert_eq!(a.errors.get("timeout"), Some(&2));
        assert_eq!(a.errors.get("http_503"), Some(&1));
        assert_eq!(
            a.error_samples.get("timeout").map(String::as_str),
            Some("first")
        );
        assert_eq!(a.error_count(), 3);
        assert_eq!(a.requests(), 204);
        assert_eq!(a.progress_notifications, 303);
        assert_eq!(a.body_end.len(), 2);
        assert_eq!(a.unended_bodies, 1);
        assert_eq!(a.by_op[&Op::SmallCall].ok, 100);
        assert_eq!(a.by_op[&Op::Progress].ok, 101);
        assert_eq!(a.by_op[&Op::Progress].errors, 2);
        // The merged median sits at the boundary of the two sets.
        let p50 = summarize(&a.latency).p50;
        assert!((100..=1_001).contains(&p50), "p50 {p50}");
    }

    #[test]
    fn curve_is_monotonic_and_ends_at_max() {
        let mut h = new_histogram();
        for v in [5u64, 10, 20, 40, 80, 160, 5_000] {
            h.saturating_record(v);
        }
        let c = percentile_curve(&h);
        assert_eq!(c.len(), CURVE_QUANTILES.len());
        assert!(c.windows(2).all(|w| w[0].latency_us <= w[1].latency_us));
        assert_eq!(c.last().map(|p| p.latency_us), Some(h.max()));
        assert_eq!(c.last().map(|p| p.percentile), Some(100.0));
    }
}
