//! MCP servers run as gateway pool workers.
//!
//! Each worker kind is a module holding an rmcp [`rmcp::ServerHandler`]
//! (today only [`tools::ToolsServer`]); [`http`] serves any of them over
//! Streamable HTTP at `/mcp` with a `GET /health` probe. [`stdio`] is the
//! bridge that puts stdio MCP servers behind the same endpoint.

pub mod http;
pub mod stdio;
pub mod stdio_child;
pub mod stdio_proto;
pub mod tools;

pub use http::{serve, HttpOptions};
pub use tools::ToolsServer;

/// Serve the [`ToolsServer`] (with id `opts.worker_id`) until `shutdown`.
pub async fn serve_tools<F>(
    listener: tokio::net::TcpListener,
    opts: HttpOptions,
    shutdown: F,
) -> std::io::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let server = ToolsServer::new(opts.worker_id.as_str());
    serve(listener, opts, server, shutdown).await
}
