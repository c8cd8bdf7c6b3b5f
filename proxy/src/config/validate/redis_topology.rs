//! `redis`: exactly one of `url` (one server), `sentinel` or `cluster`, each address a
//! `redis://` (or `rediss://`, TLS) URL the client library can read; `tls` names PEM files
//! for the TLS addresses, read and checked here.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_saphyr::{Location, Spanned};

use super::super::file::{RedisFile, RedisSentinelFile, RedisTlsFile};
use super::super::model::{MasterAuth, RedisConfig, RedisTls, RedisTopology};
use super::Validator;

/// What a PEM file must hold.
#[derive(Clone, Copy)]
pub(super) enum Pem {
    Certificates,
    Key,
}

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
                    "the variable's value is not a redis:// or rediss:// URL",
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
            let master_auth = self.master_auth(s);
            ok &= master_auth.is_ok();
            ok.then(|| RedisTopology::Sentinel {
                master: s.master.value.clone(),
                nodes: s.nodes.iter().map(|n| n.value.clone()).collect(),
                master_auth: master_auth.ok().flatten(),
            })
        } else {
            let c = r.cluster.as_ref()?;
            self.redis_nodes(&c.nodes, "redis.cluster.nodes")
                .then(|| RedisTopology::Cluster {
                    nodes: c.nodes.iter().map(|n| n.value.clone()).collect(),
                })
        };
        let topology = topology?;
        let tls = match &r.tls {
            None => RedisTls::default(),
            Some(t) => self.redis_tls(t, topology.uses_tls())?,
        };
        Some(RedisConfig {
            topology,
            prefix: r.prefix.clone(),
            tls,
        })
    }

    /// `sentinel.master_password_env` (read now) and `master_username`; `Err` after an error.
    fn master_auth(&mut self, s: &RedisSentinelFile) -> Result<Option<MasterAuth>, ()> {
        match (&s.master_password_env, &s.master_username) {
            (None, None) => Ok(None),
            (None, Some(user)) => {
                self.err(
                    &user.referenced,
                    "redis.sentinel.master_password_env",
                    "master_username needs master_password_env",
                );
                Err(())
            }
            (Some(var), user) => match std::env::var(&var.value) {
                Ok(password) if !password.is_empty() => Ok(Some(MasterAuth {
                    username: user.as_ref().map(|u| u.value.clone()),
                    password,
                })),
                _ => {
                    self.err(
                        &var.referenced,
                        "redis.sentinel.master_password_env",
                        format!("the environment variable {} is not set", var.value),
                    );
                    Err(())
                }
            },
        }
    }

    fn redis_tls(&mut self, t: &RedisTlsFile, any_tls_address: bool) -> Option<RedisTls> {
        let mut ok = true;
        if !any_tls_address {
            self.err(
                &Location::UNKNOWN,
                "redis.tls",
                "is used only with rediss:// addresses, and none is given",
            );
            ok = false;
        }
        let ca_pem = match &t.ca_file {
            Some(f) => {
                let pem = self.pem_file(f, "redis.tls.ca_file", Pem::Certificates);
                ok &= pem.is_some();
                pem
            }
            None => None,
        };
        let client_pem = match (&t.cert_file, &t.key_file) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let cert = self.pem_file(c, "redis.tls.cert_file", Pem::Certificates);
                let key = self.pem_file(k, "redis.tls.key_file", Pem::Key);
                ok &= cert.is_some() && key.is_some();
                cert.zip(key)
            }
            (Some(c), None) => {
                self.err(
                    &c.referenced,
                    "redis.tls.key_file",
                    "cert_file needs key_file, the client certificate's private key",
                );
                return None;
            }
            (None, Some(k)) => {
                self.err(
                    &k.referenced,
                    "redis.tls.cert_file",
                    "key_file needs cert_file, the client certificate",
                );
                return None;
            }
        };
        ok.then_some(RedisTls { ca_pem, client_pem })
    }

    /// The file's bytes when it holds what `kind` asks for; otherwise an error at its line.
    pub(super) fn pem_file(
        &mut self,
        path: &Spanned<String>,
        field: &str,
        kind: Pem,
    ) -> Option<Vec<u8>> {
        let bytes = match std::fs::read(&path.value) {
            Ok(b) => b,
            Err(e) => {
                self.err(
                    &path.referenced,
                    field,
                    format!("cannot read {}: {e}", path.value),
                );
                return None;
            }
        };
        let problem = match kind {
            Pem::Certificates => {
                match CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>() {
                    Ok(certs) if certs.is_empty() => Some("holds no PEM certificate".to_string()),
                    Ok(_) => None,
                    Err(e) => Some(format!("is not a valid PEM certificate file: {e}")),
                }
            }
            Pem::Key => PrivateKeyDer::from_pem_slice(&bytes)
                .err()
                .map(|e| format!("holds no PEM private key: {e}")),
        };
        match problem {
            Some(p) => {
                self.err(&path.referenced, field, format!("{} {p}", path.value));
                None
            }
            None => Some(bytes),
        }
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
            self.err(
                &url.referenced,
                path,
                "expected redis://host:port (or rediss://host:port for TLS)",
            );
        }
        ok
    }
}

fn is_redis_url(url: &str) -> bool {
    (url.starts_with("redis://") || url.starts_with("rediss://"))
        && redis::Client::open(url).is_ok()
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
                ],
                master_auth: None,
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

    /// A CA certificate and a key pair in PEM, written to a fresh directory.
    fn pem_files() -> (std::path::PathBuf, String, String, String) {
        let dir = std::env::temp_dir().join(format!("redis-tls-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .and_then(|p| p.self_signed(&key))
            .unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
            p.display().to_string()
        };
        let ca = write("ca.pem", &cert.pem());
        let client_key = write("client.key", &key.serialize_pem());
        let junk = write("junk.pem", "not a certificate\n");
        (dir, ca, client_key, junk)
    }

    #[test]
    fn tls_addresses_and_their_certificate_files_are_read() {
        let (dir, ca, key, _) = pem_files();
        let cfg = parse_and_validate(
            &format!("{BASE}redis:\n  url: rediss://10.0.0.1:6380\n  tls:\n    ca_file: {ca}\n    cert_file: {ca}\n    key_file: {key}\n"),
            "t.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let redis = cfg.redis.unwrap_or_else(|| panic!("no redis"));
        assert!(redis.topology.uses_tls());
        let ca_pem = std::fs::read(&ca).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(redis.tls.ca_pem.as_ref(), Some(&ca_pem));
        assert!(redis.tls.client_pem.is_some());
        // The key stays out of debug output.
        let key_pem = std::fs::read_to_string(&key).unwrap_or_else(|e| panic!("{e}"));
        let debug = format!("{:?}", redis.tls);
        assert!(
            !debug.contains(key_pem.lines().nth(1).unwrap_or("-")),
            "{debug}"
        );
        // rediss:// alone: TLS with the system's roots.
        let t = topology("  cluster: { nodes: [\"rediss://10.0.0.1:7000\"] }\n");
        assert!(t.uses_tls());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_tls_settings_are_errors_with_their_lines() {
        let (dir, ca, key, junk) = pem_files();
        let e = errors(&format!(
            "  url: redis://127.0.0.1:6379\n  tls: {{ ca_file: {ca} }}\n"
        ));
        assert!(e.contains("redis.tls"), "{e}");
        assert!(e.contains("only with rediss://"), "{e}");
        let e =
            errors("  url: rediss://127.0.0.1:6379\n  tls:\n    ca_file: /nonexistent/ca.pem\n");
        assert!(e.contains("t.yaml:10:"), "{e}");
        assert!(e.contains("redis.tls.ca_file"), "{e}");
        assert!(e.contains("cannot read /nonexistent/ca.pem"), "{e}");
        let e = errors(&format!(
            "  url: rediss://127.0.0.1:6379\n  tls:\n    ca_file: {junk}\n"
        ));
        assert!(
            e.contains("t.yaml:10:") && e.contains("holds no PEM certificate"),
            "{e}"
        );
        let e = errors(&format!(
            "  url: rediss://127.0.0.1:6379\n  tls:\n    cert_file: {ca}\n    key_file: {ca}\n"
        ));
        assert!(e.contains("t.yaml:11:"), "{e}");
        assert!(
            e.contains("redis.tls.key_file") && e.contains("no PEM private key"),
            "{e}"
        );
        let e = errors(&format!(
            "  url: rediss://127.0.0.1:6379\n  tls:\n    cert_file: {ca}\n"
        ));
        assert!(
            e.contains("redis.tls.key_file") && e.contains("needs key_file"),
            "{e}"
        );
        let e = errors(&format!(
            "  url: rediss://127.0.0.1:6379\n  tls:\n    key_file: {key}\n"
        ));
        assert!(
            e.contains("redis.tls.cert_file") && e.contains("needs cert_file"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_sentinel_master_password_comes_from_the_environment() {
        std::env::set_var("REDIS_TOPOLOGY_TEST_MASTER_PW", "s3cret");
        let t = topology("  sentinel:\n    master: m\n    nodes: [\"redis://h:26379\"]\n    master_password_env: REDIS_TOPOLOGY_TEST_MASTER_PW\n    master_username: gw\n");
        let RedisTopology::Sentinel { master_auth, .. } = &t else {
            panic!("{t:?}");
        };
        assert_eq!(
            master_auth,
            &Some(MasterAuth {
                username: Some("gw".into()),
                password: "s3cret".into()
            })
        );
        // The password stays out of debug output.
        assert!(!format!("{t:?}").contains("s3cret"));
        let e = errors("  sentinel:\n    master: m\n    nodes: [\"redis://h:26379\"]\n    master_password_env: REDIS_TOPOLOGY_TEST_UNSET_VAR\n");
        assert!(e.contains("t.yaml:11:"), "{e}");
        assert!(e.contains("redis.sentinel.master_password_env"), "{e}");
        assert!(
            e.contains("REDIS_TOPOLOGY_TEST_UNSET_VAR is not set"),
            "{e}"
        );
        let e = errors("  sentinel:\n    master: m\n    nodes: [\"redis://h:26379\"]\n    master_username: gw\n");
        assert!(
            e.contains("master_username needs master_password_env"),
            "{e}"
        );
    }
}
