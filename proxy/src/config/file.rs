//! The YAML file model: what an operator writes. Kept apart from the runtime model
//! (`super::model`) so the file format can evolve without touching the hot path.
//! Unknown fields are collected while parsing (serde_ignored) and reported as errors with
//! their line, together with every other problem: a typo is an error, never a silent default.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_saphyr::{Location, Spanned};

#[derive(Debug, Deserialize)]
pub struct FileConfig {
    pub listen: Spanned<String>,
    pub admin: Spanned<String>,
    /// Pingora worker threads for the MCP listener.
    #[serde(default)]
    pub threads: Option<Spanned<usize>>,
    #[serde(default)]
    pub session: SessionFile,
    #[serde(default)]
    pub limits: LimitsFile,
    /// Allowed values of the `Origin` header. Requests without `Origin` are allowed.
    #[serde(default = "default_origins")]
    pub allowed_origins: Vec<Spanned<String>>,
    #[serde(default = "default_grace")]
    pub shutdown_grace: HumanDuration,
    /// Unix socket the listener is handed over through in a graceful upgrade (default
    /// `/tmp/mcp-gateway-<listen port>.upgrade.sock`).
    #[serde(default)]
    pub upgrade_sock: Option<String>,
    #[serde(default)]
    pub auth: AuthFile,
    /// The URL clients use to reach this gateway (`https://mcp.example.com`); the base of
    /// resource URIs, protected-resource metadata and the gateway's own token issuer.
    #[serde(default)]
    pub public_url: Option<Spanned<String>>,
    #[serde(default)]
    pub database: Option<DatabaseFile>,
    /// Shared state between replicas: revocations (and, later, caches and rate limits).
    #[serde(default)]
    pub redis: Option<RedisFile>,
    /// The gateway's own users, logins, API keys and tokens (needs `database`).
    #[serde(default)]
    pub identity: Option<IdentityFile>,
    /// Request-rate and concurrency limits (docs/configuration.md, "rate_limits").
    #[serde(default)]
    pub rate_limits: Option<RateLimitsFile>,
    /// The request log pipeline (queue, batches, Redis Stream, spool, retention).
    #[serde(default)]
    pub logging: Option<LoggingFile>,
    /// Which address a request comes from when the gateway sits behind load balancers.
    #[serde(default)]
    pub client_ip: Option<ClientIpFile>,
    /// HTTPS on the client listener (docs/configuration.md, "tls").
    #[serde(default)]
    pub tls: Option<TlsFile>,
    pub routes: Vec<RouteFile>,
    pub pools: BTreeMap<String, PoolFile>,
}

#[derive(Debug, Deserialize, Default)]
pub struct AuthFile {
    /// Token issuers the gateway trusts. When any is configured, every route requires a
    /// valid token unless it says `auth: { required: false }`.
    #[serde(default)]
    pub issuers: Vec<IssuerFile>,
    /// Verified tokens kept in memory (by SHA-256) until they expire.
    #[serde(default = "default_token_cache")]
    pub token_cache_entries: u64,
}

fn default_token_cache() -> u64 {
    100_000
}

#[derive(Debug, Deserialize)]
pub struct IssuerFile {
    pub name: String,
    /// The `iss` claim value.
    pub issuer: Spanned<String>,
    /// Accepted `aud` values (the resource URI of the MCP endpoint); at least one.
    pub audiences: Spanned<Vec<String>>,
    /// Pinned algorithms, one family: HS256/384/512, RS*/PS*, ES256/384, or EdDSA.
    pub algorithms: Spanned<Vec<String>>,
    /// Environment variable with the shared secret (HMAC algorithms).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Public keys (RSA, EC, Ed25519) as PEM files, each with an optional `kid`.
    #[serde(default)]
    pub public_keys: Vec<PublicKeyFile>,
    /// Or the issuer's published key set (OIDC `jwks_uri`).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// How often the key set is refetched.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age: HumanDuration,
    /// Dotted path of the claim holding roles (array or space-separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
}

fn default_jwks_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_roles_claim() -> String {
    "roles".to_string()
}

fn default_leeway() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// `tls`: the client listener speaks HTTPS with this certificate. The files are read when
/// the configuration is loaded, and again on every reload (and when they change).
#[derive(Debug, Deserialize)]
pub struct TlsFile {
    /// The certificate chain, PEM: the server's certificate first, then intermediates.
    pub cert_file: Spanned<String>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Spanned<String>,
    /// The oldest protocol version accepted: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: Option<Spanned<String>>,
    /// Time a new connection has to complete its TLS handshake.
    #[serde(default = "default_tls_handshake_timeout")]
    pub handshake_timeout: Spanned<HumanDuration>,
}

fn default_tls_handshake_timeout() -> Spanned<HumanDuration> {
    Spanned::new(
        HumanDuration(Duration::from_secs(10)),
        Location::UNKNOWN,
        Location::UNKNOWN,
    )
}

#[derive(Debug, Deserialize)]
pub struct PublicKeyFile {
    #[serde(default)]
    pub kid: Option<String>,
    pub pem_file: String,
}

#[derive(Debug, Deserialize)]
pub struct DatabaseFile {
    /// `sqlite://data/gateway.db` or `postgres://user@host/db`.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// Name of an environment variable holding the URL instead (a Secret on Kubernetes).
    #[serde(default)]
    pub url_env: Option<Spanned<String>>,
    /// Apply migrations at start.
    #[serde(default = "default_true")]
    pub migrate: bool,
}

#[derive(Debug, Deserialize, Default)]
pub struct ClientIpFile {
    /// Addresses or CIDR ranges of the load balancers / proxies in front of the gateway.
    /// Only a request whose TCP peer is one of them may name its client in `header`.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// `x-forwarded-for` (default) or `x-real-ip`.
    #[serde(default)]
    pub header: Option<Spanned<String>>,
}

/// Exactly one of `url` (one server), `sentinel` or `cluster` says how Redis is reached.
#[derive(Debug, Deserialize)]
pub struct RedisFile {
    /// One server: `redis://127.0.0.1:6379`, or `rediss://…` for TLS.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// One server whose URL is in this environment variable (a Secret on Kubernetes).
    #[serde(default)]
    pub url_env: Option<Spanned<String>>,
    /// A master found through Redis Sentinel (re-discovered after a failover).
    #[serde(default)]
    pub sentinel: Option<RedisSentinelFile>,
    /// A Redis Cluster, reached through any of its nodes.
    #[serde(default)]
    pub cluster: Option<RedisClusterFile>,
    /// Prefix of every key and channel, so several gateways can share one Redis.
    #[serde(default = "default_redis_prefix")]
    pub prefix: String,
    /// Certificates for `rediss://` addresses (the system's roots when unset).
    #[serde(default)]
    pub tls: Option<RedisTlsFile>,
}

/// `redis.tls`: PEM files, read when the configuration is loaded.
#[derive(Debug, Deserialize)]
pub struct RedisTlsFile {
    /// The CA certificate(s) that signed the servers' certificates, instead of the system's.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// A client certificate, for servers that ask for one (`tls-auth-clients yes`).
    #[serde(default)]
    pub cert_file: Option<Spanned<String>>,
    /// The client certificate's private key.
    #[serde(default)]
    pub key_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RedisSentinelFile {
    /// The name the sentinels monitor the master under (`sentinel monitor <name> …`).
    pub master: Spanned<String>,
    /// Sentinels: `redis://host:26379`, at least one.
    pub nodes: Vec<Spanned<String>>,
    /// The environment variable holding the master's password (`requirepass`), if it has one.
    #[serde(default)]
    pub master_password_env: Option<Spanned<String>>,
    /// The master's ACL user, with `master_password_env`.
    #[serde(default)]
    pub master_username: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub struct RedisClusterFile {
    /// Seed nodes: `redis://host:7000`, at least one; the others are discovered.
    pub nodes: Vec<Spanned<String>>,
}

fn default_redis_prefix() -> String {
    "mcp-gateway".to_string()
}

#[derive(Debug, Deserialize)]
pub struct LoggingFile {
    /// Record requests at all (off: no record is built; audit events still flow).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Records held in memory between the proxy phases and the batcher; beyond: dropped.
    #[serde(default)]
    pub queue_size: Option<Spanned<u64>>,
    #[serde(default)]
    pub batch_size: Option<Spanned<u64>>,
    #[serde(default)]
    pub batch_interval: Option<Spanned<HumanDuration>>,
    /// Name of the Redis Stream (inside the `redis.prefix` hash tag).
    #[serde(default)]
    pub stream: Option<Spanned<String>>,
    /// Approximate longest length of the stream, in batches.
    #[serde(default)]
    pub stream_maxlen: Option<Spanned<u64>>,
    /// Run the shipper (stream → database) in this replica.
    #[serde(default)]
    pub ship: Option<bool>,
    /// Entries pending this long in a (dead) consumer are claimed by another.
    #[serde(default)]
    pub claim_idle: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub spool_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub spool_max_bytes: Option<Spanned<u64>>,
    /// Rows older than this are deleted; `0s` keeps them forever.
    #[serde(default)]
    pub retention: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub retention_check: Option<Spanned<HumanDuration>>,
}

#[derive(Debug, Deserialize)]
pub struct IdentityFile {
    #[serde(default = "default_access_ttl")]
    pub access_ttl: HumanDuration,
    #[serde(default = "default_refresh_ttl")]
    pub refresh_ttl: HumanDuration,
    #[serde(default = "default_refresh_ttl")]
    pub key_rotation: HumanDuration,
    /// Environment variable with the 32-byte key that encrypts stored service credentials
    /// and signing keys (base64 or hex).
    #[serde(default = "default_credentials_key_env")]
    pub credentials_key_env: String,
}

fn default_access_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(15 * 60))
}

fn default_refresh_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 24 * 3600))
}

fn default_credentials_key_env() -> String {
    "MCP_GATEWAY_CREDENTIALS_KEY".to_string()
}

#[derive(Debug, Deserialize)]
pub struct CredentialFile {
    /// The service name users store their credential under (`PUT /auth/credentials/{service}`).
    pub service: String,
    /// Header the credential is injected into, e.g. `Authorization`.
    pub header: String,
    /// `{token}` is replaced by the credential, e.g. `Bearer {token}`.
    #[serde(default = "default_credential_format")]
    pub format: String,
}

fn default_credential_format() -> String {
    "{token}".to_string()
}

#[derive(Debug, Deserialize)]
pub struct RouteAuthFile {
    #[serde(default = "default_true")]
    pub required: bool,
    /// Accept the gateway's API keys (`X-API-Key` or `Authorization: Bearer mcpk_…`).
    #[serde(default = "default_true")]
    pub api_keys: bool,
    /// The caller needs at least one of these roles (empty: any authenticated caller).
    #[serde(default)]
    pub roles: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn default_origins() -> Vec<Spanned<String>> {
    ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
        .into_iter()
        .map(|s| Spanned::new(s.to_string(), Location::UNKNOWN, Location::UNKNOWN))
        .collect()
}

fn default_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

#[derive(Debug, Deserialize)]
pub struct SessionFile {
    /// Name of the environment variable holding the 32-byte sealing key (base64 or hex).
    #[serde(default = "default_key_env")]
    pub key_env: String,
    /// How long a sealed session id stays valid.
    #[serde(default = "default_session_ttl")]
    pub ttl: HumanDuration,
}

impl Default for SessionFile {
    fn default() -> Self {
        SessionFile {
            key_env: default_key_env(),
            ttl: default_session_ttl(),
        }
    }
}

fn default_key_env() -> String {
    "MCP_GATEWAY_SESSION_KEY".to_string()
}

fn default_session_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}

#[derive(Debug, Deserialize)]
pub struct LimitsFile {
    #[serde(default = "default_max_body")]
    pub max_body_bytes: Spanned<u64>,
    /// Time allowed for a client to send the request header and for each body read.
    #[serde(default = "default_client_timeout")]
    pub client_read_timeout: HumanDuration,
    #[serde(default = "default_client_timeout")]
    pub client_write_timeout: HumanDuration,
    /// Most JSON-RPC messages in one batch (hardening).
    #[serde(default = "default_max_batch")]
    pub max_batch_len: Spanned<u64>,
    /// POST requests the gateway works on at once; beyond, 503 at once (0: no limit).
    #[serde(default = "default_max_inflight_calls")]
    pub max_inflight_calls: Spanned<u64>,
    /// Client connections open at once; one more is answered with 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: Spanned<u64>,
}

impl Default for LimitsFile {
    fn default() -> Self {
        LimitsFile {
            max_body_bytes: default_max_body(),
            client_read_timeout: default_client_timeout(),
            client_write_timeout: default_client_timeout(),
            max_batch_len: default_max_batch(),
            max_inflight_calls: default_max_inflight_calls(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_max_inflight_calls() -> Spanned<u64> {
    Spanned::new(4096, Location::UNKNOWN, Location::UNKNOWN)
}

fn default_max_connections() -> Spanned<u64> {
    Spanned::new(50_000, Location::UNKNOWN, Location::UNKNOWN)
}

fn default_max_batch() -> Spanned<u64> {
    Spanned::new(100, Location::UNKNOWN, Location::UNKNOWN)
}

fn default_max_body() -> Spanned<u64> {
    Spanned::new(4 * 1024 * 1024, Location::UNKNOWN, Location::UNKNOWN)
}

fn default_client_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

#[derive(Debug, Deserialize)]
pub struct RouteFile {
    pub path: Spanned<String>,
    pub pool: Spanned<String>,
    #[serde(default)]
    pub upstream_path: Option<Spanned<String>>,
    #[serde(default)]
    pub auth: Option<RouteAuthFile>,
    /// Per-tool rules, first match by role decides (see docs/configuration.md).
    #[serde(default)]
    pub tools: Option<Spanned<Vec<ToolRuleFile>>>,
    /// A per-user service credential injected into requests to the workers.
    #[serde(default)]
    pub credential: Option<CredentialFile>,
    /// Keep request and response bodies in the request log (off by default).
    #[serde(default)]
    pub log_bodies: Option<LogBodiesFile>,
}

#[derive(Debug, Deserialize)]
pub struct LogBodiesFile {
    /// Longest body text kept (longer ones are cut, and say so).
    #[serde(default = "default_log_body_bytes")]
    pub max_bytes: Spanned<u64>,
    /// JSON fields whose values are replaced by "[redacted]" (any depth, case-insensitive).
    #[serde(default = "default_redact")]
    pub redact: Vec<String>,
}

fn default_log_body_bytes() -> Spanned<u64> {
    Spanned::new(4096, Location::UNKNOWN, Location::UNKNOWN)
}

fn default_redact() -> Vec<String> {
    [
        "password",
        "token",
        "access_token",
        "refresh_token",
        "secret",
        "api_key",
        "apikey",
        "authorization",
        "cookie",
    ]
    .map(String::from)
    .to_vec()
}

#[derive(Debug, Deserialize)]
pub struct ToolRuleFile {
    /// Roles this rule is for; `*` is everyone, including unauthenticated callers.
    #[serde(default = "default_star")]
    pub roles: Vec<String>,
    #[serde(default = "default_star")]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

fn default_star() -> Vec<String> {
    vec!["*".to_string()]
}

#[derive(Debug, Deserialize)]
pub struct PoolFile {
    #[serde(default)]
    pub spawn: Option<SpawnFile>,
    /// A stdio MCP server behind bridges the gateway spawns (`mcp-worker stdio`).
    #[serde(default)]
    pub stdio: Option<StdioFile>,
    /// Bridges of a `stdio` pool (`spawn` pools say `spawn.count`).
    #[serde(default)]
    pub count: Option<Spanned<usize>>,
    #[serde(default)]
    pub upstreams: Option<Spanned<Vec<String>>>,
    /// Remote workers found in DNS and followed while the gateway runs (docs/discovery.md).
    #[serde(default)]
    pub discover: Option<DiscoverFile>,
    #[serde(default)]
    pub balance: BalanceFile,
    #[serde(default)]
    pub health: HealthFile,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Longest silence allowed while reading a worker's answer. Unset: no limit, which
    /// suits SSE streams that stay quiet between events.
    #[serde(default)]
    pub read_timeout: Option<HumanDuration>,
    /// Idle keep-alive connections to workers are closed after this long.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// GET streams go to the workers over HTTP/2 cleartext (prior knowledge), many on one
    /// connection; POSTs stay on HTTP/1.1. Only for workers that speak h2c. Unset: on for
    /// `stdio` pools (the gateway's own bridges speak it), off otherwise.
    #[serde(default)]
    pub h2c_streams: Option<bool>,
}

/// `pools.<name>.discover`: DNS names whose records are the pool's remote workers.
#[derive(Debug, Deserialize)]
pub struct DiscoverFile {
    pub dns: Spanned<Vec<DnsNameFile>>,
    /// How often the names are resolved again (default 10s).
    #[serde(default)]
    pub refresh: Option<HumanDuration>,
    /// `ip` or `ip:port` of the DNS server to ask (default: the system's resolv.conf).
    #[serde(default)]
    pub resolver: Option<Spanned<String>>,
}

/// One DNS entry: `{ name, port }` (A and AAAA records) or `{ srv }` (SRV records).
#[derive(Debug, Deserialize)]
pub struct DnsNameFile {
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub port: Option<Spanned<u32>>,
    #[serde(default)]
    pub srv: Option<Spanned<String>>,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

fn default_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

#[derive(Debug, Deserialize)]
pub struct SpawnFile {
    /// Program and arguments. `{port}` and `{id}` are replaced; without `{port}`,
    /// `--listen 127.0.0.1:{port}` is appended.
    pub command: Spanned<Vec<String>>,
    #[serde(default = "default_count")]
    pub count: Spanned<usize>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: HumanDuration,
    #[serde(default = "default_stop_grace")]
    pub stop_grace: HumanDuration,
}

/// A stdio MCP server put behind the gateway: each of the pool's `count` workers is an
/// `mcp-worker stdio` bridge that starts the command per session (or once, shared).
#[derive(Debug, Deserialize)]
pub struct StdioFile {
    /// Program and arguments of the stdio MCP server.
    pub command: Spanned<Vec<String>>,
    #[serde(default)]
    pub isolation: Option<Spanned<String>>,
    /// Most live children per bridge.
    #[serde(default)]
    pub max_children: Option<Spanned<usize>>,
    /// Literal variables for the children.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables for the children taken from the gateway's environment: `NAME: GATEWAY_VAR`.
    #[serde(default)]
    pub env_from: BTreeMap<String, Spanned<String>>,
    /// Working directory of the children.
    #[serde(default)]
    pub cwd: Option<Spanned<String>>,
    #[serde(default)]
    pub start_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub idle_timeout: Option<HumanDuration>,
    /// Give per-session children the caller's identity as MCP_USER_* variables.
    #[serde(default)]
    pub pass_identity: bool,
    #[serde(default)]
    pub memory_limit_mb: Option<Spanned<u64>>,
    #[serde(default)]
    pub cpu_limit_secs: Option<Spanned<u64>>,
    #[serde(default)]
    pub max_line_bytes: Option<Spanned<usize>>,
    /// The bridge program (default `mcp-worker`, found beside the gateway or on PATH).
    #[serde(default)]
    pub bridge: Option<String>,
}

fn default_count() -> Spanned<usize> {
    Spanned::new(1, Location::UNKNOWN, Location::UNKNOWN)
}

fn default_ready_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(15))
}

fn default_stop_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BalanceFile {
    #[default]
    RoundRobin,
    LeastConnections,
    /// Consistent hash on the caller (client IP until identity exists, then the user).
    HashClient,
}

#[derive(Debug, Deserialize)]
pub struct HealthFile {
    /// `http` (GET `path`, 2xx is healthy) or `tcp` (a connect is healthy).
    #[serde(default)]
    pub kind: HealthKind,
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_health_timeout")]
    pub timeout: HumanDuration,
    /// Consecutive failed checks (or connect failures) before a worker is ejected.
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
}

impl Default for HealthFile {
    fn default() -> Self {
        HealthFile {
            kind: HealthKind::default(),
            path: default_health_path(),
            interval: default_health_interval(),
            timeout: default_health_timeout(),
            unhealthy_after: default_unhealthy_after(),
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthKind {
    #[default]
    Http,
    Tcp,
}

fn default_health_path() -> String {
    "/health".to_string()
}

fn default_health_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

fn default_health_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

fn default_unhealthy_after() -> u32 {
    2
}

#[derive(Debug, Deserialize)]
pub struct RateLimitsFile {
    /// Keep the built-in policies (`login`, `user`, `user-inflight`) unless a policy of the
    /// same name replaces them.
    #[serde(default = "default_true")]
    pub defaults: bool,
    /// Longest wait for Redis on a limit check; past it the policy's `on_redis_error` applies.
    #[serde(default = "default_redis_timeout")]
    pub redis_timeout: HumanDuration,
    /// Expected number of gateway replicas: while Redis is down, `on_redis_error: local`
    /// enforces limit ÷ replicas on each node.
    #[serde(default = "default_replicas")]
    pub replicas: Spanned<u64>,
    #[serde(default)]
    pub policies: BTreeMap<String, RatePolicyFile>,
}

fn default_redis_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(5))
}

fn default_replicas() -> Spanned<u64> {
    Spanned::new(1, Location::UNKNOWN, Location::UNKNOWN)
}

#[derive(Debug, Deserialize)]
pub struct RatePolicyFile {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// What is counted separately: any of `user`, `api_key`, `ip`, `route`, `tool`.
    #[serde(default)]
    pub key: Option<Spanned<Vec<String>>>,
    /// `100/min`, `10/s`, `5000/h`, `50/10s`: requests per period, refilled smoothly.
    #[serde(default)]
    pub rate: Option<Spanned<String>>,
    /// Requests allowed at once after a quiet period (default: the rate's count).
    #[serde(default)]
    pub burst: Option<Spanned<u64>>,
    /// Or: requests in flight at once (open SSE streams included).
    #[serde(default)]
    pub concurrency: Option<Spanned<u64>>,
    /// `local` (this process) or `redis` (shared by every replica).
    #[serde(default)]
    pub backend: Option<RateBackendFile>,
    /// What happens while Redis is unreachable or slower than `redis_timeout`.
    #[serde(default)]
    pub on_redis_error: Option<OnRedisErrorFile>,
    /// MCP routes the policy applies to (default: all).
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub except_routes: Vec<String>,
    /// Other request paths it applies to (the identity service's `/auth/login`, …).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Only `tools/call` requests for these tools (globs) count.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Only callers holding one of these roles count (default: everyone).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Callers holding one of these roles are not limited.
    #[serde(default)]
    pub exempt_roles: Vec<String>,
    /// Redis concurrency slots expire after this long if their replica dies.
    #[serde(default)]
    pub lease: Option<HumanDuration>,
    /// Redis rates: the most requests' allowance a replica takes from Redis at once
    /// (default: automatic, 1 for small limits; 1 means one round trip per request).
    #[serde(default)]
    pub prefetch: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateBackendFile {
    Local,
    Redis,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisErrorFile {
    Allow,
    Deny,
    Local,
}

/// A duration written as `250ms`, `5s`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "expected a duration such as 500ms, 5s or 1h ({e})"
                ))
            })
    }
}
