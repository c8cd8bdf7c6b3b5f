//! `redis`: exactly one of `url` (one server), `sentinel` or `cluster`, each address a
//! `redis://` URL the client library can read.

use serde_saphyr::{Location, Spanned};

use super::super::file::RedisFile;
use super::super::model::{RedisConfig, RedisTopology};
use super::Validator;

impl Validator<'_> {
    pub(super) fn redis(&mut self, r: &RedisFile) -> Option<RedisConfig> {
        let given: Vec<&str> = [
            r.url.as_ref().map(|_| "url"),
            r.url_env.as_ref().map(|_| "url_env"),
            r.sentinel.as_ref().map(|_| "sentinel"),
            r.cluster.as_ref().map(|_| "cluster"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match given.as_slice() {
            [] => {
                self.err(
                    &Location::UNKNOWN,
                    "redis",
                    "expected one of url, url_env, sentinel or cluster",
                );
                return None;
            }
            [_] => {}
            [first, rest @ ..] => {
                for other in rest {
                    self.err(
                        &Location::UNKNOWN,
                        format!("redis.{other}"),
                        format!(
                            "give only one of url, url_env, sentinel or cluster (also found {first})"
                        ),
                    );
                }
                return None;
            }
        }
        let topology = if let Some(url) = &r.url {
            let ok = url.value.starts_with("unix://") || self.redis_url(url, "redis.url");
            ok.then(|| RedisTopology::Standalone {
                url: url.value.clone(),
            })
        } else if r.url_env.is_some() {
            let url = self.url_or_env(&None, &r.url_env, "redis")?;
            let ok = url.starts_with("unix://") || is_redis_url(&url);
            if !ok {
                let at = r
                    .url_env
                    .as_ref()
                    .map(|v| v.referenced)
                    .unwrap_or(Location::UNKNOWN);
                self.err(
                    &at,
                    "redis.url_env",
                    "the variable's value is not a redis:// URL",
                );
            }
            ok.then_some(RedisTopology::Standalone { url })
        } else if let Some(s) = &r.sentinel {
            let mut ok = self.redis_nodes(&s.nodes, "redis.sentinel.nodes");
            if s.master.value.trim().is_empty() {
                self.err(
                    &s.master.referenced,
                    "redis.sentinel.master",
                    "expected the name the sentinels monitor the master under",
                );
                ok = false;
            }
            ok.then(|| RedisTopology::Sentinel {
                master: s.master.value.clone(),
                nodes: s.nodes.iter().map(|n| n.value.clone()).collect(),
            })
        } else {
            let c = r.cluster.as_ref()?;
            self.redis_nodes(&c.nodes, "redis.cluster.nodes")
                .then(|| RedisTopology::Cluster {
                    nodes: c.nodes.iter().map(|n| n.value.clone()).collect(),
                })
        };
        Some(RedisConfig {
            topology: topology?,
            prefix: r.prefix.clone(),
        })
    }

    fn redis_nodes(&mut self, nodes: &[Spanned<String>], path: &str) -> bool {
        if nodes.is_empty() {
            self.err(
                &Location::UNKNOWN,
                path,
                "expected at least one redis://host:port",
            );
            return false;
        }
        let mut ok = true;
        for (i, n) in nodes.iter().enumerate() {
            ok &= self.redis_url(n, &format!("{path}[{i}]"));
        }
        ok
    }

    fn redis_url(&mut self, url: &Spanned<String>, path: &str) -> bool {
        let ok = is_redis_url(&url.value);
        if !ok {
            self.err(&url.referenced, path, "expected redis://host:port");
        }
        ok
    }
}

fn is_redis_url(url: &str) -> bool {
    url.starts_with("redis://") && redis::Client::open(url).is_ok()
}

#[cfg(test)]
mod tests {
    use super::super::parse_and_validate;
    use super::*;

    const BASE: &str = "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9090\nroutes:\n  - { path: /mcp, pool: p }\npools:\n  p: { upstreams: [\"127.0.0.1:9\"] }\n";

    fn topology(redis: &str) -> RedisTopology {
        let cfg = parse_and_validate(&format!("{BASE}redis:\n{redis}"), "t.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        cfg.redis.unwrap().topology
    }

    fn errors(redis: &str) -> String {
        parse_and_validate(&format!("{BASE}redis:\n{redis}"), "t.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn each_topology_is_read() {
        assert_eq!(
            topology("  url: redis://127.0.0.1:6379\n"),
            RedisTopology::Standalone {
                url: "redis://127.0.0.1:6379".into()
            }
        );
        assert_eq!(
            topology("  sentinel:\n    master: main\n    nodes: [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]\n"),
            RedisTopology::Sentinel {
                master: "main".into(),
                nodes: vec![
                    "redis://10.0.0.1:26379".into(),
                    "redis://10.0.0.2:26379".into()
                ]
            }
        );
        assert_eq!(
            topology("  cluster: { nodes: [\"redis://10.0.0.1:7000\"] }\n  prefix: gw\n"),
            RedisTopology::Cluster {
                nodes: vec!["redis://10.0.0.1:7000".into()]
            }
        );
    }

    #[test]
    fn none_of_the_three_is_an_error_with_its_line() {
        let e = errors("  prefix: gw\n");
        assert!(e.contains("t.yaml:7:"), "{e}");
        assert!(e.contains("redis"), "{e}");
        assert!(
            e.contains("expected one of url, url_env, sentinel or cluster"),
            "{e}"
        );
    }

    #[test]
    fn two_of_the_three_is_an_error_naming_the_second() {
        let e = errors(
            "  url: redis://127.0.0.1:6379\n  cluster:\n    nodes: [\"redis://127.0.0.1:7000\"]\n",
        );
        assert!(e.contains("t.yaml:9:"), "{e}");
        assert!(e.contains("redis.cluster"), "{e}");
        assert!(
            e.contains("give only one of url, url_env, sentinel or cluster"),
            "{e}"
        );
        let e = errors("  url: redis://127.0.0.1:6379\n  sentinel: { master: m, nodes: [\"redis://h:26379\"] }\n  cluster: { nodes: [\"redis://h:7000\"] }\n");
        assert!(
            e.contains("redis.sentinel") && e.contains("redis.cluster"),
            "{e}"
        );
    }

    #[test]
    fn bad_addresses_are_errors_with_their_lines() {
        let e = errors("  url: http://127.0.0.1:6379\n");
        assert!(e.contains("t.yaml:8:"), "{e}");
        assert!(e.contains("redis.url"), "{e}");
        let e = errors(
            "  cluster:\n    nodes:\n      - redis://127.0.0.1:7000\n      - 127.0.0.1:7001\n",
        );
        assert!(e.contains("t.yaml:11:"), "{e}");
        assert!(e.contains("redis.cluster.nodes[1]"), "{e}");
        let e = errors("  cluster: { nodes: [] }\n");
        assert!(e.contains("redis.cluster.nodes"), "{e}");
        assert!(e.contains("at least one"), "{e}");
        let e = errors("  sentinel:\n    master: \"\"\n    nodes: [\"redis://h:26379\"]\n");
        assert!(e.contains("t.yaml:9:"), "{e}");
        assert!(e.contains("redis.sentinel.master"), "{e}");
        let e = errors("  sentinel:\n    nodes: [\"redis://h:26379\"]\n");
        assert!(e.contains("master"), "{e}");
    }
}
