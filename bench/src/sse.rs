//! Incremental parser for `text/event-stream` bodies.
//!
//! Bytes arrive in arbitrary chunks; [`SseParser::feed`] returns every event
//! completed by the chunk. Lines end with `\n`, `\r\n` or `\r`; an empty line
//! dispatches the event. Only `data`, `event` and `id` fields are kept.

/// One dispatched server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `id:` field, if any.
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: Vec<u8>,
}

/// Incremental SSE parser.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a line end.
    scanned: usize,
    current: SseEvent,
    /// Whether the current event saw at least one `data:` line.
    has_data: bool,
    /// The previous chunk ended with `\r`: a leading `\n` belongs to it.
    skip_lf: bool,
}

impl SseParser {
    /// A parser with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed a chunk; returns the events it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut chunk = chunk;
        if self.skip_lf {
            if let Some((&b'\n', rest)) = chunk.split_first() {
                chunk = rest;
            }
            if !chunk.is_empty() {
                self.skip_lf = false;
            }
        }
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        let mut pos = self.scanned.max(start);
        while pos < self.buf.len() {
            let b = self.buf[pos];
            if b != b'\n' && b != b'\r' {
                pos += 1;
                continue;
            }
            let line_end = pos;
            let mut next = pos + 1;
            if b == b'\r' {
                match self.buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    // The `\n` of a `\r\n` may come in the next chunk.
                    None => self.skip_lf = true,
                }
            }
            let line = self.buf[start..line_end].to_vec();
            if let Some(ev) = self.line(&line) {
                events.push(ev);
            }
            start = next;
            pos = next;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        events
    }

    /// End of stream: an event whose blank line never came is dispatched if
    /// it carried data (lenient; the spec would drop it).
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.scanned = 0;
            if let Some(ev) = self.line(&line) {
                return Some(ev);
            }
        }
        self.dispatch()
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let ev = std::mem::take(&mut self.current);
        let had = std::mem::replace(&mut self.has_data, false);
        had.then_some(ev)
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None; // comment
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.current.data.push(b'\n');
                }
                self.current.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.current.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"id" => self.current.id = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datas(events: &[SseEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect()
    }

    #[test]
    fn parses_whole_stream() {
        let mut p = SseParser::new();
        let evs = p.feed(b"data: {\"a\":1}\n\nevent: message\nid: 7\ndata: x\ndata: y\n\n");
        assert_eq!(datas(&evs), vec!["{\"a\":1}", "x\ny"]);
        assert_eq!(evs[1].event.as_deref(), Some("message"));
        assert_eq!(evs[1].id.as_deref(), Some("7"));
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn rmcp_priming_event_with_empty_data_is_dispatched_empty() {
        let mut p = SseParser::new();
        let evs = p.feed(b"data: \nid: 0\nretry: 3000\n\ndata: {}\n\n");
        assert_eq!(datas(&evs), vec!["", "{}"]);
        assert_eq!(evs[0].id.as_deref(), Some("0"));
    }

    #[test]
    fn byte_by_byte_and_crlf_split_across_chunks() {
        let stream = b": keep-alive\r\ndata:abc\r\n\r\ndata: d\rdata: e\r\r";
        let mut p = SseParser::new();
        let mut evs = Vec::new();
        for b in stream.iter() {
            evs.extend(p.feed(std::slice::from_ref(b)));
        }
        assert_eq!(datas(&evs), vec!["abc", "d\ne"]);
    }

    #[test]
    fn comments_and_unknown_fields_ignored_events_without_data_dropped() {
        let mut p = SseParser::new();
        let evs = p.feed(b": ping\n\nretry: 10\n\nfoo: bar\ndata\n\n");
        // `data` with no colon is a data line with an empty value.
        assert_eq!(datas(&evs), vec![""]);
    }

    #[test]
    fn large_line_in_many_chunks() {
        let payload = "x".repeat(100_000);
        let body = format!("data: {payload}\n\n");
        let mut p = SseParser::new();
        let mut evs = Vec::new();
        for c in body.as_bytes().chunks(4096) {
            evs.extend(p.feed(c));
        }
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data.len(), 100_000);
    }

    #[test]
    fn finish_flushes_unterminated_event() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: tail").is_empty());
        let ev = p.finish();
        assert_eq!(ev.map(|e| e.data), Some(b"tail".to_vec()));
        assert_eq!(p.finish(), None);
    }
}
