//! `bench/compare.sh --smoke` end to end (about 15 s). Ignored by default:
//! it needs release binaries and nginx. Run with
//! `cargo test -p mcp-bench --test compare_smoke -- --ignored` after
//! `cargo build --release -p mcp-bench -p mcp-workers -p mcp-proxy`
//! (or point MCP_BENCH_BIN / MCP_WORKER_BIN / MCP_PROXY_BIN elsewhere).

use std::path::{Path, PathBuf};
use std::process::Command;

fn release_binary(env: &str, name: &str, root: &Path) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release").join(name))
}

#[test]
#[ignore = "needs release binaries and nginx; ~15 s"]
fn compare_smoke() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    for (env, name) in [
        ("MCP_BENCH_BIN", "mcp-bench"),
        ("MCP_WORKER_BIN", "mcp-worker"),
        ("MCP_PROXY_BIN", "mcp-proxy"),
    ] {
        let bin = release_binary(env, name, &root);
        if !bin.is_file() {
            eprintln!(
                "SKIPPED: {} not found; build it with cargo build --release or set {env}",
                bin.display()
            );
            return;
        }
    }
    let out_dir = std::env::temp_dir().join(format!("mcp-compare-smoke-{}", std::process::id()));
    let output = Command::new(root.join("bench/compare.sh"))
        .args(["--smoke", "--no-build", "--out"])
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
