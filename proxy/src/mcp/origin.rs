//! `Origin` validation (DNS-rebinding protection the MCP transport spec asks for).

/// One allowed origin: `scheme://host[:port]`, where the port may be `*`.
/// `null` allows the browser's opaque `Origin: null`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRule {
    scheme: String,
    host: String,
    /// `None`: any port.
    port: Option<u16>,
    null: bool,
}

struct Parsed<'a> {
    scheme: &'a str,
    host: &'a str,
    port: PortSpec,
}

enum PortSpec {
    Any,
    Default,
    Exact(u16),
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn split(origin: &str) -> Option<Parsed<'_>> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme.is_empty() || rest.is_empty() || rest.contains('/') {
        return None;
    }
    // IPv6 literal: [::1]:port
    let (host, port) = if let Some(stripped) = rest.strip_prefix('[') {
        let end = stripped.find(']')?;
        let host = &rest[..end + 2];
        let after = &stripped[end + 1..];
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => PortSpec::Default,
        Some("*") => PortSpec::Any,
        Some(p) => PortSpec::Exact(p.parse().ok()?),
    };
    Some(Parsed { scheme, host, port })
}

impl OriginRule {
    pub fn parse(s: &str) -> Result<OriginRule, String> {
        if s == "null" {
            return Ok(OriginRule {
                scheme: String::new(),
                host: String::new(),
                port: None,
                null: true,
            });
        }
        let p = split(s)
            .ok_or_else(|| format!("expected scheme://host[:port] (port may be *), got {s:?}"))?;
        let port = match p.port {
            PortSpec::Any => None,
            PortSpec::Exact(n) => Some(n),
            PortSpec::Default => Some(default_port(p.scheme).ok_or_else(|| {
                format!("{s:?}: scheme {} has no default port; give one", p.scheme)
            })?),
        };
        Ok(OriginRule {
            scheme: p.scheme.to_ascii_lowercase(),
            host: p.host.to_ascii_lowercase(),
            port,
            null: false,
        })
    }

    fn matches(&self, origin: &str) -> bool {
        if self.null {
            return origin == "null";
        }
        let Some(p) = split(origin) else {
            return false;
        };
        let port = match p.port {
            PortSpec::Any => return false,
            PortSpec::Exact(n) => Some(n),
            PortSpec::Default => default_port(p.scheme),
        };
        p.scheme.eq_ignore_ascii_case(&self.scheme)
            && p.host.eq_ignore_ascii_case(&self.host)
            && (self.port.is_none() || self.port == port)
    }
}

/// Is a request with this `Origin` header value allowed? (`None`: no header, allowed.)
pub fn allowed(rules: &[OriginRule], origin: Option<&[u8]>) -> bool {
    match origin {
        None => true,
        Some(raw) => match std::str::from_utf8(raw) {
            Ok(o) => rules.iter().any(|r| r.matches(o.trim())),
            Err(_) => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<OriginRule> {
        list.iter().map(|s| OriginRule::parse(s).unwrap()).collect()
    }

    #[test]
    fn wildcard_port_and_default_port() {
        let r = rules(&["http://localhost:*", "https://app.example.com"]);
        assert!(allowed(&r, None));
        assert!(allowed(&r, Some(b"http://localhost:3000")));
        assert!(allowed(&r, Some(b"http://LOCALHOST:1")));
        assert!(allowed(&r, Some(b"https://app.example.com")));
        assert!(allowed(&r, Some(b"https://app.example.com:443")));
        assert!(!allowed(&r, Some(b"https://app.example.com:8443")));
        assert!(!allowed(&r, Some(b"http://evil.example")));
        assert!(!allowed(&r, Some(b"https://localhost:3000")));
        assert!(!allowed(&r, Some(b"null")));
        assert!(!allowed(&r, Some(b"\xff\xfe")));
    }

    #[test]
    fn ipv6_and_null() {
        let r = rules(&["http://[::1]:*", "null"]);
        assert!(allowed(&r, Some(b"http://[::1]:8080")));
        assert!(allowed(&r, Some(b"null")));
        assert!(!allowed(&r, Some(b"http://[::2]:8080")));
    }

    #[test]
    fn bad_rules_are_errors() {
        assert!(OriginRule::parse("localhost").is_err());
        assert!(OriginRule::parse("ftp://x").is_err());
        assert!(OriginRule::parse("http://x:notaport").is_err());
    }
}
