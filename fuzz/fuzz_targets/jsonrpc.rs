//! The JSON-RPC body parser and tool-name extraction: any bytes a client can POST.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_proxy::mcp::jsonrpc::{parse, ParseError};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(body) => {
            // A parsed body always has at least one message, and only tools/call names a tool.
            assert!(!body.messages.is_empty());
            assert!(body.batch || body.messages.len() == 1);
            for m in &body.messages {
                if m.tool.is_some() {
                    assert_eq!(m.method.as_deref(), Some("tools/call"));
                    assert_eq!(m.tool, m.name);
                }
            }
            // The name the policy checks is the one any JSON parser reads from the body
            // (the gateway reads it in one pass, without building a tree).
            if !body.batch {
                if let (Some(m), Ok(v)) = (
                    body.first(),
                    serde_json::from_slice::<serde_json::Value>(data),
                ) {
                    let key = match m.method.as_deref() {
                        Some("tools/call" | "prompts/get") => Some("name"),
                        Some("resources/read") => Some("uri"),
                        _ => None,
                    };
                    if let Some(key) = key {
                        let want = v
                            .get("params")
                            .and_then(|p| p.get(key))
                            .and_then(|n| n.as_str());
                        assert_eq!(m.name.as_deref(), want);
                    }
                }
            }
        }
        Err(ParseError::Syntax(_)) | Err(ParseError::Invalid(_)) => {}
    }
});
