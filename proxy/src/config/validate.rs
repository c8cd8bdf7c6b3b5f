//! File model → runtime model, collecting every problem with its file, line and field path.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::file::{
    AuthFile, ClientIpFile, FileConfig, OnRedisErrorFile, PoolFile, RateBackendFile,
    RateLimitsFile, RatePolicyFile,
};
use super::locate::LineIndex;
use super::model::*;
use super::{ConfigError, ConfigErrors};
use crate::mcp::origin::OriginRule;

mod discovery;
mod listener_tls;
mod redis_topology;
mod stdio_pool;

pub fn parse_and_validate(text: &str, name: &str) -> Result<GatewayConfig, ConfigErrors> {
    let index = LineIndex::new(text);
    let (file, unknown) = parse_file(text, name)?;
    let mut v = Validator {
        name,
        index: &index,
        errors: Vec::new(),
    };
    for path in unknown {
        let field = path.rsplit(['.', '[']).next().unwrap_or(&path).to_string();
        v.err(&Location::UNKNOWN, path, format!("unknown field `{field}`"));
    }
    let cfg = v.build(file);
    match cfg {
        Some(cfg) if v.errors.is_empty() => Ok(cfg),
        _ => Err(ConfigErrors(v.errors)),
    }
}

fn ignored_path(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let head = ignored_path(parent);
            if head.is_empty() {
                key.clone()
            } else {
                format!("{head}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// `Spanned<T>` shows up as a `value` field in paths; users never wrote it.
fn tidy_path(path: String) -> String {
    let p = path.replace(".value[", "[");
    match p.strip_suffix(".value") {
        Some(s) => s.to_string(),
        None if p == "." => String::new(),
        None => p,
    }
}

/// Deserialize, keeping the field path of a type error (serde_path_to_error), its line and
/// column, and the paths of unknown fields (serde_ignored).
fn parse_file(text: &str, name: &str) -> Result<(FileConfig, Vec<String>), ConfigErrors> {
    let mut path = String::new();
    let mut unknown = Vec::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        let mut on_ignored = |p: serde_ignored::Path<'_>| {
            let path = ignored_path(&p);
            // Spanned<T> carries its location through a private field: not a user's field.
            if !path.contains("__serde_saphyr_private") {
                unknown.push(path);
            }
        };
        let de = serde_ignored::Deserializer::new(de, &mut on_ignored);
        serde_path_to_error::deserialize::<_, FileConfig>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    match result {
        Ok(file) => Ok((file, unknown)),
        Err(e) => {
            let loc = e.location();
            let mut message = e.without_snippet().to_string();
            // The deserializer appends its own position; we print ours in front.
            if let Some(idx) = message.find(" at line ") {
                message.truncate(idx);
            }
            if message.starts_with("invalid u") || message.starts_with("invalid i") {
                message = format!("expected an integer ({message})");
            }
            Err(ConfigErrors(vec![ConfigError {
                file: name.to_string(),
                line: loc.map(|l| l.line()).filter(|l| *l > 0),
                column: loc.map(|l| l.column()).filter(|c| *c > 0),
                path: tidy_path(path),
                message,
            }]))
        }
    }
}

struct Validator<'a> {
    name: &'a str,
    index: &'a LineIndex,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    /// `url`, or the value of the environment variable `url_env` names: exactly one.
    /// The value is never put in an error message (it may hold a password).
    fn url_or_env(
        &mut self,
        url: &Option<Spanned<String>>,
        url_env: &Option<Spanned<String>>,
        section: &str,
    ) -> Option<String> {
        match (url, url_env) {
            (Some(u), None) => Some(u.value.clone()),
            (None, Some(var)) => match std::env::var(&var.value) {
                Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                _ => {
                    self.err(
                        &var.referenced,
                        format!("{section}.url_env"),
                        format!("the environment variable {} is not set", var.value),
                    );
                    None
                }
            },
            (Some(_), Some(var)) => {
                self.err(
                    &var.referenced,
                    format!("{section}.url_env"),
                    "give url or url_env, not both",
                );
                None
            }
            (None, None) => {
                self.err(
                    &Location::UNKNOWN,
                    format!("{section}.url"),
                    "expected url (or url_env)",
                );
                None
            }
        }
    }

    fn client_ip(&mut self, f: Option<&ClientIpFile>) -> ClientIpConfig {
        let Some(f) = f else {
            return ClientIpConfig::default();
        };
        let mut trusted_proxies = Vec::new();
        for (i, p) in f.trusted_proxies.iter().enumerate() {
            let text = p.value.trim();
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net.trunc()),
                Err(_) => self.err(
                    &p.referenced,
                    format!("client_ip.trusted_proxies[{i}]"),
                    format!("expected an IP address or CIDR range (10.0.0.0/8), got {text:?}"),
                ),
            }
        }
        let header = match f.header.as_ref() {
            None => ForwardedHeader::XForwardedFor,
            Some(h) => match h.value.to_ascii_lowercase().as_str() {
                "x-forwarded-for" => ForwardedHeader::XForwardedFor,
                "x-real-ip" => ForwardedHeader::XRealIp,
                other => {
                    self.err(
                        &h.referenced,
                        "client_ip.header",
                        format!("expected x-forwarded-for or x-real-ip, got {other:?}"),
                    );
                    ForwardedHeader::XForwardedFor
                }
            },
        };
        if f.header.is_some() && trusted_proxies.is_empty() && f.trusted_proxies.is_empty() {
            if let Some(h) = f.header.as_ref() {
                self.err(
                    &h.referenced,
                    "client_ip.trusted_proxies",
                    "a header is only read from trusted proxies: list them in trusted_proxies",
                );
            }
        }
        ClientIpConfig {
            trusted_proxies,
            header,
        }
    }

    fn err(&mut self, at: &Location, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let (line, column) = if *at != Location::UNKNOWN {
            (Some(at.line()), Some(at.column()))
        } else {
            match self.index.find(&path) {
                Some((l, c)) => (Some(l), Some(c)),
                None => (None, None),
            }
        };
        self.errors.push(ConfigError {
            file: self.name.to_string(),
            line,
            column,
            path,
            message: message.into(),
        });
    }

    fn addr(&mut self, s: &Spanned<String>, path: &str) -> Option<SocketAddr> {
        match s.value.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    &s.referenced,
                    path,
                    format!(
                        "expected an address such as 127.0.0.1:8080, got {:?}",
                        s.value
                    ),
                );
                None
            }
        }
    }

    fn build(&mut self, f: FileConfig) -> Option<GatewayConfig> {
        let listen = self.addr(&f.listen, "listen");
        let admin = self.addr(&f.admin, "admin");
        if let (Some(l), Some(a)) = (listen, admin) {
            if l == a {
                self.err(&f.admin.referenced, "admin", "must differ from listen");
            }
        }
        let threads = match &f.threads {
            Some(t) if t.value == 0 || t.value > 256 => {
                self.err(&t.referenced, "threads", "expected 1 to 256");
                1
            }
            Some(t) => t.value,
            None => 2,
        };
        let max_body = &f.limits.max_body_bytes;
        if max_body.value == 0 || max_body.value > 1 << 30 {
            self.err(
                &max_body.referenced,
                "limits.max_body_bytes",
                "expected 1 byte to 1 GiB",
            );
        }
        let max_batch = &f.limits.max_batch_len;
        if max_batch.value == 0 || max_batch.value > 100_000 {
            self.err(
                &max_batch.referenced,
                "limits.max_batch_len",
                "expected 1 to 100000",
            );
        }
        let max_calls = &f.limits.max_inflight_calls;
        if max_calls.value > 1_000_000 {
            self.err(
                &max_calls.referenced,
                "limits.max_inflight_calls",
                "expected 0 (no limit) to 1000000",
            );
        }
        let max_conns = &f.limits.max_connections;
        if max_conns.value == 0 || max_conns.value > 10_000_000 {
            self.err(
                &max_conns.referenced,
                "limits.max_connections",
                "expected 1 to 10000000",
            );
        }
        let mut origins = Vec::new();
        for (i, o) in f.allowed_origins.iter().enumerate() {
            match OriginRule::parse(&o.value) {
                Ok(rule) => origins.push(rule),
                Err(msg) => self.err(&o.referenced, format!("allowed_origins[{i}]"), msg),
            }
        }
        let client_ip = self.client_ip(f.client_ip.as_ref());

        let mut pools = Vec::new();
        for (name, p) in &f.pools {
            if let Some(pool) = self.pool(name, p) {
                pools.push(pool);
            }
        }
        let pool_names: HashSet<&str> = f.pools.keys().map(String::as_str).collect();

        if f.routes.is_empty() {
            self.err(&Location::UNKNOWN, "routes", "at least one route is needed");
        }
        let mut routes = Vec::new();
        let mut seen_paths = HashSet::new();
        for (i, r) in f.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if !r.path.value.starts_with('/') {
                self.err(
                    &r.path.referenced,
                    format!("{at}.path"),
                    "must start with /",
                );
            } else if !seen_paths.insert(r.path.value.clone()) {
                self.err(
                    &r.path.referenced,
                    format!("{at}.path"),
                    format!("{} is already used by an earlier route", r.path.value),
                );
            }
            if !pool_names.contains(r.pool.value.as_str()) {
                let known: Vec<&str> = pool_names.iter().copied().collect();
                self.err(
                    &r.pool.referenced,
                    format!("{at}.pool"),
                    format!(
                        "no pool named {:?} (pools: {})",
                        r.pool.value,
                        known.join(", ")
                    ),
                );
            }
            let upstream_path = match &r.upstream_path {
                Some(u) if !u.value.starts_with('/') => {
                    self.err(
                        &u.referenced,
                        format!("{at}.upstream_path"),
                        "must start with /",
                    );
                    u.value.clone()
                }
                Some(u) => u.value.clone(),
                None => r.path.value.clone(),
            };
            let no_issuer = f.auth.issuers.is_empty() && f.identity.is_none();
            let auth = match (&r.auth, no_issuer) {
                (Some(a), false) => Some(RouteAuth {
                    required: a.required,
                    roles: a.roles.clone(),
                    api_keys: a.api_keys && f.identity.is_some(),
                }),
                (Some(_), true) => {
                    self.err(
                        &Location::UNKNOWN,
                        format!("{at}.auth"),
                        "route auth needs identity or at least one entry in auth.issuers",
                    );
                    None
                }
                // Secure by default: with issuers configured, routes require a token.
                (None, false) => Some(RouteAuth {
                    required: true,
                    roles: Vec::new(),
                    api_keys: f.identity.is_some(),
                }),
                (None, true) => None,
            };
            let tools = r.tools.as_ref().map(|rules| {
                let mut out = Vec::new();
                for (j, rule) in rules.value.iter().enumerate() {
                    let cfg = ToolRuleConfig {
                        roles: rule.roles.clone(),
                        allow: rule.allow.clone(),
                        deny: rule.deny.clone(),
                    };
                    if let Err(e) = crate::policy::tools::ToolRule::new(
                        cfg.roles.clone(),
                        &cfg.allow,
                        &cfg.deny,
                    ) {
                        self.err(&rules.referenced, format!("{at}.tools[{j}]"), e);
                    }
                    out.push(cfg);
                }
                out
            });
            let credential = r.credential.as_ref().map(|c| CredentialRule {
                service: c.service.clone(),
                header: c.header.to_ascii_lowercase(),
                format: c.format.clone(),
            });
            if let Some(c) = &credential {
                if f.identity.is_none() {
                    self.err(
                        &Location::UNKNOWN,
                        format!("{at}.credential"),
                        "service credentials are stored by identity: configure identity and database",
                    );
                }
                if http::HeaderName::from_bytes(c.header.as_bytes()).is_err() {
                    self.err(
                        &Location::UNKNOWN,
                        format!("{at}.credential.header"),
                        "not a valid header name",
                    );
                }
                if !c.format.contains("{token}") {
                    self.err(
                        &Location::UNKNOWN,
                        format!("{at}.credential.format"),
                        "must contain {token}",
                    );
                }
            }
            let log_bodies = r.log_bodies.as_ref().map(|b| {
                if b.max_bytes.value == 0 || b.max_bytes.value > 1 << 20 {
                    self.err(
                        &b.max_bytes.referenced,
                        format!("{at}.log_bodies.max_bytes"),
                        "expected 1 byte to 1 MiB",
                    );
                }
                BodyCapture {
                    max_bytes: b.max_bytes.value.clamp(1, 1 << 20) as usize,
                    redact: b.redact.iter().map(|f| f.to_ascii_lowercase()).collect(),
                }
            });
            routes.push(RouteConfig {
                log_bodies,
                path: r.path.value.clone(),
                pool: r.pool.value.clone(),
                upstream_path,
                auth,
                tools,
                credential,
            });
        }

        let auth = self.auth(&f.auth);
        let public_url = f
            .public_url
            .as_ref()
            .map(|u| u.value.trim_end_matches('/').to_string());
        if let Some(u) = &f.public_url {
            if !(u.value.starts_with("http://") || u.value.starts_with("https://")) {
                self.err(&u.referenced, "public_url", "expected http:// or https://");
            }
        }
        let database = f.database.as_ref().and_then(|d| {
            let url = self.url_or_env(&d.url, &d.url_env, "database")?;
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                let at = d
                    .url
                    .as_ref()
                    .map(|u| u.referenced)
                    .unwrap_or(Location::UNKNOWN);
                self.err(&at, "database.url", "expected sqlite:… or postgres://…");
            }
            Some(DatabaseConfig {
                url,
                migrate: d.migrate,
            })
        });
        let identity = f.identity.as_ref().map(|i| {
            let scheme = if f.tls.is_some() { "https" } else { "http" };
            let base = public_url
                .clone()
                .unwrap_or_else(|| format!("{scheme}://{}", f.listen.value));
            IdentityConfig {
                issuer: base.clone(),
                audience: base,
                access_ttl: i.access_ttl.0,
                refresh_ttl: i.refresh_ttl.0,
                key_rotation: i.key_rotation.0,
                credentials_key_env: i.credentials_key_env.clone(),
            }
        });
        if identity.is_some() && database.is_none() {
            self.err(
                &Location::UNKNOWN,
                "identity",
                "needs database (users, keys and tokens are stored)",
            );
        }
        let redis = f.redis.as_ref().and_then(|r| self.redis(r));
        let tls = f.tls.as_ref().and_then(|t| self.listener_tls(t));
        let route_paths: Vec<&str> = f.routes.iter().map(|r| r.path.value.as_str()).collect();
        let rate_limits = self.rate_limits(f.rate_limits.as_ref(), f.redis.is_some(), &route_paths);
        let logging = self.logging(f.logging.as_ref());
        Some(GatewayConfig {
            rate_limits,
            logging,
            auth,
            public_url,
            database,
            redis,
            identity,
            source: self.name.to_string(),
            listen: listen?,
            admin: admin?,
            threads,
            session_key_env: f.session.key_env,
            session_ttl: f.session.ttl.0,
            limits: Limits {
                max_body_bytes: usize::try_from(max_body.value).unwrap_or(usize::MAX),
                client_read_timeout: f.limits.client_read_timeout.0,
                client_write_timeout: f.limits.client_write_timeout.0,
                max_batch_len: usize::try_from(max_batch.value).unwrap_or(usize::MAX),
                max_inflight_calls: usize::try_from(max_calls.value).unwrap_or(usize::MAX),
                max_connections: usize::try_from(max_conns.value).unwrap_or(usize::MAX),
            },
            origins,
            client_ip,
            tls,
            shutdown_grace: f.shutdown_grace.0,
            upgrade_sock: f.upgrade_sock.clone().unwrap_or_else(|| {
                format!(
                    "/tmp/mcp-gateway-{}.upgrade.sock",
                    listen.map(|l| l.port()).unwrap_or(0)
                )
            }),
            routes,
            pools,
        })
    }

    fn rate_limits(
        &mut self,
        f: Option<&RateLimitsFile>,
        has_redis: bool,
        routes: &[&str],
    ) -> RateLimitConfig {
        let shared = if has_redis {
            RateBackend::Redis
        } else {
            RateBackend::Local
        };
        let replicas = match f.map(|f| &f.replicas) {
            Some(r) if r.value == 0 || r.value > 10_000 => {
                self.err(&r.referenced, "rate_limits.replicas", "expected 1 to 10000");
                1
            }
            Some(r) => r.value,
            None => 1,
        };
        let mut policies: Vec<RatePolicyConfig> = if f.is_none_or(|f| f.defaults) {
            default_rate_policies(shared)
        } else {
            Vec::new()
        };
        for (name, p) in f.map(|f| &f.policies).into_iter().flatten() {
            policies.retain(|d| d.name != *name);
            if let Some(cfg) = self.rate_policy(name, p, has_redis, routes) {
                policies.push(cfg);
            }
        }
        RateLimitConfig {
            redis_timeout: f
                .map(|f| f.redis_timeout.0)
                .unwrap_or(Duration::from_millis(5)),
            replicas,
            policies,
        }
    }

    fn rate_policy(
        &mut self,
        name: &str,
        p: &RatePolicyFile,
        has_redis: bool,
        routes: &[&str],
    ) -> Option<RatePolicyConfig> {
        let at = format!("rate_limits.policies.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.err(
                &Location::UNKNOWN,
                at.clone(),
                "policy names use letters, digits, - and _",
            );
        }
        if !p.enabled {
            return None;
        }
        let mut key = Vec::new();
        match &p.key {
            None => self.err(
                &Location::UNKNOWN,
                format!("{at}.key"),
                "required: any of user, api_key, ip, route, tool",
            ),
            Some(k) => {
                for part in &k.value {
                    let part = match part.as_str() {
                        "user" => RateKeyPart::User,
                        "api_key" => RateKeyPart::ApiKey,
                        "ip" => RateKeyPart::Ip,
                        "route" => RateKeyPart::Route,
                        "tool" => RateKeyPart::Tool,
                        other => {
                            self.err(
                                &k.referenced,
                                format!("{at}.key"),
                                format!(
                                    "unknown key part {other:?} (expected user, api_key, ip, route or tool)"
                                ),
                            );
                            continue;
                        }
                    };
                    if !key.contains(&part) {
                        key.push(part);
                    }
                }
            }
        }
        let kind = match (&p.rate, &p.concurrency) {
            (Some(r), None) => match parse_rate(&r.value) {
                Ok((limit, period)) => {
                    let burst = match &p.burst {
                        Some(b) if b.value == 0 => {
                            self.err(&b.referenced, format!("{at}.burst"), "must be at least 1");
                            1
                        }
                        Some(b) => b.value,
                        None => limit,
                    };
                    Some(RateKind::Rate {
                        limit,
                        period,
                        burst,
                    })
                }
                Err(msg) => {
                    self.err(&r.referenced, format!("{at}.rate"), msg);
                    None
                }
            },
            (None, Some(c)) => {
                if c.value == 0 {
                    self.err(
                        &c.referenced,
                        format!("{at}.concurrency"),
                        "must be at least 1",
                    );
                }
                if let Some(b) = &p.burst {
                    self.err(
                        &b.referenced,
                        format!("{at}.burst"),
                        "burst goes with rate, not with concurrency",
                    );
                }
                Some(RateKind::Concurrency {
                    max: c.value.max(1),
                    lease: p.lease.map(|l| l.0).unwrap_or(Duration::from_secs(600)),
                })
            }
            (Some(r), Some(_)) => {
                self.err(
                    &r.referenced,
                    at.clone(),
                    "give either rate or concurrency, not both (use two policies)",
                );
                None
            }
            (None, None) => {
                self.err(
                    &Location::UNKNOWN,
                    at.clone(),
                    "needs rate (such as 100/min) or concurrency",
                );
                None
            }
        };
        let backend = match p.backend {
            Some(RateBackendFile::Redis) if !has_redis => {
                self.err(
                    &Location::UNKNOWN,
                    format!("{at}.backend"),
                    "redis backend needs the redis section",
                );
                RateBackend::Local
            }
            Some(RateBackendFile::Redis) => RateBackend::Redis,
            Some(RateBackendFile::Local) => RateBackend::Local,
            None if has_redis => RateBackend::Redis,
            None => RateBackend::Local,
        };
        let on_redis_error = match p.on_redis_error {
            Some(OnRedisErrorFile::Allow) => OnRedisError::Allow,
            Some(OnRedisErrorFile::Deny) => OnRedisError::Deny,
            Some(OnRedisErrorFile::Local) | None => OnRedisError::Local,
        };
        for (field, list) in [("routes", &p.routes), ("except_routes", &p.except_routes)] {
            for r in list {
                if !routes.contains(&r.as_str()) {
                    self.err(
                        &Location::UNKNOWN,
                        format!("{at}.{field}"),
                        format!("no route with path {r:?}"),
                    );
                }
            }
        }
        for path in &p.paths {
            if !path.starts_with('/') {
                self.err(
                    &Location::UNKNOWN,
                    format!("{at}.paths"),
                    format!("{path:?} must start with /"),
                );
            }
        }
        if !p.paths.is_empty() && (!p.tools.is_empty() || key.contains(&RateKeyPart::Tool)) {
            self.err(
                &Location::UNKNOWN,
                format!("{at}.paths"),
                "paths are not MCP routes: tools and the tool key do not apply",
            );
        }
        for t in &p.tools {
            if let Err(e) = globset::Glob::new(t) {
                self.err(
                    &Location::UNKNOWN,
                    format!("{at}.tools"),
                    format!("{t:?}: {e}"),
                );
            }
        }
        let kind = kind?;
        let prefetch = match (&p.prefetch, kind, backend) {
            (
                None,
                RateKind::Rate {
                    limit,
                    period,
                    burst,
                },
                RateBackend::Redis,
            ) => crate::ratelimit::prefetch::auto_size(limit, period, burst),
            (None, _, _) => 1,
            (Some(f), RateKind::Concurrency { .. }, _) => {
                self.err(
                    &f.referenced,
                    format!("{at}.prefetch"),
                    "prefetch goes with rate, not with concurrency",
                );
                1
            }
            (Some(f), _, RateBackend::Local) => {
                self.err(
                    &f.referenced,
                    format!("{at}.prefetch"),
                    "prefetch applies to the redis backend only",
                );
                1
            }
            (Some(_), RateKind::Rate { .. }, RateBackend::Redis) => {
                self.ranged(&p.prefetch, &format!("{at}.prefetch"), 1, 10_000, 1)
            }
        };
        Some(RatePolicyConfig {
            name: name.to_string(),
            key,
            kind,
            backend,
            on_redis_error,
            prefetch,
            routes: p.routes.clone(),
            except_routes: p.except_routes.clone(),
            paths: p.paths.clone(),
            tools: p.tools.clone(),
            roles: p.roles.clone(),
            exempt_roles: p.exempt_roles.clone(),
        })
    }

    /// An integer field within `lo..=hi`, or an error at its line.
    fn ranged(&mut self, v: &Option<Spanned<u64>>, path: &str, lo: u64, hi: u64, dflt: u64) -> u64 {
        match v {
            None => dflt,
            Some(s) if s.value < lo || s.value > hi => {
                self.err(
                    &s.referenced,
                    path,
                    format!("must be {lo}–{hi}, got {}", s.value),
                );
                dflt
            }
            Some(s) => s.value,
        }
    }

    /// A duration field within `lo..=hi`, or an error at its line.
    fn ranged_duration(
        &mut self,
        v: &Option<Spanned<super::file::HumanDuration>>,
        path: &str,
        lo: std::time::Duration,
        hi: std::time::Duration,
        dflt: std::time::Duration,
    ) -> std::time::Duration {
        match v {
            None => dflt,
            Some(s) if s.value.0 < lo || s.value.0 > hi => {
                self.err(
                    &s.referenced,
                    path,
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(lo),
                        humantime::format_duration(hi)
                    ),
                );
                dflt
            }
            Some(s) => s.value.0,
        }
    }

    fn logging(&mut self, l: Option<&super::file::LoggingFile>) -> LoggingConfig {
        use std::time::Duration;
        let d = LoggingConfig::default();
        let Some(l) = l else {
            return d;
        };
        let queue_size = self.ranged(
            &l.queue_size,
            "logging.queue_size",
            16,
            10_000_000,
            d.queue_size as u64,
        );
        let batch_size = self.ranged(
            &l.batch_size,
            "logging.batch_size",
            1,
            5_000,
            d.batch_size as u64,
        );
        let batch_interval = self.ranged_duration(
            &l.batch_interval,
            "logging.batch_interval",
            Duration::from_millis(1),
            Duration::from_secs(60),
            d.batch_interval,
        );
        let stream = match &l.stream {
            None => d.stream.clone(),
            Some(s) => {
                let ok = !s.value.is_empty()
                    && s.value.len() <= 100
                    && s.value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
                if !ok {
                    self.err(
                        &s.referenced,
                        "logging.stream",
                        "expected 1–100 characters of A–Z a–z 0–9 - _ . :",
                    );
                }
                s.value.clone()
            }
        };
        let stream_maxlen = self.ranged(
            &l.stream_maxlen,
            "logging.stream_maxlen",
            100,
            1_000_000_000,
            d.stream_maxlen,
        );
        let claim_idle = self.ranged_duration(
            &l.claim_idle,
            "logging.claim_idle",
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
            d.claim_idle,
        );
        let spool_dir = match &l.spool_dir {
            None => d.spool_dir.clone(),
            Some(s) if s.value.trim().is_empty() => {
                self.err(&s.referenced, "logging.spool_dir", "must not be empty");
                d.spool_dir.clone()
            }
            Some(s) => s.value.clone().into(),
        };
        let spool_max_bytes = self.ranged(
            &l.spool_max_bytes,
            "logging.spool_max_bytes",
            1 << 20,
            1 << 50,
            d.spool_max_bytes,
        );
        let retention = match &l.retention {
            None => d.retention,
            Some(s) if s.value.0.is_zero() => None,
            Some(s) if s.value.0 < Duration::from_secs(60) => {
                self.err(
                    &s.referenced,
                    "logging.retention",
                    "must be at least 1m (or 0s to keep rows forever)",
                );
                d.retention
            }
            Some(s) => Some(s.value.0),
        };
        let retention_check = self.ranged_duration(
            &l.retention_check,
            "logging.retention_check",
            Duration::from_secs(1),
            Duration::from_secs(7 * 24 * 3600),
            d.retention_check,
        );
        LoggingConfig {
            enabled: l.enabled.unwrap_or(d.enabled),
            queue_size: queue_size as usize,
            batch_size: batch_size as usize,
            batch_interval,
            stream,
            stream_maxlen,
            ship: l.ship.unwrap_or(d.ship),
            claim_idle,
            spool_dir,
            spool_max_bytes,
            retention,
            retention_check,
        }
    }

    fn auth(&mut self, a: &AuthFile) -> AuthConfig {
        let mut issuers = Vec::new();
        let mut names = HashSet::new();
        for (i, f) in a.issuers.iter().enumerate() {
            let at = format!("auth.issuers[{i}]");
            if !names.insert(f.name.clone()) {
                self.err(
                    &Location::UNKNOWN,
                    format!("{at}.name"),
                    "issuer names must be unique",
                );
            }
            if f.issuer.value.trim().is_empty() {
                self.err(
                    &f.issuer.referenced,
                    format!("{at}.issuer"),
                    "must not be empty",
                );
            }
            if f.audiences.value.is_empty() {
                self.err(
                    &f.audiences.referenced,
                    format!("{at}.audiences"),
                    "at least one audience (the resource URI) is required: aud is always checked",
                );
            }
            let mut algorithms = Vec::new();
            for name in &f.algorithms.value {
                match crate::auth::jwt::parse_algorithm(name) {
                    Some(alg) => algorithms.push(alg),
                    None => self.err(
                        &f.algorithms.referenced,
                        format!("{at}.algorithms"),
                        format!("unknown algorithm {name:?} (none is never allowed)"),
                    ),
                }
            }
            if algorithms.is_empty() {
                self.err(
                    &f.algorithms.referenced,
                    format!("{at}.algorithms"),
                    "pin at least one algorithm",
                );
            } else if !crate::auth::jwt::one_family(&algorithms) {
                self.err(
                    &f.algorithms.referenced,
                    format!("{at}.algorithms"),
                    "algorithms of one issuer must be of one family (HMAC, RSA, EC or EdDSA)",
                );
            }
            let hmac = algorithms
                .first()
                .is_some_and(|a| a.family() == jsonwebtoken::AlgorithmFamily::Hmac);
            let has_public = !f.public_keys.is_empty() || f.jwks_uri.is_some();
            if let Some(uri) = &f.jwks_uri {
                if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                    self.err(
                        &Location::UNKNOWN,
                        format!("{at}.jwks_uri"),
                        "expected an http(s) URL",
                    );
                }
            }
            match (hmac, &f.secret_env, !has_public) {
                (true, Some(_), true) | (false, None, false) => {}
                (true, _, _) => self.err(
                    &f.algorithms.referenced,
                    format!("{at}.secret_env"),
                    "HMAC algorithms need secret_env and no public_keys",
                ),
                (false, _, _) => self.err(
                    &f.algorithms.referenced,
                    format!("{at}.public_keys"),
                    "public-key algorithms need public_keys or jwks_uri, and no secret_env",
                ),
            }
            issuers.push(IssuerConfig {
                name: f.name.clone(),
                issuer: f.issuer.value.clone(),
                audiences: f.audiences.value.clone(),
                algorithms,
                secret_env: f.secret_env.clone(),
                public_keys: f
                    .public_keys
                    .iter()
                    .map(|k| (k.kid.clone(), k.pem_file.clone()))
                    .collect(),
                jwks_uri: f.jwks_uri.clone(),
                jwks_max_age: f.jwks_max_age.0,
                roles_claim: f.roles_claim.clone(),
                leeway: f.leeway.0,
            });
        }
        AuthConfig {
            issuers,
            token_cache_entries: a.token_cache_entries.max(1),
        }
    }

    fn pool(&mut self, name: &str, p: &PoolFile) -> Option<PoolConfig> {
        let at = format!("pools.{name}");
        if let Some(d) = &p.discover {
            if p.spawn.is_some() || p.stdio.is_some() {
                self.err(
                    &d.dns.referenced,
                    format!("{at}.discover"),
                    "discover finds remote workers: not with spawn or stdio",
                );
                return None;
            }
        }
        let source = match (&p.spawn, &p.upstreams) {
            _ if p.stdio.is_some() || p.count.is_some() => self.stdio_source(&at, p)?,
            (Some(_), Some(u)) => {
                self.err(
                    &u.referenced,
                    format!("{at}.upstreams"),
                    "a pool has either spawn or upstreams, not both",
                );
                return None;
            }
            (None, None) if p.discover.is_none() => {
                self.err(
                    &Location::UNKNOWN,
                    at,
                    "a pool needs spawn (processes the gateway starts), stdio (a stdio MCP server behind bridges), upstreams (addresses) or discover (DNS names)",
                );
                return None;
            }
            (Some(s), None) => {
                let mut ok = true;
                if s.command.value.is_empty() || s.command.value[0].trim().is_empty() {
                    self.err(
                        &s.command.referenced,
                        format!("{at}.spawn.command"),
                        "needs at least the program to run",
                    );
                    ok = false;
                }
                if s.count.value == 0 || s.count.value > 64 {
                    self.err(
                        &s.count.referenced,
                        format!("{at}.spawn.count"),
                        "expected 1 to 64",
                    );
                    ok = false;
                }
                if !ok {
                    return None;
                }
                PoolSource::Spawn(SpawnConfig {
                    command: s.command.value.clone(),
                    count: s.count.value,
                    env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    ready_timeout: s.ready_timeout.0,
                    stop_grace: s.stop_grace.0,
                })
            }
            (None, u) => {
                let listed: &[String] = u.as_ref().map_or(&[], |u| &u.value);
                if let Some(u) = u.as_ref().filter(|u| u.value.is_empty()) {
                    if p.discover.is_none() {
                        self.err(
                            &u.referenced,
                            format!("{at}.upstreams"),
                            "needs at least one address",
                        );
                        return None;
                    }
                }
                let mut addrs = Vec::new();
                for (i, a) in listed.iter().enumerate() {
                    // Resolved once here, at load time: never on the request path.
                    match a.to_socket_addrs().map(|mut it| it.next()) {
                        Ok(Some(addr)) => addrs.push(addr),
                        _ => self.err(
                            &u.as_ref().map_or(Location::UNKNOWN, |u| u.referenced),
                            format!("{at}.upstreams[{i}]"),
                            format!("cannot resolve {a:?} (expected host:port)"),
                        ),
                    }
                }
                PoolSource::Remote(addrs)
            }
        };
        let discovery = match (&p.discover, &source) {
            (Some(d), PoolSource::Remote(fixed)) => Some(self.discovery(&at, d, fixed)?),
            _ => None,
        };
        if !p.health.path.starts_with('/') {
            self.err(
                &Location::UNKNOWN,
                format!("{at}.health.path"),
                "must start with /",
            );
        }
        Some(PoolConfig {
            name: name.to_string(),
            source,
            balance: p.balance,
            health: HealthConfig {
                kind: p.health.kind,
                path: p.health.path.clone(),
                interval: p.health.interval.0,
                timeout: p.health.timeout.0,
                unhealthy_after: p.health.unhealthy_after.max(1),
            },
            connect_timeout: p.connect_timeout.0,
            read_timeout: p.read_timeout.map(|d| d.0),
            idle_timeout: p.idle_timeout.0,
            h2c_streams: p.h2c_streams.unwrap_or(p.stdio.is_some()),
            discovery,
        })
    }
}

/// `100/min`, `10/s`, `5000/h`, `2/day`, `50/10s` → (count, period).
pub fn parse_rate(text: &str) -> Result<(u64, Duration), String> {
    let bad = || format!("expected a rate such as 100/min, 10/s or 50/10s, got {text:?}");
    let (count, per) = text.split_once('/').ok_or_else(bad)?;
    let count: u64 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err("the count must be at least 1".into());
    }
    let per = per.trim();
    let period = match per {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => humantime::parse_duration(other).map_err(|_| bad())?,
    };
    if period < Duration::from_millis(1) || period > Duration::from_secs(31 * 86_400) {
        return Err("the period must be between 1ms and 31 days".into());
    }
    Ok((count, period))
}

/// What protects a fresh install: login and registration attempts per client address, a
/// request rate per user (admins exempt) and open requests/streams per user.
fn default_rate_policies(shared: RateBackend) -> Vec<RatePolicyConfig> {
    let base = |name: &str, key: Vec<RateKeyPart>, kind: RateKind| RatePolicyConfig {
        name: name.to_string(),
        key,
        kind,
        backend: shared,
        on_redis_error: OnRedisError::Local,
        prefetch: 1,
        routes: Vec::new(),
        except_routes: Vec::new(),
        paths: Vec::new(),
        tools: Vec::new(),
        roles: Vec::new(),
        exempt_roles: vec!["admin".to_string()],
    };
    let mut login = base(
        "login",
        vec![RateKeyPart::Ip],
        RateKind::Rate {
            limit: 20,
            period: Duration::from_secs(60),
            burst: 20,
        },
    );
    login.exempt_roles.clear();
    login.paths = [
        "/auth/login",
        "/auth/register",
        "/auth/refresh",
        "/oauth/register",
        "/oauth/token",
        "/oauth/authorize",
    ]
    .map(String::from)
    .to_vec();
    let user = base(
        "user",
        vec![RateKeyPart::User],
        RateKind::Rate {
            limit: 1200,
            period: Duration::from_secs(60),
            burst: 200,
        },
    );
    let mut inflight = base(
        "user-inflight",
        vec![RateKeyPart::User],
        RateKind::Concurrency {
            max: 64,
            lease: Duration::from_secs(600),
        },
    );
    inflight.backend = RateBackend::Local;
    vec![login, user, inflight]
}

#[cfg(test)]
mod rate_limit_tests {
    use super::*;

    const BASE: &str = "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nroutes:\n  - { path: /mcp, pool: p }\npools:\n  p: { upstreams: [\"127.0.0.1:9\"] }\n";

    #[test]
    fn rates_parse_with_units_and_durations() {
        assert_eq!(parse_rate("100/min"), Ok((100, Duration::from_secs(60))));
        assert_eq!(parse_rate("10/s"), Ok((10, Duration::from_secs(1))));
        assert_eq!(parse_rate("50/10s"), Ok((50, Duration::from_secs(10))));
        assert_eq!(parse_rate(" 5 / h "), Ok((5, Duration::from_secs(3600))));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("ten/s").is_err());
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("10/fortnight").is_err());
    }

    #[test]
    fn defaults_protect_a_fresh_install() {
        let cfg = parse_and_validate(BASE, "t.yaml").unwrap();
        let names: Vec<&str> = cfg
            .rate_limits
            .policies
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["login", "user", "user-inflight"]);
        let login = &cfg.rate_limits.policies[0];
        assert!(login.paths.iter().any(|p| p == "/auth/login"));
        assert_eq!(login.backend, RateBackend::Local);
        let off = format!("{BASE}rate_limits:\n  policies:\n    user: {{ enabled: false }}\n");
        let cfg = parse_and_validate(&off, "t.yaml").unwrap();
        assert!(cfg.rate_limits.policies.iter().all(|p| p.name != "user"));
    }

    #[test]
    fn bad_policies_are_reported_with_their_lines() {
        let text = format!(
            "{BASE}rate_limits:\n  policies:\n    a: {{ key: [user, shoe], rate: 10/min }}\n    b: {{ key: [ip], rate: lots }}\n    c: {{ key: [ip], rate: 1/s, concurrency: 2 }}\n    d: {{ key: [ip], rate: 1/s, backend: redis }}\n    e: {{ key: [ip], rate: 1/s, routes: [/nope] }}\n    f: {{ key: [ip], rate: 1/s, speed: 3 }}\n"
        );
        let errs = parse_and_validate(&text, "t.yaml").unwrap_err().to_string();
        for expected in [
            "t.yaml:10:", // the unknown key part, on its line
            "unknown key part \"shoe\"",
            "t.yaml:11:",
            "expected a rate such as 100/min",
            "give either rate or concurrency",
            "redis backend needs the redis section",
            "no route with path \"/nope\"",
            "rate_limits.policies.f.speed",
        ] {
            assert!(errs.contains(expected), "missing {expected:?} in:\n{errs}");
        }
    }

    #[test]
    fn prefetch_is_automatic_for_redis_rates_and_checked_when_given() {
        let redis = "redis: { url: \"redis://127.0.0.1:6379\" }\n";
        let text = format!(
            "{BASE}{redis}rate_limits:\n  defaults: false\n  policies:\n    fast: {{ key: [ip], rate: 1000/s }}\n    slow: {{ key: [ip], rate: 600/min }}\n    set: {{ key: [ip], rate: 1000/s, prefetch: 1 }}\n    here: {{ key: [ip], rate: 1000/s, backend: local }}\n"
        );
        let cfg = parse_and_validate(&text, "t.yaml").unwrap();
        let prefetch: Vec<(&str, u64)> = cfg
            .rate_limits
            .policies
            .iter()
            .map(|p| (p.name.as_str(), p.prefetch))
            .collect();
        assert_eq!(
            prefetch,
            [("fast", 50), ("here", 1), ("set", 1), ("slow", 1)]
        );
        let bad = format!(
            "{BASE}{redis}rate_limits:\n  policies:\n    a: {{ key: [ip], concurrency: 5, prefetch: 4 }}\n    b: {{ key: [ip], rate: 1/s, backend: local, prefetch: 4 }}\n    c: {{ key: [ip], rate: 1/s, prefetch: 0 }}\n"
        );
        let errs = parse_and_validate(&bad, "t.yaml").unwrap_err().to_string();
        for expected in [
            "t.yaml:11:",
            "prefetch goes with rate, not with concurrency",
            "prefetch applies to the redis backend only",
            "rate_limits.policies.c.prefetch",
            "must be 1–10000",
        ] {
            assert!(errs.contains(expected), "missing {expected:?} in:\n{errs}");
        }
    }
}

#[cfg(test)]
mod hardening_limit_tests {
    use super::*;

    const BASE: &str = "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nroutes:\n  - { path: /mcp, pool: p }\npools:\n  p: { upstreams: [\"127.0.0.1:9\"] }\n";

    #[test]
    fn max_batch_len_has_a_default_and_a_range() {
        let cfg = parse_and_validate(BASE, "t.yaml").unwrap();
        assert_eq!(cfg.limits.max_batch_len, 100);
        let cfg =
            parse_and_validate(&format!("{BASE}limits:\n  max_batch_len: 5\n"), "t.yaml").unwrap();
        assert_eq!(cfg.limits.max_batch_len, 5);
        assert_eq!(cfg.limits.max_inflight_calls, 4096);
        let text = format!("{BASE}limits:\n  max_inflight_calls: 2000000\n");
        let errs = parse_and_validate(&text, "t.yaml").unwrap_err().to_string();
        assert!(
            errs.contains("t.yaml:8:") && errs.contains("limits.max_inflight_calls"),
            "{errs}"
        );
        for bad in ["0", "100001"] {
            let text = format!("{BASE}limits:\n  max_batch_len: {bad}\n");
            let errs = parse_and_validate(&text, "t.yaml").unwrap_err().to_string();
            assert!(errs.contains("t.yaml:8:"), "{errs}");
            assert!(errs.contains("limits.max_batch_len"), "{errs}");
            assert!(errs.contains("expected 1 to 100000"), "{errs}");
        }
        assert_eq!(cfg.limits.max_connections, 50_000);
        for bad in ["0", "10000001"] {
            let text = format!("{BASE}limits:\n  max_connections: {bad}\n");
            let errs = parse_and_validate(&text, "t.yaml").unwrap_err().to_string();
            assert!(
                errs.contains("t.yaml:8:") && errs.contains("limits.max_connections"),
                "{errs}"
            );
        }
    }
}

#[cfg(test)]
mod client_ip_tests {
    use super::*;

    const BASE: &str = "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nroutes:\n  - { path: /mcp, pool: p }\npools:\n  p: { upstreams: [\"127.0.0.1:9\"] }\n";

    #[test]
    fn trusted_proxies_take_addresses_and_ranges() {
        let text = format!(
            "{BASE}client_ip:\n  trusted_proxies: [10.0.0.0/8, 192.168.1.7, \"fd00::/8\", 10.1.2.3/16]\n  header: X-Real-IP\n"
        );
        let cfg = parse_and_validate(&text, "t.yaml").unwrap();
        let nets: Vec<String> = cfg
            .client_ip
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            nets,
            ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "10.1.0.0/16"]
        );
        assert_eq!(cfg.client_ip.header, ForwardedHeader::XRealIp);
        let plain = parse_and_validate(BASE, "t.yaml").unwrap();
        assert!(plain.client_ip.trusted_proxies.is_empty());
    }

    #[test]
    fn bad_entries_are_reported_with_their_lines() {
        let text = format!(
            "{BASE}client_ip:\n  trusted_proxies:\n    - 10.0.0.0/33\n    - load-balancer\n  header: forwarded\n"
        );
        let errs = parse_and_validate(&text, "t.yaml").unwrap_err().to_string();
        for expected in [
            "t.yaml:9:",
            "client_ip.trusted_proxies[0]",
            "t.yaml:10:",
            "\"load-balancer\"",
            "client_ip.header",
            "expected x-forwarded-for or x-real-ip",
        ] {
            assert!(errs.contains(expected), "missing {expected:?} in:\n{errs}");
        }
        let lone = format!("{BASE}client_ip: {{ header: x-real-ip }}\n");
        let errs = parse_and_validate(&lone, "t.yaml").unwrap_err().to_string();
        assert!(errs.contains("only read from trusted proxies"), "{errs}");
    }
}

#[cfg(test)]
mod url_env_tests {
    use super::*;

    const BASE: &str = "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nroutes:\n  - { path: /mcp, pool: p }\npools:\n  p: { upstreams: [\"127.0.0.1:9\"] }\n";

    #[test]
    fn urls_come_from_the_environment_and_never_into_errors() {
        // Names of this test only: the environment is shared by the tests.
        std::env::set_var(
            "URL_ENV_TEST_PG",
            "postgres://gw:s3cret-pw@db.internal/gateway",
        );
        std::env::set_var(
            "URL_ENV_TEST_REDIS",
            "redis://:s3cret-pw@cache.internal:6379",
        );
        let text = format!(
            "{BASE}database: {{ url_env: URL_ENV_TEST_PG }}\nredis: {{ url_env: URL_ENV_TEST_REDIS }}\n"
        );
        let cfg = parse_and_validate(&text, "t.yaml").unwrap();
        assert_eq!(
            cfg.database.unwrap().url,
            "postgres://gw:s3cret-pw@db.internal/gateway"
        );
        assert_eq!(
            cfg.redis.unwrap().topology,
            RedisTopology::Standalone {
                url: "redis://:s3cret-pw@cache.internal:6379".into()
            }
        );

        std::env::set_var("URL_ENV_TEST_BAD", "mysql://root:s3cret-pw@db/x");
        let text = format!(
            "{BASE}database: {{ url_env: URL_ENV_TEST_BAD }}\nredis: {{ url_env: URL_ENV_TEST_UNSET }}\n"
        );
        let errs = parse_and_validate(&text, "t.yaml").unwrap_err().to_string();
        assert!(errs.contains("expected sqlite:… or postgres://…"), "{errs}");
        assert!(
            errs.contains("t.yaml:8:") && errs.contains("URL_ENV_TEST_UNSET is not set"),
            "{errs}"
        );
        assert!(
            !errs.contains("s3cret"),
            "a value leaked into an error: {errs}"
        );

        let both =
            format!("{BASE}database: {{ url: \"sqlite://x.db\", url_env: URL_ENV_TEST_PG }}\n");
        let errs = parse_and_validate(&both, "t.yaml").unwrap_err().to_string();
        assert!(errs.contains("give url or url_env, not both"), "{errs}");
        let neither = format!("{BASE}database: {{ migrate: false }}\n");
        let errs = parse_and_validate(&neither, "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(errs.contains("database.url"), "{errs}");
    }
}
