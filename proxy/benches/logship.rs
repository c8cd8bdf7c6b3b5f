//! Cost of a request-log batch on its way through the Redis stream: encoding it (batcher)
//! and decoding it (shipper), in the current format (2: one list per kind) and the one
//! older versions wrote (1: entries tagged inside), which is still read.
//!
//! cargo bench -p mcp-proxy --bench logship

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mcp_proxy::logship::{Batch, Parts};

mod common;
use common::batch;

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
