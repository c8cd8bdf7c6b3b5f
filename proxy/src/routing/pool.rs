//! A pool is a fixed set of worker slots. Each slot has an endpoint (address and process
//! instance, swapped when a spawned worker restarts), a health flag and an in-flight count.
//!
//! Balancers are written here rather than taken from pingora-load-balancing: least
//! connections needs a per-worker in-flight count, passive ejection and session affinity
//! need per-worker state that survives restarts, and pingora-load-balancing rebuilds its
//! selector from a backend set without either (see docs/decisions.md).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Balance, PoolConfig, PoolSource};

/// Where a worker listens now, and which process instance that is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `addr` as text, as sealed into session ids.
    pub addr_text: String,
    /// Random per spawned process; 0 for remote workers.
    pub instance: u64,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, instance: u64) -> Endpoint {
        Endpoint {
            addr,
            addr_text: addr.to_string(),
            instance,
        }
    }
}

#[derive(Debug)]
pub struct Worker {
    /// Stable name: `<pool>-<slot>`.
    pub id: String,
    endpoint: ArcSwap<Endpoint>,
    healthy: AtomicBool,
    inflight: AtomicUsize,
    failures: AtomicU32,
    pub restarts: AtomicU64,
    /// Sessions the gateway sealed for this worker (since the gateway started).
    pub sessions_opened: AtomicU64,
}

impl Worker {
    pub fn new(id: String, endpoint: Endpoint, healthy: bool) -> Worker {
        Worker {
            id,
            endpoint: ArcSwap::from_pointee(endpoint),
            healthy: AtomicBool::new(healthy),
            inflight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            restarts: AtomicU64::new(0),
            sessions_opened: AtomicU64::new(0),
        }
    }

    pub fn endpoint(&self) -> Arc<Endpoint> {
        self.endpoint.load_full()
    }

    pub fn set_endpoint(&self, e: Endpoint) {
        self.endpoint.store(Arc::new(e));
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
        if healthy {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A failed check or connect; returns true when this ejected the worker.
    pub fn record_failure(&self, threshold: u32) -> bool {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= threshold && self.is_healthy() {
            self.healthy.store(false, Ordering::Release);
            return true;
        }
        false
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// Counts a request against a worker while it lives.
#[derive(Debug)]
pub struct InflightGuard(Arc<Worker>);

impl InflightGuard {
    pub fn new(w: Arc<Worker>) -> InflightGuard {
        w.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(w)
    }

    pub fn worker(&self) -> &Arc<Worker> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub config: PoolConfig,
    pub workers: Vec<Arc<Worker>>,
    next: AtomicUsize,
    /// A worker failed an h2c stream with an HTTP/2 error: warned once (`h2c_streams`).
    pub h2c_warned: std::sync::atomic::AtomicBool,
}

impl Pool {
    pub fn new(config: PoolConfig, workers: Vec<Arc<Worker>>) -> Pool {
        Pool {
            name: config.name.clone(),
            config,
            workers,
            next: AtomicUsize::new(0),
            h2c_warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn healthy_count(&self) -> usize {
        self.workers.iter().filter(|w| w.is_healthy()).count()
    }

    /// The worker a sealed session names, if it is still that same process.
    pub fn find(&self, addr: &str, instance: u64) -> Option<&Arc<Worker>> {
        self.workers.iter().find(|w| {
            let e = w.endpoint.load();
            e.addr_text == addr && e.instance == instance
        })
    }

    /// The worker a sealed session names. In a remote pool, an address this replica does not
    /// list (yet, or any more) is still served: the seal proves a replica sharing the key
    /// chose it, which happens while replicas roll out a new member list or re-resolve DNS at
    /// different moments. The worker is reached directly, outside balancing; if it is gone,
    /// the connect fails and the client is told its session is gone. Spawned workers are
    /// never reached this way (their addresses are this replica's own).
    pub fn find_sealed(&self, addr: &str, instance: u64) -> Option<Arc<Worker>> {
        if let Some(w) = self.find(addr, instance) {
            return Some(w.clone());
        }
        if instance != 0 || !matches!(self.config.source, PoolSource::Remote(_)) {
            return None;
        }
        let sock: SocketAddr = addr.parse().ok()?;
        Some(Arc::new(Worker::new(
            format!("{}-{addr}", self.name),
            Endpoint::new(sock, 0),
            true,
        )))
    }

    /// Pick a healthy worker not in `exclude` (slots already tried for this request).
    /// `key` feeds the consistent hash.
    pub fn select(&self, key: u64, exclude: &[usize]) -> Option<usize> {
        let n = self.workers.len();
        if n == 0 {
            return None;
        }
        let usable = |i: &usize| self.workers[*i].is_healthy() && !exclude.contains(i);
        match self.config.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(usable)
            }
            Balance::LeastConnections => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(usable)
                    .min_by_key(|i| self.workers[*i].inflight())
            }
            Balance::HashClient => (0..n)
                .filter(usable)
                .max_by_key(|i| rendezvous(key, &self.workers[*i].id)),
        }
    }
}

/// Highest-random-weight hashing: a worker leaving moves only its own keys.
fn rendezvous(key: u64, worker: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    worker.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HealthConfig, HealthKind};
    use std::time::Duration;

    fn pool(balance: Balance, n: usize) -> Pool {
        let cfg = PoolConfig {
            name: "p".into(),
            source: PoolSource::Remote(vec![]),
            balance,
            health: HealthConfig {
                kind: HealthKind::Tcp,
                path: "/".into(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                unhealthy_after: 2,
            },
            connect_timeout: Duration::from_secs(1),
            read_timeout: None,
            idle_timeout: Duration::from_secs(1),
            h2c_streams: false,
            discovery: None,
        };
        let workers = (0..n)
            .map(|i| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 4000 + i).parse().unwrap();
                Arc::new(Worker::new(format!("p-{i}"), Endpoint::new(addr, 0), true))
            })
            .collect();
        Pool::new(cfg, workers)
    }

    #[test]
    fn round_robin_cycles_and_skips_unhealthy() {
        let p = pool(Balance::RoundRobin, 3);
        let picks: Vec<_> = (0..6).map(|_| p.select(0, &[]).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        p.workers[1].set_healthy(false);
        let picks: Vec<_> = (0..4).map(|_| p.select(0, &[]).unwrap()).collect();
        assert!(!picks.contains(&1));
        assert_eq!(p.select(0, &[0, 2]), None);
    }

    #[test]
    fn least_connections_prefers_idle() {
        let p = pool(Balance::LeastConnections, 3);
        let _a = InflightGuard::new(p.workers[0].clone());
        let _b = InflightGuard::new(p.workers[1].clone());
        for _ in 0..5 {
            assert_eq!(p.select(0, &[]), Some(2));
        }
        drop(_a);
        assert_ne!(p.select(0, &[]), Some(1));
    }

    #[test]
    fn hash_is_stable_and_moves_only_lost_keys() {
        let p = pool(Balance::HashClient, 4);
        let before: Vec<_> = (0..200u64).map(|k| p.select(k, &[]).unwrap()).collect();
        let again: Vec<_> = (0..200u64).map(|k| p.select(k, &[]).unwrap()).collect();
        assert_eq!(before, again);
        assert!(
            (0..4).all(|w| before.contains(&w)),
            "every worker gets keys"
        );
        p.workers[2].set_healthy(false);
        for (k, b) in before.iter().enumerate() {
            let now = p.select(k as u64, &[]).unwrap();
            if *b != 2 {
                assert_eq!(now, *b, "key {k} moved although its worker stayed");
            } else {
                assert_ne!(now, 2);
            }
        }
    }

    #[test]
    fn sealed_members_of_remote_pools_are_reached_even_when_not_listed() {
        let p = pool(Balance::RoundRobin, 1);
        let listed = p.find_sealed("127.0.0.1:4000", 0).unwrap();
        assert!(Arc::ptr_eq(&listed, &p.workers[0]));
        let other = p.find_sealed("127.0.0.1:4999", 0).unwrap();
        assert_eq!(other.endpoint().addr_text, "127.0.0.1:4999");
        assert_eq!(other.id, "p-127.0.0.1:4999");
        assert!(
            p.find_sealed("127.0.0.1:4999", 7).is_none(),
            "spawned instance"
        );
        assert!(p.find_sealed("not an address", 0).is_none());
        let mut spawned = pool(Balance::RoundRobin, 1);
        spawned.config.source = PoolSource::Spawn(crate::config::SpawnConfig {
            command: vec![],
            count: 1,
            env: vec![],
            ready_timeout: Duration::from_secs(1),
            stop_grace: Duration::from_secs(1),
        });
        assert!(spawned.find_sealed("127.0.0.1:4999", 0).is_none());
        assert!(spawned.find_sealed("127.0.0.1:4000", 0).is_some());
    }

    #[test]
    fn failures_eject_after_threshold_and_find_checks_instance() {
        let p = pool(Balance::RoundRobin, 1);
        let w = &p.workers[0];
        assert!(!w.record_failure(2));
        assert!(w.is_healthy());
        assert!(w.record_failure(2));
        assert!(!w.is_healthy());
        w.set_healthy(true);
        assert!(p.find("127.0.0.1:4000", 0).is_some());
        assert!(p.find("127.0.0.1:4000", 9).is_none());
        assert!(p.find("127.0.0.1:4001", 0).is_none());
    }
}
