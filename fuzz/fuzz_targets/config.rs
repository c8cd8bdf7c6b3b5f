//! The configuration loader: any YAML text must load or give errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Remote pool addresses are resolved with DNS at load time: keep the fuzzer off the
    // network (and fast).
    if text.contains("upstreams") {
        return;
    }
    if let Err(errors) = mcp_proxy::config::parse(text, "fuzz.yaml") {
        assert!(!errors.0.is_empty());
        let _ = errors.to_string();
    }
});
