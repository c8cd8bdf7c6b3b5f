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

/// A batch's records split by kind, borrowed (from the batcher's entries or a decoded
/// `Batch`); what the sinks and the database take.
#[derive(Default, Debug)]
pub struct Parts<'a> {
    pub requests: Vec<&'a RequestRecord>,
    pub audits: Vec<&'a AuditRecord>,
}

impl<'a> Parts<'a> {
    pub fn of(entries: &'a [Entry]) -> Parts<'a> {
        let mut p = Parts::default();
        p.add_entries(entries);
        p
    }

    /// Add a batch as the batcher holds it.
    pub fn add_entries(&mut self, entries: &'a [Entry]) {
        for e in entries {
            match e {
                Entry::Request(r) => self.requests.push(r),
                Entry::Audit(a) => self.audits.push(a),
            }
        }
    }

    /// Add a decoded batch's records (the shipper writes several stream entries at once).
    pub fn add(&mut self, batch: &'a Batch) {
        self.requests.extend(batch.r.iter());
        self.audits.extend(batch.a.iter());
    }

    pub fn len(&self) -> usize {
        self.requests.len() + self.audits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch's encoding in the stream and the spool (format 2, `Batch`).
    pub fn encode(&self) -> serde_json::Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Out<'b> {
            r: &'b [&'b RequestRecord],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            a: &'b [&'b AuditRecord],
        }
        serde_json::to_vec(&Out {
            r: &self.requests,
            a: &self.audits,
        })
    }

    /// Each record as its own tagged JSON object (the `trace` sink's lines, the same text
    /// an `Entry` serialises to).
    pub fn lines(&self) -> impl Iterator<Item = serde_json::Result<String>> + '_ {
        #[derive(Serialize)]
        #[serde(tag = "t", rename_all = "snake_case")]
        enum Tagged<'b> {
            Request(&'b RequestRecord),
            Audit(&'b AuditRecord),
        }
        let requests = self.requests.iter().map(|&r| Tagged::Request(r));
        let audits = self.audits.iter().map(|&a| Tagged::Audit(a));
        requests.chain(audits).map(|t| serde_json::to_string(&t))
    }
}

/// A batch as it travels through the Redis stream and the spool. Format 2 (written now) is
/// an object with each kind in its own list, `{"r":[…],"a":[…]}`, so every record decodes
/// in one pass. Format 1, an array of entries tagged inside (`[{"t":"request",…}]`), is
/// still read, for a spool or stream left by an older version; serde buffers each such
/// entry whole before decoding it (2.3 µs per record against 1.6 for format 2,
/// `benches/logship.rs`).
#[derive(Default, Debug, PartialEq, Deserialize)]
pub struct Batch {
    #[serde(default)]
    pub r: Vec<RequestRecord>,
    #[serde(default)]
    pub a: Vec<AuditRecord>,
}

impl Batch {
    /// Either format.
    pub fn decode(payload: &[u8]) -> serde_json::Result<Batch> {
        let first = payload.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            let mut b = Batch::default();
            for e in serde_json::from_slice::<Vec<Entry>>(payload)? {
                match e {
                    Entry::Request(r) => b.r.push(*r),
                    Entry::Audit(a) => b.a.push(*a),
                }
            }
            return Ok(b);
        }
        serde_json::from_slice(payload)
    }

    pub fn parts(&self) -> Parts<'_> {
        let mut p = Parts::default();
        p.add(self);
        p
    }

    pub fn len(&self) -> usize {
        self.r.len() + self.a.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

    fn sample() -> Vec<Entry> {
        vec![
            Entry::Request(Box::new(RequestRecord {
                request_id: "r1".into(),
                status: 200,
                auth: "ok".into(),
                tool: Some("add \"quoted\" é".into()),
                ..Default::default()
            })),
            Entry::Audit(Box::new(AuditRecord {
                id: "a1".into(),
                at: 5,
                kind: "login_failed".into(),
                user_id: None,
                subject: Some("x@y".into()),
                ip: None,
                detail: serde_json::json!({"why": "password"}),
            })),
            Entry::Request(Box::new(RequestRecord {
                request_id: "r2".into(),
                status: 429,
                auth: "ok".into(),
                rate_limit: Some("limited".into()),
                ..Default::default()
            })),
        ]
    }

    #[test]
    fn batches_round_trip_in_format_2_and_format_1_is_still_read() {
        let entries = sample();
        let parts = Parts::of(&entries);
        assert_eq!((parts.requests.len(), parts.audits.len()), (2, 1));
        let payload = parts.encode().unwrap();
        assert!(
            payload.starts_with(b"{\"r\":["),
            "{}",
            String::from_utf8_lossy(&payload)
        );
        let back = Batch::decode(&payload).unwrap();
        assert_eq!(
            back.r
                .iter()
                .map(|r| r.request_id.as_str())
                .collect::<Vec<_>>(),
            ["r1", "r2"]
        );
        assert_eq!(back.r[0], *parts.requests[0]);
        assert_eq!(back.a[0], *parts.audits[0]);
        // What an older version spooled or put in the stream.
        let old = serde_json::to_vec(&entries).unwrap();
        assert!(old.starts_with(b"["));
        assert_eq!(Batch::decode(&old).unwrap(), back);
        // Requests only: no audit list written.
        let only = Parts::of(&entries[2..]).encode().unwrap();
        assert!(!String::from_utf8_lossy(&only).contains("\"a\""));
        assert_eq!(Batch::decode(&only).unwrap().len(), 1);
        assert!(Batch::decode(b"{\"r\": 5}").is_err());
        assert!(Batch::decode(b"garbage").is_err());
    }

    #[test]
    fn trace_lines_are_the_entries_json() {
        let entries = sample();
        let lines: Vec<String> = Parts::of(&entries).lines().map(|l| l.unwrap()).collect();
        assert_eq!(lines.len(), 3);
        for line in &lines {
            let e: Entry = serde_json::from_str(line).unwrap();
            assert!(entries.contains(&e), "{line}");
        }
    }
}
