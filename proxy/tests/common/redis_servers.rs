//! Throwaway Redis deployments for tests: a three-node Redis Cluster, and a master with a
//! replica and one Sentinel. Each server runs from `redis-server` on free ports with its
//! files in a temporary directory; all are killed (and the directory removed) on drop, also
//! when the test panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::db::unique_name;
use super::free_port;

/// The Redis processes of one test.
pub struct RedisServers {
    pub dir: PathBuf,
    children: Vec<Child>,
    /// Ports of the data nodes (cluster nodes, or master then replica).
    pub ports: Vec<u16>,
    /// Port of the sentinel, if any.
    pub sentinel: Option<u16>,
}

impl Drop for RedisServers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p port args…`: its standard output (empty when it failed).
pub fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} within {limit:?}");
}

impl RedisServers {
    fn new(name: &str) -> RedisServers {
        let dir = std::env::temp_dir().join(unique_name(name));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir: {e}"));
        RedisServers {
            dir,
            children: Vec::new(),
            ports: Vec::new(),
            sentinel: None,
        }
    }

    fn spawn(&mut self, args: &[String]) {
        let child = Command::new("redis-server")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server (scripts/services installs it): {e}"));
        self.children.push(child);
    }

    fn wait_ping(port: u16) {
        wait_for(
            Duration::from_secs(10),
            &format!("redis-server on {port} answers PING"),
            || cli(port, &["PING"]).trim() == "PONG",
        );
    }

    /// Three masters, no replicas, all 16384 slots assigned; returns once every node
    /// reports `cluster_state:ok`.
    pub fn cluster() -> RedisServers {
        let mut s = RedisServers::new("redis_cluster");
        for i in 0..3 {
            let (port, bus) = (free_port(), free_port());
            let args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-config-file",
                &format!("nodes-{i}.conf"),
                "--dir",
                &s.dir.display().to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            s.spawn(&args);
            s.ports.push(port);
        }
        for p in s.ports.clone() {
            Self::wait_ping(p);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for p in &s.ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for p in s.ports.clone() {
            wait_for(
                Duration::from_secs(20),
                &format!("cluster node {p} reports cluster_state:ok"),
                || cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"),
            );
        }
        s
    }

    pub fn cluster_urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// A master, a replica of it, and one sentinel watching the master as `master_name`
    /// (quorum 1, so this sentinel alone can fail over).
    pub fn sentinel(master_name: &str) -> RedisServers {
        let mut s = RedisServers::new("redis_sentinel");
        let (master, replica, sentinel) = (free_port(), free_port(), free_port());
        for port in [master, replica] {
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                &s.dir.display().to_string(),
                "--dbfilename",
                &format!("dump-{port}.rdb"),
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            if port == replica {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            }
            s.spawn(&args);
            Self::wait_ping(port);
        }
        wait_for(
            Duration::from_secs(20),
            "the replica is in sync with the master",
            || cli(replica, &["INFO", "replication"]).contains("master_link_status:up"),
        );
        // A sentinel rewrites its configuration file, so it gets one of its own.
        let conf = s.dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {master_name} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {master_name} 1000\n\
                 sentinel failover-timeout {master_name} 10000\n",
                dir = s.dir.display()
            ),
        )
        .unwrap_or_else(|e| panic!("sentinel.conf: {e}"));
        s.spawn(&[conf.display().to_string(), "--sentinel".into()]);
        Self::wait_ping(sentinel);
        wait_for(
            Duration::from_secs(20),
            "the sentinel knows the master and its replica",
            || {
                cli(
                    sentinel,
                    &["SENTINEL", "get-master-addr-by-name", master_name],
                )
                .contains(&master.to_string())
                    && cli(sentinel, &["SENTINEL", "replicas", master_name])
                        .contains(&replica.to_string())
            },
        );
        s.ports = vec![master, replica];
        s.sentinel = Some(sentinel);
        s
    }

    /// The port the sentinel currently names as master.
    pub fn current_master(&self, master_name: &str) -> Option<u16> {
        let out = cli(
            self.sentinel?,
            &["SENTINEL", "get-master-addr-by-name", master_name],
        );
        out.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }
}
