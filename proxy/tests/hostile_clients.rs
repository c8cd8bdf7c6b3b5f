//! Hostile clients against the running gateway: HTTP/1.1 smuggling and framing tricks,
//! resource exhaustion, identity abuse. A raw TCP upstream owned by the test records what a
//! worker would see; a probe that reaches it as two requests, or as a malformed one, fails.

mod common;
mod hostile_common;

use std::time::Duration;

use common::*;
use hostile_common::*;

const B: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// What must happen to a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// This status, and no complete request reaches the worker.
    Refused(u16),
    /// 200, and the worker sees exactly one well-formed request carrying `B` (or no body).
    One,
    /// The gateway closes the connection without an answer; nothing reaches the worker.
    Closed,
}
use Expect::*;

struct Probe {
    name: &'static str,
    raw: Vec<u8>,
    expect: Expect,
}

fn post_head(extra: &str) -> String {
    format!("POST /mcp HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{extra}")
}

fn chunked(body: &str) -> String {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
}

fn probes() -> Vec<Probe> {
    let l = B.len();
    let smuggled = "GET /mcp HTTP/1.1\r\nHost: gw\r\nX-Smuggled: yes\r\n\r\n";
    let p = |name: &'static str, expect: Expect, raw: String| Probe {
        name,
        raw: raw.into_bytes(),
        expect,
    };
    vec![
        p("baseline", One, format!("{}Content-Length: {l}\r\n\r\n{B}", post_head(""))),
        p("cl_and_te", One, format!("{}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{}{smuggled}", post_head(""), chunked(B))),
        p("te_and_cl", One, format!("{}Transfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{}{smuggled}", post_head(""), l + 9, chunked(B))),
        p("two_content_lengths", Refused(400), format!("{}Content-Length: {l}\r\nContent-Length: 4\r\n\r\n{B}", post_head(""))),
        p("content_length_list", Refused(400), format!("{}Content-Length: {l}, 4\r\n\r\n{B}", post_head(""))),
        p("content_length_plus", Refused(400), format!("{}Content-Length: +{l}\r\n\r\n{B}", post_head(""))),
        p("te_chunked_comma_x", Refused(400), format!("{}Transfer-Encoding: chunked ,x\r\n\r\n{}", post_head(""), chunked(B))),
        p("te_tab_chunked", One, format!("{}Transfer-Encoding:\tchunked\r\n\r\n{}", post_head(""), chunked(B))),
        p("te_xchunked", Refused(400), format!("{}Transfer-Encoding: xchunked\r\n\r\n{}", post_head(""), chunked(B))),
        p("te_identity", Refused(400), format!("{}Transfer-Encoding: identity\r\nContent-Length: {l}\r\n\r\n{B}", post_head(""))),
        p("te_two_headers", Refused(400), format!("{}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{}", post_head(""), chunked(B))),
        p("te_space_before_colon", Refused(400), format!("{}Transfer-Encoding : chunked\r\nContent-Length: {l}\r\n\r\n{B}", post_head(""))),
        p("te_http10", Refused(400), format!("POST /mcp HTTP/1.0\r\nHost: gw\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{}", chunked(B))),
        p("chunk_size_not_hex", Refused(400), format!("{}Transfer-Encoding: chunked\r\n\r\nzz\r\n{B}\r\n0\r\n\r\n", post_head(""))),
        p("chunk_size_overflow", Refused(400), format!("{}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n{B}\r\n0\r\n\r\n", post_head(""))),
        p("chunk_size_negative", Refused(400), format!("{}Transfer-Encoding: chunked\r\n\r\n-{l:x}\r\n{B}\r\n0\r\n\r\n", post_head(""))),
        p("chunk_too_short", Refused(400), format!("{}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{B}\r\n0\r\n\r\n{smuggled}", post_head(""), l - 5)),
        p("bare_lf", One, format!("POST /mcp HTTP/1.1\nHost: gw\nContent-Type: application/json\nAccept: application/json, text/event-stream\nContent-Length: {l}\n\n{B}")),
        p("cr_in_header_value", Refused(400), format!("{}X-Note: a\rInjected: yes\r\nContent-Length: {l}\r\n\r\n{B}", post_head(""))),
        p("lf_in_header_value", One, format!("{}X-Note: a\nX-Second: yes\r\nContent-Length: {l}\r\n\r\n{B}", post_head(""))),
        p("lf_injects_identity_header", One, format!("{}X-Note: a\nX-MCP-User-Id: admin\r\nContent-Length: {l}\r\n\r\n{B}", post_head(""))),
        p("obs_fold", Refused(400), format!("{}X-Note: a\r\n Injected: yes\r\nContent-Length: {l}\r\n\r\n{B}", post_head(""))),
        p("nul_in_header_value", Refused(400), format!("{}X-Note: a\0b\r\nContent-Length: {l}\r\n\r\n{B}", post_head(""))),
        p("crlf_in_request_line", Refused(400), format!("POST /mcp\r\nInjected: yes HTTP/1.1\r\nHost: gw\r\nContent-Length: {l}\r\n\r\n{B}")),
        p("encoded_crlf_in_query", One, format!("POST /mcp?x=%0d%0aInjected:%20yes HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {l}\r\n\r\n{B}")),
        p("absolute_form", One, format!("POST http://evil.example/mcp HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {l}\r\n\r\n{B}")),
        p("absolute_form_host_mismatch", Refused(400), format!("POST http://evil.example/mcp HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {l}\r\n\r\n{B}")),
        p("connect", Refused(405), "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_string()),
        p("upgrade_websocket_get", Refused(400), "GET /mcp HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_string()),
        p("upgrade_h2c_post", Refused(400), format!("{}Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: {l}\r\n\r\n{B}", post_head(""))),
        p("get_with_body", Refused(400), format!("GET /mcp HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len())),
        p("request_in_body", Refused(400), format!("{}Content-Length: {}\r\n\r\n{B}{smuggled}", post_head(""), l + smuggled.len())),
        p("http09", Closed, "GET /mcp\r\n\r\n".to_string()),
        p("expect_continue", One, format!("{}Expect: 100-continue\r\nContent-Length: {l}\r\n\r\n{B}", post_head(""))),
    ]
}

/// Headers a client may never get through to a worker as given.
const FORBIDDEN_UPSTREAM: &[&str] = &[
    "injected",
    "x-smuggled",
    "upgrade",
    "x-mcp-user-id",
    "http2-settings",
];

/// Unparsed bytes the worker got must be at most the start of one request the gateway
/// abandoned (it sends the header before the body is complete), never a second request.
fn assert_abandoned_prefix_only(name: &str, up: &Upstream) {
    for raw in up.unparsed() {
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("POST /mcp HTTP/1.1\r\n")
                && text.matches(" HTTP/1.1\r\n").count() == 1,
            "{name}: the worker got {text:?}"
        );
    }
}

#[tokio::test]
async fn framing_probes_are_refused_or_reach_the_worker_as_one_well_formed_request() {
    let up = Upstream::start(Behaviour::Answer).await;
    let (port, admin) = (free_port(), free_port());
    let _gw =
        Gateway::start_with(&two_route_config(port, admin, up.port, "", ""), port, admin).await;
    let mut failures = Vec::new();
    for p in probes() {
        up.clear();
        let raw = raw_exchange(port, &p.raw, Duration::from_millis(500)).await;
        // The gateway answers after the worker did; give the recorder a moment to log.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = statuses(&raw);
        let reqs = up.requests();
        let ok = match p.expect {
            Refused(code) => {
                assert_abandoned_prefix_only(p.name, &up);
                got == vec![code] && reqs.is_empty()
            }
            Closed => got.is_empty() && reqs.is_empty() && up.unparsed().is_empty(),
            One => {
                // A `100 Continue` may come first (the answer to `Expect: 100-continue`).
                let finals: Vec<u16> = got.iter().copied().filter(|s| *s != 100).collect();
                let one = reqs.len() == 1 && up.unparsed().is_empty() && finals == vec![200];
                one && reqs.iter().all(|r| {
                    r.target.starts_with("/mcp")
                        && (r.body.is_empty() || r.body == B.as_bytes())
                        && FORBIDDEN_UPSTREAM
                            .iter()
                            .all(|h| r.header_all(h).is_empty())
                })
            }
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got statuses {got:?}, worker saw {:?}, unparsed {:?}",
                p.name,
                p.expect,
                reqs,
                up.unparsed()
                    .iter()
                    .map(|u| String::from_utf8_lossy(u).into_owned())
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn post_bytes(id: i64, extra_headers: &str) -> String {
    let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
    format!(
        "{}{extra_headers}Content-Length: {}\r\n\r\n{body}",
        post_head(""),
        body.len()
    )
}

#[tokio::test]
async fn pipelined_requests_never_reach_the_worker_as_more_than_was_answered() {
    let up = Upstream::start(Behaviour::Answer).await;
    let (port, admin) = (free_port(), free_port());
    let _gw =
        Gateway::start_with(&two_route_config(port, admin, up.port, "", ""), port, admin).await;

    // Three valid requests in one write. Pingora does not pipeline by default: the first is
    // answered, then the connection is closed and the rest dropped (RFC 9112 section 9.3.2:
    // the client retries them on a new connection).
    let raw = format!(
        "{}{}{}",
        post_bytes(1, ""),
        post_bytes(2, ""),
        post_bytes(3, "")
    );
    let (answer, closed) =
        exchange_until_close(port, raw.as_bytes(), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(closed, "the connection stayed open");
    assert_eq!(
        statuses(&answer),
        vec![200],
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(String::from_utf8_lossy(&answer).contains("\"id\":1"));
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        String::from_utf8_lossy(&reqs[0].body),
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#
    );
    assert!(up.unparsed().is_empty());

    // A refused request followed by a valid one: neither reaches the worker.
    up.clear();
    let bad = format!("{}Content-Length: 5\r\n\r\nnope!", post_head(""));
    let raw = format!("{bad}{}", post_bytes(4, ""));
    let (answer, closed) =
        exchange_until_close(port, raw.as_bytes(), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(closed);
    assert_eq!(
        statuses(&answer),
        vec![400],
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    assert_abandoned_prefix_only("refused then valid", &up);

    // The same client on a fresh connection, one request at a time, is served.
    let (answer, _) = exchange_until_close(
        port,
        post_bytes(5, "Connection: close\r\n").as_bytes(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(statuses(&answer), vec![200]);
}

fn json_post(body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "{}{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        post_head(""),
        body.len()
    )
    .into_bytes()
}

/// The JSON-RPC error in a gateway answer (the body after the header block).
fn error_of(raw: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(raw);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_default()
}

#[tokio::test]
async fn exhaustion_attacks_are_cut_while_a_well_behaved_client_is_served() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let up = Upstream::start(Behaviour::Answer).await;
    let (port, admin) = (free_port(), free_port());
    let extra = "limits:\n  max_body_bytes: 1048576\n  client_read_timeout: 2s\n";
    let gw = Gateway::start_with(
        &two_route_config(port, admin, up.port, "", extra),
        port,
        admin,
    )
    .await;
    let long = Duration::from_secs(30);

    // Thousands of idle connections, held open for the whole test.
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap_or_else(|e| panic!("idle connect: {e}")),
        );
    }
    // Slowloris: a hundred clients trickling a request header one byte at a time.
    let mut loris = Vec::new();
    for _ in 0..100 {
        loris.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            if s.write_all(b"POST /mcp HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
                .await
                .is_err()
            {
                return;
            }
            while s.write_all(b"a").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    assert!(
        well_behaved_call(port).await,
        "not served beside idle and slow clients"
    );

    // A header block over Pingora's 1 MiB limit: refused, never forwarded.
    let mut big = b"POST /mcp HTTP/1.1\r\nHost: gw\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 2 << 20));
    big.extend_from_slice(b"\r\n\r\n");
    let (answer, closed) = exchange_until_close(port, &big, long).await;
    assert!(
        closed && statuses(&answer).iter().all(|s| *s == 400),
        "huge header"
    );

    // More than Pingora's 256 headers: 400. 200 headers pass (control).
    let many = |n: usize| {
        let h: String = (0..n).map(|i| format!("X-H{i}: v\r\n")).collect();
        json_post(B, &h)
    };
    let (answer, _) = exchange_until_close(port, &many(300), long).await;
    assert_eq!(statuses(&answer), vec![400], "300 headers");
    let (answer, _) = exchange_until_close(port, &many(200), long).await;
    assert_eq!(statuses(&answer), vec![200], "200 headers");
    assert_eq!(up.requests().len(), 1);
    up.clear();

    // JSON nested 100,000 deep: refused by the gateway's parser (limit 128 levels).
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (answer, _) = exchange_until_close(port, &json_post(&deep, ""), long).await;
    assert_eq!(statuses(&answer), vec![400]);
    assert_eq!(
        error_of(&answer)["error"]["code"],
        -32600,
        "{:?}",
        error_of(&answer)
    );

    // A batch of 10,000 calls: refused at limits.max_batch_len (default 100); 100 pass.
    let batch = |n: usize| {
        let calls: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"add","arguments":{{"a":1,"b":2}}}}}}"#))
            .collect();
        format!("[{}]", calls.join(","))
    };
    let (answer, _) = exchange_until_close(port, &json_post(&batch(10_000), ""), long).await;
    assert_eq!(statuses(&answer), vec![400]);
    let e = error_of(&answer);
    assert_eq!(e["error"]["code"], -32600, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("limits.max_batch_len"),
        "{e}"
    );
    let (answer, _) = exchange_until_close(port, &json_post(&batch(100), ""), long).await;
    assert_eq!(statuses(&answer), vec![200]);
    assert_eq!(up.requests().len(), 1);
    up.clear();

    // A body over limits.max_body_bytes: 413, announced or streamed.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"s":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    let (answer, _) = exchange_until_close(port, &json_post(&huge, ""), long).await;
    assert_eq!(statuses(&answer), vec![413]);
    let mut chunked =
        post_head("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").into_bytes();
    for piece in huge.as_bytes().chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (answer, _) = exchange_until_close(port, &chunked, long).await;
    assert_eq!(statuses(&answer), vec![413]);

    // A body trickled then stalled past limits.client_read_timeout (2 s): cut with 400.
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = format!("{}Content-Length: {}\r\n\r\n", post_head(""), B.len());
    s.write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for b in B.as_bytes()[..10].iter() {
        s.write_all(&[*b]).await.unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answer = read_until_quiet(&mut s, long).await;
    assert_eq!(
        statuses(&answer),
        vec![400],
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let e = error_of(&answer);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too slow"),
        "{e}"
    );

    // None of the refused requests reached the worker as a request.
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    assert_abandoned_prefix_only("exhaustion", &up);

    // The idle connections, which never sent a byte, were closed after
    // limits.client_read_timeout (2 s here).
    for s in idle.iter_mut().take(20) {
        assert!(
            read_to_eof(s, long).await.is_some(),
            "an idle connection was kept"
        );
    }
    // Still serving; the slowloris clients are still attached (Pingora's header limits are
    // per read: 60 s per read, 1 MiB, 256 headers) but cost the others nothing.
    assert!(
        well_behaved_call(port).await,
        "not served after the attacks"
    );
    assert!(common::alive(gw.pid()));
    for l in &loris {
        assert!(!l.is_finished(), "a slowloris connection was cut early");
    }
    for l in loris {
        l.abort();
    }
    drop(idle);
}

#[tokio::test]
async fn a_stalled_request_header_and_an_idle_connection_are_closed_by_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    let up = Upstream::start(Behaviour::Answer).await;
    let (port, admin) = (free_port(), free_port());
    let extra = "limits:\n  client_read_timeout: 2s\n";
    let _gw = Gateway::start_with(
        &two_route_config(port, admin, up.port, "", extra),
        port,
        admin,
    )
    .await;
    let mut idle = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stalled = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stalled
        .write_all(b"POST /mcp HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A connection's first bytes must come within limits.client_read_timeout (2 s here);
    // after them Pingora allows 60 s for each read of a request header. Both connections
    // must be gone well before this generous bound.
    let bound = Duration::from_secs(120);
    let (a, b) = tokio::join!(
        read_to_eof(&mut idle, bound),
        read_to_eof(&mut stalled, bound)
    );
    assert!(a.is_some(), "the idle connection was never closed");
    let b = b.unwrap_or_else(|| panic!("the stalled header was never cut"));
    assert!(
        statuses(&b).iter().all(|s| *s >= 400),
        "{}",
        String::from_utf8_lossy(&b)
    );
    assert!(up.requests().is_empty());
}

async fn read_to_eof(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
}

const ISS: &str = "https://issuer.test";
const SECRET: &str = "hostile-clients-secret-0123456789abcdef";

fn token(sub: &str, roles: &[&str]) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims =
        serde_json::json!({"iss": ISS, "aud": "mcp", "sub": sub, "exp": now + 600, "roles": roles});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `/mcp` denies `whoami` (a deny-list), `/strict` allows only `add` and `echo` (an
/// allow-list); both reach the recording upstream and need a token with role `user`.
fn identity_config(port: u16, admin: u16, upstream: u16) -> String {
    format!(
        r#"listen: 127.0.0.1:{port}
admin: 127.0.0.1:{admin}
shutdown_grace: 1s
auth:
  issuers:
    - name: test
      issuer: {ISS}
      audiences: [mcp]
      algorithms: [HS256]
      secret_env: HOSTILE_CLIENTS_SECRET
routes:
  - path: /mcp
    pool: recorder
    auth: {{ roles: [user] }}
    tools:
      - roles: ["*"]
        allow: ["*"]
        deny: [whoami]
  - path: /strict
    pool: recorder
    upstream_path: /mcp
    auth: {{ roles: [user] }}
    tools:
      - roles: ["*"]
        allow: [add, echo]
pools:
  recorder:
    upstreams: ["127.0.0.1:{upstream}"]
    health: {{ kind: tcp, interval: 1h }}
"#
    )
}

async fn send(
    url: &str,
    tok: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT);
    if let Some(t) = tok {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

fn tool_call(name: &str) -> String {
    serde_json::json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":name,"arguments":{}}})
        .to_string()
}

fn names_seen(up: &Upstream) -> Vec<String> {
    up.requests()
        .iter()
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
        .filter_map(|v| v["params"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn identity_abuse_never_reaches_the_worker_as_given() {
    std::env::set_var("HOSTILE_CLIENTS_SECRET", SECRET);
    let up = Upstream::start(Behaviour::Answer).await;
    let (port, admin) = (free_port(), free_port());
    let _gw = Gateway::start_with(&identity_config(port, admin, up.port), port, admin).await;
    let open = format!("http://127.0.0.1:{port}/mcp");
    let strict = format!("http://127.0.0.1:{port}/strict");
    let alice = token("alice", &["user"]);
    let denied = |v: &serde_json::Value| v["error"]["code"] == -32005;

    // Tool names are matched exactly and case-sensitively, after JSON unescaping. A deny-list
    // denies exactly the names it lists: a lookalike is a different tool and passes (a real
    // worker answers "unknown tool")...
    let lookalikes = [
        "WhoAmI",
        "WHOAMI",
        "whoam\u{456}",
        "whoami\u{200b}",
        "whoami ",
    ];
    for name in lookalikes {
        let (status, v) = send(&open, Some(&alice), &[], &tool_call(name)).await;
        assert_eq!(status, 200, "{name:?}: {v}");
        assert!(!denied(&v), "{name:?}: {v}");
    }
    assert_eq!(names_seen(&up), lookalikes.to_vec(), "forwarded unchanged");
    up.clear();
    // ...while the denied name itself, however it is spelled in JSON, is refused.
    let escaped = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"who\u0061mi","arguments":{}}}"#;
    for body in [tool_call("whoami"), escaped.to_string()] {
        let (status, v) = send(&open, Some(&alice), &[], &body).await;
        assert_eq!((status, denied(&v)), (200, true), "{body}: {v}");
    }
    // Two names in one call (duplicate keys: parsers disagree on which wins) or two methods:
    // refused as invalid, never forwarded.
    for body in [
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"add","name":"whoami"}}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":"ping","method":"tools/call","params":{"name":"whoami"}}"#,
    ] {
        let (status, v) = send(&open, Some(&alice), &[], body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["code"], -32600, "{body}: {v}");
    }
    // Batched with allowed calls: the whole batch is refused.
    let batch = format!("[{},{}]", tool_call("add"), tool_call("whoami"));
    let (_, v) = send(&open, Some(&alice), &[], &batch).await;
    assert!(denied(&v), "{v}");
    assert!(up.requests().is_empty(), "{:?}", names_seen(&up));

    // An allow-list refuses every lookalike at the gateway.
    for name in lookalikes
        .iter()
        .copied()
        .chain(["ADD", "add ", "\u{430}dd"])
    {
        let (status, v) = send(&strict, Some(&alice), &[], &tool_call(name)).await;
        assert_eq!((status, denied(&v)), (200, true), "{name:?}: {v}");
    }
    let (status, v) = send(&strict, Some(&alice), &[], &tool_call("add")).await;
    assert_eq!(
        (status, v["result"]["recorded"].as_bool()),
        (200, Some(true)),
        "{v}"
    );
    assert_eq!(names_seen(&up), vec!["add"]);
    up.clear();

    // A 2026-07-28 Mcp-Name header that disagrees with the body: 400, -32020, either way.
    for (header, body) in [
        ("add", tool_call("whoami")),
        ("whoami", tool_call("add")),
        ("=?base64?YWRk?=", tool_call("whoami")),
    ] {
        let (status, v) = send(
            &open,
            Some(&alice),
            &[("mcp-method", "tools/call"), ("mcp-name", header)],
            &body,
        )
        .await;
        assert_eq!(status, 400, "{header}: {v}");
        assert_eq!(v["error"]["code"], -32020, "{header}: {v}");
    }
    assert!(up.requests().is_empty());

    // Identity and forwarding headers sent by the client never reach the worker as given.
    let spoof = [
        ("x-mcp-user-id", "admin"),
        ("x-mcp-user-roles", "admin"),
        ("x-mcp-user-email", "root@example.com"),
        ("x-mcp-user-issuer", "https://evil.example"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-real-ip", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9;proto=https"),
        ("x-forwarded-proto", "https"),
        ("x-api-key", "stolen"),
        ("cookie", "session=stolen"),
        ("proxy-authorization", "Basic c3RvbGVu"),
    ];
    let (status, _) = send(&open, Some(&alice), &spoof, &tool_call("add")).await;
    assert_eq!(status, 200);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.header_all("x-mcp-user-id"), vec!["alice"]);
    assert_eq!(r.header_all("x-mcp-user-roles"), vec!["user"]);
    assert_eq!(r.header_all("x-mcp-user-issuer"), vec![ISS]);
    assert_eq!(r.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(r.header_all("x-forwarded-proto"), vec!["http"]);
    for h in [
        "x-mcp-user-email",
        "x-real-ip",
        "forwarded",
        "x-api-key",
        "cookie",
        "proxy-authorization",
        "authorization",
    ] {
        assert!(
            r.header_all(h).is_empty(),
            "{h} reached the worker: {:?}",
            r.headers
        );
    }
    up.clear();

    // Without a token, claiming an identity by header gets 401 and reaches nothing.
    let (status, _) = send(&open, None, &spoof, &tool_call("add")).await;
    assert_eq!(status, 401);
    assert!(up.requests().is_empty());
}

/// A raw client connection that has sent part of a request header: the gateway holds it open
/// (waiting for the rest), so it keeps its connection slot.
async fn held_connection(port: u16) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    s.write_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    s
}

/// The answer to a whole request on a new connection, read until the gateway closes it or
/// 2 s pass.
async fn one_request(port: u16) -> String {
    let request = b"GET /nowhere HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n";
    let (raw, _) = exchange_until_close(port, request, Duration::from_secs(2)).await;
    String::from_utf8_lossy(&raw).into_owned()
}

async fn wait_open_connections(gw: &Gateway, n: f64) {
    for _ in 0..100 {
        if metric(&gw.metrics().await, "mcp_gateway_client_connections") == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("mcp_gateway_client_connections never reached {n}");
}

/// A gateway capped at 2 client connections, both held open.
async fn gateway_at_its_connection_limit() -> (Gateway, [tokio::net::TcpStream; 2]) {
    let (port, admin) = (free_port(), free_port());
    let gw = Gateway::start_with(
        &spawn_pool_config(port, admin, 1, "limits: { max_connections: 2 }\n"),
        port,
        admin,
    )
    .await;
    let held = [held_connection(port).await, held_connection(port).await];
    wait_open_connections(&gw, 2.0).await;
    (gw, held)
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503_and_a_freed_or_reloaded_slot_is_used() {
    let (gw, [a, _b]) = gateway_at_its_connection_limit().await;
    let (port, admin) = (gw.port, gw.admin);

    // The third is answered at once and closed.
    let refused = one_request(port).await;
    assert!(
        refused.starts_with("HTTP/1.1 503 "),
        "refused connection got: {refused:?}"
    );
    let head = refused.to_ascii_lowercase();
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{refused}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{refused}");
    let v = error_of(refused.as_bytes());
    assert_eq!(v["error"]["code"], -32030, "{refused}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2 client connections"),
        "{v}"
    );
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "mcp_gateway_refusals_total{reason=\"max_connections\"}"
        ),
        1.0
    );
    assert_eq!(metric(&text, "mcp_gateway_client_connections"), 2.0);
    assert!(
        gw.log_text().contains("client connection limit reached"),
        "{}",
        gw.log_text()
    );

    // A closed connection frees its slot: the next one is served (404: no route there).
    drop(a);
    wait_open_connections(&gw, 1.0).await;
    let _c = held_connection(port).await;
    wait_open_connections(&gw, 2.0).await;
    assert!(one_request(port).await.starts_with("HTTP/1.1 503 "));

    // A reload raises the limit for the next connection, with the others still open.
    let cfg = gw.log.with_file_name("gateway.yaml");
    std::fs::write(
        &cfg,
        spawn_pool_config(port, admin, 1, "limits: { max_connections: 3 }\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    gw.signal(libc::SIGHUP);
    let mut answer = String::new();
    for _ in 0..100 {
        answer = one_request(port).await;
        if !answer.starts_with("HTTP/1.1 503 ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answer.starts_with("HTTP/1.1 404 "),
        "after reload: {answer:?}"
    );
}

#[tokio::test]
async fn refused_connections_beyond_those_being_answered_are_closed_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw, _held) = gateway_at_its_connection_limit().await;
    let port = gw.port;
    // Clients that send a request and then keep their socket open: each refused one is
    // answered and lingered on for up to 500 ms, but at most 16 at once (a sixteenth of the
    // cap, at least 16); the others are closed without an answer.
    let mut flood = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let _ = s
            .write_all(b"GET /nowhere HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await;
        flood.push(s);
    }
    let (mut answered, mut closed) = (0, 0);
    for s in &mut flood {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 503 ") => answered += 1,
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            other => panic!("unexpected: {other:?}"),
        }
    }
    // The 40 connect within a few milliseconds, far inside the 500 ms each answered one
    // is lingered on.
    assert_eq!(
        (answered, closed),
        (16, 24),
        "answered, closed without an answer"
    );
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "mcp_gateway_refusals_total{reason=\"max_connections\"}"
        ),
        40.0
    );
    assert_eq!(metric(&text, "mcp_gateway_client_connections"), 2.0);
}
