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
    #[serde(default)]
    params: Option<Params>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// What `params` holds, read in the same pass as the rest of the message: any value is
/// accepted here (most methods' params are none of the gateway's business); an object's
/// `name` and `uri` members are kept for the methods that have one (`name_key`).
#[derive(Debug, Default)]
struct Params {
    object: bool,
    name: Member,
    uri: Member,
}

/// One member of `params`: absent, a string, or something the name methods must refuse (not
/// a string, or given twice: a worker might read the other copy than the policy did).
#[derive(Debug, Default)]
enum Member {
    #[default]
    Absent,
    Str(String),
    Invalid,
}

impl Member {
    fn set(&mut self, value: Option<String>) {
        *self = match (&*self, value) {
            (Member::Absent, Some(s)) => Member::Str(s),
            _ => Member::Invalid,
        };
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParamsVisitor)
    }
}

struct ParamsVisitor;

impl<'de> serde::de::Visitor<'de> for ParamsVisitor {
    type Value = Params;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let mut p = Params {
            object: true,
            ..Params::default()
        };
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Name => p.name.set(map.next_value::<StringOrOther>()?.0),
                Key::Uri => p.uri.set(map.next_value::<StringOrOther>()?.0),
                Key::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Params::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Params, E> {
        Ok(Params::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Params, E> {
        Ok(Params::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Params, E> {
        Ok(Params::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Params, E> {
        Ok(Params::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Params, E> {
        Ok(Params::default())
    }
    fn visit_unit<E>(self) -> Result<Params, E> {
        Ok(Params::default())
    }
}

/// A key of `params`, compared after unescaping (`"na\u006de"` is `name`).
enum Key {
    Name,
    Uri,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "name" => Key::Name,
                    "uri" => Key::Uri,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A string value, or `None` for any other JSON value (skipped without allocating).
struct StringOrOther(Option<String>);

impl<'de> Deserialize<'de> for StringOrOther {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringOrOther;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<StringOrOther, E> {
                Ok(StringOrOther(Some(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<StringOrOther, E> {
                Ok(StringOrOther(Some(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StringOrOther, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(StringOrOther(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StringOrOther, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(StringOrOther(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
            fn visit_unit<E>(self) -> Result<StringOrOther, E> {
                Ok(StringOrOther(None))
            }
        }
        d.deserialize_any(V)
    }
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
                name = match w.params {
                    None => None,
                    Some(p) => {
                        let member = if key == "uri" { p.uri } else { p.name };
                        match (p.object, member) {
                            (true, Member::Absent) => None,
                            (true, Member::Str(s)) => Some(s),
                            _ => {
                                return Err(ParseError::Invalid(format!(
                                    "{method} params must be an object"
                                )))
                            }
                        }
                    }
                };
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
///
/// String contents (most of a large body) are skipped with `memchr2` for the next quote or
/// backslash instead of byte by byte. Malformed input only has to be scanned safely here:
/// serde_json rejects it afterwards.
fn depth_within(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < body.len() {
        match body[i] {
            b'"' => {
                // Inside a string: jump from one quote or backslash to the next.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &body[i..]) {
                        None => return true,
                        Some(off) if body[i + off] == b'\\' => i += off + 2,
                        Some(off) => {
                            i += off + 1;
                            break;
                        }
                    }
                    if i >= body.len() {
                        return true;
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
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

    /// The byte-by-byte scan the fast one replaced: the reference it must agree with.
    fn depth_within_reference(body: &[u8], limit: usize) -> bool {
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

    #[test]
    fn fast_depth_scan_agrees_with_the_byte_by_byte_one() {
        // Inputs made of the bytes that matter (quotes, escapes, brackets) plus filler,
        // from a fixed-seed xorshift so failures reproduce; limits small enough to be hit.
        let alphabet = b"\"\\[]{}a ,:";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut refused, mut accepted) = (0, 0);
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let body: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let limit = (next() % 6) as usize;
            let want = depth_within_reference(&body, limit);
            assert_eq!(
                depth_within(&body, limit),
                want,
                "{:?} limit {limit}",
                String::from_utf8_lossy(&body)
            );
            if want {
                accepted += 1
            } else {
                refused += 1
            }
        }
        // Both outcomes were exercised.
        assert!(refused > 1000 && accepted > 1000, "{refused} {accepted}");
        // Edge cases: a trailing backslash, an escaped quote, an unterminated string.
        for (body, limit, want) in [
            (&b"\"\\"[..], 0, true),
            (b"\"\\\"[\"[", 0, false),
            (b"\"[[[", 0, true),
            (b"[\"\\\\\"[", 1, false),
        ] {
            assert_eq!(depth_within(body, limit), want, "{body:?}");
            assert_eq!(depth_within_reference(body, limit), want, "{body:?}");
        }
    }

    /// What `parse` must say about `params` for a method with a name parameter, computed
    /// the slow way through `serde_json::Value`: `Ok(name)` or `Err(())` for a refusal.
    fn name_by_value(body: &str, key: &str) -> Result<Option<String>, ()> {
        let v: serde_json::Value = serde_json::from_str(body).map_err(|_| ())?;
        match v.get("params") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Object(m)) => match m.get(key) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(()),
            },
            Some(_) => Err(()),
        }
    }

    #[test]
    fn one_pass_params_agree_with_a_value_parse() {
        let values = [
            r#""add""#,
            r#""na\"me\\ é \u00e9""#,
            "7",
            "-1.5e3",
            "true",
            "null",
            r#"{"name":"inner"}"#,
            r#"["name",{"uri":"x"}]"#,
            r#"{"a":[1,{"b":"c"}]}"#,
        ];
        let keys = ["name", "uri", "arguments", "na\\u006de", "_meta"];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut names = 0;
        for _ in 0..5_000 {
            let params = match next(6) {
                0 => None,
                1 => Some(values[next(values.len())].to_string()),
                _ => {
                    // An object with distinct keys in random order.
                    let mut members: Vec<String> = Vec::new();
                    let mut used = [false; 5];
                    for _ in 0..next(5) {
                        let k = next(keys.len());
                        // `name` and its escaped spelling are the same key.
                        let slot = if k == 3 { 0 } else { k };
                        if used[slot] {
                            continue;
                        }
                        used[slot] = true;
                        members.push(format!("\"{}\":{}", keys[k], values[next(values.len())]));
                    }
                    Some(format!("{{{}}}", members.join(",")))
                }
            };
            let method = ["tools/call", "prompts/get", "resources/read", "tools/list"][next(4)];
            let body = match &params {
                Some(p) => {
                    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{p}}}"#)
                }
                None => format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#),
            };
            let got = parse(body.as_bytes());
            let Some(key) = name_key(method) else {
                // No name parameter: any params are accepted as they are.
                let m = got.unwrap_or_else(|e| panic!("{body}: {e}"));
                assert_eq!(m.first().and_then(|m| m.name.clone()), None, "{body}");
                continue;
            };
            match name_by_value(&body, key) {
                Err(()) => assert!(
                    matches!(got, Err(ParseError::Invalid(_))),
                    "{body}: {got:?}"
                ),
                Ok(None) if method == "tools/call" => assert!(
                    matches!(got, Err(ParseError::Invalid(_))),
                    "{body}: {got:?}"
                ),
                Ok(want) => {
                    let b = got.unwrap_or_else(|e| panic!("{body}: {e}"));
                    let m = b.first().cloned().unwrap_or_default();
                    assert_eq!(m.name, want, "{body}");
                    if method == "tools/call" {
                        assert_eq!(m.tool, want, "{body}");
                    }
                    names += usize::from(want.is_some());
                }
            }
        }
        assert!(names > 200, "only {names} bodies carried a name");
    }

    #[test]
    fn a_name_given_twice_is_refused() {
        // A worker reading the other copy than the policy did must not be possible.
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","na\u006de":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"a"}}"#,
        ] {
            assert!(
                matches!(parse(body.as_bytes()), Err(ParseError::Invalid(_))),
                "{body}"
            );
        }
        // Other methods' params are not the gateway's business.
        assert!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"name":1,"name":2}}"#).is_ok()
        );
    }
}
