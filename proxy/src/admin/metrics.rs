//! Prometheus metrics. Request counters are updated in the logging phase; worker gauges are
//! read from the pools at scrape time, so the hot path pays nothing for them.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::routing::Pool;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub refusals: IntCounterVec,
    pub worker_restarts: IntCounterVec,
    pub upstream_connect_failures: IntCounterVec,
    worker_healthy: IntGaugeVec,
    worker_inflight: IntGaugeVec,
    /// Rate-limit decisions by policy and outcome.
    pub ratelimit_decisions: IntCounterVec,
    pub ratelimit_redis_errors: IntCounter,
    /// 1 while rate-limit checks cannot reach Redis (each policy's `on_redis_error` applies).
    pub ratelimit_redis_down: IntGauge,
}

/// MCP methods get their own label value; anything else is `other`, so a client cannot
/// blow up the label set.
pub fn method_label(method: Option<&str>) -> &'static str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "server/discover",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    ];
    match method {
        None => "none",
        Some(m) => KNOWN.iter().find(|k| **k == m).copied().unwrap_or("other"),
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_requests_total",
                "Requests by route, JSON-RPC method and HTTP status",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "mcp_gateway_request_duration_seconds",
                "Time from request to end of response",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route"],
        )?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_refusals_total",
                "Requests the gateway answered itself, by reason",
            ),
            &["reason"],
        )?;
        let worker_restarts = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_worker_restarts_total",
                "Spawned worker restarts by pool",
            ),
            &["pool"],
        )?;
        let upstream_connect_failures = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_upstream_connect_failures_total",
                "Failed connections to workers",
            ),
            &["pool", "worker"],
        )?;
        let worker_healthy = IntGaugeVec::new(
            Opts::new(
                "mcp_gateway_worker_healthy",
                "1 when the worker takes traffic",
            ),
            &["pool", "worker"],
        )?;
        let worker_inflight = IntGaugeVec::new(
            Opts::new(
                "mcp_gateway_worker_inflight",
                "Requests in flight per worker",
            ),
            &["pool", "worker"],
        )?;
        let ratelimit_decisions = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_ratelimit_decisions_total",
                "Rate-limit decisions by policy and outcome (allowed, limited, \
                 redis_down_allowed, redis_down_denied, fallback_allowed, fallback_limited)",
            ),
            &["policy", "outcome"],
        )?;
        let ratelimit_redis_errors = IntCounter::new(
            "mcp_gateway_ratelimit_redis_errors_total",
            "Rate-limit checks that failed or timed out in Redis",
        )?;
        let ratelimit_redis_down = IntGauge::new(
            "mcp_gateway_ratelimit_redis_down",
            "1 while rate-limit checks cannot use Redis (the fallback policy is in force)",
        )?;
        registry.register(Box::new(ratelimit_decisions.clone()))?;
        registry.register(Box::new(ratelimit_redis_errors.clone()))?;
        registry.register(Box::new(ratelimit_redis_down.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        registry.register(Box::new(worker_restarts.clone()))?;
        registry.register(Box::new(upstream_connect_failures.clone()))?;
        registry.register(Box::new(worker_healthy.clone()))?;
        registry.register(Box::new(worker_inflight.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            refusals,
            worker_restarts,
            upstream_connect_failures,
            worker_healthy,
            worker_inflight,
            ratelimit_decisions,
            ratelimit_redis_errors,
            ratelimit_redis_down,
        })
    }

    /// The Prometheus text format, with worker gauges refreshed from `pools`.
    pub fn render<'a>(&self, pools: impl Iterator<Item = &'a Pool>) -> String {
        for pool in pools {
            for w in &pool.workers {
                self.worker_healthy
                    .with_label_values(&[&pool.name, &w.id])
                    .set(i64::from(w.is_healthy()));
                self.worker_inflight
                    .with_label_values(&[&pool.name, &w.id])
                    .set(i64::try_from(w.inflight()).unwrap_or(i64::MAX));
            }
        }
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            return format!("# metrics encoding failed: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
