//! `pools.<name>.discover`: DNS names whose A/AAAA or SRV records are a remote pool's
//! workers. Only the shape is checked here; the names are resolved by the control plane
//! (routing/discovery.rs), never while loading the file.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_saphyr::Location;

use super::super::file::{DiscoverFile, DnsNameFile};
use super::super::model::{DiscoveryConfig, DnsTarget};
use super::Validator;

const DEFAULT_REFRESH: Duration = Duration::from_secs(10);
const MIN_REFRESH: Duration = Duration::from_secs(1);
const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// More names than this is a configuration mistake, not a pool.
const MAX_NAMES: usize = 64;

impl Validator<'_> {
    pub(super) fn discovery(
        &mut self,
        pool_at: &str,
        d: &DiscoverFile,
        fixed: &[SocketAddr],
    ) -> Option<DiscoveryConfig> {
        let at = format!("{pool_at}.discover");
        let errors_before = self.errors.len();
        if d.dns.value.is_empty() || d.dns.value.len() > MAX_NAMES {
            self.err(
                &d.dns.referenced,
                format!("{at}.dns"),
                format!("expected 1 to {MAX_NAMES} entries"),
            );
        }
        let mut targets = Vec::new();
        for (i, e) in d.dns.value.iter().enumerate() {
            if let Some(t) = self.dns_target(&format!("{at}.dns[{i}]"), &d.dns.referenced, e) {
                if targets.contains(&t) {
                    self.err(
                        &d.dns.referenced,
                        format!("{at}.dns[{i}]"),
                        format!("{t} is listed twice"),
                    );
                }
                targets.push(t);
            }
        }
        let refresh = d.refresh.as_ref().map_or(DEFAULT_REFRESH, |r| r.0);
        if !(MIN_REFRESH..=MAX_REFRESH).contains(&refresh) {
            self.err(
                &Location::UNKNOWN,
                format!("{at}.refresh"),
                "expected 1s to 1h",
            );
        }
        let resolver = d.resolver.as_ref().and_then(|r| {
            let text = r.value.trim();
            let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
                text.parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            if parsed.is_none() {
                self.err(
                    &r.referenced,
                    format!("{at}.resolver"),
                    format!("expected ip or ip:port of a DNS server, got {text:?}"),
                );
            }
            parsed
        });
        (self.errors.len() == errors_before).then(|| DiscoveryConfig {
            targets,
            refresh,
            resolver,
            fixed: fixed.to_vec(),
        })
    }

    fn dns_target(&mut self, at: &str, list: &Location, e: &DnsNameFile) -> Option<DnsTarget> {
        match (&e.name, &e.srv) {
            (Some(n), Some(s)) => {
                self.err(
                    &s.referenced,
                    format!("{at}.srv"),
                    format!(
                        "give either name (with port) or srv, not both (name is {:?})",
                        n.value
                    ),
                );
                None
            }
            (None, None) => {
                self.err(
                    list,
                    at.to_string(),
                    "needs name (A/AAAA records, with port) or srv (SRV records)",
                );
                None
            }
            (Some(n), None) => {
                let name = self.dns_name(&format!("{at}.name"), &n.referenced, &n.value);
                let port = match &e.port {
                    Some(p) if (1..=65535).contains(&p.value) => u16::try_from(p.value).ok(),
                    Some(p) => {
                        self.err(&p.referenced, format!("{at}.port"), "expected 1 to 65535");
                        None
                    }
                    None => {
                        self.err(
                            &n.referenced,
                            format!("{at}.port"),
                            "A/AAAA records carry no port: give port",
                        );
                        None
                    }
                };
                Some(DnsTarget::Host {
                    name: name?,
                    port: port?,
                })
            }
            (None, Some(s)) => {
                if let Some(p) = &e.port {
                    self.err(
                        &p.referenced,
                        format!("{at}.port"),
                        "SRV records carry their own port: drop port",
                    );
                }
                let name = self.dns_name(&format!("{at}.srv"), &s.referenced, &s.value)?;
                e.port.is_none().then_some(DnsTarget::Srv { name })
            }
        }
    }

    /// A host name as DNS knows it: dot-separated labels of 1 to 63 letters, digits, `-`
    /// or `_` (SRV names start with `_service._proto`), 253 characters at most.
    fn dns_name(&mut self, at: &str, loc: &Location, text: &str) -> Option<String> {
        let name = text.trim();
        let bare = name.strip_suffix('.').unwrap_or(name);
        let good = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !good {
            self.err(
                loc,
                at.to_string(),
                format!("{text:?} is not a DNS name (labels of letters, digits, - or _)"),
            );
            return None;
        }
        Some(name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_and_validate;
    use crate::config::{ConfigError, DnsTarget, GatewayConfig, PoolSource};
    use std::time::Duration;

    fn yaml(pool: &str) -> String {
        format!(
            "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nroutes:\n  - path: /mcp\n    pool: p\npools:\n  p:\n{pool}"
        )
    }

    fn errors(pool: &str) -> Vec<ConfigError> {
        match parse_and_validate(&yaml(pool), "t.yaml") {
            Ok(_) => panic!("accepted:\n{pool}"),
            Err(e) => e.0,
        }
    }

    fn ok(pool: &str) -> GatewayConfig {
        parse_and_validate(&yaml(pool), "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn find<'a>(errs: &'a [ConfigError], path: &str) -> &'a ConfigError {
        errs.iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no error at {path}: {errs:?}"))
    }

    #[test]
    fn dns_names_and_srv_records_make_a_remote_pool() {
        let cfg = ok(concat!(
            "    upstreams: [\"127.0.0.1:9001\"]\n",
            "    discover:\n",
            "      dns:\n",
            "        - { name: workers.tools.svc.cluster.local, port: 8080 }\n",
            "        - { srv: _mcp._tcp.workers.tools.svc.cluster.local. }\n",
            "      refresh: 5s\n",
            "      resolver: 10.96.0.10\n",
        ));
        let p = &cfg.pools[0];
        let d = p.discovery.as_ref().unwrap();
        assert_eq!(
            d.targets,
            vec![
                DnsTarget::Host {
                    name: "workers.tools.svc.cluster.local".into(),
                    port: 8080
                },
                DnsTarget::Srv {
                    name: "_mcp._tcp.workers.tools.svc.cluster.local.".into()
                },
            ]
        );
        assert_eq!(d.refresh, Duration::from_secs(5));
        assert_eq!(d.resolver, Some("10.96.0.10:53".parse().unwrap()));
        let fixed = vec!["127.0.0.1:9001".parse().unwrap()];
        assert_eq!(d.fixed, fixed);
        // Until the first resolution, the members are the fixed addresses.
        assert_eq!(p.source, PoolSource::Remote(fixed));

        // discover alone is a remote pool too; defaults: 10s, the system resolver.
        let cfg = ok("    discover: { dns: [ { name: w.example, port: 1 } ] }\n");
        let d = cfg.pools[0].discovery.as_ref().unwrap();
        assert_eq!(d.refresh, Duration::from_secs(10));
        assert_eq!(d.resolver, None);
        assert_eq!(cfg.pools[0].source, PoolSource::Remote(vec![]));
        let cfg = ok(concat!(
            "    upstreams: []\n",
            "    discover: { dns: [ { srv: _x._tcp.w }], resolver: \"127.0.0.1:5353\" }\n",
        ));
        let d = cfg.pools[0].discovery.as_ref().unwrap();
        assert_eq!(d.resolver, Some("127.0.0.1:5353".parse().unwrap()));

        // Pools without discover have none.
        let cfg = ok("    upstreams: [\"127.0.0.1:9001\"]\n");
        assert_eq!(cfg.pools[0].discovery, None);
    }

    #[test]
    fn bad_dns_entries_are_reported_with_their_line_and_field() {
        let errs = errors(concat!(
            "    discover:\n",
            "      dns:\n",
            "        - { name: workers.svc }\n",
            "        - { name: \"bad name!\", port: 80 }\n",
            "        - { name: w.svc, port: 70000 }\n",
            "        - { srv: _mcp._tcp.w, port: 80 }\n",
            "        - { name: a.svc, port: 1, srv: _b._tcp.svc }\n",
            "        - { }\n",
            "        - { name: w.svc, port: 80, weight: 3 }\n",
            "      refresh: 100ms\n",
            "      resolver: dns.example\n",
        ));
        let e = find(&errs, "pools.p.discover.dns[0].port");
        assert_eq!(e.line, Some(10));
        assert!(e.message.contains("give port"), "{}", e.message);
        let e = find(&errs, "pools.p.discover.dns[1].name");
        assert_eq!(e.line, Some(11));
        assert!(e.message.contains("not a DNS name"), "{}", e.message);
        let e = find(&errs, "pools.p.discover.dns[2].port");
        assert_eq!(e.line, Some(12));
        assert!(e.message.contains("1 to 65535"), "{}", e.message);
        let e = find(&errs, "pools.p.discover.dns[3].port");
        assert_eq!(e.line, Some(13));
        assert!(e.message.contains("SRV records carry"), "{}", e.message);
        let e = find(&errs, "pools.p.discover.dns[4].srv");
        assert_eq!(e.line, Some(14));
        assert!(e.message.contains("not both"), "{}", e.message);
        assert!(find(&errs, "pools.p.discover.dns[5]")
            .message
            .contains("needs name"));
        assert!(errs
            .iter()
            .any(|e| e.message.contains("unknown field `weight`")));
        let e = find(&errs, "pools.p.discover.refresh");
        assert!(e.message.contains("1s to 1h"), "{}", e.message);
        assert_eq!(e.line, Some(17));
        let e = find(&errs, "pools.p.discover.resolver");
        assert_eq!(e.line, Some(18));
        assert!(e.message.contains("ip:port"), "{}", e.message);
    }

    #[test]
    fn discover_belongs_to_remote_pools_only() {
        let errs = errors(concat!(
            "    spawn: { command: [w] }\n",
            "    discover: { dns: [ { name: w.svc, port: 80 } ] }\n",
        ));
        let e = find(&errs, "pools.p.discover");
        assert!(e.message.contains("not with spawn"), "{}", e.message);
        let errs = errors("    discover: { dns: [] }\n");
        find(&errs, "pools.p.discover.dns");
        let errs = errors(concat!(
            "    discover:\n",
            "      dns: [ { name: w.svc, port: 80 }, { name: w.svc, port: 80 } ]\n",
        ));
        assert!(find(&errs, "pools.p.discover.dns[1]")
            .message
            .contains("listed twice"));
        // Without discover, an empty upstreams list is still an error.
        let errs = errors("    upstreams: []\n");
        find(&errs, "pools.p.upstreams");
    }
}
