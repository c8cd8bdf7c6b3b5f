//! Runs mcp-bench against a real `mcp-worker` (target/debug/mcp-worker,
//! beside this test binary). Skipped with a message when the worker has not
//! been built (`cargo build -p mcp-workers`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mcp_bench::mcp::Protocol;
use mcp_bench::report::Report;
use mcp_bench::runner::{run, LoadMode, RunConfig};
use mcp_bench::workload::Mix;

/// `target/<profile>/mcp-worker`: the test binary lives in `target/<profile>/deps`.
fn worker_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let path = profile_dir.join(format!("mcp-worker{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

struct Worker {
    child: Child,
    addr: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start a worker on a free port (port 0) and read the address it prints.
fn start_worker(extra: &[&str]) -> Option<Worker> {
    let Some(bin) = worker_binary() else {
        eprintln!(
            "SKIPPED: mcp-worker not found beside the test binary; run `cargo build -p mcp-workers` first"
        );
        return None;
    };
    let mut child = Command::new(&bin)
        .args(["tools", "--listen", "127.0.0.1:0", "--id", "bench-test"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
        .ok()?;
    let stdout = child.stdout.take()?;
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    let addr = line.trim().strip_prefix("listening on ").map(str::to_owned);
    let mut worker = Worker {
        child,
        addr: String::new(),
    };
    match (read, addr) {
        (Ok(_), Some(addr)) => {
            worker.addr = addr;
            Some(worker)
        }
        other => panic!("mcp-worker did not report its address: {other:?}"),
    }
}

fn config(url: &str, mode: LoadMode, workload: &str, protocol: Protocol) -> RunConfig {
    RunConfig {
        url: url.to_owned(),
        mode,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        sessions: 2,
        mix: Mix::parse(workload).expect("valid workload"),
        payload_bytes: 4096,
        token: Some("test-token".into()),
        ca_file: None,
        protocol,
        timeout: Duration::from_secs(5),
        max_in_flight: 64,
        late_tolerance: Duration::from_millis(1),
        progress_line: false,
        label: Some("test".into()),
        watch: vec![],
    }
}

fn assert_consistent(cfg: &RunConfig, report: &Report) {
    let r = &report.results;
    let all = report.to_text();
    assert!(r.ok > 0, "no successful request:\n{all}");
    assert_eq!(r.errors, 0, "errors:\n{all}");
    assert!(r.errors_by_kind.is_empty(), "{all}");
    assert_eq!(r.requests, r.ok);
    let l = &r.latency_us;
    assert_eq!(l.count, r.ok);
    assert!(l.min > 0 && l.min <= l.p50, "{all}");
    assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
    let by_op: u64 = r.by_op.values().map(|o| o.ok).sum();
    assert_eq!(by_op, r.ok, "per-operation counts add up");
    for (name, o) in &r.by_op {
        assert!(o.ok > 0, "{name} never ran:\n{all}");
        assert!(o.latency_us.p50 <= o.latency_us.p99 && o.latency_us.p99 <= o.latency_us.max);
    }
    if let Some(p) = r.by_op.get("progress") {
        assert_eq!(
            r.progress_notifications,
            3 * p.ok,
            "3 notifications per call"
        );
    }
    assert!(r.achieved_rate > 0.0);
    assert!(r.elapsed_s >= cfg.duration.as_secs_f64());
    // The HTML report renders.
    assert!(report.to_html().contains("<svg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_and_open_loop_against_a_worker() {
    let Some(worker) = start_worker(&[]) else {
        return;
    };
    let url = format!("http://{}/mcp", worker.addr);
    let mix = "tools_list=1,small_call=4,large_call=1,progress=1,churn=1";

    let cfg = config(
        &url,
        LoadMode::Closed { concurrency: 2 },
        mix,
        Protocol::V2025_06_18,
    );
    let out = run(&cfg).await.expect("closed-loop run");
    let report = Report::new(&cfg, &out);
    assert_consistent(&cfg, &report);
    assert_eq!(report.results.sessions_opened, 2);
    assert!(report.results.schedule.is_none());

    let cfg = config(
        &url,
        LoadMode::Open { rate: 50.0 },
        mix,
        Protocol::V2025_06_18,
    );
    let out = run(&cfg).await.expect("open-loop run");
    let report = Report::new(&cfg, &out);
    assert_consistent(&cfg, &report);
    let sched = report
        .results
        .schedule
        .as_ref()
        .expect("open loop schedule");
    assert_eq!(sched.intended, 50, "1 s at 50/s");
    assert_eq!(sched.dispatched, sched.intended);
    assert_eq!(report.results.requests, 50);
    let service = report.results.service_time_us.expect("service time");
    // Each request's service time (from the actual send) is at most its
    // latency from the intended send time.
    assert!(service.p50 <= report.results.latency_us.p50);
    assert!(service.max <= report.results.latency_us.max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_2026_protocol_against_a_worker() {
    let Some(worker) = start_worker(&[]) else {
        return;
    };
    let url = format!("http://{}/mcp", worker.addr);
    let cfg = config(
        &url,
        LoadMode::Closed { concurrency: 2 },
        "tools_list=1,small_call=4,large_call=1,progress=1",
        Protocol::V2026_07_28,
    );
    let out = run(&cfg).await.expect("2026-07-28 run");
    let report = Report::new(&cfg, &out);
    assert_consistent(&cfg, &report);
    assert_eq!(report.results.sessions_opened, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_responses_and_unreachable_endpoint() {
    let Some(worker) = start_worker(&["--json-response", "--stateless"]) else {
        return;
    };
    let url = format!("http://{}/mcp", worker.addr);
    let cfg = config(
        &url,
        LoadMode::Closed { concurrency: 1 },
        "tools_list=1,small_call=4,large_call=1",
        Protocol::V2026_07_28,
    );
    let out = run(&cfg).await.expect("json-response run");
    assert_consistent(&cfg, &Report::new(&cfg, &out));

    // Nothing listens on the worker's port once it is gone: connect errors
    // abort the session setup with a clear message.
    let addr = worker.addr.clone();
    drop(worker);
    let cfg = config(
        &format!("http://{addr}/mcp"),
        LoadMode::Closed { concurrency: 1 },
        "small_call=1",
        Protocol::V2025_06_18,
    );
    let err = run(&cfg).await.expect_err("nothing listens");
    assert!(err.contains("cannot open session"), "{err}");
}

#[test]
fn cli_writes_json_and_html() {
    let Some(worker) = start_worker(&[]) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("mcp-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("out.json");
    let html = dir.join("out.html");
    let status = Command::new(env!("CARGO_BIN_EXE_mcp-bench"))
        .args([
            "run",
            "--url",
            &format!("http://{}/mcp", worker.addr),
            "--mode",
            "open",
            "--rate",
            "40",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
            "--sessions",
            "1",
            "--payload-bytes",
            "1000",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .status()
        .expect("run mcp-bench");
    assert!(status.success(), "mcp-bench exited with {status}");
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
            .expect("valid report");
    assert_eq!(report.results.errors, 0);
    assert_eq!(report.results.requests, 20);
    let page = std::fs::read_to_string(&html).expect("html written");
    assert!(page.contains("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Many sessions with their standalone SSE streams open, held, closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_against_a_worker() {
    use mcp_bench::streams::{run as run_streams, StreamsConfig};
    let Some(worker) = start_worker(&[]) else {
        return;
    };
    let pid = worker.child.id();
    let cfg = StreamsConfig {
        url: format!("http://{}/mcp", worker.addr),
        count: 40,
        hold: Duration::from_millis(500),
        settle: Duration::from_millis(100),
        token: None,
        ca_file: None,
        open_concurrency: 8,
        timeout: Duration::from_secs(5),
        watch: vec![("worker".into(), pid)],
        label: Some("direct/streams/40".into()),
        progress: false,
    };
    let r = run_streams(&cfg).await.expect("streams run");
    assert_eq!(r.sessions_opened, 40, "{r:?}");
    assert_eq!(r.streams_opened, 40, "{r:?}");
    assert_eq!(r.streams_held, 40, "{r:?}");
    assert_eq!(r.streams_lost, 0, "{r:?}");
    assert_eq!(r.deletes_ok, 40, "{r:?}");
    assert!(r.errors_by_kind.is_empty(), "{r:?}");
    let p = &r.processes[0];
    assert_eq!(p.pid, pid);
    assert!(p.rss_before_kib > 0 && p.rss_held_kib > 0, "{p:?}");
    assert!(p.kib_per_stream.is_some());
    assert!(
        r.to_text().contains("40 streams opened (0 failed)"),
        "{}",
        r.to_text()
    );

    // Nothing listens there: every session fails to connect, nothing is held.
    let bad = StreamsConfig {
        url: "http://127.0.0.1:1/mcp".into(),
        count: 3,
        watch: vec![],
        ..cfg
    };
    let r = run_streams(&bad).await.expect("streams run");
    assert_eq!(r.sessions_failed, 3);
    assert_eq!(r.streams_held, 0);
    assert_eq!(r.errors_by_kind.get("session_connect"), Some(&3), "{r:?}");
}
