//! `mcp-worker`: run one MCP worker kind over Streamable HTTP.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mcp_workers::HttpOptions;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "mcp-worker",
    version,
    about = "MCP worker servers for the gateway pool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Arithmetic, text, payload-size, progress and whoami tools.
    Tools(ServeArgs),
    /// Bridge to stdio MCP servers: serve Streamable HTTP, start the command
    /// given after `--` and relay JSON-RPC over its stdin/stdout.
    Stdio(Box<StdioArgs>),
    /// The tools of `tools`, served over stdin/stdout (newline-delimited JSON-RPC):
    /// a stdio MCP server to measure and test the stdio bridge with.
    ToolsStdio {
        /// Id reported by whoami [default: $MCP_WORKER_ID, else worker-<pid>].
        #[arg(long)]
        id: Option<String>,
    },
}

/// Child isolation of the stdio bridge.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum IsolationArg {
    /// One child per MCP session.
    #[value(name = "per_session")]
    PerSession,
    /// One child for the whole bridge (servers that keep no per-client state).
    #[value(name = "shared")]
    Shared,
}

/// Variables a child gets from the bridge's environment without being named.
const BASE_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Options of `mcp-worker stdio`.
#[derive(Debug, Args)]
struct StdioArgs {
    /// Address to listen on, e.g. 127.0.0.1:9001.
    #[arg(long)]
    listen: SocketAddr,
    /// Worker id reported by /health and in log lines [default: $MCP_WORKER_ID, else worker-<pid>].
    #[arg(long)]
    id: Option<String>,
    /// Pool name written in log lines.
    #[arg(long, default_value = "stdio")]
    pool: String,
    /// per_session: a child per MCP session; shared: one child for the bridge.
    #[arg(long, value_enum, default_value = "per_session")]
    isolation: IsolationArg,
    /// Most children alive at once; beyond it initialize gets a JSON-RPC error.
    #[arg(long, default_value_t = 50)]
    max_children: usize,
    /// From starting a child to its initialize answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    start_timeout: std::time::Duration,
    /// Sessions without requests or open streams this long are ended.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    idle_timeout: std::time::Duration,
    /// Between SIGTERM and SIGKILL when a child is stopped.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    stop_grace: std::time::Duration,
    /// Working directory of the children.
    #[arg(long)]
    cwd: Option<std::path::PathBuf>,
    /// NAME=VALUE set in the children's environment (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// NAME=VAR: set NAME in the children to the value of the bridge's VAR (repeatable; never logged).
    #[arg(long = "env-from", value_name = "NAME=VAR")]
    env_from: Vec<String>,
    /// Give per-session children the caller's identity as MCP_USER_ID, MCP_USER_ISSUER,
    /// MCP_USER_ROLES and MCP_USER_EMAIL (from the gateway's X-MCP-User-* headers).
    #[arg(long)]
    pass_identity: bool,
    /// Longest stdout line (one JSON-RPC message); a longer one stops the child.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_line_bytes: usize,
    /// Non-JSON-RPC stdout lines tolerated (logged) before the child is stopped.
    #[arg(long, default_value_t = 100)]
    max_bad_lines: u64,
    /// Address-space limit of each child in MiB (RLIMIT_AS).
    #[arg(long)]
    memory_limit_mb: Option<u64>,
    /// CPU-time limit of each child in seconds (RLIMIT_CPU).
    #[arg(long)]
    cpu_limit_secs: Option<u64>,
    /// The stdio MCP server: program and arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

fn split_pair<'a>(s: &'a str, what: &str) -> Result<(&'a str, &'a str), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(format!("{what} expects NAME=VALUE, got {s:?}")),
    }
}

impl StdioArgs {
    fn options(&self) -> Result<mcp_workers::stdio::StdioOptions, String> {
        let worker_id = self
            .id
            .clone()
            .or_else(|| {
                std::env::var("MCP_WORKER_ID")
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| format!("worker-{}", std::process::id()));
        let mut env: Vec<(String, String)> = BASE_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        for e in &self.env {
            let (k, v) = split_pair(e, "--env")?;
            env.push((k.to_string(), v.to_string()));
        }
        for e in &self.env_from {
            let (k, var) = split_pair(e, "--env-from")?;
            // The value is read here and never printed.
            let v = std::env::var(var)
                .map_err(|_| format!("--env-from {k}={var}: the variable {var} is not set"))?;
            env.push((k.to_string(), v));
        }
        if self.max_children == 0 {
            return Err("--max-children must be at least 1".into());
        }
        let mut command = self.command.iter();
        let program = command.next().cloned().unwrap_or_default();
        Ok(mcp_workers::stdio::StdioOptions {
            worker_id,
            pool: self.pool.clone(),
            isolation: match self.isolation {
                IsolationArg::PerSession => mcp_workers::stdio::Isolation::PerSession,
                IsolationArg::Shared => mcp_workers::stdio::Isolation::Shared,
            },
            max_children: self.max_children,
            start_timeout: self.start_timeout,
            idle_timeout: self.idle_timeout,
            pass_identity: self.pass_identity,
            child: mcp_workers::stdio_child::ChildSpec {
                program,
                args: command.cloned().collect(),
                cwd: self.cwd.clone(),
                env,
                rlimit_as: self.memory_limit_mb.map(|m| m.saturating_mul(1024 * 1024)),
                rlimit_cpu: self.cpu_limit_secs,
                max_line_bytes: self.max_line_bytes,
                max_bad_lines: self.max_bad_lines,
                stop_grace: self.stop_grace,
            },
            shutdown_grace: mcp_workers::http::DEFAULT_SHUTDOWN_GRACE,
        })
    }
}

/// Options shared by every worker kind.
#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free port).
    #[arg(long)]
    listen: SocketAddr,
    /// Worker id reported by /health and whoami [default: $MCP_WORKER_ID, else worker-<pid>].
    #[arg(long)]
    id: Option<String>,
    /// Prefer application/json over SSE for responses served without a session.
    #[arg(long)]
    json_response: bool,
    /// Issue no Mcp-Session-Id: serve every request statelessly.
    #[arg(long)]
    stateless: bool,
}

impl ServeArgs {
    fn http_options(&self) -> HttpOptions {
        let id = self
            .id
            .clone()
            .or_else(|| {
                std::env::var("MCP_WORKER_ID")
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| format!("worker-{}", std::process::id()));
        let mut opts = HttpOptions::new(id);
        opts.json_response = self.json_response;
        opts.stateless = self.stateless;
        opts
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("received SIGTERM"),
                    res = tokio::signal::ctrl_c() => log_ctrl_c(res),
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only SIGINT stops the worker");
                log_ctrl_c(tokio::signal::ctrl_c().await);
            }
        }
    }
    #[cfg(not(unix))]
    log_ctrl_c(tokio::signal::ctrl_c().await);
}

fn log_ctrl_c(res: std::io::Result<()>) {
    match res {
        Ok(()) => tracing::info!("received SIGINT"),
        Err(err) => {
            // Without a signal handler the worker can only be killed; keep serving.
            tracing::warn!(%err, "cannot listen for SIGINT");
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Tools(args) => {
            let opts = args.http_options();
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
            let addr = listener
                .local_addr()
                .map_err(|e| format!("cannot read listening address: {e}"))?;
            tracing::info!(
                worker = %opts.worker_id,
                stateless = opts.stateless,
                json_response = opts.json_response,
                "mcp-worker tools listening on {addr}"
            );
            let mut stdout = std::io::stdout();
            let _ = writeln!(stdout, "listening on {addr}");
            let _ = stdout.flush();
            mcp_workers::serve_tools(listener, opts, stop_signal())
                .await
                .map_err(|e| format!("server error: {e}"))
        }
        Command::ToolsStdio { id } => {
            use rmcp::ServiceExt;
            let id = id
                .or_else(|| {
                    std::env::var("MCP_WORKER_ID")
                        .ok()
                        .filter(|v| !v.is_empty())
                })
                .unwrap_or_else(|| format!("worker-{}", std::process::id()));
            tracing::info!(worker = %id, "mcp-worker tools-stdio serving on stdin/stdout");
            let service = mcp_workers::ToolsServer::new(id.as_str())
                .serve(rmcp::transport::stdio())
                .await
                .map_err(|e| format!("stdio initialize failed: {e}"))?;
            service
                .waiting()
                .await
                .map(|_| ())
                .map_err(|e| format!("stdio server error: {e}"))
        }
        Command::Stdio(args) => {
            let opts = args.options()?;
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
            let addr = listener
                .local_addr()
                .map_err(|e| format!("cannot read listening address: {e}"))?;
            tracing::info!(
                worker = %opts.worker_id,
                pool = %opts.pool,
                isolation = ?opts.isolation,
                max_children = opts.max_children,
                program = %opts.child.program,
                "mcp-worker stdio listening on {addr}"
            );
            let mut stdout = std::io::stdout();
            let _ = writeln!(stdout, "listening on {addr}");
            let _ = stdout.flush();
            mcp_workers::stdio::serve_stdio(listener, opts, stop_signal())
                .await
                .map_err(|e| format!("server error: {e}"))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // The gateway's log file gets plain text (spawned workers share its stderr).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("mcp-worker: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("mcp-worker: {err}");
            ExitCode::FAILURE
        }
    }
}
