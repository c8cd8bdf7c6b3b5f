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
            text.starts_with("POST /mcp HTTP/1.1\r\n") && text.matches(" HTTP/1.1\r\n").count() == 1,
            "{name}: the worker got {text:?}"
        );
    }
}

#[tokio::test]
async fn framing_probes_are_refused_or_reach_the_worker_as_one_well_formed_request() {
    let up = Upstream::start(Behaviour::Answer).await;
    let (port, admin) = (free_port(), free_port());
    let _gw = Gateway::start_with(&two_route_config(port, admin, up.port, "", ""), port, admin).await;
    let mut failures = Vec::new();
    for p in probes() {
        up.clear();
        let raw = raw_exchange(port, &p.raw, Duration::from_millis(700)).await;
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
                let one = reqs.len() == 1 && up.unparsed().is_empty() && got == vec![200];
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
    let _gw = Gateway::start_with(&two_route_config(port, admin, up.port, "", ""), port, admin).await;

    // Three valid requests in one write. Pingora does not pipeline by default: the first is
    // answered, then the connection is closed and the rest dropped (RFC 9112 section 9.3.2:
    // the client retries them on a new connection).
    let raw = format!("{}{}{}", post_bytes(1, ""), post_bytes(2, ""), post_bytes(3, ""));
    let (answer, closed) =
        exchange_until_close(port, raw.as_bytes(), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(closed, "the connection stayed open");
    assert_eq!(statuses(&answer), vec![200], "{}", String::from_utf8_lossy(&answer));
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
    assert_eq!(statuses(&answer), vec![400], "{}", String::from_utf8_lossy(&answer));
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
