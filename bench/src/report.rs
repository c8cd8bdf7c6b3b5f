//! Reports: a text summary, machine-readable JSON and a self-contained HTML
//! page with an inline SVG percentile chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::procstat::ProcUsage;
use crate::runner::{LoadMode, RunConfig, RunOutcome};
use crate::stats::{percentile_curve, summarize, CurvePoint, Summary};

/// Version of the JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole report of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always `mcp-bench`.
    pub tool: String,
    /// Version of the generator.
    pub version: String,
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// `--label`.
    pub label: Option<String>,
    /// The options of the run.
    pub config: ReportConfig,
    /// What was measured.
    pub results: Results,
    /// Non-fatal problems.
    pub warnings: Vec<String>,
}

/// Options of the run (the token itself is never written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportConfig {
    /// Endpoint.
    pub url: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Closed loop: workers.
    pub concurrency: Option<usize>,
    /// Open loop: offered requests per second.
    pub rate: Option<f64>,
    /// Measured seconds.
    pub duration_s: f64,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Sessions requested.
    pub sessions: usize,
    /// Mix, `name=weight,...`.
    pub workload: String,
    /// Text size of the large call.
    pub payload_bytes: usize,
    /// Protocol revision.
    pub protocol: String,
    /// Per-operation timeout, seconds.
    pub timeout_s: f64,
    /// Whether a bearer token was sent.
    pub auth: bool,
}

/// Measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Requests in the measured window (ok + errors).
    pub requests: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Requests per second over `elapsed_s`.
    pub achieved_rate: f64,
    /// Successful requests per second over `elapsed_s`.
    pub ok_rate: f64,
    /// Configured measured time, seconds.
    pub duration_s: f64,
    /// From the start of the window to the last recorded answer (at least
    /// `duration_s`), seconds.
    pub elapsed_s: f64,
    /// Latency of successful requests, µs (open loop: from the intended send time).
    pub latency_us: Summary,
    /// Open loop: latency from the actual send time, µs.
    pub service_time_us: Option<Summary>,
    /// Time from each answer to the end of its response body, µs. Large
    /// values mean the server delays the end of the stream (the next
    /// request on that connection waits for it).
    pub body_end_after_answer_us: Summary,
    /// Response bodies that had not ended 200 ms after the answer.
    pub unended_bodies: u64,
    /// Failures by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// One message per failure kind.
    pub error_samples: BTreeMap<String, String>,
    /// Progress notifications received.
    pub progress_notifications: u64,
    /// Sessions opened up front.
    pub sessions_opened: usize,
    /// Per operation.
    pub by_op: BTreeMap<String, OpReport>,
    /// Open loop: schedule keeping.
    pub schedule: Option<ScheduleReport>,
    /// Latency by percentile (overall).
    pub percentile_curve: Vec<CurvePoint>,
    /// Watched server processes.
    pub processes: Vec<ProcUsage>,
}

/// One operation kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    /// Requests.
    pub requests: u64,
    /// Successes.
    pub ok: u64,
    /// Failures.
    pub errors: u64,
    /// Latency of successes, µs.
    pub latency_us: Summary,
    /// Latency by percentile.
    pub percentile_curve: Vec<CurvePoint>,
}

/// How well the open-loop dispatcher kept the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleReport {
    /// Offered rate.
    pub rate: f64,
    /// Requests the schedule intended in the window.
    pub intended: u64,
    /// Requests dispatched in the window.
    pub dispatched: u64,
    /// Dispatched later than `tolerance_us` after their intended time.
    pub late: u64,
    /// Lateness tolerance, µs.
    pub tolerance_us: u64,
    /// Largest dispatch lag, µs.
    pub max_lag_us: u64,
    /// Mean dispatch lag, µs.
    pub mean_lag_us: f64,
}

impl Report {
    /// Assemble the report of a run.
    pub fn new(cfg: &RunConfig, out: &RunOutcome) -> Report {
        let s = &out.stats;
        let elapsed = out.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let (mode, concurrency, rate) = match cfg.mode {
            LoadMode::Closed { concurrency } => ("closed", Some(concurrency), None),
            LoadMode::Open { rate } => ("open", None, Some(rate)),
        };
        let by_op = s
            .by_op
            .iter()
            .map(|(op, o)| {
                (
                    op.name().to_owned(),
                    OpReport {
                        requests: o.ok + o.errors,
                        ok: o.ok,
                        errors: o.errors,
                        latency_us: summarize(&o.latency),
                        percentile_curve: percentile_curve(&o.latency),
                    },
                )
            })
            .collect();
        let schedule = out.lag.map(|lag| ScheduleReport {
            rate: rate.unwrap_or(0.0),
            intended: out.intended.unwrap_or(lag.dispatched),
            dispatched: lag.dispatched,
            late: lag.late,
            tolerance_us: lag.tolerance_us,
            max_lag_us: lag.max_lag_us,
            mean_lag_us: lag.mean_lag_us(),
        });
        Report {
            tool: "mcp-bench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            schema: SCHEMA_VERSION,
            label: cfg.label.clone(),
            config: ReportConfig {
                url: cfg.url.clone(),
                mode: mode.into(),
                concurrency,
                rate,
                duration_s: cfg.duration.as_secs_f64(),
                warmup_s: cfg.warmup.as_secs_f64(),
                sessions: cfg.sessions,
                workload: cfg.mix.spec(),
                payload_bytes: cfg.payload_bytes,
                protocol: cfg.protocol.as_str().into(),
                timeout_s: cfg.timeout.as_secs_f64(),
                auth: cfg.token.is_some(),
            },
            results: Results {
                requests: s.requests(),
                ok: s.ok,
                errors: s.error_count(),
                achieved_rate: s.requests() as f64 / elapsed,
                ok_rate: s.ok as f64 / elapsed,
                duration_s: cfg.duration.as_secs_f64(),
                elapsed_s: out.elapsed.as_secs_f64(),
                latency_us: summarize(&s.latency),
                service_time_us: out.lag.map(|_| summarize(&s.service)),
                body_end_after_answer_us: summarize(&s.body_end),
                unended_bodies: s.unended_bodies,
                errors_by_kind: s.errors.clone(),
                error_samples: s.error_samples.clone(),
                progress_notifications: s.progress_notifications,
                sessions_opened: out.sessions_opened,
                by_op,
                schedule,
                percentile_curve: percentile_curve(&s.latency),
                processes: out.watch.clone(),
            },
            warnings: out.warnings.clone(),
        }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self).map_err(|e| format!("cannot serialize report: {e}"))
    }

    /// One-line description of the load.
    pub fn describe_load(&self) -> String {
        let c = &self.config;
        let load = match (c.concurrency, c.rate) {
            (Some(n), _) => format!("closed loop, concurrency {n}"),
            (None, Some(r)) => format!("open loop, {r} req/s"),
            (None, None) => c.mode.clone(),
        };
        format!(
            "{load}, {}s measured after {}s warm-up, protocol {}, {} session(s), workload {}",
            c.duration_s, c.warmup_s, c.protocol, self.results.sessions_opened, c.workload
        )
    }

    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        let r = &self.results;
        let l = &r.latency_us;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "mcp-bench {}{}",
            self.config.url,
            self.label
                .as_deref()
                .map(|l| format!(" [{l}]"))
                .unwrap_or_default()
        );
        let _ = writeln!(t, "  {}", self.describe_load());
        let _ = writeln!(
            t,
            "  requests {} ({} ok, {} errors) in {:.2}s: {:.1} req/s",
            r.requests, r.ok, r.errors, r.elapsed_s, r.achieved_rate
        );
        let _ = writeln!(
            t,
            "  latency (us)  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.0}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        if let Some(s) = &r.service_time_us {
            let _ = writeln!(
                t,
                "  service time from actual send (us)  p50 {}  p99 {}  max {}",
                s.p50, s.p99, s.max
            );
        }
        let b = &r.body_end_after_answer_us;
        let _ = writeln!(
            t,
            "  body end after answer (us)  p50 {}  p99 {}  max {}{}",
            b.p50,
            b.p99,
            b.max,
            if r.unended_bodies > 0 {
                format!(", {} bodies not ended within 200 ms", r.unended_bodies)
            } else {
                String::new()
            }
        );
        for (name, o) in &r.by_op {
            let _ = writeln!(
                t,
                "    {name:<11} {:>8} ok {:>6} err  p50 {:>7}  p99 {:>7}  max {:>7}",
                o.ok, o.errors, o.latency_us.p50, o.latency_us.p99, o.latency_us.max
            );
        }
        if r.progress_notifications > 0 {
            let _ = writeln!(t, "  progress notifications {}", r.progress_notifications);
        }
        if let Some(s) = &r.schedule {
            let _ = writeln!(
                t,
                "  schedule: {} intended, {} dispatched, {} late (> {} us), max lag {} us, mean lag {:.0} us",
                s.intended, s.dispatched, s.late, s.tolerance_us, s.max_lag_us, s.mean_lag_us
            );
        }
        for (kind, n) in &r.errors_by_kind {
            let sample = r.error_samples.get(kind).map(String::as_str).unwrap_or("");
            let _ = writeln!(t, "  error {kind}: {n} (e.g. {sample})");
        }
        for p in &r.processes {
            let _ = writeln!(
                t,
                "  process {} (pid {}): {:.1} us CPU/request, {:.2} context switches/request, {:.1}% of a core, RSS {} KiB (peak {} KiB)",
                p.name, p.pid, p.cpu_us_per_request, p.ctx_switches_per_request, p.cpu_percent, p.rss_kib, p.hwm_kib
            );
        }
        for w in &self.warnings {
            let _ = writeln!(t, "  warning: {w}");
        }
        t
    }

    /// Self-contained HTML page.
    pub fn to_html(&self) -> String {
        let r = &self.results;
        let mut h = String::new();
        let title = match &self.label {
            Some(l) => format!("mcp-bench: {l}"),
            None => "mcp-bench report".to_owned(),
        };
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{CSS}</style></head><body>\n<h1>{}</h1>\n<p>{} &mdash; {}</p>\n",
            esc(&title),
            esc(&title),
            esc(&self.config.url),
            esc(&self.describe_load())
        );
        let _ = write!(
            h,
            "<table><tr><th>requests</th><th>ok</th><th>errors</th><th>req/s</th><th>p50 µs</th><th>p90 µs</th><th>p99 µs</th><th>p99.9 µs</th><th>max µs</th></tr>\n<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td>{}</tr></table>\n",
            r.requests,
            r.ok,
            r.errors,
            r.achieved_rate,
            summary_cells(&r.latency_us)
        );
        let mut series: Vec<(String, &[CurvePoint])> =
            vec![("all".to_owned(), r.percentile_curve.as_slice())];
        for (name, o) in &r.by_op {
            series.push((name.clone(), o.percentile_curve.as_slice()));
        }
        h.push_str("<h2>Latency by percentile</h2>\n");
        h.push_str(&svg_chart(&series));
        h.push_str("\n<h2>By operation</h2>\n<table><tr><th>operation</th><th>requests</th><th>ok</th><th>errors</th><th>p50 µs</th><th>p90 µs</th><th>p99 µs</th><th>p99.9 µs</th><th>max µs</th></tr>\n");
        for (name, o) in &r.by_op {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
                esc(name),
                o.requests,
                o.ok,
                o.errors,
                summary_cells(&o.latency_us)
            );
        }
        h.push_str("</table>\n");
        if let Some(s) = &r.service_time_us {
            let _ = writeln!(
                h,
                "<p>Latency above is measured from each request's intended send time (open loop). From the actual send time: p50 {} µs, p99 {} µs, max {} µs.</p>",
                s.p50, s.p99, s.max
            );
        }
        let be = &r.body_end_after_answer_us;
        let _ = writeln!(
            h,
            "<p>Response bodies ended {} µs (p50), {} µs (p99), {} µs (max) after the answer; {} had not ended within 200 ms.</p>",
            be.p50, be.p99, be.max, r.unended_bodies
        );
        if let Some(s) = &r.schedule {
            let _ = write!(
                h,
                "<h2>Schedule</h2>\n<p>{} requests intended at {} req/s, {} dispatched; {} dispatched more than {} µs late; max lag {} µs, mean lag {:.0} µs.</p>\n",
                s.intended, s.rate, s.dispatched, s.late, s.tolerance_us, s.max_lag_us, s.mean_lag_us
            );
        }
        if !r.errors_by_kind.is_empty() {
            h.push_str(
                "<h2>Errors</h2>\n<table><tr><th>kind</th><th>count</th><th>example</th></tr>\n",
            );
            for (kind, n) in &r.errors_by_kind {
                let sample = r.error_samples.get(kind).map(String::as_str).unwrap_or("");
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{n}</td><td>{}</td></tr>",
                    esc(kind),
                    esc(sample)
                );
            }
            h.push_str("</table>\n");
        }
        if !r.processes.is_empty() {
            h.push_str("<h2>Server processes</h2>\n<table><tr><th>name</th><th>pid</th><th>CPU µs/request</th><th>context switches/request</th><th>% of a core</th><th>RSS KiB</th><th>peak RSS KiB</th></tr>\n");
            for p in &r.processes {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
                    esc(&p.name),
                    p.pid,
                    p.cpu_us_per_request,
                    p.ctx_switches_per_request,
                    p.cpu_percent,
                    p.rss_kib,
                    p.hwm_kib
                );
            }
            h.push_str("</table>\n");
        }
        for w in &self.warnings {
            let _ = writeln!(h, "<p class=\"warn\">warning: {}</p>", esc(w));
        }
        h.push_str("</body></html>\n");
        h
    }
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
th{background:#f3f3f3}td:first-child{text-align:left}.warn{color:#a00}\
svg text{font-size:12px;font-family:system-ui,sans-serif}";

const COLORS: &[&str] = &[
    "#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
];

fn summary_cells(s: &Summary) -> String {
    format!(
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
        s.p50, s.p90, s.p99, s.p999, s.max
    )
}

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// Horizontal position of a percentile: `log10(1 / (1 - p))`, so 90 %,
/// 99 %, 99.9 % ... are evenly spaced; 100 % (the max) sits at 5.3.
pub fn percentile_x(percentile: f64) -> f64 {
    let q = percentile / 100.0;
    if q >= 1.0 {
        return 5.3;
    }
    (1.0 / (1.0 - q)).log10().clamp(0.0, 5.0)
}

/// A round upper bound for the vertical axis.
pub fn nice_ceiling(v: u64) -> u64 {
    let v = v.max(1);
    let mut step = 1u64;
    while step.saturating_mul(10) <= v {
        step = step.saturating_mul(10);
    }
    for m in [1u64, 2, 5, 10] {
        let c = step.saturating_mul(m);
        if c >= v {
            return c;
        }
    }
    step.saturating_mul(10)
}

/// Inline SVG of latency against percentile, one polyline per series.
pub fn svg_chart(series: &[(String, &[CurvePoint])]) -> String {
    const W: f64 = 760.0;
    const H: f64 = 360.0;
    const L: f64 = 70.0;
    const R: f64 = 130.0;
    const T: f64 = 20.0;
    const B: f64 = 40.0;
    let pw = W - L - R;
    let ph = H - T - B;
    let ymax = nice_ceiling(
        series
            .iter()
            .flat_map(|(_, pts)| pts.iter().map(|p| p.latency_us))
            .max()
            .unwrap_or(1),
    );
    let (unit, div) = if ymax >= 10_000 {
        ("ms", 1000.0)
    } else {
        ("µs", 1.0)
    };
    let x = |p: f64| L + percentile_x(p) / 5.3 * pw;
    let y = |v: u64| T + ph - (v as f64 / ymax as f64) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"latency by percentile\">"
    );
    let _ = writeln!(
        s,
        "<rect x=\"{L}\" y=\"{T}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fff\" stroke=\"#999\"/>"
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let xi = L + i as f64 / 5.3 * pw;
        let _ = writeln!(
            s,
            "<line x1=\"{xi:.1}\" y1=\"{T}\" x2=\"{xi:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{xi:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            T + ph,
            T + ph + 16.0
        );
    }
    let xm = L + pw;
    let _ = writeln!(
        s,
        "<text x=\"{xm:.1}\" y=\"{:.1}\" text-anchor=\"middle\">max</text>",
        T + ph + 16.0
    );
    for i in 0..=5u64 {
        let v = ymax * i / 5;
        let yi = y(v);
        let _ = writeln!(
            s,
            "<line x1=\"{L}\" y1=\"{yi:.1}\" x2=\"{:.1}\" y2=\"{yi:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            L + pw,
            L - 6.0,
            yi + 4.0,
            fmt_axis(v as f64 / div)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">latency ({unit})</text>",
        T + ph / 2.0,
        T + ph / 2.0
    );
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>",
        L + pw / 2.0,
        H - 4.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let width = if i == 0 { 2.5 } else { 1.5 };
        let points: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.percentile), y(p.latency_us)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\" points=\"{}\"><title>{}</title></polyline>",
            points.join(" "),
            esc(name)
        );
        let ly = T + 10.0 + i as f64 * 18.0;
        let lx = L + pw + 12.0;
        let _ = writeln!(
            s,
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"{width}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

fn fmt_axis(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::Protocol;
    use crate::scheduler::LagStats;
    use crate::stats::Stats;
    use crate::workload::{Mix, Op};
    use std::time::Duration;

    fn sample(open: bool) -> (RunConfig, RunOutcome) {
        let cfg = RunConfig {
            url: "http://127.0.0.1:1/mcp?a=<b>".into(),
            mode: if open {
                LoadMode::Open { rate: 100.0 }
            } else {
                LoadMode::Closed { concurrency: 4 }
            },
            duration: Duration::from_secs(2),
            warmup: Duration::from_secs(1),
            sessions: 2,
            mix: Mix::parse("small_call=3,large_call=1").expect("mix"),
            payload_bytes: 1024,
            token: Some("secret-token".into()),
            ca_file: None,
            protocol: Protocol::V2025_06_18,
            timeout: Duration::from_secs(5),
            max_in_flight: 100,
            late_tolerance: Duration::from_millis(1),
            progress_line: false,
            label: Some("direct <&>".into()),
            watch: vec![],
        };
        let mut stats = Stats::new();
        for v in 1..=200u64 {
            stats.record_ok(
                Op::SmallCall,
                Duration::from_micros(100 + v),
                open.then(|| Duration::from_micros(90 + v)),
                0,
            );
        }
        for v in 1..=50u64 {
            stats.record_ok(
                Op::LargeCall,
                Duration::from_micros(1_000 + v),
                open.then(|| Duration::from_micros(900 + v)),
                0,
            );
        }
        stats.record_error(Op::LargeCall, "http_502", || "HTTP 502".into());
        let mut lag = LagStats::new(Duration::from_millis(1));
        lag.observe(Duration::ZERO, Duration::from_micros(10));
        let out = RunOutcome {
            stats,
            lag: open.then_some(lag),
            intended: open.then_some(200),
            elapsed: Duration::from_millis(2_500),
            sessions_opened: 2,
            watch: vec![],
            warnings: vec![],
        };
        (cfg, out)
    }

    #[test]
    fn json_shape() {
        let (cfg, out) = sample(true);
        let rep = Report::new(&cfg, &out);
        let json = rep.to_json().expect("json");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid json");
        assert_eq!(v["tool"], "mcp-bench");
        assert_eq!(v["schema"], SCHEMA_VERSION);
        assert_eq!(v["config"]["mode"], "open");
        assert_eq!(v["config"]["rate"], 100.0);
        assert_eq!(v["config"]["auth"], true);
        assert!(!json.contains("secret-token"), "token must not leak");
        let r = &v["results"];
        assert_eq!(r["requests"], 251);
        assert_eq!(r["ok"], 250);
        assert_eq!(r["errors"], 1);
        assert!((r["achieved_rate"].as_f64().unwrap_or(0.0) - 100.4).abs() < 1e-9);
        for key in ["p50", "p90", "p99", "p999", "max", "min", "mean", "count"] {
            assert!(r["latency_us"][key].is_number(), "latency_us.{key}");
        }
        assert!(r["service_time_us"]["p50"].is_number());
        assert_eq!(r["errors_by_kind"]["http_502"], 1);
        assert_eq!(r["by_op"]["small_call"]["ok"], 200);
        assert_eq!(r["by_op"]["large_call"]["errors"], 1);
        assert_eq!(r["schedule"]["intended"], 200);
        assert_eq!(r["schedule"]["late"], 0);
        assert!(r["percentile_curve"]
            .as_array()
            .is_some_and(|a| !a.is_empty()));
        let p50 = r["latency_us"]["p50"].as_u64().unwrap_or(0);
        let p99 = r["latency_us"]["p99"].as_u64().unwrap_or(0);
        let max = r["latency_us"]["max"].as_u64().unwrap_or(0);
        assert!(0 < p50 && p50 <= p99 && p99 <= max);
        // Round trip.
        let back: Report = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.results.latency_us.p99, rep.results.latency_us.p99);
        assert_eq!(back.results.by_op, rep.results.by_op);
        assert_eq!(back.config.workload, rep.config.workload);
    }

    #[test]
    fn closed_loop_json_has_no_schedule() {
        let (cfg, out) = sample(false);
        let v: serde_json::Value =
            serde_json::from_str(&Report::new(&cfg, &out).to_json().expect("json")).expect("json");
        assert_eq!(v["config"]["mode"], "closed");
        assert_eq!(v["config"]["concurrency"], 4);
        assert!(v["results"]["schedule"].is_null());
        assert!(v["results"]["service_time_us"].is_null());
    }

    #[test]
    fn html_is_self_contained_with_svg() {
        let (cfg, out) = sample(true);
        let html = Report::new(&cfg, &out).to_html();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<svg"));
        assert!(html.contains("</svg>"));
        assert!(html.contains("<polyline"));
        assert!(html.contains("small_call"));
        assert!(html.contains("direct &lt;&amp;&gt;"));
        assert!(!html.contains("<b>"), "URL must be escaped");
        assert!(!html.contains("src=\"http"), "no external resources");
        assert!(!html.contains("href=\"http"), "no external resources");
        assert!(html.contains("http_502"));
        let text = Report::new(&cfg, &out).to_text();
        assert!(text.contains("p99"));
    }

    #[test]
    fn chart_helpers() {
        assert_eq!(percentile_x(0.0), 0.0);
        assert!((percentile_x(90.0) - 1.0).abs() < 1e-9);
        assert!((percentile_x(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(percentile_x(100.0), 5.3);
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(10), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(450), 500);
        assert_eq!(nice_ceiling(501), 1000);
        let empty = svg_chart(&[("all".into(), &[])]);
        assert!(empty.starts_with("<svg") && empty.ends_with("</svg>"));
    }
}
