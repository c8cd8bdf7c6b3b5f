//! Throwaway Redis deployments for tests: a three-node Redis Cluster, and a master with a
//! replica and one Sentinel. Each server runs from `redis-server` on free ports with its
//! files in a temporary directory; all are killed (and the directory removed) on drop, also
//! when the test panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::certs::{leaf, new_ca};
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
    redis_cli(port, None, args)
}

/// `redis-cli`, with `--tls` and the test CA and client certificate when `tls` is given.
fn redis_cli(port: u16, tls: Option<&TlsFiles>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    if let Some(files) = tls {
        cmd.args(files.cli_args());
    }
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
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
        let s = RedisServers::new("redis_cluster");
        s.start_cluster(None)
    }

    /// The same cluster answering only TLS, on the cluster bus too; clients need a
    /// certificate from the returned CA.
    pub fn tls_cluster() -> (RedisServers, TlsFiles) {
        let s = RedisServers::new("redis_tls_cluster");
        let files = TlsFiles::generate(&s.dir);
        (s.start_cluster(Some(&files)), files)
    }

    fn start_cluster(mut self, tls: Option<&TlsFiles>) -> RedisServers {
        let s = &mut self;
        let ask = |port: u16, args: &[&str]| redis_cli(port, tls, args);
        for i in 0..3 {
            let (port, bus) = (free_port(), free_port());
            let mut args: Vec<String> = [
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
            match tls {
                None => args.extend(["--port".to_string(), port.to_string()]),
                Some(files) => {
                    args.extend(files.server_args(port, true));
                    args.extend(["--tls-cluster".to_string(), "yes".to_string()]);
                }
            }
            s.spawn(&args);
            s.ports.push(port);
        }
        for p in s.ports.clone() {
            wait_for(
                Duration::from_secs(10),
                &format!("redis-server on {p} answers PING"),
                || ask(p, &["PING"]).trim() == "PONG",
            );
        }
        let mut create = Command::new("redis-cli");
        if let Some(files) = tls {
            create.args(files.cli_args());
        }
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
                || ask(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"),
            );
        }
        self
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
        s.start_sentinel(
            sentinel,
            master_name,
            master,
            &format!(
                "sentinel down-after-milliseconds {master_name} 1000\n\
                 sentinel failover-timeout {master_name} 10000\n"
            ),
        );
        wait_for(
            Duration::from_secs(20),
            "the sentinel knows the master's replica",
            || cli(sentinel, &["SENTINEL", "replicas", master_name]).contains(&replica.to_string()),
        );
        s.ports = vec![master, replica];
        s.sentinel = Some(sentinel);
        s
    }

    /// A master that asks for `password` (`requirepass`) and one sentinel that knows it
    /// (`sentinel auth-pass`); `ports[0]` is the master. No replica.
    pub fn sentinel_with_password(master_name: &str, password: &str) -> RedisServers {
        let mut s = RedisServers::new("redis_sentinel_auth");
        let (master, sentinel) = (free_port(), free_port());
        s.spawn(
            &[
                "--port",
                &master.to_string(),
                "--bind",
                "127.0.0.1",
                "--requirepass",
                password,
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .map(String::from),
        );
        wait_for(
            Duration::from_secs(10),
            "the master answers PING with its password",
            || cli(master, &["-a", password, "--no-auth-warning", "PING"]).trim() == "PONG",
        );
        s.start_sentinel(
            sentinel,
            master_name,
            master,
            &format!("sentinel auth-pass {master_name} {password}\n"),
        );
        s.ports = vec![master];
        s.sentinel = Some(sentinel);
        s
    }

    /// A sentinel on `port` watching `master` as `master_name` (quorum 1), with `extra`
    /// configuration lines; returns once it names the master.
    fn start_sentinel(&mut self, port: u16, master_name: &str, master: u16, extra: &str) {
        // A sentinel rewrites its configuration file, so it gets one of its own.
        let conf = self.dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {master_name} 127.0.0.1 {master} 1\n{extra}",
                dir = self.dir.display()
            ),
        )
        .unwrap_or_else(|e| panic!("sentinel.conf: {e}"));
        self.spawn(&[conf.display().to_string(), "--sentinel".into()]);
        Self::wait_ping(port);
        wait_for(
            Duration::from_secs(20),
            "the sentinel names the master",
            || {
                cli(port, &["SENTINEL", "get-master-addr-by-name", master_name])
                    .contains(&master.to_string())
            },
        );
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

/// PEM files of a throwaway CA, a server certificate it signed for 127.0.0.1 and a client
/// certificate it signed; plus a second CA that signed nothing here.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
}

impl TlsFiles {
    /// `redis-cli` arguments: TLS with this CA and the client certificate.
    fn cli_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            self.ca.clone().into(),
            "--cert".into(),
            self.client_cert.clone().into(),
            "--key".into(),
            self.client_key.clone().into(),
        ]
    }

    /// redis-server arguments: TLS only on `port`, this CA's server certificate, and client
    /// certificates required when `client_certs`.
    fn server_args(&self, port: u16, client_certs: bool) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path(&self.server_cert),
            "--tls-key-file".into(),
            path(&self.server_key),
            "--tls-ca-cert-file".into(),
            path(&self.ca),
            "--tls-auth-clients".into(),
            if client_certs { "yes" } else { "no" }.into(),
        ]
    }

    pub fn generate(dir: &std::path::Path) -> TlsFiles {
        let (ca_params, ca_key, ca_pem) = new_ca("mcp-gateway test CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let (server_cert, server_key) = leaf(&issuer, &["127.0.0.1", "localhost"], "redis", None);
        let (client_cert, client_key) = leaf(&issuer, &["gateway"], "gateway", None);
        let (_, _, other_ca) = new_ca("another CA");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
            p
        };
        TlsFiles {
            ca: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            other_ca: write("other-ca.pem", &other_ca),
        }
    }
}

impl RedisServers {
    /// One redis-server answering only TLS on `ports[0]`, with a certificate from `tls.ca`;
    /// with `client_certs`, it also asks the client for a certificate from that CA.
    pub fn tls(client_certs: bool) -> (RedisServers, TlsFiles) {
        let mut s = RedisServers::new("redis_tls");
        let files = TlsFiles::generate(&s.dir);
        let port = free_port();
        let mut args = files.server_args(port, client_certs);
        args.extend(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].map(String::from));
        s.spawn(&args);
        s.ports.push(port);
        wait_for(
            Duration::from_secs(10),
            &format!("TLS redis-server on {port} answers PING"),
            || tls_cli(port, &files, &["PING"]).trim() == "PONG",
        );
        (s, files)
    }
}

impl RedisServers {
    /// A master and one sentinel watching it as `master_name`, both answering only TLS
    /// (the sentinel reaches the master over TLS too); `ports[0]` is the master.
    pub fn tls_sentinel(master_name: &str) -> (RedisServers, TlsFiles) {
        let mut s = RedisServers::new("redis_tls_sentinel");
        let files = TlsFiles::generate(&s.dir);
        let (master, sentinel) = (free_port(), free_port());
        let tls_lines = format!(
            "port 0\nbind 127.0.0.1\ndir {dir}\ntls-cert-file {cert}\ntls-key-file {key}\n\
             tls-ca-cert-file {ca}\ntls-auth-clients yes\ntls-replication yes\n",
            dir = s.dir.display(),
            cert = files.server_cert.display(),
            key = files.server_key.display(),
            ca = files.ca.display(),
        );
        let master_conf = s.dir.join("master.conf");
        std::fs::write(
            &master_conf,
            format!("{tls_lines}tls-port {master}\nsave \"\"\nappendonly no\n"),
        )
        .unwrap_or_else(|e| panic!("master.conf: {e}"));
        s.spawn(&[master_conf.display().to_string()]);
        wait_for(
            Duration::from_secs(10),
            "the TLS master answers PING",
            || tls_cli(master, &files, &["PING"]).trim() == "PONG",
        );
        let conf = s.dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "{tls_lines}tls-port {sentinel}\nsentinel monitor {master_name} 127.0.0.1 {master} 1\n"
            ),
        )
        .unwrap_or_else(|e| panic!("sentinel.conf: {e}"));
        s.spawn(&[conf.display().to_string(), "--sentinel".into()]);
        wait_for(
            Duration::from_secs(20),
            "the TLS sentinel names the master",
            || {
                tls_cli(
                    sentinel,
                    &files,
                    &["SENTINEL", "get-master-addr-by-name", master_name],
                )
                .contains(&master.to_string())
            },
        );
        s.ports = vec![master];
        s.sentinel = Some(sentinel);
        (s, files)
    }
}

/// `redis-cli --tls` with the test CA and client certificate.
pub fn tls_cli(port: u16, files: &TlsFiles, args: &[&str]) -> String {
    redis_cli(port, Some(files), args)
}
