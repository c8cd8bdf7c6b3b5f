//! What is recorded: one `RequestRecord` per request, and audit events, both serialised as
//! JSON on their way through Redis and the spool.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Text that is most often one of a few fixed words (no allocation on the request path).
pub type Word = Cow<'static, str>;

/// One request, as stored in `request_logs`. Times are unix milliseconds, durations
/// microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub request_id: String,
    pub at: i64,
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub route: Option<String>,
    pub pool: Option<String>,
    pub worker: Option<String>,
    pub http_method: Word,
    pub rpc_method: Option<String>,
    pub tool: Option<String>,
    /// The first 16 hex digits of SHA-256 of the sealed session id (never the id itself).
    pub session_hash: Option<String>,
    pub protocol_version: Option<String>,
    pub status: u16,
    pub rpc_error: Option<i64>,
    pub latency_us: i64,
    pub upstream_us: Option<i64>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    /// The rate limiter's decision (`allowed`, `limited`, …), when one was taken.
    pub rate_limit: Option<Word>,
    /// `anonymous`, `ok`, or the refusal kind (`unauthenticated`, `forbidden`, …).
    pub auth: Word,
    /// The gateway's refusal kind, when it answered itself.
    pub error: Option<Word>,
    /// Captured bodies, on routes with `log_bodies` (size-capped, configured fields redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

/// A security event for `audit_events`. The id is made when the event is, so a replayed
/// batch inserts it once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub at: i64,
    pub kind: String,
    pub user_id: Option<String>,
    pub subject: Option<String>,
    pub ip: Option<String>,
    pub detail: serde_json::Value,
}

/// One item of the pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Entry {
    Request(Box<RequestRecord>),
    Audit(Box<AuditRecord>),
}

/// Longest request id accepted from a client.
pub const MAX_REQUEST_ID: usize = 128;

/// A client's `X-Request-Id` when it is usable (1–128 characters of `A–Z a–z 0–9 - _ . : @`),
/// otherwise a new UUID v7 (time-ordered).
pub fn request_id(presented: Option<&[u8]>) -> String {
    match presented {
        Some(v) if valid_request_id(v) => String::from_utf8_lossy(v).into_owned(),
        _ => uuid::Uuid::now_v7().to_string(),
    }
}

pub fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(b))
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_safe() {
        assert_eq!(request_id(Some(b"abc-123_X.y:z@w")), "abc-123_X.y:z@w");
        for bad in [&b""[..], b"a b", b"<script>", b"x\ny", "é".as_bytes()] {
            let id = request_id(Some(bad));
            assert_ne!(id.as_bytes(), bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        let long = vec![b'a'; MAX_REQUEST_ID + 1];
        assert_eq!(request_id(Some(&long)).len(), 36);
        assert_eq!(
            request_id(Some(&long[..MAX_REQUEST_ID])).len(),
            MAX_REQUEST_ID
        );
        assert_ne!(request_id(None), request_id(None));
    }

    #[test]
    fn entries_round_trip_as_json() {
        let e = Entry::Request(Box::new(RequestRecord {
            request_id: "r1".into(),
            status: 200,
            auth: "ok".into(),
            tool: Some("add".into()),
            ..Default::default()
        }));
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), e);
    }
}
