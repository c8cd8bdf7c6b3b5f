//! The gateway on Redis behind Sentinel (a master, its replica and one sentinel, started by
//! the test): the shared limit counts on the master the sentinel names, and after a
//! failover the gateway finds the new master by itself and the count goes on exactly.

mod common;

use std::time::{Duration, Instant};

use common::db::unique_name;
use common::redis_servers::{cli, RedisServers};
use common::*;

const MASTER: &str = "gwmaster";

fn limit_keys(port: u16, prefix: &str) -> usize {
    cli(port, &["--scan", "--pattern", &format!("{prefix}:rl:*")])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

#[tokio::test]
async fn a_limit_on_a_sentinel_master_stays_exact_across_a_failover() {
    let servers = RedisServers::sentinel(MASTER);
    let (master, replica) = (servers.ports[0], servers.ports[1]);
    let sentinel = servers.sentinel.unwrap_or_default();
    let prefix = unique_name("rls");
    let extra = format!(
        "redis:\n  sentinel:\n    master: {MASTER}\n    nodes: [\"redis://127.0.0.1:{sentinel}\"]\n  prefix: \"{prefix}\"\nrate_limits:\n  defaults: false\n  redis_timeout: 500ms\n  policies:\n    shared: {{ key: [ip], rate: 10/h, backend: redis, on_redis_error: deny }}\n"
    );
    let (port, admin) = (free_port(), free_port());
    let gw = Gateway::start_with(&spawn_pool_config(port, admin, 1, &extra), port, admin).await;
    gw.wait_redis_up().await;
    let http = reqwest::Client::new();
    for i in 0..5 {
        assert_eq!(init_status(&http, &gw.url(), &[]).await, 200, "request {i}");
    }
    assert_eq!(limit_keys(master, &prefix), 1, "the limit is on the master");

    // Fail over: the replica becomes master, the old master its replica.
    assert!(
        cli(sentinel, &["SENTINEL", "FAILOVER", MASTER]).contains("OK"),
        "SENTINEL FAILOVER refused"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while servers.current_master(MASTER) != Some(replica)
        || !cli(master, &["INFO", "replication"]).contains("role:slave")
    {
        assert!(Instant::now() < deadline, "the failover did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Requests go on: while the gateway moves over, `on_redis_error: deny` refuses; once on
    // the new master the count continues from the replicated state, so exactly 5 more pass.
    let mut allowed_after = 0;
    let mut refused_after_limit = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused_after_limit < 5 && Instant::now() < deadline {
        match init_status(&http, &gw.url(), &[]).await {
            200 => allowed_after += 1,
            429 if allowed_after >= 5 => refused_after_limit += 1,
            429 => {}
            other => panic!("status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        allowed_after,
        5,
        "the shared count went on exactly on the new master; log:\n{}",
        gw.log_text()
    );
    assert_eq!(refused_after_limit, 5, "the limit holds after the failover");
    assert_eq!(
        limit_keys(replica, &prefix),
        1,
        "the new master holds the limit"
    );
    assert!(
        gw.metrics()
            .await
            .contains("mcp_gateway_ratelimit_redis_down 0"),
        "back on Redis"
    );
}

/// A master that asks for a password: the gateway reaches it with `master_password_env`;
/// without it, Redis counts as down and the warning says why.
#[tokio::test]
async fn a_master_with_a_password_is_reached_with_master_password_env() {
    const PASSWORD: &str = "master-pass-for-test";
    std::env::set_var("MCP_TEST_REDIS_MASTER_PASSWORD", PASSWORD);
    let servers = RedisServers::sentinel_with_password("authmaster", PASSWORD);
    let master = servers.ports[0];
    let sentinel = servers.sentinel.unwrap_or_default();
    for with_password in [true, false] {
        let prefix = unique_name("rlsa");
        let auth = if with_password {
            ", master_password_env: MCP_TEST_REDIS_MASTER_PASSWORD"
        } else {
            ""
        };
        let extra = format!(
            "redis:\n  sentinel: {{ master: authmaster, nodes: [\"redis://127.0.0.1:{sentinel}\"]{auth} }}\n  prefix: \"{prefix}\"\nrate_limits:\n  defaults: false\n  redis_timeout: 500ms\n  policies:\n    shared: {{ key: [ip], rate: 3/h, backend: redis, on_redis_error: local }}\n"
        );
        let (port, admin) = (free_port(), free_port());
        let gw = Gateway::start_with(&spawn_pool_config(port, admin, 1, &extra), port, admin).await;
        let http = reqwest::Client::new();
        if with_password {
            gw.wait_redis_up().await;
            let mut statuses = Vec::new();
            for _ in 0..4 {
                statuses.push(init_status(&http, &gw.url(), &[]).await);
            }
            assert_eq!(statuses, [200, 200, 200, 429]);
            let keys = cli(
                master,
                &[
                    "-a",
                    PASSWORD,
                    "--no-auth-warning",
                    "--scan",
                    "--pattern",
                    &format!("{prefix}:rl:*"),
                ],
            );
            assert_eq!(keys.lines().filter(|l| !l.trim().is_empty()).count(), 1);
        } else {
            let log = gw.wait_redis_refused();
            assert!(
                log.contains("NOAUTH") || log.contains("uthentication"),
                "{log}"
            );
            assert_eq!(gw.redis_down().await, Some(1));
        }
    }
}
