//! DNS discovery through the real gateway: a small DNS server runs inside the test on a free
//! UDP port and its answers change while the test runs; real `mcp-worker tools` processes
//! listen on the addresses it names. The gateway follows A records (workers join and leave,
//! an in-flight call on a leaving worker finishes, its sealed sessions end), keeps the last
//! members when resolution fails, starts a pool empty when a name does not resolve, takes
//! target and port from SRV records, follows AAAA records, and keeps discovered members
//! across a reload of the file.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::json;
use tokio::net::UdpSocket;

/// What the test DNS server answers: A, AAAA and SRV records by name (lower case, no
/// trailing dot), or SERVFAIL for everything.
#[derive(Default)]
struct Zone {
    a: HashMap<String, Vec<Ipv4Addr>>,
    aaaa: HashMap<String, Vec<Ipv6Addr>>,
    srv: HashMap<String, Vec<(u16, String)>>,
    servfail: bool,
}

struct Dns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
}

impl Dns {
    async fn start() -> Dns {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let z = zone.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let answer = answer(&query, &z.lock().unwrap());
                if let Ok(bytes) = answer.to_vec() {
                    let _ = sock.send_to(&bytes, peer).await;
                }
            }
        });
        Dns { addr, zone }
    }

    fn set_a(&self, name: &str, ips: &[Ipv4Addr]) {
        self.zone
            .lock()
            .unwrap()
            .a
            .insert(name.into(), ips.to_vec());
    }

    fn set_aaaa(&self, name: &str, ips: &[Ipv6Addr]) {
        self.zone
            .lock()
            .unwrap()
            .aaaa
            .insert(name.into(), ips.to_vec());
    }

    fn set_srv(&self, name: &str, targets: &[(u16, &str)]) {
        self.zone.lock().unwrap().srv.insert(
            name.into(),
            targets.iter().map(|(p, t)| (*p, t.to_string())).collect(),
        );
    }

    fn set_servfail(&self, on: bool) {
        self.zone.lock().unwrap().servfail = on;
    }
}

fn answer(query: &Message, zone: &Zone) -> Message {
    let mut out = Message::response(query.metadata.id, OpCode::Query);
    out.metadata.recursion_desired = query.metadata.recursion_desired;
    out.metadata.recursion_available = true;
    out.metadata.authoritative = true;
    let Some(q) = query.queries.first() else {
        out.metadata.response_code = ResponseCode::FormErr;
        return out;
    };
    out.add_query(q.clone());
    if zone.servfail {
        out.metadata.response_code = ResponseCode::ServFail;
        return out;
    }
    let name = q.name().to_ascii().to_lowercase();
    let key = name.trim_end_matches('.');
    let known =
        zone.a.contains_key(key) || zone.aaaa.contains_key(key) || zone.srv.contains_key(key);
    if !known {
        out.metadata.response_code = ResponseCode::NXDomain;
        return out;
    }
    match q.query_type() {
        RecordType::A => {
            for ip in zone.a.get(key).into_iter().flatten() {
                out.add_answer(Record::from_rdata(q.name().clone(), 1, RData::A(A(*ip))));
            }
        }
        RecordType::AAAA => {
            for ip in zone.aaaa.get(key).into_iter().flatten() {
                out.add_answer(Record::from_rdata(
                    q.name().clone(),
                    1,
                    RData::AAAA(AAAA(*ip)),
                ));
            }
        }
        RecordType::SRV => {
            for (port, target) in zone.srv.get(key).into_iter().flatten() {
                let target = Name::from_ascii(format!("{target}.")).unwrap();
                out.add_answer(Record::from_rdata(
                    q.name().clone(),
                    1,
                    RData::SRV(SRV::new(0, 10, *port, target)),
                ));
            }
        }
        // The rest: the name exists, with no records of that type.
        _ => {}
    }
    out
}

/// A real `mcp-worker tools` on `listen`; returns it with the address it listens on.
fn start_worker(listen: &str, id: &str) -> (Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = Command::new(worker_bin())
        .args(["tools", "--listen", listen, "--id", id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected worker output {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn config(port: u16, admin: u16, discover: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
shutdown_grace: 10s
routes:
  - path: /mcp
    pool: tools
    upstream_path: /mcp
pools:
  tools:
    discover:
{discover}
    balance: round_robin
    health: {{ kind: http, path: /health, interval: 1s }}
"#
    )
}

/// Start the gateway without waiting for readiness (a pool may start empty).
async fn start_gateway(config: &str, port: u16, admin: u16) -> Gateway {
    let cfg = write_file("gateway.yaml", config);
    let log = cfg.with_file_name("gateway.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(PROXY)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let gw = Gateway {
        child,
        port,
        admin,
        log,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(gw.admin_url("/healthz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "gateway not up; log:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw
}

/// A new session and the id of the worker that serves it (`whoami`), or the HTTP status of
/// the refusal.
async fn session_worker(http: &reqwest::Client, url: &str) -> Result<(String, String), u16> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    let sid = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("a session id");
    let _ = r.bytes().await;
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (status, v) = raw_call(http, url, &sid, 2, "whoami", json!({})).await;
    if status != 200 {
        return Err(status);
    }
    let text = result_text(&v.unwrap());
    let who: serde_json::Value = serde_json::from_str(&text).unwrap();
    Ok((sid, who["worker"].as_str().unwrap().to_string()))
}

/// Workers seen over `n` new sessions.
async fn workers_seen(http: &reqwest::Client, url: &str, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        if let Ok((_, w)) = session_worker(http, url).await {
            seen.insert(w);
        }
    }
    seen
}

/// A metric's value for the pool `tools` (0 when absent).
async fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = gw.metrics().await;
    let prefix = format!("{name}{{pool=\"tools\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn wait_for(what: &str, gw: &Gateway, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; gateway log:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_are_followed_and_a_leaving_worker_drains() {
    let dns = Dns::start().await;
    // Two workers on one port at two loopback addresses, as pods behind a headless Service.
    let (wa, a_addr) = start_worker("127.0.0.2:0", "wa");
    let (wb, _) = start_worker(&format!("127.0.0.3:{}", a_addr.port()), "wb");
    let mut workers = Workers(vec![wa, wb]);
    let a_ip = Ipv4Addr::new(127, 0, 0, 2);
    let b_ip = Ipv4Addr::new(127, 0, 0, 3);
    dns.set_a("workers.test", &[a_ip]);

    let (port, admin) = (free_port(), free_port());
    let discover = format!(
        "      dns: [ {{ name: workers.test, port: {} }} ]\n      refresh: 1s\n      resolver: \"{}\"",
        a_addr.port(),
        dns.addr
    );
    let gw = start_gateway(&config(port, admin, &discover), port, admin).await;
    gw.wait_ready(Duration::from_secs(20)).await;
    let http = reqwest::Client::new();
    let url = gw.url();

    // One A record: every session lands on wa.
    let seen = workers_seen(&http, &url, 4).await;
    assert_eq!(seen, HashSet::from(["wa".to_string()]));
    assert_eq!(metric(&gw, "mcp_gateway_discovery_members").await, 1.0);

    // A second A record: both workers serve, without a restart.
    dns.set_a("workers.test", &[a_ip, b_ip]);
    wait_for("wb to serve", &gw, Duration::from_secs(20), async || {
        workers_seen(&http, &url, 4).await.contains("wb")
    })
    .await;
    assert_eq!(metric(&gw, "mcp_gateway_discovery_members").await, 2.0);
    let seen = workers_seen(&http, &url, 6).await;
    assert_eq!(seen.len(), 2, "round robin over both workers: {seen:?}");

    // A session on wb with a long call in flight.
    let mut wb_session = None;
    for _ in 0..10 {
        if let Ok((sid, w)) = session_worker(&http, &url).await {
            if w == "wb" {
                wb_session = Some(sid);
                break;
            }
        }
    }
    let wb_sid = wb_session.expect("a session on wb");
    let slow = {
        let (http, url, sid) = (http.clone(), url.clone(), wb_sid.clone());
        tokio::spawn(async move {
            raw_call(
                &http,
                &url,
                &sid,
                7,
                "slow_count",
                json!({"n": 60, "delay_ms": 100}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // wb's record goes away: it leaves selection while its call goes on.
    dns.set_a("workers.test", &[a_ip]);
    wait_for("wb to leave", &gw, Duration::from_secs(20), async || {
        metric(&gw, "mcp_gateway_discovery_members").await == 1.0
            && gw.log_text().contains("remote worker left the pool")
    })
    .await;
    assert!(
        !slow.is_finished(),
        "the long call should still be running when wb leaves (raise n if this machine is slow)"
    );
    let seen = workers_seen(&http, &url, 6).await;
    assert_eq!(
        seen,
        HashSet::from(["wa".to_string()]),
        "no new session on wb"
    );
    // wb's per-worker series are gone from /metrics with it.
    let text = gw.metrics().await;
    let wb_addr = format!("127.0.0.3:{}", a_addr.port());
    assert!(
        !text.contains(&format!("worker=\"tools-{wb_addr}\"")),
        "series of a worker that left: {text}"
    );
    let (status, v) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(result_text(&v.unwrap()), "counted to 60");
    // Draining: wb's session goes on while wb runs (another replica may still list wb, and
    // a pod leaving the Service is still terminating), but no new one lands there.
    let (status, v) = raw_call(&http, &url, &wb_sid, 8, "whoami", json!({})).await;
    assert_eq!(status, 200, "a session on a leaving worker drains: {v:?}");
    assert!(result_text(&v.unwrap()).contains("\"wb\""));
    // Once wb is gone, its sealed session gets the lost-session answer.
    let _ = workers.0[1].kill();
    let _ = workers.0[1].wait();
    let (status, _) = raw_call(&http, &url, &wb_sid, 9, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(
        status, 404,
        "a session on a removed worker that stopped ends"
    );

    // DNS fails: the last members stay and keep serving.
    let errors_before = metric(&gw, "mcp_gateway_discovery_errors_total").await;
    dns.set_servfail(true);
    wait_for(
        "resolution errors",
        &gw,
        Duration::from_secs(20),
        async || metric(&gw, "mcp_gateway_discovery_errors_total").await >= errors_before + 2.0,
    )
    .await;
    assert_eq!(metric(&gw, "mcp_gateway_discovery_members").await, 1.0);
    let seen = workers_seen(&http, &url, 3).await;
    assert_eq!(seen, HashSet::from(["wa".to_string()]));
    assert!(gw.log_text().contains("keeping the last known addresses"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_starts_empty_then_follows_srv_and_aaaa_records() {
    let dns = Dns::start().await;
    let (wc, c_addr) = start_worker("127.0.0.4:0", "wc");
    let (wd, d_addr) = start_worker("[::1]:0", "wd");
    let _workers = Workers(vec![wc, wd]);

    let (port, admin) = (free_port(), free_port());
    let discover = format!(
        "      dns: [ {{ srv: _mcp._tcp.workers.test }}, {{ name: v6.test, port: {} }} ]\n      refresh: 1s\n      resolver: \"{}\"",
        d_addr.port(),
        dns.addr
    );
    let gw = start_gateway(&config(port, admin, &discover), port, admin).await;
    let http = reqwest::Client::new();
    let url = gw.url();

    // The names do not resolve: the pool is empty, requests get "no healthy worker".
    wait_for(
        "a resolution error",
        &gw,
        Duration::from_secs(20),
        async || metric(&gw, "mcp_gateway_discovery_errors_total").await >= 1.0,
    )
    .await;
    assert_eq!(session_worker(&http, &url).await.unwrap_err(), 503);
    assert!(gw
        .log_text()
        .contains("no addresses known for this name yet"));

    // The records appear: the SRV target's address with the record's port, and the AAAA
    // address with the configured port.
    dns.set_a("wc.test", &[Ipv4Addr::new(127, 0, 0, 4)]);
    dns.set_srv("_mcp._tcp.workers.test", &[(c_addr.port(), "wc.test")]);
    dns.set_aaaa("v6.test", &[Ipv6Addr::LOCALHOST]);
    wait_for("both workers", &gw, Duration::from_secs(20), async || {
        metric(&gw, "mcp_gateway_discovery_members").await == 2.0
    })
    .await;
    let seen = workers_seen(&http, &url, 4).await;
    assert_eq!(seen, HashSet::from(["wc".to_string(), "wd".to_string()]));
    let r = http
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        r.contains(&format!("worker=\"tools-{c_addr}\"")),
        "the worker is named by its address: {r}"
    );

    // A reload of the file (names unchanged) keeps the discovered worker: no member leaves,
    // and its session goes on.
    let (sid, _) = session_worker(&http, &url).await.unwrap();
    let path = gw.log.with_file_name("gateway.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, format!("{text}# touched\n")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_for("the reload", &gw, Duration::from_secs(20), async || {
        gw.log_text().contains("configuration reloaded")
    })
    .await;
    assert!(
        !gw.log_text().contains("remote worker left the pool"),
        "a reload must not drop discovered members; log:\n{}",
        gw.log_text()
    );
    let (status, v) = raw_call(&http, &url, &sid, 9, "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(status, 200);
    assert_eq!(result_text(&v.unwrap()), "5");
}
