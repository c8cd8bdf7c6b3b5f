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
    pub ratelimit_redis_calls: IntCounter,
    /// 1 while rate-limit checks cannot reach Redis (each policy's `on_redis_error` applies).
    pub ratelimit_redis_down: IntGauge,
    /// Client connections open now (`limits.max_connections` caps it).
    pub client_connections: IntGauge,
    /// TLS handshakes on the client listener, by result (ok, error, timeout).
    pub tls_handshakes: IntCounterVec,
    /// Unix time at which the listener's certificate expires (0 without `tls`).
    pub tls_certificate_expiry: IntGauge,
    pub log_dropped: IntCounterVec,
    pub log_shipped: IntCounterVec,
    pub log_spooled: IntCounter,
    pub log_replayed: IntCounter,
    pub log_stored: IntCounter,
    pub log_spool_bytes: IntGauge,
    pub redis_errors: IntCounterVec,
    pub database_errors: IntCounterVec,
    /// DNS discovery: failed resolutions per pool, and the members in force per pool.
    pub discovery_errors: IntCounterVec,
    pub discovery_members: IntGaugeVec,
    /// Tools, upstream latency, auth failures, pool in-flight, queue depth.
    pub log: LogMetrics,
}

/// Distinct tool names given a label of their own; later ones count as `other`, so clients
/// cannot blow up the label set.
const MAX_TOOL_LABELS: usize = 256;

/// Metrics added with log shipping. Fields that the request path touches are handles
/// resolved once (no label lookup per request where avoidable).
pub struct LogMetrics {
    pub tool_calls: IntCounterVec,
    tool_handles: std::sync::RwLock<std::collections::HashMap<String, IntCounter>>,
    tool_other: IntCounter,
    pub upstream_duration: HistogramVec,
    pub auth_failures: IntCounterVec,
    pub pool_inflight: IntGaugeVec,
    pub queue_depth: IntGauge,
}

impl LogMetrics {
    /// Count one `tools/call` of `tool`.
    pub fn tool_call(&self, tool: &str) {
        if let Ok(map) = self.tool_handles.read() {
            if let Some(c) = map.get(tool) {
                c.inc();
                return;
            }
            if map.len() >= MAX_TOOL_LABELS {
                self.tool_other.inc();
                return;
            }
        }
        let Ok(mut map) = self.tool_handles.write() else {
            return;
        };
        if map.len() >= MAX_TOOL_LABELS {
            self.tool_other.inc();
            return;
        }
        let c = map
            .entry(tool.to_owned())
            .or_insert_with(|| self.tool_calls.with_label_values(&[tool]))
            .clone();
        c.inc();
    }
}

/// A stable label for why authentication failed.
pub fn auth_failure_reason(e: &crate::auth::AuthError) -> &'static str {
    use crate::auth::AuthError as A;
    match e {
        A::Missing => "missing",
        A::TokenInQuery => "token_in_query",
        A::Malformed => "malformed",
        A::UnknownIssuer => "unknown_issuer",
        A::AlgorithmNotAllowed => "algorithm_not_allowed",
        A::UnknownKey => "unknown_key",
        A::Expired => "expired",
        A::NotYetValid => "not_yet_valid",
        A::WrongAudience => "wrong_audience",
        A::BadSignature => "bad_signature",
        A::Invalid(_) => "invalid",
    }
}

/// HTTP status as a label without formatting the common ones.
pub fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    const COMMON: &[(u16, &str)] = &[
        (0, "0"),
        (200, "200"),
        (202, "202"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (413, "413"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    match COMMON.iter().find(|(c, _)| *c == status) {
        Some((_, s)) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(status.to_string()),
    }
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
        let ratelimit_redis_calls = IntCounter::new(
            "mcp_gateway_ratelimit_redis_calls_total",
            "Rate checks sent to Redis (one per request, or one per block of allowance with \
             prefetch)",
        )?;
        let ratelimit_redis_down = IntGauge::new(
            "mcp_gateway_ratelimit_redis_down",
            "1 while rate-limit checks cannot use Redis (the fallback policy is in force)",
        )?;
        let discovery_errors = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_discovery_errors_total",
                "DNS discovery resolutions that failed (the last known members were kept), by pool",
            ),
            &["pool"],
        )?;
        let discovery_members = IntGaugeVec::new(
            Opts::new(
                "mcp_gateway_discovery_members",
                "Members of a DNS-discovered pool (fixed upstreams included), by pool",
            ),
            &["pool"],
        )?;
        registry.register(Box::new(discovery_errors.clone()))?;
        registry.register(Box::new(discovery_members.clone()))?;
        registry.register(Box::new(ratelimit_decisions.clone()))?;
        registry.register(Box::new(ratelimit_redis_errors.clone()))?;
        registry.register(Box::new(ratelimit_redis_calls.clone()))?;
        registry.register(Box::new(ratelimit_redis_down.clone()))?;
        let client_connections = IntGauge::new(
            "mcp_gateway_client_connections",
            "Client connections open now (limits.max_connections caps them)",
        )?;
        registry.register(Box::new(client_connections.clone()))?;
        let tls_handshakes = IntCounterVec::new(
            Opts::new(
                "mcp_gateway_tls_handshakes_total",
                "TLS handshakes on the client listener, by result (ok, error, timeout)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(tls_handshakes.clone()))?;
        let tls_certificate_expiry = IntGauge::new(
            "mcp_gateway_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the client listener's certificate expires (0 without tls)",
        )?;
        registry.register(Box::new(tls_certificate_expiry.clone()))?;
        let c = |name: &str, help: &str| IntCounter::new(name, help);
        let cv = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let log_dropped = cv(
            "mcp_gateway_log_dropped_total",
            "Log records dropped, by reason (queue_full, spool_full, ...)",
            &["reason"],
        )?;
        let log_shipped = cv(
            "mcp_gateway_log_shipped_total",
            "Log records handed to a sink (redis, database, trace)",
            &["sink"],
        )?;
        let log_spooled = c(
            "mcp_gateway_log_spooled_total",
            "Log records written to the disk spool because a sink was down",
        )?;
        let log_replayed = c(
            "mcp_gateway_log_replayed_total",
            "Log records replayed from the disk spool",
        )?;
        let log_stored = c(
            "mcp_gateway_log_stored_total",
            "Log records the stream shipper wrote to the database",
        )?;
        let log_spool_bytes =
            IntGauge::new("mcp_gateway_log_spool_bytes", "Bytes in the disk spool")?;
        let redis_errors = cv(
            "mcp_gateway_redis_errors_total",
            "Failed Redis operations of the log pipeline, by operation",
            &["op"],
        )?;
        let database_errors = cv(
            "mcp_gateway_database_errors_total",
            "Failed database operations of the log pipeline, by operation",
            &["op"],
        )?;
        let tool_calls = cv(
            "mcp_gateway_tool_calls_total",
            "tools/call requests by tool (names past the 256th: other)",
            &["tool"],
        )?;
        let tool_other = tool_calls.with_label_values(&["other"]);
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "mcp_gateway_upstream_duration_seconds",
                "Time from sending the request to a worker to its response header",
            )
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0, 30.0,
            ]),
            &["pool"],
        )?;
        let auth_failures = cv(
            "mcp_gateway_auth_failures_total",
            "Failed authentications by reason",
            &["reason"],
        )?;
        let pool_inflight = IntGaugeVec::new(
            Opts::new("mcp_gateway_pool_inflight", "Requests in flight per pool"),
            &["pool"],
        )?;
        let queue_depth = IntGauge::new(
            "mcp_gateway_log_queue_depth",
            "Log records waiting in memory for the batcher",
        )?;
        registry.register(Box::new(log_dropped.clone()))?;
        registry.register(Box::new(log_shipped.clone()))?;
        registry.register(Box::new(log_spooled.clone()))?;
        registry.register(Box::new(log_replayed.clone()))?;
        registry.register(Box::new(log_stored.clone()))?;
        registry.register(Box::new(log_spool_bytes.clone()))?;
        registry.register(Box::new(redis_errors.clone()))?;
        registry.register(Box::new(database_errors.clone()))?;
        registry.register(Box::new(tool_calls.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(pool_inflight.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
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
            ratelimit_redis_calls,
            ratelimit_redis_down,
            client_connections,
            tls_handshakes,
            tls_certificate_expiry,
            log_dropped,
            log_shipped,
            log_spooled,
            log_replayed,
            log_stored,
            log_spool_bytes,
            redis_errors,
            database_errors,
            discovery_errors,
            discovery_members,
            log: LogMetrics {
                tool_calls,
                tool_handles: Default::default(),
                tool_other,
                upstream_duration,
                auth_failures,
                pool_inflight,
                queue_depth,
            },
        })
    }

    /// Drop the per-worker series of a worker that left its pool (DNS discovery churns
    /// addresses: their series would otherwise stay, frozen, forever).
    pub fn forget_worker(&self, pool: &str, worker: &str) {
        let _ = self.worker_healthy.remove_label_values(&[pool, worker]);
        let _ = self.worker_inflight.remove_label_values(&[pool, worker]);
    }

    /// The Prometheus text format, with worker gauges refreshed from `pools`.
    pub fn render<'a>(&self, pools: impl Iterator<Item = &'a Pool>) -> String {
        for pool in pools {
            let inflight: usize = pool.workers.iter().map(|w| w.inflight()).sum();
            self.log
                .pool_inflight
                .with_label_values(&[&pool.name])
                .set(i64::try_from(inflight).unwrap_or(i64::MAX));
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

/// The value at quantile `q` of a Prometheus histogram, by linear interpolation inside the
/// bucket where it falls (what `histogram_quantile` does).
fn quantile(h: &prometheus::proto::Histogram, q: f64) -> Option<f64> {
    let total = h.get_sample_count() as f64;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut prev_bound, mut prev_count) = (0.0, 0.0);
    for b in h.get_bucket() {
        let count = b.cumulative_count() as f64;
        let bound = b.upper_bound();
        if count >= rank {
            if !bound.is_finite() {
                return Some(prev_bound);
            }
            let in_bucket = count - prev_count;
            let frac = if in_bucket > 0.0 {
                (rank - prev_count) / in_bucket
            } else {
                1.0
            };
            return Some(prev_bound + (bound - prev_bound) * frac);
        }
        prev_bound = bound;
        prev_count = count;
    }
    Some(prev_bound)
}

impl Metrics {
    /// Totals for the dashboard: per route requests, errors (5xx and the gateway's own
    /// refusals other than 2xx), p50/p99 latency; per tool calls. Counters are totals since
    /// start; the page turns them into rates.
    pub fn overview(&self) -> serde_json::Value {
        use std::collections::BTreeMap;
        let mut routes: BTreeMap<String, (u64, u64, Option<f64>, Option<f64>)> = BTreeMap::new();
        let mut tools: BTreeMap<String, u64> = BTreeMap::new();
        for mf in self.registry.gather() {
            match mf.name() {
                "mcp_gateway_requests_total" => {
                    for m in mf.get_metric() {
                        let label = |n: &str| {
                            m.get_label()
                                .iter()
                                .find(|l| l.name() == n)
                                .map(|l| l.value().to_string())
                                .unwrap_or_default()
                        };
                        let n = m.get_counter().get_value() as u64;
                        let status: u16 = label("status").parse().unwrap_or(0);
                        let e = routes.entry(label("route")).or_default();
                        e.0 += n;
                        if status >= 400 || status == 0 {
                            e.1 += n;
                        }
                    }
                }
                "mcp_gateway_request_duration_seconds" => {
                    for m in mf.get_metric() {
                        let route = m
                            .get_label()
                            .iter()
                            .find(|l| l.name() == "route")
                            .map(|l| l.value().to_string())
                            .unwrap_or_default();
                        let h = m.get_histogram();
                        let e = routes.entry(route).or_default();
                        e.2 = quantile(h, 0.5);
                        e.3 = quantile(h, 0.99);
                    }
                }
                "mcp_gateway_tool_calls_total" => {
                    for m in mf.get_metric() {
                        let tool = m
                            .get_label()
                            .iter()
                            .find(|l| l.name() == "tool")
                            .map(|l| l.value().to_string())
                            .unwrap_or_default();
                        *tools.entry(tool).or_default() += m.get_counter().get_value() as u64;
                    }
                }
                _ => {}
            }
        }
        serde_json::json!({
            "routes": routes.into_iter().map(|(route, (requests, errors, p50, p99))| serde_json::json!({
                "route": route, "requests": requests, "errors": errors,
                "p50_ms": p50.map(|s| s * 1000.0), "p99_ms": p99.map(|s| s * 1000.0),
            })).collect::<Vec<_>>(),
            "tools": tools.into_iter().map(|(tool, calls)| serde_json::json!({"tool": tool, "calls": calls})).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the shipped Grafana dashboard queries is one this file registers.
    #[test]
    fn dashboard_uses_only_registered_metrics() {
        let dashboard = include_str!("../../../config/grafana/mcp-gateway.json");
        let source = include_str!("metrics.rs");
        let mut seen = 0;
        for (i, _) in dashboard.match_indices("mcp_gateway_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let name = name.trim_end_matches("_bucket");
            assert!(
                source.contains(&format!("\"{name}\"")),
                "the dashboard queries {name}, which is not registered"
            );
            seen += 1;
        }
        assert!(seen > 10);
    }

    #[test]
    fn tool_labels_are_bounded() {
        let m = Metrics::new().unwrap();
        for i in 0..(MAX_TOOL_LABELS + 10) {
            m.log.tool_call(&format!("t{i}"));
        }
        m.log.tool_call("t0");
        assert_eq!(m.log.tool_calls.with_label_values(&["t0"]).get(), 2);
        assert_eq!(m.log.tool_calls.with_label_values(&["other"]).get(), 10);
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(418), "418");
    }
}
