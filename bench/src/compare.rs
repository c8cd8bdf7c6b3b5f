//! Summarize the reports of `bench/compare.sh`: one JSON report per target
//! (`direct`, `gateway`, `nginx`), stage (closed, open loop) and round,
//! labelled `TARGET/STAGE/rN`. Medians over rounds, ratios to nginx and to
//! direct.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::report::Report;
use crate::streams::{StreamProcMem, StreamsReport};

/// Name of the watched proxy process (gateway or nginx) in reports.
pub const PROXY_PROC: &str = "proxy";
/// Name of the watched worker process in reports.
pub const WORKER_PROC: &str = "worker";

/// Medians of one target.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetRow {
    /// Target name.
    pub target: String,
    /// Rounds with a closed-loop report.
    pub closed_rounds: usize,
    /// Rounds with an open-loop report.
    pub open_rounds: usize,
    /// Closed loop: successful requests per second.
    pub closed_rate: Option<f64>,
    /// Closed loop: p50 latency, µs.
    pub closed_p50: Option<f64>,
    /// Closed loop: p99 latency, µs.
    pub closed_p99: Option<f64>,
    /// Open loop: offered rate.
    pub open_rate: Option<f64>,
    /// Open loop: p50 latency, µs.
    pub open_p50: Option<f64>,
    /// Open loop: p99 latency, µs.
    pub open_p99: Option<f64>,
    /// Proxy CPU µs per request, closed loop.
    pub proxy_cpu_closed: Option<f64>,
    /// Proxy CPU µs per request, open loop.
    pub proxy_cpu_open: Option<f64>,
    /// Worker CPU µs per request, open loop.
    pub worker_cpu_open: Option<f64>,
    /// Worker CPU µs per request, closed loop.
    pub worker_cpu_closed: Option<f64>,
    /// Proxy context switches per request, closed loop.
    pub proxy_ctxsw_closed: Option<f64>,
    /// Proxy peak RSS, KiB (largest over all reports).
    pub proxy_rss_kib: Option<u64>,
    /// Closed-loop throughput's spread over the rounds: (max − min) ÷ median.
    pub closed_spread: Option<f64>,
    /// Errors in the open-loop reports.
    pub open_errors: u64,
    /// Errors summed over all reports.
    pub errors: u64,
    /// Requests summed over all reports.
    pub requests: u64,
}

/// Median of `v` (`None` when empty).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The target part of a `TARGET/STAGE/rN` label.
pub fn target_of(report: &Report) -> String {
    report
        .label
        .as_deref()
        .and_then(|l| l.split('/').next())
        .filter(|t| !t.is_empty())
        .unwrap_or(&report.config.url)
        .to_owned()
}

fn proc_usage<'a>(report: &'a Report, name: &str) -> Option<&'a crate::procstat::ProcUsage> {
    report.results.processes.iter().find(|p| p.name == name)
}

fn proc_cpu(report: &Report, name: &str) -> Option<f64> {
    proc_usage(report, name).map(|p| p.cpu_us_per_request)
}

/// Read every `*.json` file in `dir` as a `T`; `what` names the kind in errors.
fn load_json_dir<T: serde::de::DeserializeOwned>(dir: &Path, what: &str) -> Result<Vec<T>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text =
            std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        out.push(
            serde_json::from_str(&text)
                .map_err(|e| format!("{} is not {what}: {e}", p.display()))?,
        );
    }
    Ok(out)
}

/// Read every `*.json` report in `dir`.
pub fn load_dir(dir: &Path) -> Result<Vec<Report>, String> {
    load_json_dir(dir, "an mcp-bench report")
}

/// Read every `*.json` streams report in `dir` (none when `dir` is absent).
pub fn load_streams_dir(dir: &Path) -> Result<Vec<StreamsReport>, String> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    load_json_dir(dir, "a streams report")
}

/// Stream count a projection of the proxy's RSS is made for.
pub const PROJECT_STREAMS: u64 = 20_000;

fn stream_proc<'a>(r: &'a StreamsReport, name: &str) -> Option<&'a StreamProcMem> {
    r.processes.iter().find(|p| p.name == name)
}

/// Table of streams runs (labelled `TARGET/streams/K`), by count then target.
pub fn streams_markdown(reports: &[StreamsReport]) -> String {
    let target = |r: &StreamsReport| {
        r.label
            .as_deref()
            .and_then(|l| l.split('/').next())
            .unwrap_or(&r.url)
            .to_owned()
    };
    let mut sorted: Vec<&StreamsReport> = reports.iter().collect();
    sorted.sort_by_key(|r| r.count);
    let mut t = String::new();
    t.push_str("| target | streams asked | held | failed | ended early | proxy RSS before MiB | proxy RSS held MiB | proxy KiB/stream | ×nginx | proxy RSS at 20k MiB (projected) | worker KiB/stream |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &sorted {
        let nginx = sorted
            .iter()
            .find(|n| n.count == r.count && target(n) == "nginx")
            .and_then(|n| stream_proc(n, PROXY_PROC))
            .and_then(|p| p.kib_per_stream);
        let proxy = stream_proc(r, PROXY_PROC);
        let worker = stream_proc(r, WORKER_PROC);
        let per = proxy.and_then(|p| p.kib_per_stream);
        let projected = proxy.and_then(|p| {
            let per = p.kib_per_stream?;
            let extra = PROJECT_STREAMS as f64 - r.streams_held as f64;
            Some((p.rss_held_kib as f64 + extra * per) / 1024.0)
        });
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            target(r),
            r.count,
            r.streams_held,
            r.sessions_failed + r.streams_failed,
            r.streams_lost,
            num(proxy.map(|p| p.rss_before_kib as f64 / 1024.0), 1),
            num(proxy.map(|p| p.rss_held_kib as f64 / 1024.0), 1),
            num(per, 1),
            ratio(per, nginx),
            num(projected, 0),
            num(worker.and_then(|w| w.kib_per_stream), 1),
        );
    }
    t
}

/// Medians per target, in first-seen order.
pub fn rows(reports: &[Report]) -> Vec<TargetRow> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Vec<&Report>> = BTreeMap::new();
    for r in reports {
        let t = target_of(r);
        if !by.contains_key(&t) {
            order.push(t.clone());
        }
        by.entry(t).or_default().push(r);
    }
    order
        .into_iter()
        .map(|t| {
            let rs = by.remove(&t).unwrap_or_default();
            let closed: Vec<&Report> = rs
                .iter()
                .copied()
                .filter(|r| r.config.mode == "closed")
                .collect();
            let open: Vec<&Report> = rs
                .iter()
                .copied()
                .filter(|r| r.config.mode == "open")
                .collect();
            let m = |v: &[&Report], f: &dyn Fn(&Report) -> Option<f64>| {
                median(v.iter().filter_map(|r| f(r)).collect())
            };
            TargetRow {
                target: t,
                closed_rounds: closed.len(),
                open_rounds: open.len(),
                closed_rate: m(&closed, &|r| Some(r.results.ok_rate)),
                closed_p50: m(&closed, &|r| Some(r.results.latency_us.p50 as f64)),
                closed_p99: m(&closed, &|r| Some(r.results.latency_us.p99 as f64)),
                open_rate: m(&open, &|r| r.config.rate),
                open_p50: m(&open, &|r| Some(r.results.latency_us.p50 as f64)),
                open_p99: m(&open, &|r| Some(r.results.latency_us.p99 as f64)),
                proxy_cpu_closed: m(&closed, &|r| proc_cpu(r, PROXY_PROC)),
                proxy_cpu_open: m(&open, &|r| proc_cpu(r, PROXY_PROC)),
                worker_cpu_open: m(&open, &|r| proc_cpu(r, WORKER_PROC)),
                worker_cpu_closed: m(&closed, &|r| proc_cpu(r, WORKER_PROC)),
                proxy_ctxsw_closed: m(&closed, &|r| {
                    proc_usage(r, PROXY_PROC).map(|p| p.ctx_switches_per_request)
                }),
                proxy_rss_kib: rs
                    .iter()
                    .flat_map(|r| r.results.processes.iter())
                    .filter(|p| p.name == PROXY_PROC)
                    .map(|p| p.hwm_kib)
                    .max(),
                closed_spread: spread(closed.iter().map(|r| r.results.ok_rate).collect()),
                open_errors: open.iter().map(|r| r.results.errors).sum(),
                errors: rs.iter().map(|r| r.results.errors).sum(),
                requests: rs.iter().map(|r| r.results.requests).sum(),
            }
        })
        .collect()
}

/// (max − min) ÷ median of two or more values.
fn spread(v: Vec<f64>) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    median(v).filter(|m| *m > 0.0).map(|m| (hi - lo) / m)
}

/// An open-loop p50 more than this many times direct's means the target fell behind the
/// offered rate: its latencies measure its queue, not its own cost.
const BEHIND: f64 = 10.0;

/// What the reader needs to judge the run: how much each target's throughput moved between
/// rounds, and which targets could not keep up with the open-loop rate.
pub fn noise(rows: &[TargetRow]) -> String {
    let mut t = String::new();
    let spreads: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r.closed_spread
                .map(|s| format!("{} {:.0} %", r.target, s * 100.0))
        })
        .collect();
    if !spreads.is_empty() {
        let _ = writeln!(
            t,
            "Noise: closed-loop throughput varied between rounds (max − min over the median) by {}. \
             Compare targets by their ratios within the run, not by single figures.",
            spreads.join(", ")
        );
    }
    let direct_p50 = rows
        .iter()
        .find(|r| r.target == "direct")
        .and_then(|d| d.open_p50);
    let behind: Vec<&str> = rows
        .iter()
        .filter(|r| r.open_rounds > 0)
        .filter(|r| {
            r.open_errors > 0
                || matches!((r.open_p50, direct_p50), (Some(p), Some(d)) if d > 0.0 && p > BEHIND * d)
        })
        .map(|r| r.target.as_str())
        .collect();
    if !behind.is_empty() {
        let _ = writeln!(
            t,
            "Open loop: {} fell behind the offered rate (errors, or a p50 over {BEHIND:.0}× \
             direct's): their open-loop latencies measure a backlog; measure them at a rate \
             they sustain (--open-rate).",
            behind.join(", ")
        );
    }
    t
}

/// Half of `target`'s median closed-loop throughput (the open-loop rate of
/// the comparison), at least 1.
pub fn suggested_open_rate(reports: &[Report], target: &str) -> Option<f64> {
    rows(reports)
        .into_iter()
        .find(|r| r.target == target)
        .and_then(|r| r.closed_rate)
        .map(|rate| (rate / 2.0).floor().max(1.0))
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) => format!("{x:.decimals$}"),
        None => "–".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn signed(v: Option<f64>) -> String {
    match v {
        Some(x) => format!("{x:+.0}"),
        None => "–".into(),
    }
}

impl TargetRow {
    /// Server CPU per request in the open loop: proxy (if any) + worker.
    pub fn server_cpu_open(&self) -> Option<f64> {
        match (self.proxy_cpu_open, self.worker_cpu_open) {
            (Some(p), Some(w)) => Some(p + w),
            (None, w) => w,
            (Some(p), None) => Some(p),
        }
    }

    /// Proxy peak RSS in MiB.
    pub fn proxy_rss_mib(&self) -> Option<f64> {
        self.proxy_rss_kib.map(|k| k as f64 / 1024.0)
    }
}

/// The headline table: each figure with its ratio to nginx and to direct.
pub fn headline(rows: &[TargetRow]) -> String {
    let find = |name: &str| rows.iter().find(|r| r.target == name);
    let nginx = find("nginx");
    let direct = find("direct");
    let mut t = String::new();
    t.push_str("| target | req/s at saturation | ×nginx | ×direct | open-loop p50 µs | ×nginx | ×direct | open-loop p99 µs | ×nginx | ×direct | p99 − direct µs | server CPU µs/req | ×nginx | ×direct | proxy CPU µs/req | ×nginx | proxy peak RSS MiB | ×nginx |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let f = |g: &dyn Fn(&TargetRow) -> Option<f64>, base: Option<&TargetRow>| {
            ratio(g(r), base.and_then(g))
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.target,
            num(r.closed_rate, 0),
            f(&|x| x.closed_rate, nginx),
            f(&|x| x.closed_rate, direct),
            num(r.open_p50, 0),
            f(&|x| x.open_p50, nginx),
            f(&|x| x.open_p50, direct),
            num(r.open_p99, 0),
            f(&|x| x.open_p99, nginx),
            f(&|x| x.open_p99, direct),
            signed(r.open_p99.zip(direct.and_then(|d| d.open_p99)).map(|(a, b)| a - b)),
            num(r.server_cpu_open(), 1),
            f(&|x| x.server_cpu_open(), nginx),
            f(&|x| x.server_cpu_open(), direct),
            num(r.proxy_cpu_open, 1),
            f(&|x| x.proxy_cpu_open, nginx),
            num(r.proxy_rss_mib(), 1),
            f(&|x| x.proxy_rss_mib(), nginx),
        );
    }
    t
}

/// Markdown tables of the comparison: the headline, then the details.
pub fn markdown(rows: &[TargetRow]) -> String {
    let find = |name: &str| rows.iter().find(|r| r.target == name);
    let nginx = find("nginx");
    let direct = find("direct");
    let mut t = headline(rows);
    t.push('\n');
    t.push_str("| target | closed-loop req/s | vs nginx | vs direct | open-loop rate | p50 µs | p99 µs | p99 vs nginx | p99 vs direct | errors/requests |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            r.target,
            num(r.closed_rate, 0),
            ratio(r.closed_rate, nginx.and_then(|n| n.closed_rate)),
            ratio(r.closed_rate, direct.and_then(|n| n.closed_rate)),
            num(r.open_rate, 0),
            num(r.open_p50, 0),
            num(r.open_p99, 0),
            ratio(r.open_p99, nginx.and_then(|n| n.open_p99)),
            ratio(r.open_p99, direct.and_then(|n| n.open_p99)),
            r.errors,
            r.requests
        );
    }
    t.push('\n');
    t.push_str("| target | proxy CPU µs/req (open loop) | vs nginx | proxy CPU µs/req (closed loop) | vs nginx | proxy context switches/req (closed loop) | worker CPU µs/req (open loop) | proxy peak RSS MiB | closed p50 µs | closed p99 µs |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.target,
            num(r.proxy_cpu_open, 1),
            ratio(r.proxy_cpu_open, nginx.and_then(|n| n.proxy_cpu_open)),
            num(r.proxy_cpu_closed, 1),
            ratio(r.proxy_cpu_closed, nginx.and_then(|n| n.proxy_cpu_closed)),
            num(r.proxy_ctxsw_closed, 2),
            num(r.worker_cpu_open, 1),
            num(r.proxy_rss_kib.map(|k| k as f64 / 1024.0), 1),
            num(r.closed_p50, 0),
            num(r.closed_p99, 0),
        );
    }
    let notes = noise(rows);
    if !notes.is_empty() {
        t.push('\n');
        t.push_str(&notes);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::Protocol;
    use crate::procstat::ProcUsage;
    use crate::runner::{LoadMode, RunConfig, RunOutcome};
    use crate::stats::Stats;
    use crate::workload::{Mix, Op};
    use std::time::Duration;

    fn report(label: &str, open: bool, latency_us: u64, n: u64, proxy_cpu: Option<f64>) -> Report {
        let cfg = RunConfig {
            url: "http://127.0.0.1:1/mcp".into(),
            mode: if open {
                LoadMode::Open { rate: 500.0 }
            } else {
                LoadMode::Closed { concurrency: 8 }
            },
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            sessions: 1,
            mix: Mix::parse("small_call=1").expect("mix"),
            payload_bytes: 0,
            token: None,
            ca_file: None,
            protocol: Protocol::V2025_06_18,
            timeout: Duration::from_secs(1),
            max_in_flight: 10,
            late_tolerance: Duration::from_millis(1),
            progress_line: false,
            label: Some(label.into()),
            watch: vec![],
        };
        let mut stats = Stats::new();
        for _ in 0..n {
            stats.record_ok(Op::SmallCall, Duration::from_micros(latency_us), None, 0);
        }
        let watch = proxy_cpu
            .map(|c| ProcUsage {
                name: PROXY_PROC.into(),
                pid: 1,
                cpu_us: 0,
                cpu_us_per_request: c,
                cpu_percent: 0.0,
                rss_kib: 1024,
                hwm_kib: 2048,
                ctx_switches_per_request: c / 10.0,
            })
            .into_iter()
            .collect();
        let out = RunOutcome {
            stats,
            lag: None,
            intended: None,
            elapsed: Duration::from_secs(1),
            sessions_opened: 1,
            watch,
            warnings: vec![],
        };
        Report::new(&cfg, &out)
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn rows_and_table() {
        let reports = vec![
            report("direct/closed/r1", false, 100, 1000, None),
            report("gateway/closed/r1", false, 200, 600, Some(50.0)),
            report("nginx/closed/r1", false, 150, 800, Some(25.0)),
            report("nginx/closed/r2", false, 150, 900, Some(35.0)),
            report("nginx/open/r1", true, 150, 400, Some(20.0)),
            report("gateway/open/r1", true, 300, 400, Some(40.0)),
        ];
        let rows = rows(&reports);
        assert_eq!(
            rows.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
            vec!["direct", "gateway", "nginx"]
        );
        let nginx = &rows[2];
        assert_eq!(nginx.closed_rounds, 2);
        assert_eq!(nginx.closed_rate, Some(850.0));
        assert_eq!(nginx.proxy_cpu_closed, Some(30.0));
        assert_eq!(nginx.proxy_ctxsw_closed, Some(3.0));
        assert_eq!(nginx.proxy_rss_kib, Some(2048));
        assert_eq!(suggested_open_rate(&reports, "nginx"), Some(425.0));
        assert_eq!(suggested_open_rate(&reports, "nope"), None);
        let md = markdown(&rows);
        assert!(md.contains("| gateway | 600 | 0.71× | 0.60× |"), "{md}");
        assert!(
            md.contains("| gateway | 40.0 | 2.00× | 50.0 | 1.67× | 5.00 |"),
            "{md}"
        );
        // nginx: 800 and 900 req/s over a median of 850.
        assert!(md.contains("by nginx 12 %."), "{md}");
        assert!(!md.contains("fell behind"), "{md}");
    }

    #[test]
    fn targets_behind_the_open_loop_rate_are_named() {
        let reports = vec![
            report("direct/open/r1", true, 100, 400, None),
            report("nginx/open/r1", true, 500, 400, Some(20.0)),
            report("gateway/open/r1", true, 5_000, 400, Some(40.0)),
        ];
        let text = noise(&rows(&reports));
        assert!(
            text.contains("Open loop: gateway fell behind the offered rate"),
            "{text}"
        );
        assert!(!text.contains("nginx"), "{text}");
        assert!(!text.contains("Noise:"), "one round each: no spread");
    }

    fn streams_report(label: &str, held: u64, proxy_kib: Option<(u64, u64)>) -> StreamsReport {
        StreamsReport {
            schema: 1,
            kind: "streams".into(),
            label: Some(label.into()),
            url: "http://127.0.0.1:1/mcp".into(),
            count: held as usize,
            hold_s: 1.0,
            auth: false,
            nofile_soft: 1024,
            nofile_hard: 1024,
            sessions_opened: held,
            sessions_failed: 0,
            streams_opened: held,
            streams_failed: 0,
            streams_lost: 0,
            streams_held: held,
            stream_bytes: 0,
            sessions_open_s: 0.1,
            streams_open_s: 0.1,
            deletes_ok: held,
            deletes_failed: 0,
            errors_by_kind: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            processes: proxy_kib
                .map(|(sessions, held_kib)| StreamProcMem {
                    name: PROXY_PROC.into(),
                    pid: 1,
                    rss_before_kib: sessions,
                    rss_sessions_kib: sessions,
                    rss_streams_kib: held_kib,
                    rss_held_kib: held_kib,
                    rss_closed_kib: sessions,
                    kib_per_stream: crate::streams::per_stream(sessions, held_kib, held),
                    kib_per_session_and_stream: None,
                })
                .into_iter()
                .collect(),
            warnings: vec![],
        }
    }

    #[test]
    fn streams_table() {
        let reports = vec![
            streams_report("gateway/streams/1000", 1000, Some((10_240, 30_240))),
            streams_report("nginx/streams/1000", 1000, Some((2_048, 12_048))),
            streams_report("direct/streams/1000", 1000, None),
        ];
        let md = streams_markdown(&reports);
        // 20 KiB per stream, 2× nginx's 10; at 20k: 30240 + 19000 × 20 KiB = 400.6 MiB.
        assert!(
            md.contains("| gateway | 1000 | 1000 | 0 | 0 | 10.0 | 29.5 | 20.0 | 2.00× | 401 | – |"),
            "{md}"
        );
        assert!(
            md.contains("| direct | 1000 | 1000 | 0 | 0 | – | – | – | – | – | – |"),
            "{md}"
        );
    }

    #[test]
    fn headline_ratios() {
        let reports = vec![
            report("direct/closed/r1", false, 100, 1000, None),
            report("direct/open/r1", true, 100, 400, None),
            report("gateway/closed/r1", false, 200, 600, Some(50.0)),
            report("gateway/open/r1", true, 400, 400, Some(40.0)),
            report("nginx/closed/r1", false, 150, 800, Some(25.0)),
            report("nginx/open/r1", true, 200, 400, Some(20.0)),
        ];
        let md = headline(&rows(&reports));
        // p50 = p99 = the single latency; p99 − direct = 400 − 100.
        assert!(
            md.contains("| gateway | 600 | 0.75× | 0.60× | 400 | 2.00× | 4.00× | 400 | 2.00× | 4.00× | +300 | 40.0 | 2.00× | – | 40.0 | 2.00× | 2.0 | 1.00× |"),
            "{md}"
        );
        assert!(md.contains("| direct | 1000 | 1.25× | 1.00× |"), "{md}");
    }
}
