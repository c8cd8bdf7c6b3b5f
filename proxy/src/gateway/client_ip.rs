//! Where a request comes from. By default the TCP peer: nothing a client sends can change it.
//! Behind load balancers the peer is the balancer, so rate limits by address, the request log
//! and the audit trail would all see one address; `client_ip.trusted_proxies` names those
//! balancers, and only for a request whose peer is one of them is the forwarding header read.
//!
//! `X-Forwarded-For` is read from the right: each proxy appends the address it saw, so the
//! right-most entries were written by proxies we trust and the first untrusted entry from the
//! right is the client (entries further left were written by the client itself and are
//! ignored). A malformed entry stops the walk at the last address we could trust.

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::{ClientIpConfig, ForwardedHeader};

/// The TCP peer's address.
pub fn peer(session: &pingora::proxy::Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The client's address for this request.
pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, cfg: &ClientIpConfig) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted(&peer, cfg) {
        return Some(peer);
    }
    match cfg.header {
        ForwardedHeader::XRealIp => Some(
            single(headers, "x-real-ip")
                .and_then(|v| parse_ip(&v))
                .unwrap_or(peer),
        ),
        ForwardedHeader::XForwardedFor => Some(from_forwarded_for(peer, headers, cfg)),
    }
}

fn trusted(ip: &IpAddr, cfg: &ClientIpConfig) -> bool {
    let ip = canonical(*ip);
    cfg.trusted_proxies.iter().any(|net| net.contains(&ip))
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:10.0.0.1`) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn single(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok().map(|s| s.trim().to_string())
}

fn from_forwarded_for(peer: IpAddr, headers: &HeaderMap, cfg: &ClientIpConfig) -> IpAddr {
    let mut client = peer;
    // Several header lines are one list, in order.
    let lines: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for entry in lines.iter().rev().flat_map(|l| l.rsplit(',')) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some(ip) = parse_ip(entry) else {
            return client;
        };
        client = canonical(ip);
        if !trusted(&client, cfg) {
            return client;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:5678`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(nets: &[&str], header: ForwardedHeader) -> ClientIpConfig {
        ClientIpConfig {
            trusted_proxies: nets.iter().map(|n| n.parse().unwrap()).collect(),
            header,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_says() {
        let c = ClientIpConfig::default();
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "2.2.2.2")]);
        assert_eq!(resolve(ip("10.0.0.5"), &h, &c), ip("10.0.0.5"));
        assert_eq!(resolve(None, &h, &c), None);
    }

    #[test]
    fn an_untrusted_peer_cannot_name_a_client() {
        let c = cfg(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(resolve(ip("192.0.2.7"), &h, &c), ip("192.0.2.7"));
    }

    #[test]
    fn the_first_untrusted_entry_from_the_right_is_the_client() {
        let c = cfg(
            &["10.0.0.0/8", "192.168.1.1/32"],
            ForwardedHeader::XForwardedFor,
        );
        // The client forged "6.6.6.6"; the outer balancer appended the real peer 1.2.3.4,
        // an inner proxy appended 10.1.1.1.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.1.1.1")]);
        assert_eq!(resolve(ip("192.168.1.1"), &h, &c), ip("1.2.3.4"));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4,10.1.1.1"),
        ]);
        assert_eq!(resolve(ip("10.9.9.9"), &h, &c), ip("1.2.3.4"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        let c = cfg(&["10.0.0.0/8", "fd00::/8"], ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:4711, 10.0.0.2:80")]);
        assert_eq!(resolve(ip("fd00::1"), &h, &c), ip("2001:db8::1"));
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(resolve(ip("::ffff:10.0.0.1"), &h, &c), ip("1.2.3.4"));
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop_and_no_header_keeps_the_peer() {
        let c = cfg(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "1.2.3.4, not-an-ip, 10.0.0.3")]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &c), ip("10.0.0.3"));
        assert_eq!(
            resolve(ip("10.0.0.1"), &HeaderMap::new(), &c),
            ip("10.0.0.1")
        );
        // Only trusted hops: the left-most is as far as we can see.
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &c), ip("10.0.0.9"));
    }

    #[test]
    fn x_real_ip_is_one_value_from_a_trusted_peer() {
        let c = cfg(&["10.0.0.0/8"], ForwardedHeader::XRealIp);
        let h = headers(&[("x-real-ip", "1.2.3.4"), ("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(resolve(ip("10.0.0.1"), &h, &c), ip("1.2.3.4"));
        assert_eq!(resolve(ip("8.8.8.8"), &h, &c), ip("8.8.8.8"));
        let two = headers(&[("x-real-ip", "1.2.3.4"), ("x-real-ip", "5.6.7.8")]);
        assert_eq!(resolve(ip("10.0.0.1"), &two, &c), ip("10.0.0.1"));
        let bad = headers(&[("x-real-ip", "nonsense")]);
        assert_eq!(resolve(ip("10.0.0.1"), &bad, &c), ip("10.0.0.1"));
    }
}
