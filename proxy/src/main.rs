//! The `mcp-proxy` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use mcp_proxy::config;

#[derive(Parser)]
#[command(name = "mcp-proxy", version, about = "An MCP gateway on Pingora")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (default configuration: the embedded config/gateway.yaml).
    Run {
        /// Configuration file.
        #[arg(long, short, env = "MCP_PROXY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and list every problem found.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Apply the database migrations and list the applied versions.
    Migrate {
        /// Database URL: sqlite://PATH or postgres://….
        #[arg(long, env = "MCP_PROXY_DATABASE", default_value = mcp_proxy::store::DEFAULT_DATABASE_URL)]
        database: String,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Migrate { database } => match mcp_proxy::store::migrate_blocking(&database) {
            Ok(applied) => {
                for m in applied {
                    let state = if m.newly_applied {
                        "applied"
                    } else {
                        "already applied"
                    };
                    println!("{:04} {} ({state})", m.version, m.description);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mcp-proxy: {e}");
                ExitCode::from(1)
            }
        },
        Command::Validate { config: path } => match config::load_file(&path) {
            Ok(c) => {
                println!(
                    "{}: ok ({} routes, {} pools)",
                    path.display(),
                    c.routes.len(),
                    c.pools.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{} problem(s) found", errors.0.len());
                ExitCode::from(2)
            }
        },
        Command::Run { config: path } => {
            init_logging();
            let cfg = match config::load(path.as_deref()) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            tracing::info!(config = %cfg.source, "configuration loaded");
            match mcp_proxy::server::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mcp-proxy: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
