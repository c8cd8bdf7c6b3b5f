//! DNS discovery of a remote pool's workers (docs/discovery.md).
//!
//! One task per pool with `discover`, on the control plane: it resolves the pool's names at
//! start and then every `refresh`, and sends the member list to the pool manager when it
//! changes. The manager rebuilds the runtime the way a reload does, so addresses still
//! listed keep their worker (health, sessions), new ones become workers and the others
//! leave selection. Nothing here runs on the request path.
//!
//! A name that fails to resolve (timeout, SERVFAIL, NXDOMAIN, no records) keeps the
//! addresses it had last time, so a DNS outage never empties a pool; at start it has none.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::metrics::Metrics;
use crate::config::{DiscoveryConfig, DnsTarget};
use crate::reload::{ControlMsg, ControlSender};
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

/// Longest wait for one DNS answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
    #[error("{target}: {reason}")]
    Lookup { target: String, reason: String },
}

/// What the task tells the pool manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    pub pool: String,
    /// Which task sent it (a replaced task's late message is ignored).
    pub task: u64,
    /// Every address the pool's names resolve to now, sorted.
    pub discovered: Vec<SocketAddr>,
}

/// The fixed addresses first (in configuration order), then the discovered ones not among them.
pub fn merge(fixed: &[SocketAddr], discovered: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out = fixed.to_vec();
    out.extend(discovered.iter().filter(|a| !fixed.contains(a)));
    out
}

/// The members of `members` that were discovered (not fixed).
pub fn discovered_part(fixed: &[SocketAddr], members: &[SocketAddr]) -> Vec<SocketAddr> {
    members
        .iter()
        .filter(|a| !fixed.contains(a))
        .copied()
        .collect()
}

pub fn build_resolver(cfg: &DiscoveryConfig) -> Result<TokioResolver, DiscoveryError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match cfg.resolver {
        Some(addr) => {
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), provider)
        }
        None => Resolver::builder(provider).map_err(|e| DiscoveryError::Resolver(e.to_string()))?,
    };
    let opts = builder.options_mut();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = QUERY_TIMEOUT.min(cfg.refresh);
    builder
        .build()
        .map_err(|e| DiscoveryError::Resolver(e.to_string()))
}

/// The addresses one entry stands for now. An empty answer is an error: it keeps the last
/// known addresses like any other failure.
pub async fn resolve(
    resolver: &TokioResolver,
    target: &DnsTarget,
) -> Result<BTreeSet<SocketAddr>, DiscoveryError> {
    let fail = |reason: String| DiscoveryError::Lookup {
        target: target.to_string(),
        reason,
    };
    let mut out = BTreeSet::new();
    match target {
        DnsTarget::Host { name, port } => {
            let ips = resolver
                .lookup_ip(name.as_str())
                .await
                .map_err(|e| fail(e.to_string()))?;
            out.extend(ips.iter().map(|ip| SocketAddr::new(ip, *port)));
        }
        DnsTarget::Srv { name } => {
            let srv = resolver
                .srv_lookup(name.as_str())
                .await
                .map_err(|e| fail(e.to_string()))?;
            for record in srv.answers() {
                let RData::SRV(s) = &record.data else {
                    continue;
                };
                // A target of "." says the service is not offered at this name.
                if s.target.is_root() {
                    continue;
                }
                let ips = resolver
                    .lookup_ip(s.target.clone())
                    .await
                    .map_err(|e| fail(format!("target {}: {e}", s.target)))?;
                out.extend(ips.iter().map(|ip| SocketAddr::new(ip, s.port)));
            }
        }
    }
    if out.is_empty() {
        return Err(fail("no addresses in the answer".into()));
    }
    Ok(out)
}

/// Resolve the pool's names now and every `refresh`; send the members when they change.
/// Runs until the receiver is gone or the task is stopped.
pub async fn run(
    pool: String,
    task: u64,
    cfg: DiscoveryConfig,
    tx: ControlSender,
    metrics: Arc<Metrics>,
) {
    let errors = metrics.discovery_errors.with_label_values(&[&pool]);
    let gauge = metrics.discovery_members.with_label_values(&[&pool]);
    let resolver = match build_resolver(&cfg) {
        Ok(r) => r,
        Err(e) => {
            errors.inc();
            tracing::error!(pool = %pool, error = %e, "DNS discovery cannot start; the pool keeps its fixed upstreams only");
            return;
        }
    };
    // Last known addresses per entry: a failed entry keeps its own.
    let mut known: Vec<Option<BTreeSet<SocketAddr>>> = vec![None; cfg.targets.len()];
    let mut sent: Option<Vec<SocketAddr>> = None;
    let mut tick = tokio::time::interval(cfg.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Each round asks the DNS server: the refresh interval is the cache.
        resolver.clear_cache();
        for (i, target) in cfg.targets.iter().enumerate() {
            match resolve(&resolver, target).await {
                Ok(addrs) => {
                    if known[i].as_ref() != Some(&addrs) {
                        tracing::info!(pool = %pool, name = %target, addresses = ?addrs, "DNS discovery: addresses changed");
                    }
                    known[i] = Some(addrs);
                }
                Err(e) => {
                    errors.inc();
                    match &known[i] {
                        Some(last) => {
                            tracing::warn!(pool = %pool, error = %e, kept = ?last, "DNS discovery failed; keeping the last known addresses")
                        }
                        None => {
                            tracing::warn!(pool = %pool, error = %e, "DNS discovery failed; no addresses known for this name yet")
                        }
                    }
                }
            }
        }
        let all: BTreeSet<SocketAddr> = known.iter().flatten().flatten().copied().collect();
        let discovered: Vec<SocketAddr> = all.into_iter().collect();
        gauge.set(i64::try_from(merge(&cfg.fixed, &discovered).len()).unwrap_or(i64::MAX));
        if sent.as_ref() == Some(&discovered) {
            continue;
        }
        let msg = Members {
            pool: pool.clone(),
            task,
            discovered: discovered.clone(),
        };
        if tx.send(ControlMsg::Members(msg)).await.is_err() {
            return;
        }
        sent = Some(discovered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fixed_addresses_come_first_and_are_not_repeated() {
        let fixed = [a("10.0.0.1:80"), a("10.0.0.2:80")];
        let found = [a("10.0.0.2:80"), a("10.0.0.3:80")];
        let members = merge(&fixed, &found);
        assert_eq!(
            members,
            vec![a("10.0.0.1:80"), a("10.0.0.2:80"), a("10.0.0.3:80")]
        );
        assert_eq!(discovered_part(&fixed, &members), vec![a("10.0.0.3:80")]);
        assert_eq!(merge(&[], &found), found.to_vec());
    }
}
