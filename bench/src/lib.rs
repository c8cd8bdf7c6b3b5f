//! `mcp-bench`: a load generator that speaks MCP over Streamable HTTP.
//!
//! - [`cli`]: command-line options.
//! - [`mcp`] and [`sse`]: the MCP client (JSON and SSE answers).
//! - [`workload`]: the operation mix and its requests.
//! - [`scheduler`]: open-loop scheduling without coordinated omission.
//! - [`runner`]: closed and open loops.
//! - [`stats`]: latency histograms and error counts.
//! - [`report`]: text, JSON and HTML reports.
//! - [`procstat`]: CPU and memory of the servers under test.
//! - [`compare`]: summary of `bench/compare.sh` runs.
//! - [`streams`]: many idle SSE streams and their memory cost.
//! - [`token`]: HS256 test tokens.
//! - [`rlimit`]: the open-file limit.

pub mod cli;
pub mod compare;
pub mod mcp;
pub mod procstat;
pub mod report;
pub mod rlimit;
pub mod runner;
pub mod scheduler;
pub mod sse;
pub mod stats;
pub mod streams;
pub mod token;
pub mod workload;
