//! JSON-RPC helpers of the stdio bridge: classify messages, rewrite ids and
//! progress tokens, build error answers. Pure functions, unit-tested here.

use serde_json::{json, Map, Value};

/// The stateless protocol generation (no sessions, per-request `_meta`).
pub const PROTOCOL_2026: &str = "2026-07-28";
/// The version the bridge names when it initializes a child on behalf of a
/// 2026-07-28 client (stdio servers speak the session generation).
pub const CHILD_PROTOCOL: &str = "2025-06-18";
/// `_meta` key carrying the per-request protocol version (2026-07-28).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key carrying the client's capabilities (2026-07-28).
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key carrying the client's implementation info (2026-07-28).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` prefix of the protocol's own keys.
pub const META_PREFIX: &str = "io.modelcontextprotocol/";

/// JSON-RPC error: the bridge already runs its maximum of children.
pub const ERR_CHILD_LIMIT: i64 = -32001;
/// JSON-RPC error: the child could not be started or did not initialize in time.
pub const ERR_CHILD_START: i64 = -32002;
/// JSON-RPC error: the child exited before answering.
pub const ERR_CHILD_EXITED: i64 = -32003;
/// JSON-RPC: invalid request.
pub const ERR_INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: parse error.
pub const ERR_PARSE: i64 = -32700;

/// What a JSON-RPC message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has `method` and `id`.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and `result` or `error`, no `method`.
    Response,
}

/// Classify `v`; `None` when it is not a JSON-RPC 2.0 message.
pub fn kind(v: &Value) -> Option<Kind> {
    let o = v.as_object()?;
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return None;
    }
    match (o.get("method"), o.get("id")) {
        (Some(Value::String(_)), Some(id)) if !id.is_null() => Some(Kind::Request),
        (Some(Value::String(_)), None) => Some(Kind::Notification),
        (None, Some(_)) if o.contains_key("result") || o.contains_key("error") => {
            Some(Kind::Response)
        }
        _ => None,
    }
}

/// The `method` of a request or notification.
pub fn method(v: &Value) -> Option<&str> {
    v.get("method").and_then(Value::as_str)
}

/// `params._meta` of a message, when it is an object.
pub fn meta(v: &Value) -> Option<&Map<String, Value>> {
    v.get("params")?.get("_meta")?.as_object()
}

/// `params._meta.progressToken`.
pub fn progress_token(v: &Value) -> Option<&Value> {
    meta(v)?.get("progressToken")
}

/// Replace `params._meta.progressToken` (which must exist).
pub fn set_progress_token(v: &mut Value, token: Value) {
    if let Some(t) = v
        .get_mut("params")
        .and_then(|p| p.get_mut("_meta"))
        .and_then(|m| m.get_mut("progressToken"))
    {
        *t = token;
    }
}

/// `params.progressToken` of a `notifications/progress`.
pub fn notification_progress_token(v: &Value) -> Option<&Value> {
    v.get("params")?.get("progressToken")
}

/// Replace `params.progressToken` of a `notifications/progress`.
pub fn set_notification_progress_token(v: &mut Value, token: Value) {
    if let Some(t) = v.get_mut("params").and_then(|p| p.get_mut("progressToken")) {
        *t = token;
    }
}

/// `params.requestId` of a `notifications/cancelled`.
pub fn cancelled_request_id(v: &Value) -> Option<&Value> {
    v.get("params")?.get("requestId")
}

/// Replace `params.requestId` of a `notifications/cancelled`.
pub fn set_cancelled_request_id(v: &mut Value, id: Value) {
    if let Some(t) = v.get_mut("params").and_then(|p| p.get_mut("requestId")) {
        *t = id;
    }
}

/// Replace the message's `id`.
pub fn set_id(v: &mut Value, id: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), id);
    }
}

/// A key that identifies a JSON-RPC id (numbers and strings never collide).
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

/// A JSON-RPC error answer.
pub fn error_response(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message.into() }
    })
}

/// Whether a request uses the 2026-07-28 stateless generation: it carries the
/// per-request protocol version in `_meta`, or it is `server/discover`.
pub fn is_stateless_request(v: &Value) -> bool {
    if method(v) == Some("server/discover") {
        return true;
    }
    meta(v)
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .and_then(Value::as_str)
        .is_some_and(|ver| ver >= PROTOCOL_2026)
}

/// Remove the protocol's own `_meta` keys (the child speaks the session
/// generation and may reject them); drop `_meta` when it ends up empty.
pub fn strip_protocol_meta(v: &mut Value) {
    let Some(params) = v.get_mut("params").and_then(Value::as_object_mut) else {
        return;
    };
    let empty = match params.get_mut("_meta").and_then(Value::as_object_mut) {
        Some(m) => {
            m.retain(|k, _| !k.starts_with(META_PREFIX));
            m.is_empty()
        }
        None => false,
    };
    if empty {
        params.remove("_meta");
    }
}

/// The `initialize` request the bridge sends to a child on behalf of a
/// 2026-07-28 client, built from the request's `_meta` (capabilities and
/// client info), with JSON-RPC id `id`.
pub fn synthetic_initialize(id: Value, request: Option<&Value>) -> Value {
    let m = request.and_then(meta);
    let capabilities = m
        .and_then(|m| m.get(META_CLIENT_CAPABILITIES))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let client_info = m
        .and_then(|m| m.get(META_CLIENT_INFO))
        .cloned()
        .unwrap_or_else(
            || json!({"name": "mcp-worker-stdio", "version": env!("CARGO_PKG_VERSION")}),
        );
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": CHILD_PROTOCOL,
            "capabilities": capabilities,
            "clientInfo": client_info,
        }
    })
}

/// The `server/discover` result built from a child's `initialize` result.
pub fn discover_result(init: &Value) -> Value {
    let mut versions = vec![Value::String(PROTOCOL_2026.into())];
    if let Some(v) = init.get("protocolVersion").filter(|v| v.is_string()) {
        versions.push(v.clone());
    }
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": versions,
        "capabilities": init.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        "ttlMs": 0,
        "cacheScope": "private",
    });
    if let Some(i) = init.get("instructions").filter(|i| i.is_string()) {
        result["instructions"] = i.clone();
    }
    if let Some(info) = init.get("serverInfo") {
        result["_meta"] = json!({ "io.modelcontextprotocol/serverInfo": info });
    }
    result
}

/// Mark a successful result as complete (2026-07-28 results carry `resultType`).
pub fn mark_complete(v: &mut Value) {
    if let Some(r) = v.get_mut("result").and_then(Value::as_object_mut) {
        r.entry("resultType")
            .or_insert_with(|| Value::String("complete".into()));
    }
}

/// A short, printable excerpt of a line for the log.
pub fn excerpt(line: &[u8], max: usize) -> String {
    let cut = &line[..line.len().min(max)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if line.len() > max {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        let req = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        let resp = json!({"jsonrpc":"2.0","id":"a","result":{}});
        let err = json!({"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"x"}});
        assert_eq!(kind(&req), Some(Kind::Request));
        assert_eq!(kind(&note), Some(Kind::Notification));
        assert_eq!(kind(&resp), Some(Kind::Response));
        assert_eq!(kind(&err), Some(Kind::Response));
        assert_eq!(kind(&json!({"id":1,"method":"x"})), None, "no jsonrpc");
        assert_eq!(kind(&json!({"jsonrpc":"2.0","id":1})), None, "no result");
        assert_eq!(kind(&json!([1, 2])), None);
        assert_eq!(kind(&json!("hello")), None);
    }

    #[test]
    fn ids_of_different_types_do_not_collide() {
        assert_ne!(id_key(&json!(1)), id_key(&json!("1")));
        assert_eq!(id_key(&json!("x")), id_key(&json!("x")));
    }

    #[test]
    fn progress_tokens_are_rewritten_both_ways() {
        let mut req = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"t","_meta":{"progressToken":"tok"}}});
        assert_eq!(progress_token(&req), Some(&json!("tok")));
        set_progress_token(&mut req, json!(77));
        assert_eq!(progress_token(&req), Some(&json!(77)));
        let mut note = json!({"jsonrpc":"2.0","method":"notifications/progress",
            "params":{"progressToken":77,"progress":1}});
        assert_eq!(notification_progress_token(&note), Some(&json!(77)));
        set_notification_progress_token(&mut note, json!("tok"));
        assert_eq!(note["params"]["progressToken"], json!("tok"));
        assert_eq!(note["params"]["progress"], json!(1));
    }

    #[test]
    fn stateless_requests_are_recognised_and_stripped() {
        let mut req = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
            "io.modelcontextprotocol/protocolVersion":"2026-07-28",
            "io.modelcontextprotocol/clientCapabilities":{}}}});
        assert!(is_stateless_request(&req));
        assert!(is_stateless_request(
            &json!({"jsonrpc":"2.0","id":1,"method":"server/discover"})
        ));
        assert!(!is_stateless_request(
            &json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
                "io.modelcontextprotocol/protocolVersion":"2025-06-18"}}})
        ));
        strip_protocol_meta(&mut req);
        assert_eq!(req["params"], json!({}));
        let mut keep = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{
            "io.modelcontextprotocol/protocolVersion":"2026-07-28","progressToken":3}}});
        strip_protocol_meta(&mut keep);
        assert_eq!(keep["params"]["_meta"], json!({"progressToken":3}));
    }

    #[test]
    fn discover_result_comes_from_the_initialize_result() {
        let init = json!({"protocolVersion":"2025-06-18","capabilities":{"tools":{}},
            "serverInfo":{"name":"s","version":"1"},"instructions":"hi"});
        let d = discover_result(&init);
        assert_eq!(d["supportedVersions"], json!(["2026-07-28", "2025-06-18"]));
        assert_eq!(d["capabilities"], json!({"tools":{}}));
        assert_eq!(d["instructions"], json!("hi"));
        assert_eq!(
            d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            json!("s")
        );
    }

    #[test]
    fn synthetic_initialize_uses_the_request_meta() {
        let req = json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
            "io.modelcontextprotocol/clientCapabilities":{"roots":{}},
            "io.modelcontextprotocol/clientInfo":{"name":"c","version":"2"}}}});
        let init = synthetic_initialize(json!(9), Some(&req));
        assert_eq!(init["id"], json!(9));
        assert_eq!(init["params"]["protocolVersion"], json!(CHILD_PROTOCOL));
        assert_eq!(init["params"]["capabilities"], json!({"roots":{}}));
        assert_eq!(init["params"]["clientInfo"]["name"], json!("c"));
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt(b"abcdef", 3), "abc…");
        assert_eq!(excerpt(b"ab", 3), "ab");
    }
}
