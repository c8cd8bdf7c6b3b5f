//! `bench/compare.sh --smoke` end to end (about 15 s), so the harness cannot rot: direct,
//! gateway and nginx each measured once with a tiny load, reports written and summarised.
//! It runs the binaries of this build (debug in the test suite; the figures mean nothing,
//! the plumbing is what is tested); MCP_BENCH_BIN / MCP_WORKER_BIN / MCP_PROXY_BIN point it
//! elsewhere. compare.sh installs nginx (Debian package) when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The binary from `env`, else the one `cargo build --workspace` put beside mcp-bench.
fn binary(env: &str, name: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_mcp-bench")).with_file_name(name))
}

#[test]
fn compare_smoke() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let mut cmd_env = Vec::new();
    for (env, name) in [
        ("MCP_BENCH_BIN", "mcp-bench"),
        ("MCP_WORKER_BIN", "mcp-worker"),
        ("MCP_PROXY_BIN", "mcp-proxy"),
    ] {
        let bin = binary(env, name);
        assert!(
            bin.is_file(),
            "{} not found: run `cargo build --workspace` first (scripts/test does) or set {env}",
            bin.display()
        );
        cmd_env.push((env, bin));
    }
    let out_dir = std::env::temp_dir().join(format!("mcp-compare-smoke-{}", std::process::id()));
    let output = Command::new(root.join("bench/compare.sh"))
        .args(["--smoke", "--no-build", "--out"])
        .arg(&out_dir)
        .envs(cmd_env)
        .output()
        .expect("run bench/compare.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "compare.sh failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    for target in ["direct", "gateway", "nginx"] {
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
    }
    assert!(out_dir.join("summary.md").is_file());
    let _ = std::fs::remove_dir_all(&out_dir);
}
