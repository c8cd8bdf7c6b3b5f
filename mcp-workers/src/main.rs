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
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
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
