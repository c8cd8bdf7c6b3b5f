//! `bench/compare.sh --smoke --tls --streams 50` end to end (about 30 s) with the
//! binaries of this build: MCP_BENCH_BIN, MCP_WORKER_BIN and MCP_PROXY_BIN
//! default to the siblings of the `mcp-bench` test binary (build them first
//! with `cargo build --workspace`; a missing one fails the test). compare.sh
//! installs nginx with apt-get when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn binary(env: &str, name: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_mcp-bench")).with_file_name(name))
}

const TARGETS: [&str; 5] = ["direct", "gateway-full", "gateway", "gateway-tls", "nginx"];

#[test]
fn compare_smoke() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let mut cmd = Command::new(root.join("bench/compare.sh"));
    for (env, name) in [
        ("MCP_BENCH_BIN", "mcp-bench"),
        ("MCP_WORKER_BIN", "mcp-worker"),
        ("MCP_PROXY_BIN", "mcp-proxy"),
    ] {
        let bin = binary(env, name);
        assert!(
            bin.is_file(),
            "{} not found: build it with cargo build --workspace (scripts/test does) or set {env}",
            bin.display()
        );
        cmd.env(env, bin);
    }
    let out_dir = std::env::temp_dir().join(format!("mcp-compare-smoke-{}", std::process::id()));
    let output = cmd
        .args(["--smoke", "--no-build", "--tls", "--streams", "50", "--out"])
        .arg(&out_dir)
        .output()
        .expect("run bench/compare.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "compare.sh failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    for target in TARGETS {
        assert!(
            stdout.contains(&format!("| {target} |")),
            "no row for {target}:\n{stdout}"
        );
        for stage in ["closed", "open"] {
            let report = out_dir.join(format!("{stage}-r1-{target}.json"));
            let text = std::fs::read_to_string(&report).expect("report written");
            let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(v["results"]["errors"], 0, "{stage} {target}: {text}");
            assert!(v["results"]["ok"].as_u64().unwrap_or(0) > 0);
        }
        // Only gateway-full verifies tokens: mcp-bench must send one there only.
        let closed = std::fs::read_to_string(out_dir.join(format!("closed-r1-{target}.json")))
            .expect("report");
        let v: serde_json::Value = serde_json::from_str(&closed).expect("valid JSON");
        assert_eq!(
            v["config"]["auth"],
            target == "gateway-full",
            "{target}: {closed}"
        );
        // gateway-tls is reached over HTTPS, every other target over plain HTTP.
        let scheme = if target == "gateway-tls" {
            "https://"
        } else {
            "http://"
        };
        assert!(
            v["config"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with(scheme)),
            "{target}: {closed}"
        );
        let streams = out_dir.join(format!("streams/{target}-50.json"));
        let text = std::fs::read_to_string(&streams).expect("streams report written");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["streams_held"], 50, "{target}: {text}");
        assert_eq!(v["streams_failed"], 0, "{target}: {text}");
        assert_eq!(v["deletes_failed"], 0, "{target}: {text}");
        if target != "direct" {
            let procs = v["processes"].as_array().expect("processes");
            assert!(
                procs
                    .iter()
                    .any(|p| p["name"] == "proxy" && p["rss_held_kib"].as_u64().unwrap_or(0) > 0),
                "{target}: {text}"
            );
        }
    }
    assert!(
        stdout.contains("| gateway | 50 | 50 |"),
        "no streams row:\n{stdout}"
    );
    // gateway-full's request log reached its SQLite database.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("gateway-full request log:"))
        .unwrap_or_else(|| panic!("no request log line:\n{stdout}"));
    let rows: u64 = line
        .trim_start_matches("gateway-full request log:")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(rows > 0, "{line}");
    assert!(out_dir.join("summary.md").is_file());
    let _ = std::fs::remove_dir_all(&out_dir);
}
