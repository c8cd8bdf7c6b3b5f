//! JSON-RPC message parsing: just enough of each message (method, id, tool name) for
//! routing, policy and logs. The body itself is forwarded byte-identical.

use serde::Deserialize;
use serde_json::value::RawValue;

/// What the gateway learned from one JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageInfo {
    /// `None` for responses (a client answering a server request).
    pub method: Option<String>,
    /// The raw JSON text of the id (`1`, `"abc"`); `None` for notifications.
    pub id: Option<String>,
    /// For `tools/call`: `params.name`.
    pub tool: Option<String>,
    /// The parameter the 2026-07-28 `Mcp-Name` header repeats: `params.name` of
    /// `tools/call` and `prompts/get`, `params.uri` of `resources/read`.
    pub name: Option<String>,
}

/// A parsed POST body: one message or a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub messages: Vec<MessageInfo>,
    pub batch: bool,
}

impl Body {
    pub fn first(&self) -> Option<&MessageInfo> {
        self.messages.first()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("parse error: {0}")]
    Syntax(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct NameParams {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
}

/// The body parameter named by `Mcp-Name` for this method, if the method has one.
fn name_key(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

fn message(w: Wire<'_>) -> Result<MessageInfo, ParseError> {
    if w.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(ParseError::Invalid("\"jsonrpc\" must be \"2.0\"".into()));
    }
    let id = match w.id {
        Some(raw) => {
            let text = raw.get();
            let ok = text.starts_with('"')
                || text.starts_with('-')
                || text.as_bytes()[0].is_ascii_digit();
            if !ok && text != "null" {
                return Err(ParseError::Invalid(
                    "\"id\" must be a string or a number".into(),
                ));
            }
            Some(text.to_string())
        }
        None => None,
    };
    match &w.method {
        Some(method) => {
            let (mut tool, mut name) = (None, None);
            if let Some(key) = name_key(method) {
                let params: Option<NameParams> = match w.params {
                    Some(raw) => Some(serde_json::from_str(raw.get()).map_err(|_| {
                        ParseError::Invalid(format!("{method} params must be an object"))
                    })?),
                    None => None,
                };
                name = params.and_then(|p| if key == "uri" { p.uri } else { p.name });
                if method == "tools/call" {
                    tool = Some(name.clone().ok_or_else(|| {
                        ParseError::Invalid("tools/call needs params.name".into())
                    })?);
                }
            }
            Ok(MessageInfo {
                method: Some(method.clone()),
                id,
                tool,
                name,
            })
        }
        None if w.result.is_some() || w.error.is_some() => Ok(MessageInfo {
            method: None,
            id,
            tool: None,
            name: None,
        }),
        None => Err(ParseError::Invalid(
            "a message needs \"method\", or \"result\"/\"error\"".into(),
        )),
    }
}

/// JSON nested deeper than this is refused before any worker has to parse it.
pub const MAX_DEPTH: usize = 128;

/// Does the nesting of arrays and objects (outside strings) stay within `limit`?
fn depth_within(body: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Parse a POST body. Syntax errors map to JSON-RPC -32700, shape errors to -32600.
pub fn parse(body: &[u8]) -> Result<Body, ParseError> {
    if !depth_within(body, MAX_DEPTH) {
        return Err(ParseError::Invalid(format!(
            "JSON nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(ParseError::Syntax("empty body".into())),
        Some(b'[') => {
            let wires: Vec<&RawValue> =
                serde_json::from_slice(body).map_err(|e| ParseError::Syntax(e.to_string()))?;
            if wires.is_empty() {
                return Err(ParseError::Invalid("empty batch".into()));
            }
            let mut messages = Vec::with_capacity(wires.len());
            for raw in wires {
                let w: Wire<'_> = serde_json::from_str(raw.get())
                    .map_err(|_| ParseError::Invalid("batch entries must be objects".into()))?;
                messages.push(message(w)?);
            }
            Ok(Body {
                messages,
                batch: true,
            })
        }
        Some(b'{') => {
            let w: Wire<'_> = serde_json::from_slice(body).map_err(|e| {
                if e.is_syntax() || e.is_eof() {
                    ParseError::Syntax(e.to_string())
                } else {
                    ParseError::Invalid(e.to_string())
                }
            })?;
            Ok(Body {
                messages: vec![message(w)?],
                batch: false,
            })
        }
        Some(_) => match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(ParseError::Invalid(
                "a message must be a JSON object or an array of them".into(),
            )),
            Err(e) => Err(ParseError::Syntax(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_with_tool() {
        let b = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}"#).unwrap();
        assert!(!b.batch);
        let m = b.first().unwrap();
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        assert_eq!(m.id.as_deref(), Some("7"));
        assert_eq!(m.tool.as_deref(), Some("add"));
        assert_eq!(m.name.as_deref(), Some("add"));
        let r = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#,
        )
        .unwrap();
        assert_eq!(r.first().unwrap().name.as_deref(), Some("file:///a"));
        assert_eq!(r.first().unwrap().tool, None);
    }

    #[test]
    fn notification_and_response() {
        let b = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(b.first().unwrap().id, None);
        let r = parse(br#"{"jsonrpc":"2.0","id":"x","result":{}}"#).unwrap();
        assert_eq!(r.first().unwrap().method, None);
        assert_eq!(r.first().unwrap().id.as_deref(), Some("\"x\""));
    }

    #[test]
    fn batch_keeps_every_tool() {
        let b = parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
                           {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b"}}]"#,
        )
        .unwrap();
        assert!(b.batch);
        let tools: Vec<_> = b.messages.iter().filter_map(|m| m.tool.clone()).collect();
        assert_eq!(tools, vec!["a", "b"]);
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(
            parse(b"{\"jsonrpc\":"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(parse(b""), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"not json"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse(b"42"), Err(ParseError::Invalid(_))));
        assert!(matches!(parse(b"[]"), Err(ParseError::Invalid(_))));
        assert!(matches!(
            parse(br#"{"jsonrpc":"1.0","method":"x"}"#),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1}"#),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let nest = |n: usize| {
            format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":{}{}}}",
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(matches!(
            parse(nest(100_000).as_bytes()),
            Err(ParseError::Invalid(_))
        ));
        assert!(parse(nest(MAX_DEPTH - 1).as_bytes()).is_ok());
        assert!(matches!(
            parse(nest(MAX_DEPTH).as_bytes()),
            Err(ParseError::Invalid(_))
        ));
        // Brackets inside strings do not count.
        let quoted = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":{{\"s\":\"{}\\\"\"}}}}",
            "[".repeat(1000)
        );
        assert!(parse(quoted.as_bytes()).is_ok(), "{quoted}");
    }
}
