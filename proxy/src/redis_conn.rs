//! One way to reach Redis for every part of the gateway that uses it (revocation bus and
//! shared cache, rate limits, the request-log stream), whatever the deployment: one server,
//! a master found through Sentinel, or a Cluster.
//!
//! [`RedisConnector`] is made once from the configuration (no I/O). `connect` hands out a
//! [`RedisConnection`]: cheap to clone, usable wherever the client library takes a
//! `redis::aio::ConnectionLike` (commands, scripts). Callers keep their own time limits and
//! drop a connection after an error that [`must_reconnect`] names; the next `connect` asks
//! the sentinels again, so a Sentinel failover is followed by the next connection. A Cluster
//! connection follows MOVED/ASK and slot changes by itself.
//!
//! `subscribe` gives a pub/sub connection. In a Cluster, PUBLISH reaches every node, so one
//! reachable node is enough; each call starts from the next seed node, so a subscriber whose
//! node went away moves on to another.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{
    SentinelClient, SentinelClientBuilder, SentinelNodeConnectionInfo, SentinelServerType,
};
use redis::{
    AsyncConnectionConfig, ClientTlsConfig, Cmd, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, RedisFuture, TlsCertificates, TlsMode, Value,
};
use tokio::sync::Mutex;

use crate::config::{MasterAuth, RedisConfig, RedisTls, RedisTopology};

/// The longest wait for one TCP connection (to a server, a sentinel or a cluster node).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RedisConnError {
    #[error("redis configuration: {0}")]
    Config(RedisError),
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis: no cluster node reachable for pub/sub")]
    NoNode,
}

enum Kind {
    Standalone(redis::Client),
    /// The client caches its connections to the sentinels; it needs `&mut` to ask them.
    Sentinel(Mutex<SentinelClient>),
    Cluster {
        nodes: Vec<String>,
        /// Where the next pub/sub subscription starts looking.
        next: AtomicUsize,
        certs: Option<TlsCertificates>,
    },
}

/// `redis.tls` in the client library's form; `None`: the system's roots, no client
/// certificate (still TLS for `rediss://` addresses).
fn certificates(tls: &RedisTls) -> Option<TlsCertificates> {
    (!tls.is_empty()).then(|| TlsCertificates {
        client_tls: tls.client_pem.as_ref().map(|(cert, key)| ClientTlsConfig {
            client_cert: cert.clone(),
            client_key: key.clone(),
        }),
        root_cert: tls.ca_pem.clone(),
    })
}

/// A client for one server, over TLS with `certs` when given.
fn client(url: &str, certs: Option<&TlsCertificates>) -> Result<redis::Client, RedisError> {
    match certs {
        Some(c) => redis::Client::build_with_tls(url, c.clone()),
        None => redis::Client::open(url),
    }
}

fn cluster_builder(nodes: &[String], certs: Option<&TlsCertificates>) -> ClusterClientBuilder {
    let builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str));
    match certs {
        Some(c) => builder.certs(c.clone()),
        None => builder,
    }
}

/// Sentinels at `nodes` naming `master`, reached with `auth` when given. With `tls` (some
/// sentinel is `rediss://`), the master is reached over TLS too, both with `certs` when
/// given, and the first node's user and password are the sentinels'.
fn sentinel_client(
    master: &str,
    nodes: &[String],
    auth: Option<&MasterAuth>,
    tls: bool,
    certs: Option<&TlsCertificates>,
) -> Result<SentinelClient, RedisError> {
    if !tls {
        let to_master = auth.map(|a| {
            let mut info = RedisConnectionInfo::default().set_password(&a.password);
            if let Some(user) = &a.username {
                info = info.set_username(user);
            }
            SentinelNodeConnectionInfo::default().set_redis_connection_info(info)
        });
        return SentinelClient::build(
            nodes.iter().map(String::as_str).collect(),
            master,
            to_master,
            SentinelServerType::Master,
        );
    }
    let infos = nodes
        .iter()
        .map(|n| n.as_str().into_connection_info())
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder = SentinelClientBuilder::new(
        infos.iter().map(|i| i.addr().clone()),
        master,
        SentinelServerType::Master,
    )?
    .set_client_to_sentinel_tls_mode(TlsMode::Secure)
    .set_client_to_redis_tls_mode(TlsMode::Secure);
    if let Some(first) = infos.first() {
        let settings = first.redis_settings();
        if let Some(user) = settings.username() {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_sentinel_password(password);
        }
    }
    if let Some(a) = auth {
        builder = builder.set_client_to_redis_password(&a.password);
        if let Some(user) = &a.username {
            builder = builder.set_client_to_redis_username(user);
        }
    }
    if let Some(certs) = certs {
        builder = builder
            .set_client_to_sentinel_certificates(certs.clone())
            .set_client_to_redis_certificates(certs.clone());
    }
    builder.build()
}

/// Made from `redis:` in the configuration; hands out connections.
pub struct RedisConnector {
    kind: Kind,
}

impl RedisConnector {
    /// Check the addresses (no I/O).
    pub fn new(cfg: &RedisConfig) -> Result<RedisConnector, RedisConnError> {
        let certs = certificates(&cfg.tls);
        let kind = match &cfg.topology {
            RedisTopology::Standalone { url } => {
                Kind::Standalone(client(url, certs.as_ref()).map_err(RedisConnError::Config)?)
            }
            RedisTopology::Sentinel {
                master,
                nodes,
                master_auth,
            } => Kind::Sentinel(Mutex::new(
                sentinel_client(
                    master,
                    nodes,
                    master_auth.as_ref(),
                    cfg.topology.uses_tls(),
                    certs.as_ref(),
                )
                .map_err(RedisConnError::Config)?,
            )),
            RedisTopology::Cluster { nodes } => {
                cluster_builder(nodes, certs.as_ref())
                    .build()
                    .map_err(RedisConnError::Config)?;
                Kind::Cluster {
                    nodes: nodes.clone(),
                    next: AtomicUsize::new(0),
                    certs,
                }
            }
        };
        Ok(RedisConnector { kind })
    }

    /// A new connection whose replies time out after `response_timeout` (a blocking read
    /// needs its block time more than that).
    pub async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<RedisConnection, RedisConnError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        Ok(match &self.kind {
            Kind::Standalone(client) => RedisConnection::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            ),
            Kind::Sentinel(client) => RedisConnection::Single(
                client
                    .lock()
                    .await
                    .get_async_connection_with_config(&config)
                    .await?,
            ),
            Kind::Cluster { nodes, certs, .. } => RedisConnection::Cluster(
                cluster_builder(nodes, certs.as_ref())
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(response_timeout)
                    .build()
                    .map_err(RedisConnError::Config)?
                    .get_async_connection()
                    .await?,
            ),
        })
    }

    /// A pub/sub connection (not subscribed to anything yet).
    pub async fn subscriber(&self) -> Result<PubSub, RedisConnError> {
        match &self.kind {
            Kind::Standalone(client) => Ok(client.get_async_pubsub().await?),
            Kind::Sentinel(client) => {
                let master = client.lock().await.async_get_client().await?;
                Ok(master.get_async_pubsub().await?)
            }
            Kind::Cluster { nodes, next, certs } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                let mut last = None;
                for i in 0..nodes.len() {
                    let node = &nodes[(start + i) % nodes.len()];
                    let client = client(node, certs.as_ref());
                    let attempt = match client {
                        Ok(c) => tokio::time::timeout(CONNECT_TIMEOUT, c.get_async_pubsub()).await,
                        Err(e) => Ok(Err(e)),
                    };
                    match attempt {
                        Ok(Ok(p)) => return Ok(p),
                        Ok(Err(e)) => {
                            tracing::debug!(node = %node, error = %e, "redis pub/sub: node unreachable");
                            last = Some(e);
                        }
                        Err(_) => tracing::debug!(node = %node, "redis pub/sub: connect timed out"),
                    }
                }
                Err(last
                    .map(RedisConnError::Redis)
                    .unwrap_or(RedisConnError::NoNode))
            }
        }
    }
}

/// A connection to one server (standalone or the Sentinel master) or to a Cluster.
#[derive(Clone)]
pub enum RedisConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// Should the caller drop its connection and make a new one? Yes for a broken connection,
/// and for the replies a demoted or unready master gives (READONLY, MASTERDOWN), so that a
/// Sentinel failover leads to the new master. A plain command error (a reply such as
/// BUSYGROUP) leaves the connection usable.
pub fn must_reconnect(e: &RedisError) -> bool {
    e.code().is_none()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                | ErrorKind::Server(redis::ServerErrorKind::MasterDown)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(topology: RedisTopology) -> RedisConfig {
        RedisConfig {
            topology,
            prefix: "t".into(),
            tls: RedisTls::default(),
        }
    }

    #[test]
    fn every_topology_builds_without_io() {
        for t in [
            RedisTopology::Standalone {
                url: "redis://127.0.0.1:1".into(),
            },
            RedisTopology::Sentinel {
                master: "m".into(),
                nodes: vec!["redis://127.0.0.1:1".into()],
                master_auth: None,
            },
            RedisTopology::Cluster {
                nodes: vec!["redis://127.0.0.1:1".into(), "redis://127.0.0.1:2".into()],
            },
        ] {
            assert!(RedisConnector::new(&cfg(t)).is_ok());
        }
        assert!(RedisConnector::new(&cfg(RedisTopology::Standalone {
            url: "http://x".into()
        }))
        .is_err());
    }

    #[test]
    fn tls_topologies_build_with_their_certificates() {
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let ca = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .and_then(|p| p.self_signed(&key))
            .unwrap_or_else(|e| panic!("{e}"))
            .pem()
            .into_bytes();
        let tls = RedisTls {
            ca_pem: Some(ca.clone()),
            client_pem: Some((ca, key.serialize_pem().into_bytes())),
        };
        for t in [
            RedisTopology::Standalone {
                url: "rediss://127.0.0.1:1".into(),
            },
            RedisTopology::Sentinel {
                master: "m".into(),
                nodes: vec!["rediss://:secret@127.0.0.1:1".into()],
                master_auth: Some(MasterAuth {
                    username: Some("gateway".into()),
                    password: "master-secret".into(),
                }),
            },
            RedisTopology::Cluster {
                nodes: vec!["rediss://127.0.0.1:1".into()],
            },
        ] {
            let mut c = cfg(t.clone());
            c.tls = tls.clone();
            assert!(RedisConnector::new(&c).is_ok(), "{t:?}");
            c.tls.ca_pem = Some(b"-----BEGIN CERTIFICATE-----\nnot base64\n".to_vec());
            assert!(RedisConnector::new(&c).is_err(), "bad CA accepted: {t:?}");
        }
    }

    #[tokio::test]
    async fn a_standalone_connection_runs_commands_and_scripts() {
        let c = RedisConnector::new(&cfg(RedisTopology::Standalone {
            url: "redis://127.0.0.1:6379".into(),
        }))
        .unwrap();
        let mut conn = c
            .connect(Duration::from_secs(1))
            .await
            .expect("Redis at 127.0.0.1:6379 (scripts/services starts it)");
        let key = format!("redis-conn-test:{{{}}}", uuid::Uuid::new_v4().simple());
        let n: i64 = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])")
            .key(&key)
            .arg(5)
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 5);
        // A command error (here BUSYGROUP) leaves the connection usable.
        let stream = format!("{key}:s");
        let mut group = redis::cmd("XGROUP");
        group
            .arg("CREATE")
            .arg(&stream)
            .arg("g")
            .arg("0")
            .arg("MKSTREAM");
        let _: () = group.query_async(&mut conn).await.unwrap();
        let busy = group.query_async::<()>(&mut conn).await.unwrap_err();
        assert_eq!(busy.code(), Some("BUSYGROUP"));
        assert!(!must_reconnect(&busy));
        let _: () = redis::cmd("DEL")
            .arg(&stream)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn unreachable_cluster_nodes_give_errors_not_hangs() {
        let c = RedisConnector::new(&cfg(RedisTopology::Cluster {
            nodes: vec!["redis://127.0.0.1:1".into(), "redis://127.0.0.1:2".into()],
        }))
        .unwrap();
        assert!(c.subscriber().await.is_err());
        let r = tokio::time::timeout(Duration::from_secs(30), c.connect(Duration::from_secs(1)))
            .await
            .expect("cluster connect gives up");
        assert!(r.is_err());
    }

    /// A Cluster subscriber skips a node it cannot reach and listens on the next one (any
    /// server answers SUBSCRIBE; the one at 6379 stands in for a live cluster node here).
    #[tokio::test]
    async fn a_cluster_subscriber_moves_past_a_dead_node() {
        let c = RedisConnector::new(&cfg(RedisTopology::Cluster {
            nodes: vec![
                "redis://127.0.0.1:1".into(),
                "redis://127.0.0.1:6379".into(),
            ],
        }))
        .unwrap();
        // Each call starts one node further: both orders must end on the live node.
        for _ in 0..2 {
            let mut sub = c
                .subscriber()
                .await
                .expect("Redis at 127.0.0.1:6379 (scripts/services starts it)");
            let channel = format!("redis-conn-test-{}", uuid::Uuid::new_v4().simple());
            sub.subscribe(&channel).await.unwrap();
            let mut publisher = redis::Client::open("redis://127.0.0.1:6379")
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg("hello")
                .query_async(&mut publisher)
                .await
                .unwrap();
            let mut stream = sub.on_message();
            let msg = tokio::time::timeout(
                Duration::from_secs(5),
                futures::StreamExt::next(&mut stream),
            )
            .await
            .expect("message within 5 s")
            .expect("stream open");
            assert_eq!(msg.get_payload_bytes(), b"hello");
        }
    }

    #[test]
    fn readonly_replies_and_broken_connections_mean_reconnect() {
        let readonly = RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "READONLY",
        ));
        assert!(must_reconnect(&readonly));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(must_reconnect(&io));
    }
}
