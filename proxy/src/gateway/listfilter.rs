//! Rewriting `tools/list` answers so a tool the caller may not call never appears, whether
//! the worker answers in JSON (buffered to the end, bounded) or in SSE (event by event, so
//! the stream is never held back longer than one event).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::policy::tools::ToolPolicy;

/// Longest `tools/list` answer or single SSE event the gateway will hold to filter.
pub const MAX_HELD: usize = 16 * 1024 * 1024;

pub struct ListFilter {
    policy: Arc<ToolPolicy>,
    roles: Vec<String>,
    sse: bool,
    buf: BytesMut,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

/// The end of the first complete SSE event in `buf` (index just past its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl ListFilter {
    pub fn new(policy: Arc<ToolPolicy>, roles: Vec<String>, sse: bool) -> ListFilter {
        ListFilter {
            policy,
            roles,
            sse,
            buf: BytesMut::new(),
        }
    }

    fn filter_event(&self, event: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(event).ok()?;
        let mut data = String::new();
        let mut other = Vec::new();
        for line in text.lines() {
            if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            } else if !line.is_empty() {
                other.push(line);
            }
        }
        let filtered = self
            .policy
            .filter_list_message(&self.roles, data.as_bytes())?;
        let mut out = Vec::with_capacity(filtered.len() + 64);
        for line in other {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&filtered);
        out.extend_from_slice(b"\n\n");
        Some(out)
    }

    /// Take the chunk, give back what may go to the client now.
    pub fn on_chunk(&mut self, body: &mut Option<Bytes>, end: bool) -> Result<(), TooLarge> {
        if let Some(chunk) = body.take() {
            if self.buf.len() + chunk.len() > MAX_HELD {
                return Err(TooLarge);
            }
            self.buf.extend_from_slice(&chunk);
        }
        if !self.sse {
            if end {
                let whole = self.buf.split().freeze();
                *body = Some(match self.policy.filter_list_message(&self.roles, &whole) {
                    Some(v) => Bytes::from(v),
                    None => whole,
                });
            }
            return Ok(());
        }
        let mut out = BytesMut::new();
        while let Some(n) = event_end(&self.buf) {
            let event = self.buf.split_to(n);
            match self.filter_event(&event) {
                Some(rewritten) => out.extend_from_slice(&rewritten),
                None => out.extend_from_slice(&event),
            }
        }
        if end && !self.buf.is_empty() {
            out.extend_from_slice(&self.buf.split());
        }
        if !out.is_empty() {
            *body = Some(out.freeze());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tools::ToolRule;

    fn filter(sse: bool) -> ListFilter {
        let policy = ToolPolicy::new(vec![ToolRule::new(
            vec!["*".into()],
            &["*".to_string()],
            &["secret".to_string()],
        )
        .unwrap()]);
        ListFilter::new(Arc::new(policy), vec![], sse)
    }

    const LIST: &str =
        r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"add"},{"name":"secret"}]}}"#;

    #[test]
    fn json_is_held_to_the_end_then_filtered() {
        let mut f = filter(false);
        let (a, b) = LIST.split_at(20);
        let mut chunk = Some(Bytes::from(a.to_string()));
        f.on_chunk(&mut chunk, false).unwrap();
        assert_eq!(chunk, None);
        let mut chunk = Some(Bytes::from(b.to_string()));
        f.on_chunk(&mut chunk, true).unwrap();
        let out = String::from_utf8(chunk.unwrap().to_vec()).unwrap();
        assert!(out.contains("\"add\"") && !out.contains("secret"), "{out}");
    }

    #[test]
    fn sse_events_are_filtered_as_they_complete() {
        let mut f = filter(true);
        let stream = format!("id: 0\nretry: 3000\ndata: \n\nid: 1\ndata: {LIST}\n\n");
        let (a, b) = stream.split_at(30);
        let mut chunk = Some(Bytes::from(a.to_string()));
        f.on_chunk(&mut chunk, false).unwrap();
        let first = String::from_utf8(chunk.unwrap().to_vec()).unwrap();
        assert_eq!(
            first, "id: 0\nretry: 3000\ndata: \n\n",
            "the priming event passes at once"
        );
        let mut chunk = Some(Bytes::from(b.to_string()));
        f.on_chunk(&mut chunk, true).unwrap();
        let second = String::from_utf8(chunk.unwrap().to_vec()).unwrap();
        assert!(second.starts_with("id: 1\ndata: {"), "{second}");
        assert!(!second.contains("secret") && second.contains("\"add\""));
    }

    #[test]
    fn oversized_answers_are_refused() {
        let mut f = filter(false);
        let mut chunk = Some(Bytes::from(vec![b'x'; MAX_HELD + 1]));
        assert_eq!(f.on_chunk(&mut chunk, false), Err(TooLarge));
    }
}
