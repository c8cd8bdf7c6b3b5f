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
        }
        Err(ParseError::Syntax(_)) | Err(ParseError::Invalid(_)) => {}
    }
});
