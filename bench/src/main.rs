//! `mcp-bench`: MCP load generator. See the library documentation.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use mcp_bench::cli::{Cli, Command, CompareArgs, RunArgs, StreamsArgs, TokenArgs};
use mcp_bench::{compare, report::Report, rlimit, runner, streams, token};

/// Exit status when the run completed but no request succeeded.
const EXIT_NO_SUCCESS: u8 = 3;

fn run(args: &RunArgs) -> Result<ExitCode, String> {
    let cfg = args.to_config()?;
    let rt = runtime(args.threads)?;
    let outcome = rt.block_on(runner::run(&cfg))?;
    let report = Report::new(&cfg, &outcome);
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json()?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report.to_html())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if !args.quiet {
        let _ = write!(std::io::stdout(), "{}", report.to_text());
    }
    if report.results.ok == 0 {
        let _ = writeln!(
            std::io::stderr(),
            "mcp-bench: no request succeeded ({} errors)",
            report.results.errors
        );
        return Ok(ExitCode::from(EXIT_NO_SUCCESS));
    }
    Ok(ExitCode::SUCCESS)
}

fn compare(args: &CompareArgs) -> Result<ExitCode, String> {
    let reports = compare::load_dir(&args.results)?;
    let mut out = std::io::stdout();
    if let Some(target) = &args.suggest_open_rate {
        let rate = compare::suggested_open_rate(&reports, target)
            .ok_or_else(|| format!("no closed-loop report for target {target}"))?;
        let _ = writeln!(out, "{rate}");
        return Ok(ExitCode::SUCCESS);
    }
    let streams = compare::load_streams_dir(&args.results.join("streams"))?;
    if reports.is_empty() && streams.is_empty() {
        return Err(format!("no JSON reports in {}", args.results.display()));
    }
    if !reports.is_empty() {
        let _ = write!(out, "{}", compare::markdown(&compare::rows(&reports)));
    }
    if !streams.is_empty() {
        if !reports.is_empty() {
            let _ = writeln!(out);
        }
        let _ = write!(out, "{}", compare::streams_markdown(&streams));
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))
}

fn streams(args: &StreamsArgs) -> Result<ExitCode, String> {
    let cfg = args.to_config()?;
    let report = runtime(None)?.block_on(streams::run(&cfg))?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| format!("cannot encode the report: {e}"))?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if !args.quiet {
        let _ = write!(std::io::stdout(), "{}", report.to_text());
    }
    if report.streams_held == 0 {
        let _ = writeln!(std::io::stderr(), "mcp-bench: no stream was held open");
        return Ok(ExitCode::from(EXIT_NO_SUCCESS));
    }
    Ok(ExitCode::SUCCESS)
}

fn token(args: &TokenArgs) -> Result<ExitCode, String> {
    let claims = token::Claims::new(&args.iss, &args.aud, &args.sub, token::now_secs(), args.ttl);
    let t = token::sign_hs256(&claims, args.secret.as_bytes())?;
    let _ = writeln!(std::io::stdout(), "{t}");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Many connections need many descriptors: use all the hard limit allows.
    if let Err(e) = rlimit::raise_nofile_to_hard() {
        let _ = writeln!(std::io::stderr(), "mcp-bench: warning: {e}");
    }
    let res = match &cli.command {
        Command::Run(args) => run(args),
        Command::Compare(args) => compare(args),
        Command::Streams(args) => streams(args),
        Command::Token(args) => token(args),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "mcp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
