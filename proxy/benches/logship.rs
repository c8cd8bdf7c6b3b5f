//! Cost of a request-log batch on its way through the Redis stream: encoding it (batcher)
//! and decoding it (shipper), in the current format (2: one list per kind) and the one
//! older versions wrote (1: entries tagged inside), which is still read.
//!
//! cargo bench -p mcp-proxy --bench logship

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mcp_proxy::logship::{Batch, Entry, Parts, RequestRecord};

/// A batch as the default `batch_size` ships it: 256 records of a typical tool call.
fn batch() -> Vec<Entry> {
    (0..256)
        .map(|i| {
            Entry::Request(Box::new(RequestRecord {
                request_id: uuid::Uuid::now_v7().to_string(),
                at: 1_795_000_000_000 + i,
                user_id: Some("0197a6f0-5a3e-7c1b-9f00-3b1d2c4e5f60".into()),
                api_key_id: None,
                client_ip: Some("10.1.2.3".into()),
                user_agent: Some("python-httpx/0.28.1".into()),
                route: Some("/mcp".into()),
                pool: Some("tools".into()),
                worker: Some("127.0.0.1:9101".into()),
                http_method: "POST".into(),
                rpc_method: Some("tools/call".into()),
                tool: Some("search_documents".into()),
                session_hash: Some("9f86d081884c7d65".into()),
                protocol_version: Some("2025-06-18".into()),
                status: 200,
                rpc_error: None,
                latency_us: 1843 + i,
                upstream_us: Some(1611 + i),
                bytes_in: 187,
                bytes_out: 912,
                rate_limit: Some("allowed".into()),
                auth: "ok".into(),
                error: None,
                request_body: None,
                response_body: None,
            }))
        })
        .collect()
}

fn formats(c: &mut Criterion) {
    let entries = batch();
    let v2 = Parts::of(&entries).encode().unwrap_or_default();
    let v1 = serde_json::to_vec(&entries).unwrap_or_default();
    let mut g = c.benchmark_group("log_batch_256");
    g.throughput(Throughput::Elements(entries.len() as u64));
    g.bench_function("encode/format2", |b| {
        b.iter(|| Parts::of(&entries).encode().map(|p| p.len()))
    });
    g.bench_function("encode/format1", |b| {
        b.iter(|| serde_json::to_vec(&entries).map(|p| p.len()))
    });
    g.bench_function("decode/format2", |b| {
        b.iter(|| Batch::decode(&v2).map(|x| x.len()))
    });
    g.bench_function("decode/format1", |b| {
        b.iter(|| Batch::decode(&v1).map(|x| x.len()))
    });
    g.finish();
}

criterion_group!(benches, formats);
criterion_main!(benches);
