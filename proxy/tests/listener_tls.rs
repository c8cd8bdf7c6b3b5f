//! HTTPS on the client listener (`tls`): real MCP clients over TLS (HTTP/1.1 and HTTP/2 by
//! ALPN), the certificate served, handshakes that fail or never finish, clients that finish
//! one and then say nothing, the connection cap counting connections still in their
//! handshake, and certificates renewed on disk while the gateway runs.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::certs::{first_der, leaf, new_ca};
use common::*;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;

/// 2031-01-01T00:00:00Z, the first certificate's expiry.
const FIRST_NOT_AFTER: i64 = 1_924_992_000;
/// 2032-01-01T00:00:00Z, the renewed one's.
const RENEWED_NOT_AFTER: i64 = 1_956_528_000;

/// A CA and the files the gateway reads: the listener's certificate and key.
struct Files {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
    /// The certificate written last, as PEM.
    cert_pem: String,
}

impl Files {
    fn new() -> Files {
        let (params, key, ca_pem) = new_ca("listener test CA");
        let issuer = rcgen::Issuer::new(params, key);
        let cert = temp_path("listener.pem");
        let key = cert.with_file_name("listener.key");
        let mut f = Files {
            issuer,
            ca_pem,
            cert,
            key,
            cert_pem: String::new(),
        };
        f.write("gateway-one", (2031, 1, 1));
        f
    }

    /// Write a new certificate (for 127.0.0.1 and localhost) and its key.
    fn write(&mut self, cn: &str, not_after: (i32, u8, u8)) {
        let (cert, key) = leaf(
            &self.issuer,
            &["127.0.0.1", "localhost"],
            cn,
            Some(not_after),
        );
        std::fs::write(&self.key, key).unwrap_or_else(|e| panic!("write key: {e}"));
        std::fs::write(&self.cert, &cert).unwrap_or_else(|e| panic!("write cert: {e}"));
        self.cert_pem = cert;
    }

    fn config(&self, port: u16, admin: u16, extra: &str) -> String {
        spawn_pool_config(
            port,
            admin,
            1,
            &format!(
                "tls:\n  cert_file: {}\n  key_file: {}\n  handshake_timeout: 1s\n{extra}",
                self.cert.display(),
                self.key.display()
            ),
        )
    }

    /// An HTTPS client that trusts only this CA and reports the server's certificate.
    fn client(&self, http1_only: bool) -> reqwest::Client {
        init_tls();
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes())
            .unwrap_or_else(|e| panic!("CA: {e}"));
        let mut b = reqwest::Client::builder()
            .tls_certs_only([ca])
            .tls_info(true)
            .timeout(Duration::from_secs(10));
        if http1_only {
            b = b.http1_only();
        }
        b.build().unwrap_or_else(|e| panic!("client: {e}"))
    }

    /// A blocking rustls client configuration trusting this CA.
    fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        init_tls();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(first_der(&self.ca_pem).into())
            .unwrap_or_else(|e| panic!("root: {e}"));
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

fn https_url(port: u16) -> String {
    format!("https://127.0.0.1:{port}/mcp")
}

/// The certificate the server presented on this response's connection.
fn served_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .unwrap_or_else(|| panic!("no TLS info on the response"))
}

async fn initialize(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init_body("2025-06-18"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("initialize over HTTPS: {e:?}"))
}

async fn start(files: &Files, extra: &str) -> Gateway {
    let (port, admin) = (free_port(), free_port());
    Gateway::start_with(&files.config(port, admin, extra), port, admin).await
}

/// Wait until the connection is closed by the gateway: `read` returns 0 or fails. The time
/// it took, or `None` when it stayed open for `limit`.
fn closed_within<R: Read>(conn: &mut R, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return Some(t0.elapsed()),
            Ok(_) if t0.elapsed() > limit => return None,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_clients_speak_https_over_http1_and_h2_with_the_configured_certificate() {
    let files = Files::new();
    let gw = start(&files, "").await;
    let url = https_url(gw.port);
    let log = gw.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("gateway started") && l.contains("\"https\"")),
        "the start-up line names the scheme:\n{log}"
    );
    // Readiness waited for the listener; its probe connection closed without a byte, which
    // is no failed handshake.
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "mcp_gateway_tls_handshakes_total{result=\"error\"}"),
        0.0,
        "{m}"
    );

    // rmcp over HTTPS: initialize, list tools, call one.
    let transport = StreamableHttpClientTransport::with_client(
        files.client(false),
        StreamableHttpClientTransportConfig::with_uri(url.clone()),
    );
    let client = ()
        .serve(transport)
        .await
        .unwrap_or_else(|e| panic!("rmcp initialize over HTTPS: {e}"));
    let tools = client
        .list_all_tools()
        .await
        .unwrap_or_else(|e| panic!("tools/list: {e}"));
    assert!(tools.iter().any(|t| t.name == "add"), "tools: {tools:?}");
    let args = serde_json::json!({"a": 2, "b": 3});
    let serde_json::Value::Object(args) = args else {
        unreachable!()
    };
    let out = client
        .call_tool(CallToolRequestParams::new("add").with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("tools/call add: {e}"));
    let text = serde_json::to_value(&out.content)
        .unwrap_or_default()
        .to_string();
    assert!(text.contains('5'), "add(2, 3) over HTTPS: {text}");
    client
        .cancel()
        .await
        .unwrap_or_else(|e| panic!("close: {e}"));

    // ALPN picks HTTP/2 for a client that offers it, HTTP/1.1 for one that does not; both
    // are served the configured certificate.
    let want = first_der(&files.cert_pem);
    let h2 = initialize(&files.client(false), &url).await;
    assert_eq!(h2.status(), 200);
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(served_cert(&h2), want, "the certificate in tls.cert_file");
    let h1 = initialize(&files.client(true), &url).await;
    assert_eq!(h1.status(), 200);
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(served_cert(&h1), want);

    // Plain HTTP to the HTTPS port: no answer, a failed handshake in the metrics.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/mcp", gw.port))
        .body(init_body("2025-06-18"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");

    let m = gw.metrics().await;
    assert!(
        metric(&m, "mcp_gateway_tls_handshakes_total{result=\"ok\"}") >= 3.0,
        "{m}"
    );
    assert!(
        metric(&m, "mcp_gateway_tls_handshakes_total{result=\"error\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "mcp_gateway_tls_certificate_expiry_timestamp_seconds") as i64,
        FIRST_NOT_AFTER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_handshakes_and_silent_tls_clients_are_closed_and_hold_connection_slots() {
    let files = Files::new();
    let gw = start(
        &files,
        "limits:\n  client_read_timeout: 1s\n  max_connections: 1\n",
    )
    .await;
    let port = gw.port;
    // The readiness probe's connection must have given its slot back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&gw.metrics().await, "mcp_gateway_client_connections") != 0.0 {
        assert!(Instant::now() < deadline, "a connection slot stayed taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A connection that never starts its handshake: closed after tls.handshake_timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    // While it is in its handshake it holds the only slot: one more connection is closed at
    // once, before any TLS.
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = closed_within(&mut extra, Duration::from_secs(10));
    assert!(
        refused.is_some_and(|t| t < Duration::from_millis(700)),
        "a connection beyond the cap was not closed at once: {refused:?}"
    );
    let waited = closed_within(&mut silent, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("a connection that sent nothing stayed open"));
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
        "closed after {waited:?}, tls.handshake_timeout is 1s"
    );

    // A client that completes its handshake and then sends nothing: closed by the
    // first-bytes deadline (limits.client_read_timeout), decrypted bytes being what counts.
    let conn = rustls::ClientConnection::new(
        files.rustls_config(),
        "localhost".try_into().unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .unwrap_or_else(|e| panic!("handshake: {e}"));
    }
    let waited = closed_within(&mut tls, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("a TLS client that sent no request stayed open"));
    assert!(
        waited < Duration::from_secs(5),
        "closed after {waited:?}, limits.client_read_timeout is 1s"
    );

    // The slot is free again and a real request is served.
    let resp = initialize(&files.client(true), &https_url(port)).await;
    assert_eq!(resp.status(), 200);

    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "mcp_gateway_tls_handshakes_total{result=\"timeout\"}"),
        1.0,
        "{m}"
    );
    assert!(
        metric(&m, "mcp_gateway_refusals_total{reason=\"max_connections\"}") >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_pair_is_refused() {
    let mut files = Files::new();
    let gw = start(&files, "").await;
    let url = https_url(gw.port);
    let first = first_der(&files.cert_pem);
    assert_eq!(
        served_cert(&initialize(&files.client(true), &url).await),
        first
    );

    // Renewal on disk (as certbot or a secret mount does it): new handshakes get the new
    // certificate within a few seconds, with no signal.
    files.write("gateway-two", (2032, 1, 1));
    let renewed = first_der(&files.cert_pem);
    assert_ne!(renewed, first);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // A new client each time: a new connection, a new handshake.
        let got = served_cert(&initialize(&files.client(true), &url).await);
        if got == renewed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served; log:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gw.log_text().contains("certificate files changed"));
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "mcp_gateway_tls_certificate_expiry_timestamp_seconds") as i64,
        RENEWED_NOT_AFTER
    );

    // A key that is not the certificate's: the reload fails with a clear error, and the
    // renewed certificate stays in force.
    let (_, stray_key) = leaf(&files.issuer, &["127.0.0.1"], "stray", None);
    std::fs::write(&files.key, stray_key).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let error = loop {
        let cfg = gw.admin_json("/admin/config").await;
        if let Some(e) = cfg.get("last_error").and_then(|e| e.as_str()) {
            break e.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no reload error for a mismatched key: {cfg}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        error.contains("tls.key_file") && error.contains("does not belong to the certificate"),
        "{error}"
    );
    assert_eq!(
        served_cert(&initialize(&files.client(true), &url).await),
        renewed
    );
}

/// Load testers bench an HTTPS gateway with `mcp-bench --ca-file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_bench_loads_an_https_gateway() {
    let files = Files::new();
    let gw = start(&files, "").await;
    let ca = files.cert.with_file_name("ca.pem");
    std::fs::write(&ca, &files.ca_pem).unwrap_or_else(|e| panic!("{e}"));
    let json = files.cert.with_file_name("bench.json");
    let bench = bin_dir().join("mcp-bench");
    assert!(
        bench.is_file(),
        "{} missing: cargo build --workspace",
        bench.display()
    );
    let out = tokio::process::Command::new(&bench)
        .args(["run", "--url", &https_url(gw.port), "--ca-file"])
        .arg(&ca)
        .args([
            "--concurrency",
            "2",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--sessions",
            "2",
            "--payload-bytes",
            "2000",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .output()
        .await
        .unwrap_or_else(|e| panic!("mcp-bench: {e}"));
    assert!(
        out.status.success(),
        "mcp-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap_or_else(|e| panic!("report: {e}")))
            .unwrap_or_else(|e| panic!("report: {e}"));
    assert!(
        report["results"]["requests"].as_u64() > Some(10),
        "{report}"
    );
    assert_eq!(report["results"]["errors"].as_u64(), Some(0), "{report}");
    // Without the CA the certificate is refused: no session opens.
    let refused = tokio::process::Command::new(&bench)
        .args([
            "run",
            "--url",
            &https_url(gw.port),
            "--duration",
            "200ms",
            "--quiet",
        ])
        .output()
        .await
        .unwrap_or_else(|e| panic!("mcp-bench: {e}"));
    assert!(!refused.status.success());
    let m = gw.metrics().await;
    assert!(
        metric(&m, "mcp_gateway_tls_handshakes_total{result=\"error\"}") >= 1.0,
        "{m}"
    );
}

/// `mcp-proxy validate` reports TLS problems with the file, line and field.
#[test]
fn validate_reports_unusable_certificate_files_with_their_lines() {
    let files = Files::new();
    let (_, stray_key) = leaf(&files.issuer, &["127.0.0.1"], "stray", None);
    let stray = files.key.with_file_name("stray.key");
    std::fs::write(&stray, stray_key).unwrap_or_else(|e| panic!("{e}"));
    let missing = Path::new("/nonexistent/listener.pem");
    let cases = [
        (
            format!(
                "tls:\n  cert_file: {}\n  key_file: {}\n",
                missing.display(),
                files.key.display()
            ),
            "tls.cert_file",
            "cannot read /nonexistent/listener.pem",
            17,
        ),
        (
            format!(
                "tls:\n  cert_file: {}\n  key_file: {}\n",
                files.cert.display(),
                stray.display()
            ),
            "tls.key_file",
            "does not belong to the certificate",
            18,
        ),
        (
            format!(
                "tls:\n  cert_file: {}\n  key_file: {}\n  min_version: \"1.1\"\n",
                files.cert.display(),
                files.key.display()
            ),
            "tls.min_version",
            "expected \"1.2\" or \"1.3\"",
            19,
        ),
    ];
    // The `tls:` block follows the 15 lines of the standard configuration.
    for (tls, field, message, line_no) in cases {
        let cfg = write_file("gateway.yaml", &spawn_pool_config(1, 2, 1, &tls));
        let out = std::process::Command::new(PROXY)
            .args(["validate", "--config"])
            .arg(&cfg)
            .output()
            .unwrap_or_else(|e| panic!("validate: {e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tls} passed validation");
        let line = err
            .lines()
            .find(|l| l.contains(field))
            .unwrap_or_else(|| panic!("no error for {field}:\n{err}"));
        assert!(line.contains(message), "{line}");
        assert!(
            line.contains(&format!("{}:{line_no}:", cfg.display())),
            "file and line {line_no}: {line}"
        );
    }
}
