//! `mcp-bench`: MCP load generator. See the library documentation.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use mcp_bench::cli::{Cli, Command, CompareArgs, RunArgs};
use mcp_bench::{compare, report::Report, runner};

/// Exit status when the run completed but no request succeeded.
const EXIT_NO_SUCCESS: u8 = 3;

fn run(args: &RunArgs) -> Result<ExitCode, String> {
    let cfg = args.to_config()?;
    let threads = args
        .threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
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
    if reports.is_empty() {
        return Err(format!("no JSON reports in {}", args.results.display()));
    }
    let mut out = std::io::stdout();
    if let Some(target) = &args.suggest_open_rate {
        let rate = compare::suggested_open_rate(&reports, target)
            .ok_or_else(|| format!("no closed-loop report for target {target}"))?;
        let _ = writeln!(out, "{rate}");
        return Ok(ExitCode::SUCCESS);
    }
    let _ = write!(out, "{}", compare::markdown(&compare::rows(&reports)));
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match &cli.command {
        Command::Run(args) => run(args),
        Command::Compare(args) => compare(args),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "mcp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
