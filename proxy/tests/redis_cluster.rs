//! The gateway on a real Redis Cluster (three `redis-server --cluster-enabled yes` nodes
//! started by the test): a shared rate limit is exact across two gateway processes, request
//! records travel through the stream into the database, and a revocation made on one
//! gateway is enforced by the other.

mod common;

use std::time::{Duration, Instant};

use common::db::{unique_name, SqliteDb};
use common::redis_servers::RedisServers;
use common::*;

/// The `redis:` section for the cluster.
fn redis_section(cluster: &RedisServers, prefix: &str) -> String {
    let nodes: Vec<String> = cluster
        .cluster_urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    format!(
        "redis:\n  cluster:\n    nodes: [{}]\n  prefix: \"{prefix}\"\n",
        nodes.join(", ")
    )
}

async fn start(extra: &str) -> Gateway {
    let (port, admin) = (free_port(), free_port());
    Gateway::start_with(&spawn_pool_config(port, admin, 1, extra), port, admin).await
}

/// Keys matching `pattern` on every node of the cluster.
fn keys_on_nodes(cluster: &RedisServers, pattern: &str) -> Vec<usize> {
    cluster
        .ports
        .iter()
        .map(|p| {
            redis_servers::cli(*p, &["--scan", "--pattern", pattern])
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        })
        .collect()
}

#[tokio::test]
async fn a_shared_limit_is_exact_across_two_gateways_on_a_cluster() {
    let cluster = RedisServers::cluster();
    let prefix = unique_name("rlc");
    // One policy keyed by address: every request of this test counts against one key.
    let extra = format!(
        "{}rate_limits:\n  defaults: false\n  # Sharing is under test, not slowness.\n  redis_timeout: 500ms\n  policies:\n    shared: {{ key: [ip], rate: 20/h, backend: redis, on_redis_error: deny }}\n",
        redis_section(&cluster, &prefix)
    );
    let g1 = start(&extra).await;
    let g2 = start(&extra).await;
    g1.wait_redis_up().await;
    g2.wait_redis_up().await;
    let http = reqwest::Client::new();
    let mut allowed = 0;
    let mut limited = 0;
    for i in 0..60 {
        let gw = if i % 2 == 0 { &g1 } else { &g2 };
        match init_status(&http, &gw.url(), &[]).await {
            200 => allowed += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}; log:\n{}", gw.log_text()),
        }
    }
    assert_eq!(allowed, 20, "exactly the shared limit passes");
    assert_eq!(limited, 40);
    // The limit lives in the cluster: one key, on exactly one node.
    let per_node = keys_on_nodes(&cluster, &format!("{prefix}:rl:*"));
    assert_eq!(per_node.iter().sum::<usize>(), 1, "{per_node:?}");
    for gw in [&g1, &g2] {
        let m = gw.metrics().await;
        let fell_back = m
            .lines()
            .filter(|l| l.starts_with("mcp_gateway_ratelimit_decisions_total{outcome=\"redis_down"))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum::<f64>();
        assert_eq!(fell_back, 0.0, "no check fell back to on_redis_error: {m}");
    }
}

#[tokio::test]
async fn request_records_travel_through_a_stream_on_the_cluster() {
    const N: usize = 20;
    let cluster = RedisServers::cluster();
    let db = SqliteDb::new("redis_cluster_logs");
    let prefix = unique_name("lsc");
    let spool = temp_path("spool");
    let extra = format!(
        "database: {{ url: \"{}\" }}\nlogging:\n  spool_dir: \"{}\"\n  batch_interval: 50ms\n{}",
        db.url(),
        spool.display(),
        redis_section(&cluster, &prefix)
    );
    let g1 = start(&extra).await;
    let g2 = start(&extra).await;
    let http = reqwest::Client::new();
    let tag = unique_name("c");
    for i in 0..N {
        let gw = if i % 2 == 0 { &g1 } else { &g2 };
        let id = format!("{tag}-{i}");
        assert_eq!(
            init_status(&http, &gw.url(), &[("x-request-id", &id)]).await,
            200
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while Instant::now() < deadline {
        n = common::db::count_log_rows(&db.url(), &tag).await;
        if n >= N as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, N as i64, "rows; gateway log:\n{}", g1.log_text());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        common::db::count_log_rows(&db.url(), &tag).await,
        N as i64,
        "no second copy"
    );
    // The records went through the cluster's stream (not straight to the database).
    let stream = format!("{{{prefix}:request-logs}}");
    let lens: Vec<i64> = cluster
        .ports
        .iter()
        .map(|p| {
            redis_servers::cli(*p, &["XLEN", &stream])
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .collect();
    assert!(lens.iter().sum::<i64>() >= 1, "stream lengths {lens:?}");
    assert_eq!(
        lens.iter().filter(|l| **l > 0).count(),
        1,
        "one stream, one node: {lens:?}"
    );
    for gw in [&g1, &g2] {
        let m = gw.metrics().await;
        assert!(
            m.contains("mcp_gateway_log_shipped_total{sink=\"redis\"}"),
            "batches shipped to Redis: {m}"
        );
    }
}

#[tokio::test]
async fn a_revocation_on_one_gateway_reaches_the_other_through_the_cluster() {
    std::env::set_var(
        "MCP_GATEWAY_CREDENTIALS_KEY",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    let cluster = RedisServers::cluster();
    let db = SqliteDb::new("redis_cluster_identity");
    let prefix = unique_name("idc");
    let (pa, aa, pb, ab) = (free_port(), free_port(), free_port(), free_port());
    let extra = |public: u16| {
        format!(
            "public_url: http://127.0.0.1:{public}\ndatabase: {{ url: \"{}\" }}\nidentity: {{}}\n{}",
            db.url(),
            redis_section(&cluster, &prefix)
        )
    };
    let a = Gateway::start_with(&spawn_pool_config(pa, aa, 1, &extra(pa)), pa, aa).await;
    // Same public URL: one issuer and audience for both.
    let b = Gateway::start_with(&spawn_pool_config(pb, ab, 1, &extra(pa)), pb, ab).await;
    let base_a = format!("http://127.0.0.1:{pa}");
    let http = reqwest::Client::new();
    let (_, token) = register_and_login(&base_a, "ida@example.test").await;
    let (id, key) = create_api_key(&base_a, &token, "cluster-test").await;
    // B accepts the key (and caches the lookup, in memory and in the cluster).
    assert_eq!(
        init_status(&http, &b.url(), &[("x-api-key", &key)]).await,
        200
    );
    assert_eq!(
        init_status(&http, &b.url(), &[("x-api-key", &key)]).await,
        200
    );
    let cached = keys_on_nodes(&cluster, &format!("{prefix}:apikey:*"));
    assert_eq!(cached.iter().sum::<usize>(), 1, "shared entry: {cached:?}");
    // Both subscribers are listening before the revocation is published.
    for gw in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(10), || gw
                .log_text()
                .contains("listening for revocations")),
            "no subscription; log:\n{}",
            gw.log_text()
        );
    }
    revoke_api_key(&base_a, &token, &id).await;
    assert_eq!(
        init_status(&http, &a.url(), &[("x-api-key", &key)]).await,
        401
    );
    let start = Instant::now();
    let mut refused = false;
    while start.elapsed() < Duration::from_secs(1) {
        if init_status(&http, &b.url(), &[("x-api-key", &key)]).await == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "B still accepts a key revoked on A after 1 s (its 30 s cache would); B log:\n{}",
        b.log_text()
    );
}
