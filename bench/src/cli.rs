//! Command-line interface.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::mcp::Protocol;
use crate::procstat::parse_watch;
use crate::runner::{LoadMode, RunConfig};
use crate::streams::StreamsConfig;
use crate::workload::Mix;

/// Default operation mix.
pub const DEFAULT_WORKLOAD: &str = "tools_list=1,small_call=8,large_call=1,progress=0,churn=0";

#[derive(Debug, Parser)]
#[command(
    name = "mcp-bench",
    version,
    about = "Load generator speaking MCP over Streamable HTTP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a load test against an MCP endpoint.
    Run(Box<RunArgs>),
    /// Summarize the JSON reports written by bench/compare.sh.
    Compare(CompareArgs),
    /// Hold many idle sessions with their SSE streams open; report the
    /// watched processes' memory per stream.
    Streams(StreamsArgs),
    /// Print an HS256 JWT signed with a shared secret (for a gateway that
    /// trusts such an issuer).
    Token(TokenArgs),
}

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// `--concurrency` workers sending back to back.
    Closed,
    /// Requests at a fixed `--rate`, latency from the intended send time.
    Open,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long)]
    pub url: String,
    /// Closed loop (fixed concurrency) or open loop (fixed rate).
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    pub mode: Mode,
    /// Closed loop: number of concurrent workers.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Open loop: requests per second (required with --mode open).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured time, e.g. 10s, 500ms, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before the measurement.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Sessions opened up front and shared by the requests (2025 protocol).
    #[arg(long, default_value_t = 4)]
    pub sessions: usize,
    /// Operation weights: tools_list, small_call, large_call, progress, churn.
    #[arg(long, default_value = DEFAULT_WORKLOAD)]
    pub workload: String,
    /// Text size of large_call (echo), bytes.
    #[arg(long, default_value_t = 65536)]
    pub payload_bytes: usize,
    /// Bearer token (Authorization header).
    #[arg(long, env = "MCP_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// For an https:// URL: a PEM file of CA certificates to trust besides the system's
    /// (a gateway whose certificate a private CA signed).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// MCP protocol revision: 2025-06-18 (sessions) or 2026-07-28 (stateless).
    #[arg(long, value_enum, default_value = "2025-06-18")]
    pub protocol: Protocol,
    /// Timeout of one operation.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Open loop: most requests in flight; beyond it the dispatcher waits
    /// (and falls behind schedule, which is reported).
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Open loop: a request sent later than this after its intended time
    /// counts as late.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub late_tolerance: Duration,
    /// Runtime worker threads [default: CPUs available to the process].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Report CPU time and RSS of a process over the measured window (repeatable).
    #[arg(long = "watch-pid", value_name = "NAME=PID")]
    pub watch_pid: Vec<String>,
    /// Label stored in the reports.
    #[arg(long)]
    pub label: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No progress line and no text summary.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Directory of JSON reports labelled TARGET/STAGE/rN.
    #[arg(long)]
    pub results: PathBuf,
    /// Only print half of TARGET's median closed-loop throughput.
    #[arg(long, value_name = "TARGET")]
    pub suggest_open_rate: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct StreamsArgs {
    /// MCP endpoint, e.g. http://127.0.0.1:8080/mcp.
    #[arg(long)]
    pub url: String,
    /// Sessions, each with one standalone SSE stream.
    #[arg(long)]
    pub count: usize,
    /// How long to hold the streams open once they are all open.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Pause before the RSS samples after opening and after closing.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Bearer token (Authorization header).
    #[arg(long, env = "MCP_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// For an https:// URL: a PEM file of CA certificates to trust besides the system's
    /// (a gateway whose certificate a private CA signed).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Sessions (and streams) being opened at once.
    #[arg(long, default_value_t = 64)]
    pub open_concurrency: usize,
    /// Timeout of one initialize, stream opening or DELETE.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Report the RSS of a process (repeatable).
    #[arg(long = "watch-pid", value_name = "NAME=PID")]
    pub watch_pid: Vec<String>,
    /// Label stored in the report.
    #[arg(long)]
    pub label: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress lines and no text summary.
    #[arg(long)]
    pub quiet: bool,
}

impl StreamsArgs {
    /// Validate and turn the options into a run description.
    pub fn to_config(&self) -> Result<StreamsConfig, String> {
        let watch = self
            .watch_pid
            .iter()
            .map(|s| parse_watch(s))
            .collect::<Result<Vec<_>, _>>()?;
        let cfg = StreamsConfig {
            url: self.url.clone(),
            count: self.count,
            hold: self.hold,
            settle: self.settle,
            token: self.token.clone().filter(|t| !t.is_empty()),
            ca_file: self.ca_file.clone(),
            open_concurrency: self.open_concurrency,
            timeout: self.timeout,
            watch,
            label: self.label.clone(),
            progress: !self.quiet,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Shared secret (at least 32 bytes).
    #[arg(long, env = "MCP_BENCH_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// `iss` claim.
    #[arg(long)]
    pub iss: String,
    /// `aud` claim.
    #[arg(long)]
    pub aud: String,
    /// `sub` claim.
    #[arg(long, default_value = "mcp-bench")]
    pub sub: String,
    /// Lifetime (`exp` = now + this).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

/// Parse `10s`, `250ms`, `1m`, ...
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

impl RunArgs {
    /// Validate and turn the options into a run description.
    pub fn to_config(&self) -> Result<RunConfig, String> {
        let mode = match self.mode {
            Mode::Closed => {
                if self.rate.is_some() {
                    return Err("--rate applies to --mode open".into());
                }
                LoadMode::Closed {
                    concurrency: self.concurrency,
                }
            }
            Mode::Open => LoadMode::Open {
                rate: self.rate.ok_or("--mode open needs --rate")?,
            },
        };
        let watch = self
            .watch_pid
            .iter()
            .map(|s| parse_watch(s))
            .collect::<Result<Vec<_>, _>>()?;
        let cfg = RunConfig {
            url: self.url.clone(),
            mode,
            duration: self.duration,
            warmup: self.warmup,
            sessions: self.sessions,
            mix: Mix::parse(&self.workload)?,
            payload_bytes: self.payload_bytes,
            token: self.token.clone().filter(|t| !t.is_empty()),
            ca_file: self.ca_file.clone(),
            protocol: self.protocol,
            timeout: self.timeout,
            max_in_flight: self.max_in_flight,
            late_tolerance: self.late_tolerance,
            progress_line: !self.quiet,
            label: self.label.clone(),
            watch,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunConfig, String> {
        let mut full = vec!["mcp-bench", "run"];
        full.extend_from_slice(args);
        let cli = Cli::try_parse_from(full).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Run(a) => a.to_config(),
            _ => Err("wrong command".into()),
        }
    }

    #[test]
    fn defaults() {
        let cfg = parse(&["--url", "http://127.0.0.1:8080/mcp"]).expect("valid");
        assert_eq!(cfg.mode, LoadMode::Closed { concurrency: 8 });
        assert_eq!(cfg.duration, Duration::from_secs(10));
        assert_eq!(cfg.warmup, Duration::from_secs(2));
        assert_eq!(cfg.mix.spec(), DEFAULT_WORKLOAD);
        assert_eq!(cfg.payload_bytes, 65536);
        assert_eq!(cfg.protocol, Protocol::V2025_06_18);
        assert!(cfg.progress_line);
    }

    #[test]
    fn open_loop_and_options() {
        let cfg = parse(&[
            "--url",
            "http://h/mcp",
            "--mode",
            "open",
            "--rate",
            "250",
            "--duration",
            "1500ms",
            "--warmup",
            "0s",
            "--protocol",
            "2026-07-28",
            "--workload",
            "small_call=1",
            "--watch-pid",
            "proxy=12",
            "--quiet",
        ])
        .expect("valid");
        assert_eq!(cfg.mode, LoadMode::Open { rate: 250.0 });
        assert_eq!(cfg.duration, Duration::from_millis(1500));
        assert_eq!(cfg.protocol, Protocol::V2026_07_28);
        assert_eq!(cfg.watch, vec![("proxy".to_owned(), 12)]);
        assert!(!cfg.progress_line);
    }

    #[test]
    fn rejected_combinations() {
        assert!(parse(&["--url", "http://h/mcp", "--mode", "open"]).is_err());
        assert!(parse(&["--url", "http://h/mcp", "--rate", "5"]).is_err());
        assert!(parse(&["--url", "http://h/mcp", "--concurrency", "0"]).is_err());
        assert!(parse(&["--url", "http://h/mcp", "--duration", "0s"]).is_err());
        assert!(parse(&["--url", "http://h/mcp", "--duration", "soon"]).is_err());
        assert!(parse(&[
            "--url",
            "http://h/mcp",
            "--protocol",
            "2026-07-28",
            "--workload",
            "churn=1"
        ])
        .is_err());
        assert!(parse(&["--url", "http://h/mcp", "--protocol", "2024-01-01"]).is_err());
    }

    #[test]
    fn streams_and_token_options() {
        let cli = Cli::try_parse_from([
            "mcp-bench",
            "streams",
            "--url",
            "http://h/mcp",
            "--count",
            "50",
            "--hold",
            "2s",
            "--watch-pid",
            "proxy=7",
        ])
        .expect("parses");
        let Command::Streams(a) = cli.command else {
            panic!("not streams");
        };
        let cfg = a.to_config().expect("valid");
        assert_eq!(cfg.count, 50);
        assert_eq!(cfg.hold, Duration::from_secs(2));
        assert_eq!(cfg.open_concurrency, 64);
        assert_eq!(cfg.watch, vec![("proxy".to_owned(), 7)]);
        let zero = Cli::try_parse_from([
            "mcp-bench",
            "streams",
            "--url",
            "http://h/mcp",
            "--count",
            "0",
        ])
        .expect("parses");
        let Command::Streams(a) = zero.command else {
            panic!("not streams");
        };
        assert!(a.to_config().is_err());
        let tok = Cli::try_parse_from([
            "mcp-bench",
            "token",
            "--secret",
            "s",
            "--iss",
            "i",
            "--aud",
            "a",
        ])
        .expect("parses");
        let Command::Token(t) = tok.command else {
            panic!("not token");
        };
        assert_eq!(t.sub, "mcp-bench");
        assert_eq!(t.ttl, Duration::from_secs(3600));
    }
}
