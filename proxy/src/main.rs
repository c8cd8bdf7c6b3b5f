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
        /// Take the listening socket over from a running gateway (zero-downtime upgrade):
        /// start with this flag, then send SIGQUIT to the old process.
        #[arg(long)]
        upgrade: bool,
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
    /// Print stored request records, newest first (reads the configuration's database).
    Logs {
        /// Configuration file (its `database` is read).
        #[arg(long, short, env = "MCP_PROXY_CONFIG")]
        config: Option<PathBuf>,
        /// Only records since this long ago (`10m`, `2h`) or this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        tool: Option<String>,
        #[arg(long)]
        status: Option<u16>,
        /// At most this many records (1–1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Manage the gateway's own users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Print an access token signed with the gateway's key (creating the key if none).
    Token {
        /// The user: id or email.
        #[arg(long)]
        sub: String,
        /// Roles to put in the token instead of the user's (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        #[command(flatten)]
        target: IdentityTarget,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a user; without --password one is generated and printed.
    Add {
        #[arg(long)]
        email: String,
        /// Role to grant (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        password: Option<String>,
        #[command(flatten)]
        target: IdentityTarget,
    },
}

#[derive(clap::Args)]
struct IdentityTarget {
    /// Database URL: sqlite://PATH or postgres://….
    #[arg(long, env = "MCP_PROXY_DATABASE", default_value = mcp_proxy::store::DEFAULT_DATABASE_URL)]
    database: String,
    /// `iss` of issued tokens.
    #[arg(long, env = "MCP_GATEWAY_ISSUER", default_value = mcp_proxy::identity::cli::DEFAULT_ISSUER)]
    issuer: String,
    /// `aud` of issued access tokens.
    #[arg(long, env = "MCP_GATEWAY_AUDIENCE", default_value = mcp_proxy::identity::cli::DEFAULT_AUDIENCE)]
    audience: String,
}

impl IdentityTarget {
    fn into_target(self) -> mcp_proxy::identity::cli::CliTarget {
        mcp_proxy::identity::cli::CliTarget {
            database: self.database,
            issuer: self.issuer,
            audience: self.audience,
        }
    }
}

fn identity_command(command: Command) -> ExitCode {
    use mcp_proxy::identity::cli;
    let result = match command {
        Command::User {
            action:
                UserAction::Add {
                    email,
                    roles,
                    password,
                    target,
                },
        } => cli::user_add(&target.into_target(), &email, &roles, password).map(|u| {
            println!("created user {} <{}> roles {:?}", u.id, u.email, u.roles);
            if let Some(p) = u.generated_password {
                println!("password (shown once): {p}");
            }
        }),
        Command::Token {
            sub,
            roles,
            ttl,
            target,
        } => cli::token(&target.into_target(), &sub, &roles, ttl.into()).map(|t| println!("{t}")),
        _ => return ExitCode::from(2),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-proxy: {e}");
            ExitCode::from(1)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn logs_command(
    path: Option<PathBuf>,
    since: Option<String>,
    user: Option<String>,
    route: Option<String>,
    tool: Option<String>,
    status: Option<u16>,
    limit: i64,
    json: bool,
) -> ExitCode {
    use mcp_proxy::logship;
    let cfg = match config::load(path.as_deref()) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    if !(1..=logship::db::MAX_LIMIT).contains(&limit) {
        eprintln!("mcp-proxy: --limit must be 1–{}", logship::db::MAX_LIMIT);
        return ExitCode::from(2);
    }
    let since = match since
        .map(|s| logship::db::parse_since(&s, logship::record::now_ms()))
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let q = logship::db::LogQuery {
        user,
        route,
        tool,
        status,
        since,
        limit,
    };
    match logship::print_logs(cfg.database.as_ref(), &q, json) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-proxy: {e}");
            ExitCode::from(1)
        }
    }
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
        c @ (Command::User { .. } | Command::Token { .. }) => identity_command(c),
        Command::Logs {
            config: path,
            since,
            user,
            route,
            tool,
            status,
            limit,
            json,
        } => logs_command(path, since, user, route, tool, status, limit, json),
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
        Command::Run {
            config: path,
            upgrade,
        } => {
            init_logging();
            let cfg = match config::load(path.as_deref()) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            tracing::info!(config = %cfg.source, "configuration loaded");
            match mcp_proxy::server::run(cfg, upgrade) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mcp-proxy: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
