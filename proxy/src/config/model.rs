//! The validated runtime model built from the file model. Everything here is already
//! checked: addresses parse, pools exist, counts are in range.

use std::net::SocketAddr;
use std::time::Duration;

pub use super::file::{BalanceFile as Balance, HealthKind};
use crate::mcp::origin::OriginRule;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where the configuration came from (file path or `<embedded ...>`).
    pub source: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub threads: usize,
    pub session_key_env: String,
    pub session_ttl: Duration,
    pub limits: Limits,
    pub origins: Vec<OriginRule>,
    pub shutdown_grace: Duration,
    pub routes: Vec<RouteConfig>,
    pub pools: Vec<PoolConfig>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub client_read_timeout: Duration,
    pub client_write_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub path: String,
    pub pool: String,
    pub upstream_path: String,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    pub source: PoolSource,
    pub balance: Balance,
    pub health: HealthConfig,
    pub connect_timeout: Duration,
    pub read_timeout: Option<Duration>,
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum PoolSource {
    Spawn(SpawnConfig),
    Remote(Vec<SocketAddr>),
}

#[derive(Debug, Clone)]
pub struct SpawnConfig {
    pub command: Vec<String>,
    pub count: usize,
    pub env: Vec<(String, String)>,
    pub ready_timeout: Duration,
    pub stop_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub kind: HealthKind,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
}
