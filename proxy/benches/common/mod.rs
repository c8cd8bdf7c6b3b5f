//! A request-log batch as the default `batch_size` ships it: 256 records of a typical tool
//! call (shared by the log benches).

use mcp_proxy::logship::{Entry, RequestRecord};

///
/// Times are the clock's, as the gateway's are: the log's indexes all end with `at`, so
/// records of the same instant in every batch would land all over them (not how a log grows).
pub fn batch() -> Vec<Entry> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    (0..256)
        .map(|i| {
            Entry::Request(Box::new(RequestRecord {
                request_id: uuid::Uuid::now_v7().to_string(),
                at: now,
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
