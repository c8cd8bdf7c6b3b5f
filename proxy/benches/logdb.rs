//! Cost of writing a request-log batch into SQLite: the log pipeline's database step, with
//! the pool the gateway uses (`logship::db::connect`: its pragmas, 64 rows per INSERT).
//!
//! cargo bench -p mcp-proxy --bench logdb

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mcp_proxy::logship::{db, Parts};
use mcp_proxy::store::Backend;

mod common;
use common::batch;

fn writes(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("mcp-logdb-bench-{}", std::process::id()));
    let url = format!("sqlite://{}/log.db", dir.display());
    let pool = match rt.block_on(db::connect(&url, true)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot open {url}: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group("log_db_256");
    g.throughput(Throughput::Elements(256));
    g.bench_function("sqlite/insert", |b| {
        b.iter_batched(
            batch,
            |entries| {
                rt.block_on(db::write_batch(
                    &pool,
                    &Parts::of(&entries),
                    Backend::Sqlite,
                ))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    rt.block_on(pool.close());
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, writes);
criterion_main!(benches);
