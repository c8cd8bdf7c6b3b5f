//! mcp-proxy: an MCP gateway on Pingora. See docs/architecture.md for the map.

pub mod admin;
pub mod auth;
pub mod config;
pub mod control;
pub mod gateway;
pub mod identity;
pub mod identity_link;
pub mod logship;
pub mod mcp;
pub mod policy;
pub mod ratelimit;
pub mod redis_conn;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod store;
pub mod tls;
pub mod workers;
