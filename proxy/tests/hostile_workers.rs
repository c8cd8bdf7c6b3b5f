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
    let up = Upstream::start(behaviour).await;
    let (port, admin) = (common::free_port(), common::free_port());
    let pool_extra = "    read_timeout: 2s\n    health: { kind: http, path: /health, interval: 1h, unhealthy_after: 2 }\n";
    let config = two_route_config(port, admin, up.port, "", "").replace(
        "    health: { kind: http, path: /health, interval: 1h }\n",
        pool_extra,
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

async fn call(gw: &common::Gateway) -> (u16, serde_json::Value) {
    let r = client()
        .post(gw.url())
        .header("content-type", "application/json")
        .header("accept", common::ACCEPT)
        .body(CALL)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the gateway did not answer: {e}"));
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
