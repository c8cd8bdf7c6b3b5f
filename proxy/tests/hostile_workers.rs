//! Hostile or broken workers: a raw TCP upstream the test owns never answers, answers
//! garbage, answers with a gigantic body, closes mid-stream or floods SSE events. The client
//! gets a defined error or stream end, the worker is taken out of rotation (passive health),
//! other clients are unaffected and the gateway's memory stays bounded.

mod common;
mod hostile_common;

use std::time::Duration;

use futures::StreamExt;
use hostile_common::*;

const CALL: &str =
    r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{}}}"#;

/// `/mcp` to the hostile upstream (read_timeout 2 s, ejected after 2 failures; health checks
/// hourly, so only requests can eject it), `/good` to a real worker.
async fn start(behaviour: Behaviour) -> (Upstream, common::Gateway) {
    start_with(behaviour, "").await
}

/// `start`, with `pool_extra` (indented YAML) added to the hostile upstream's pool.
async fn start_with(behaviour: Behaviour, pool_extra: &str) -> (Upstream, common::Gateway) {
    let up = Upstream::start(behaviour).await;
    let (port, admin) = (common::free_port(), common::free_port());
    let pool_extra = format!("    read_timeout: 2s\n    health: {{ kind: http, path: /health, interval: 1h, unhealthy_after: 2 }}\n{pool_extra}");
    let config = two_route_config(port, admin, up.port, "", "").replace(
        "    health: { kind: http, path: /health, interval: 1h }\n",
        &pool_extra,
    );
    let gw = common::Gateway::start_with(&config, port, admin).await;
    (up, gw)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// POST `CALL` to the hostile route.
async fn send_call(gw: &common::Gateway) -> reqwest::Response {
    client()
        .post(gw.url())
        .header("content-type", "application/json")
        .header("accept", common::ACCEPT)
        .body(CALL)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the gateway did not answer: {e}"))
}

async fn call(gw: &common::Gateway) -> (u16, serde_json::Value) {
    let r = send_call(gw).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn recorder_healthy(gw: &common::Gateway) -> Option<bool> {
    let m = gw.metrics().await;
    m.lines()
        .find(|l| l.starts_with("mcp_gateway_worker_healthy{") && l.contains("pool=\"recorder\""))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.trim() == "1")
}

/// Two failures eject the worker; then the pool has none left: 503, while `/good` is served.
async fn assert_ejected_and_others_served(gw: &common::Gateway) {
    assert_eq!(
        recorder_healthy(gw).await,
        Some(false),
        "{}",
        gw.metrics().await
    );
    let (status, v) = call(gw).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], -32002);
    assert!(well_behaved_call(gw.port).await);
}

#[tokio::test]
async fn a_worker_that_never_answers_gets_504_and_is_ejected() {
    let (up, gw) = start(Behaviour::Silent).await;
    assert_eq!(recorder_healthy(&gw).await, Some(true));
    let good = tokio::spawn(well_behaved_call(gw.port));
    for _ in 0..2 {
        let (status, v) = call(&gw).await;
        assert_eq!(status, 504, "{v}");
        assert_eq!(v["error"]["code"], -32002);
        assert_eq!(v["id"], 7);
    }
    assert!(
        good.await.unwrap_or(false),
        "the other client was not served"
    );
    assert_eq!(up.requests().len(), 2);
    assert_ejected_and_others_served(&gw).await;
    assert!(gw
        .log_text()
        .contains("worker failed while answering; ejected"));
}

#[tokio::test]
async fn a_worker_answering_garbage_gets_502_and_is_ejected() {
    let (_up, gw) = start(Behaviour::Garbage).await;
    for _ in 0..2 {
        let (status, v) = call(&gw).await;
        assert_eq!(status, 502, "{v}");
        assert_eq!(v["error"]["code"], -32002);
    }
    assert_ejected_and_others_served(&gw).await;
}

#[tokio::test]
async fn a_gigantic_answer_is_streamed_through_with_bounded_memory() {
    const MIB: usize = 256;
    let (_up, gw) = start(Behaviour::Huge(MIB)).await;
    let before = vm_rss_kib(gw.pid());
    let r = send_call(&gw).await;
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let (mut total, mut peak) = (0usize, before);
    let mut served_meanwhile = false;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap_or_else(|e| panic!("stream broke: {e}")).len();
        if total > (MIB / 2) << 20 && !served_meanwhile {
            served_meanwhile = well_behaved_call(gw.port).await;
            assert!(served_meanwhile, "the other client was not served");
        }
        peak = peak.max(vm_rss_kib(gw.pid()));
    }
    assert!(total >= MIB << 20, "got {total} bytes");
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    println!(
        "gigantic answer: {} MiB through, gateway RSS {} -> peak {} KiB (+{growth_mib} MiB)",
        total >> 20,
        before,
        peak
    );
    assert!(growth_mib < 128, "gateway memory grew by {growth_mib} MiB");
    assert_eq!(recorder_healthy(&gw).await, Some(true));
}

#[tokio::test]
async fn a_worker_closing_mid_stream_ends_the_clients_stream_and_is_ejected() {
    let (_up, gw) = start(Behaviour::CloseMidStream).await;
    for round in 0..2 {
        let r = client()
            .post(gw.url())
            .header("content-type", "application/json")
            .header("accept", common::ACCEPT)
            .body(CALL)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        let mut stream = r.bytes_stream();
        let mut text = String::new();
        let mut ended_with_error = false;
        // Not a hang: the stream ends (cleanly or with an error) well within the timeout.
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
                    Err(_) => {
                        ended_with_error = true;
                        break;
                    }
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "round {round}: the client's stream hung");
        assert!(text.contains("notifications/progress"), "{text}");
        assert!(
            ended_with_error,
            "round {round}: a broken stream looked complete"
        );
    }
    assert!(well_behaved_call(gw.port).await);
    assert_ejected_and_others_served(&gw).await;
}

#[tokio::test]
async fn an_sse_flood_reaches_a_fast_client_and_backs_off_for_a_stalled_one() {
    let (_up, gw) = start(Behaviour::SseFlood).await;
    let open = || async {
        let r = client()
            .post(gw.url())
            .header("content-type", "application/json")
            .header("accept", common::ACCEPT)
            .body(CALL)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        r.bytes_stream()
    };
    let before = vm_rss_kib(gw.pid());
    let mut peak = before;

    // A fast client keeps receiving events.
    let mut fast = open().await;
    let mut events = 0usize;
    let mut total = 0usize;
    while total < 128 << 20 {
        let chunk = fast
            .next()
            .await
            .unwrap_or_else(|| panic!("stream ended"))
            .unwrap_or_else(|e| panic!("{e}"));
        events += chunk.windows(6).filter(|w| w == b"event:").count();
        total += chunk.len();
        peak = peak.max(vm_rss_kib(gw.pid()));
    }
    drop(fast);
    assert!(events > 10_000, "{events} events");

    // A client that stops reading: the gateway stops reading the worker (backpressure)
    // instead of buffering the flood.
    let mut stalled = open().await;
    let _ = stalled.next().await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(vm_rss_kib(gw.pid()));
    }
    assert!(
        well_behaved_call(gw.port).await,
        "the other client was not served"
    );
    drop(stalled);
    let growth_mib = peak.saturating_sub(before) / 1024;
    println!("sse flood: {events} events, {} MiB to the fast client; gateway RSS {before} -> peak {peak} KiB (+{growth_mib} MiB)", total >> 20);
    assert!(growth_mib < 128, "gateway memory grew by {growth_mib} MiB");
}

/// POSTs reach the worker over kept-alive connections, each request's header and body in
/// one write (the worker reads it whole at once; Pingora's proxy loop wrote the header
/// first, so a worker could wake up for a header without its body).
#[tokio::test]
async fn posts_reuse_the_workers_connection_and_arrive_in_one_write() {
    let (up, gw) = start(Behaviour::Answer).await;
    for _ in 0..5 {
        let (status, v) = call(&gw).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["result"]["recorded"], true, "{v}");
        assert_eq!(v["id"], 7, "{v}");
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(
        seen.iter().all(|r| r.conn == seen[0].conn),
        "one kept-alive connection for sequential calls: {:?}",
        seen.iter().map(|r| r.conn).collect::<Vec<_>>()
    );
    assert!(
        seen.iter().all(|r| r.reads == 1),
        "each request read whole at once: {:?}",
        seen.iter().map(|r| r.reads).collect::<Vec<_>>()
    );
    assert!(seen.iter().all(|r| r.body == CALL.as_bytes()));
}

/// A worker that closes a kept-alive connection after answering (a short idle timeout of
/// its own) costs nothing: the next POST goes on a new connection, no failure is counted.
#[tokio::test]
async fn a_worker_closing_its_idle_connections_fails_no_post() {
    let (up, gw) = start(Behaviour::AnswerThenClose).await;
    for _ in 0..3 {
        let (status, v) = call(&gw).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["result"]["recorded"], true, "{v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let seen = up.requests();
    let mut conns: Vec<usize> = seen.iter().map(|r| r.conn).collect();
    conns.dedup();
    assert_eq!(conns.len(), 3, "a new connection each time: {conns:?}");
    assert_eq!(
        recorder_healthy(&gw).await,
        Some(true),
        "no failure counted"
    );
}

/// A connection to a worker left unused for the pool's `idle_timeout` is closed by the
/// gateway, and not before.
#[tokio::test]
async fn an_unused_worker_connection_is_closed_after_idle_timeout() {
    let (up, gw) = start_with(Behaviour::Answer, "    idle_timeout: 1s\n").await;
    let (status, v) = call(&gw).await;
    assert_eq!(status, 200, "{v}");
    let conn = up.requests()[0].conn;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!up.closed(conn), "closed before idle_timeout");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !up.closed(conn) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up.closed(conn), "still open 5 s after the call");
}

/// `Expect: 100-continue` (curl sends it for bodies over 1 KiB): the gateway says `100
/// Continue` once the request passed its checks, reads the body, and does not pass the
/// expectation on to the worker.
#[tokio::test]
async fn a_client_expecting_100_continue_is_told_to_go_on() {
    use tokio::io::AsyncWriteExt;
    let (up, gw) = start(Behaviour::Answer).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\naccept: {}\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        common::ACCEPT,
        CALL.len()
    );
    s.write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = read_until_quiet(&mut s, Duration::from_millis(500)).await;
    let first = String::from_utf8_lossy(&first);
    assert!(first.starts_with("HTTP/1.1 100 Continue\r\n"), "{first}");
    assert!(up.requests().is_empty(), "nothing sent before the body");
    s.write_all(CALL.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let answer = read_until_quiet(&mut s, Duration::from_millis(1000)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"recorded\":true"), "{answer}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].header_all("expect").is_empty(), "{:?}", seen[0]);
    assert_eq!(seen[0].body, CALL.as_bytes());
}

/// An event-stream answer that is whole before its header goes out (the worker's call was
/// done at once) reaches the client with its length instead of chunked: one send instead of
/// four (header, priming event, result, end). Same events, same bytes.
#[tokio::test]
async fn a_whole_event_stream_answer_is_sent_with_its_length() {
    let (_up, gw) = start(Behaviour::SseAnswer).await;
    let r = send_call(&gw).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h.get("transfer-encoding").is_none(), "{h:?}");
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream"),
        "{h:?}"
    );
    let len = h
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let text = r.text().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(len, Some(text.len()), "{h:?}");
    assert!(
        text.starts_with("data: \nid: 0/1\nretry: 3000\n\n"),
        "{text}"
    );
    let answer = common::find_response(&text, 7).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(answer["result"]["recorded"], true, "{answer}");
}
