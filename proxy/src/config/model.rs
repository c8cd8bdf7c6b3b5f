//! The validated runtime model built from the file model. Everything here is already
//! checked: addresses parse, pools exist, counts are in range.

use std::net::SocketAddr;
use std::time::Duration;

pub use super::file::{BalanceFile as Balance, HealthKind};
use crate::mcp::origin::OriginRule;

#[derive(Debug, Clone, PartialEq)]
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
    pub client_ip: ClientIpConfig,
    /// HTTPS on the client listener; `None`: plain HTTP (h2c allowed).
    pub tls: Option<TlsConfig>,
    pub shutdown_grace: Duration,
    pub upgrade_sock: String,
    pub auth: AuthConfig,
    pub public_url: Option<String>,
    pub database: Option<DatabaseConfig>,
    pub redis: Option<RedisConfig>,
    pub identity: Option<IdentityConfig>,
    pub rate_limits: RateLimitConfig,
    pub logging: LoggingConfig,
    pub routes: Vec<RouteConfig>,
    pub pools: Vec<PoolConfig>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthConfig {
    pub issuers: Vec<IssuerConfig>,
    pub token_cache_entries: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IssuerConfig {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub secret_env: Option<String>,
    /// (kid, PEM file path)
    pub public_keys: Vec<(Option<String>, String)>,
    pub jwks_uri: Option<String>,
    pub jwks_max_age: Duration,
    pub roles_claim: String,
    pub leeway: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAuth {
    pub required: bool,
    pub roles: Vec<String>,
    pub api_keys: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub url: String,
    pub migrate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub topology: RedisTopology,
    pub prefix: String,
    /// Certificates for `rediss://` addresses.
    pub tls: RedisTls,
}

/// `redis.tls`, as PEM text read from its files. Empty: the system's roots, no client
/// certificate.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisTls {
    pub fn is_empty(&self) -> bool {
        self.ca_pem.is_none() && self.client_pem.is_none()
    }
}

impl std::fmt::Debug for RedisTls {
    // The key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.as_ref().map(Vec::len))
            .field("client_certificate", &self.client_pem.is_some())
            .finish()
    }
}

/// `tls`: the listener's certificate and key as read from their files (checked to parse
/// and to belong together), the oldest version accepted and the handshake deadline.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: String,
    pub key_file: String,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub min_version: TlsVersion,
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl std::fmt::Debug for TlsConfig {
    // The key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("min_version", &self.min_version)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

/// How Redis is reached (docs/configuration.md, "redis").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server.
    Standalone { url: String },
    /// The master `master`, as the sentinels at `nodes` name it, with the master's
    /// credentials when it asks for them.
    Sentinel {
        master: String,
        nodes: Vec<String>,
        master_auth: Option<MasterAuth>,
    },
    /// A Redis Cluster with these seed nodes.
    Cluster { nodes: Vec<String> },
}

/// The Sentinel master's user (ACL) and password; the password stays out of debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterAuth {
    pub username: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for MasterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterAuth")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl RedisTopology {
    /// Some address is `rediss://` (TLS).
    pub fn uses_tls(&self) -> bool {
        let tls = |u: &String| u.starts_with("rediss://");
        match self {
            RedisTopology::Standalone { url } => tls(url),
            RedisTopology::Sentinel { nodes, .. } | RedisTopology::Cluster { nodes } => {
                nodes.iter().any(tls)
            }
        }
    }
}

/// The request log pipeline; see docs/logging.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    pub enabled: bool,
    pub queue_size: usize,
    pub batch_size: usize,
    pub batch_interval: Duration,
    pub stream: String,
    pub stream_maxlen: u64,
    pub ship: bool,
    pub claim_idle: Duration,
    pub spool_dir: std::path::PathBuf,
    pub spool_max_bytes: u64,
    /// `None`: rows are kept forever.
    pub retention: Option<Duration>,
    pub retention_check: Duration,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            enabled: true,
            queue_size: 65_536,
            batch_size: 256,
            batch_interval: Duration::from_millis(200),
            stream: "request-logs".into(),
            stream_maxlen: 100_000,
            ship: true,
            claim_idle: Duration::from_secs(30),
            spool_dir: "data/log-spool".into(),
            spool_max_bytes: 1 << 30,
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            retention_check: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// `iss` of the tokens the gateway issues: `public_url`.
    pub issuer: String,
    /// `aud` of those tokens: `public_url` (accepted on every route).
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub key_rotation: Duration,
    pub credentials_key_env: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRule {
    pub service: String,
    pub header: String,
    pub format: String,
}

/// Where a request comes from: the TCP peer, unless that peer is a trusted proxy, in which
/// case the header it sets names the client (see `gateway/client_ip.rs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientIpConfig {
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub header: ForwardedHeader,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (each proxy appends its peer).
    #[default]
    XForwardedFor,
    /// `X-Real-IP: client` (one value, set by the last proxy).
    XRealIp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub client_read_timeout: Duration,
    pub client_write_timeout: Duration,
    /// Most messages in one JSON-RPC batch; longer batches get -32600 before any worker.
    pub max_batch_len: usize,
    /// POST requests in progress at once, gateway-wide; 0: no limit.
    pub max_inflight_calls: usize,
    /// Client connections open at once, gateway-wide (`server::ConnectionSlots`).
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub path: String,
    pub pool: String,
    pub upstream_path: String,
    /// `None`: the route is open (no issuer is configured).
    pub auth: Option<RouteAuth>,
    /// `None`: every tool is allowed.
    pub tools: Option<Vec<ToolRuleConfig>>,
    pub credential: Option<CredentialRule>,
    pub log_bodies: Option<BodyCapture>,
}

/// Bodies kept in the request log for a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyCapture {
    pub max_bytes: usize,
    /// Lower-case field names whose values are redacted.
    pub redact: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRuleConfig {
    pub roles: Vec<String>,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub source: PoolSource,
    pub balance: Balance,
    pub health: HealthConfig,
    pub connect_timeout: Duration,
    pub read_timeout: Option<Duration>,
    pub idle_timeout: Duration,
    /// GET streams reach the workers over h2c, multiplexed (docs/configuration.md).
    pub h2c_streams: bool,
    /// Remote pools only: DNS names followed in the background. `source` then holds the
    /// members in force (the fixed `upstreams` and the addresses last resolved).
    pub discovery: Option<DiscoveryConfig>,
}

/// `pools.<name>.discover`: see docs/discovery.md.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    pub targets: Vec<DnsTarget>,
    pub refresh: Duration,
    /// `None`: the system's resolver configuration (resolv.conf).
    pub resolver: Option<SocketAddr>,
    /// The pool's fixed `upstreams`: members whatever DNS says.
    pub fixed: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsTarget {
    /// A and AAAA records of `name`, each address with `port`.
    Host { name: String, port: u16 },
    /// SRV records of `name`: each target's addresses with the record's port.
    Srv { name: String },
}

impl std::fmt::Display for DnsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsTarget::Host { name, port } => write!(f, "{name}:{port}"),
            DnsTarget::Srv { name } => write!(f, "SRV {name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PoolSource {
    Spawn(SpawnConfig),
    Remote(Vec<SocketAddr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpawnConfig {
    pub command: Vec<String>,
    pub count: usize,
    pub env: Vec<(String, String)>,
    pub ready_timeout: Duration,
    pub stop_grace: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub kind: HealthKind,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
}

/// Rate and concurrency limits, defaults included.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitConfig {
    pub redis_timeout: Duration,
    pub replicas: u64,
    pub policies: Vec<RatePolicyConfig>,
}

/// What a policy counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKeyPart {
    User,
    ApiKey,
    Ip,
    Route,
    Tool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    /// `burst` requests at once, then one every `period / limit` (GCRA).
    Rate {
        limit: u64,
        period: Duration,
        burst: u64,
    },
    /// At most `max` requests in flight; Redis slots expire after `lease`.
    Concurrency { max: u64, lease: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateBackend {
    Local,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Let requests through unlimited.
    Allow,
    /// Refuse them (429).
    Deny,
    /// Enforce limit ÷ replicas in this process.
    Local,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RatePolicyConfig {
    pub name: String,
    pub key: Vec<RateKeyPart>,
    pub kind: RateKind,
    pub backend: RateBackend,
    pub on_redis_error: OnRedisError,
    /// Redis rates: most requests' allowance taken at once (1: a round trip per request).
    pub prefetch: u64,
    pub routes: Vec<String>,
    pub except_routes: Vec<String>,
    pub paths: Vec<String>,
    pub tools: Vec<String>,
    pub roles: Vec<String>,
    pub exempt_roles: Vec<String>,
}
