//! Redis over TLS (`rediss://`): a real redis-server answering only TLS, with a private CA
//! and client certificates required, shared by two gateway replicas; and the two ways the
//! handshake fails (a CA the gateway was not told to trust, no client certificate).

mod common;
use common::redis_servers::{tls_cli, RedisServers, TlsFiles};
use common::*;

fn config(port: u16, admin: u16, redis_port: u16, prefix: &str, tls: &str) -> String {
    spawn_pool_config(
        port,
        admin,
        1,
        &format!(
            "redis:\n  url: \"rediss://127.0.0.1:{redis_port}\"\n  prefix: \"{prefix}\"\n  tls: {{ {tls} }}\nrate_limits:\n  defaults: false\n  redis_timeout: 500ms\n  policies:\n    shared: {{ key: [ip], rate: 20/h, backend: redis }}\n"
        ),
    )
}

fn full_tls(files: &TlsFiles) -> String {
    format!(
        "ca_file: \"{}\", cert_file: \"{}\", key_file: \"{}\"",
        files.ca.display(),
        files.client_cert.display(),
        files.client_key.display()
    )
}

async fn initialize(http: &reqwest::Client, url: &str) -> u16 {
    init_status(http, url, &[]).await
}

#[tokio::test]
async fn two_replicas_share_a_limit_in_a_tls_redis_with_client_certificates() {
    let (redis, files) = RedisServers::tls(true);
    let prefix = format!("tls-{}", uuid::Uuid::new_v4().simple());
    let (p1, a1, p2, a2) = (free_port(), free_port(), free_port(), free_port());
    let tls = full_tls(&files);
    let g1 = Gateway::start_with(&config(p1, a1, redis.ports[0], &prefix, &tls), p1, a1).await;
    let g2 = Gateway::start_with(&config(p2, a2, redis.ports[0], &prefix, &tls), p2, a2).await;
    for gw in [&g1, &g2] {
        gw.wait_redis_up().await;
    }
    let http = reqwest::Client::new();
    let mut allowed = 0;
    for i in 0..60 {
        let url = if i % 2 == 0 { g1.url() } else { g2.url() };
        if initialize(&http, &url).await == 200 {
            allowed += 1;
        }
    }
    // One limit of 20 for both replicas: it lives in the TLS Redis.
    assert_eq!(allowed, 20);
    let keys = tls_cli(
        redis.ports[0],
        &files,
        &["--scan", "--pattern", &format!("{prefix}:rl:*")],
    );
    assert!(!keys.trim().is_empty(), "no limit key in the TLS Redis");
}

#[tokio::test]
async fn an_untrusted_server_or_a_missing_client_certificate_is_redis_down() {
    let (redis, files) = RedisServers::tls(true);
    let cases = [
        (
            "a CA that did not sign the server's certificate",
            format!(
                "ca_file: \"{}\", cert_file: \"{}\", key_file: \"{}\"",
                files.other_ca.display(),
                files.client_cert.display(),
                files.client_key.display()
            ),
            "certificate",
        ),
        (
            "no client certificate",
            format!("ca_file: \"{}\"", files.ca.display()),
            "cannot connect to Redis",
        ),
    ];
    for (case, tls, says) in cases {
        let (port, admin) = (free_port(), free_port());
        let prefix = format!("tls-{}", uuid::Uuid::new_v4().simple());
        let gw = Gateway::start_with(
            &config(port, admin, redis.ports[0], &prefix, &tls),
            port,
            admin,
        )
        .await;
        let log = gw.wait_redis_refused();
        assert!(
            log.contains(says),
            "{case}: the warning does not say {says:?}:\n{log}"
        );
        assert_eq!(gw.redis_down().await, Some(1), "{case}");
        // The policy's default for a Redis outage applies; the gateway keeps serving.
        let http = reqwest::Client::new();
        assert_eq!(initialize(&http, &gw.url()).await, 200, "{case}");
        let keys = tls_cli(
            redis.ports[0],
            &files,
            &["--scan", "--pattern", &format!("{prefix}:*")],
        );
        assert!(keys.trim().is_empty(), "{case}: keys were written: {keys}");
    }
}

/// A Redis Cluster that speaks only TLS: the seed nodes and the nodes the gateway learns
/// from the slot map are all reached with the same certificates, and the limit is exact
/// across two gateways.
#[tokio::test]
async fn a_shared_limit_on_a_tls_cluster() {
    let (cluster, files) = RedisServers::tls_cluster();
    let prefix = format!("tlsc-{}", uuid::Uuid::new_v4().simple());
    // One seed node: the other two come from the cluster's slot map.
    let extra = format!(
        "redis:\n  cluster: {{ nodes: [\"rediss://127.0.0.1:{}\"] }}\n  prefix: \"{prefix}\"\n  tls: {{ {} }}\nrate_limits:\n  defaults: false\n  redis_timeout: 500ms\n  policies:\n    shared: {{ key: [ip], rate: 20/h, backend: redis, on_redis_error: deny }}\n",
        cluster.ports[0],
        full_tls(&files)
    );
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let (port, admin) = (free_port(), free_port());
        let gw = Gateway::start_with(&spawn_pool_config(port, admin, 1, &extra), port, admin).await;
        gw.wait_redis_up().await;
        gateways.push(gw);
    }
    let http = reqwest::Client::new();
    let (mut allowed, mut limited) = (0, 0);
    for i in 0..60 {
        let gw = &gateways[i % 2];
        match initialize(&http, &gw.url()).await {
            200 => allowed += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}; log:\n{}", gw.log_text()),
        }
    }
    assert_eq!((allowed, limited), (20, 40));
    let keys: usize = cluster
        .ports
        .iter()
        .map(|p| {
            tls_cli(
                *p,
                &files,
                &["--scan", "--pattern", &format!("{prefix}:rl:*")],
            )
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
        })
        .sum();
    assert_eq!(keys, 1, "the limit's one key, on one node");
}

/// Sentinels over TLS: the gateway asks a `rediss://` sentinel for the master and reaches
/// the master over TLS with the same certificates.
#[tokio::test]
async fn a_limit_on_a_master_found_through_a_tls_sentinel() {
    let (servers, files) = RedisServers::tls_sentinel("tlsmain");
    let sentinel = servers.sentinel.unwrap_or_else(|| panic!("no sentinel"));
    let prefix = format!("tlss-{}", uuid::Uuid::new_v4().simple());
    let extra = format!(
        "redis:\n  sentinel: {{ master: tlsmain, nodes: [\"rediss://127.0.0.1:{sentinel}\"] }}\n  prefix: \"{prefix}\"\n  tls: {{ {} }}\nrate_limits:\n  defaults: false\n  redis_timeout: 500ms\n  policies:\n    shared: {{ key: [ip], rate: 5/h, backend: redis, on_redis_error: deny }}\n",
        full_tls(&files)
    );
    let (port, admin) = (free_port(), free_port());
    let gw = Gateway::start_with(&spawn_pool_config(port, admin, 1, &extra), port, admin).await;
    gw.wait_redis_up().await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(initialize(&http, &gw.url()).await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    let keys = tls_cli(
        servers.ports[0],
        &files,
        &["--scan", "--pattern", &format!("{prefix}:rl:*")],
    );
    assert_eq!(keys.lines().filter(|l| !l.trim().is_empty()).count(), 1);
}
