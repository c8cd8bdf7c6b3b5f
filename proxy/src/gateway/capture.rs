//! Request and response bodies kept in the request log on routes with `log_bodies`. Only
//! what can be redacted is kept: JSON bodies and the JSON `data:` lines of SSE streams, with
//! the configured fields' values replaced at any depth; anything else is described, not kept.

use crate::config::BodyCapture;

/// Most response bytes held per request for capture (the rest is counted, not kept).
pub fn buffer_limit(cfg: &BodyCapture) -> usize {
    (cfg.max_bytes * 4).clamp(64 * 1024, 1 << 20)
}

/// Keep the start of a response body, up to the buffer limit.
pub fn hold(buf: &mut Vec<u8>, cut: &mut u64, chunk: &[u8], cfg: &BodyCapture) {
    let room = buffer_limit(cfg).saturating_sub(buf.len());
    let take = room.min(chunk.len());
    buf.extend_from_slice(&chunk[..take]);
    *cut += (chunk.len() - take) as u64;
}

fn redact(v: &mut serde_json::Value, fields: &[String]) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if fields.iter().any(|f| f.eq_ignore_ascii_case(k)) {
                    *val = serde_json::Value::String("[redacted]".into());
                } else {
                    redact(val, fields);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                redact(item, fields);
            }
        }
        _ => {}
    }
}

fn redacted_json(text: &str, fields: &[String]) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(text).ok()?;
    redact(&mut v, fields);
    Some(v.to_string())
}

/// The body as it is stored: redacted, then cut to `max_bytes` (on a character boundary).
/// `cut` is how many bytes the buffer could not keep.
pub fn render(raw: &[u8], cut: u64, cfg: &BodyCapture) -> String {
    let total = raw.len() as u64 + cut;
    let text = String::from_utf8_lossy(raw);
    let out = if cut == 0 {
        redacted_json(&text, &cfg.redact)
    } else {
        None
    };
    let out = match out {
        Some(json) => json,
        None if text.lines().any(|l| l.starts_with("data:")) => {
            // SSE: complete lines only; a data line that is not JSON is described.
            let complete = match text.rfind('\n') {
                Some(end) if cut > 0 || !text.ends_with('\n') => &text[..end],
                _ => &text[..],
            };
            let mut s = String::new();
            for line in complete.lines() {
                match line.strip_prefix("data:") {
                    Some(data) => match redacted_json(data.trim(), &cfg.redact) {
                        Some(j) => s.push_str(&format!("data: {j}")),
                        None => s.push_str(&format!("data: [non-JSON data, {} bytes]", data.len())),
                    },
                    None => s.push_str(line),
                }
                s.push('\n');
            }
            s
        }
        None => format!("[body of {total} bytes not kept: not JSON, or too large to redact]"),
    };
    if out.len() <= cfg.max_bytes {
        return out;
    }
    let mut end = cfg.max_bytes;
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[cut: {total} bytes in all]", &out[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: usize) -> BodyCapture {
        BodyCapture {
            max_bytes: max,
            redact: vec!["password".into(), "token".into()],
        }
    }

    #[test]
    fn json_fields_are_redacted_at_any_depth_and_case() {
        let body =
            br#"{"params":{"arguments":{"Password":"hunter2","list":[{"token":"t"}],"q":"ok"}}}"#;
        let out = render(body, 0, &cfg(4096));
        assert!(!out.contains("hunter2") && !out.contains("\"t\""), "{out}");
        assert!(
            out.contains("[redacted]") && out.contains("\"q\":\"ok\""),
            "{out}"
        );
    }

    #[test]
    fn sse_data_lines_are_redacted_and_other_bodies_described() {
        let sse =
            b"event: message\ndata: {\"result\":{\"token\":\"abc\"}}\n\ndata: plain words\n\n";
        let out = render(sse, 0, &cfg(4096));
        assert!(out.contains("event: message"));
        assert!(!out.contains("abc") && out.contains("[redacted]"), "{out}");
        assert!(out.contains("[non-JSON data, 12 bytes]"), "{out}");
        let out = render(b"password=hunter2", 0, &cfg(4096));
        assert!(!out.contains("hunter2"));
        assert!(out.contains("not kept"), "{out}");
        // A JSON body the buffer could not hold whole cannot be redacted: not kept.
        let out = render(br#"{"password":"hunter2""#, 10, &cfg(4096));
        assert!(!out.contains("hunter2"), "{out}");
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary_and_say_so() {
        let body = format!("{{\"q\":\"{}\"}}", "é".repeat(100));
        let out = render(body.as_bytes(), 0, &cfg(20));
        assert!(out.starts_with("{\"q\":\""));
        assert!(out.contains("…[cut: 208 bytes in all]"), "{out}");
        let mut buf = Vec::new();
        let mut cut = 0;
        let c = cfg(10);
        hold(&mut buf, &mut cut, &vec![b'x'; 70_000], &c);
        assert_eq!(buf.len(), 64 * 1024);
        assert_eq!(cut, 70_000 - 64 * 1024);
    }
}
