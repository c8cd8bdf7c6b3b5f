//! The sealed session id decoder: any `Mcp-Session-Id` a client can send, and any plaintext
//! behind a valid seal (which only a key holder could produce), must decode or fail cleanly.
#![no_main]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use mcp_proxy::mcp::session::{SessionClaims, SessionSealer};

const KEY: [u8; 32] = [7; 32];
// Must match the associated data the gateway seals with (mcp/session.rs).
const AAD: &[u8] = b"mcp-gateway/session/v1";

fuzz_target!(|data: &[u8]| {
    let sealer = SessionSealer::new(&KEY, 3600);
    // 1. The id as a client sends it.
    let _ = sealer.open(data);

    // 2. Arbitrary plaintext under a valid seal: exercises the claim reader.
    let cipher = Aes256Gcm::new((&KEY).into());
    let nonce = [1u8; 12];
    if let Ok(sealed) = cipher.encrypt(
        Nonce::from_slice(&nonce),
        Payload {
            msg: data,
            aad: AAD,
        },
    ) {
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&sealed);
        let _ = sealer.open(URL_SAFE_NO_PAD.encode(raw).as_bytes());
    }

    // 3. Round trip: what we seal, we open unchanged; a flipped byte is refused.
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '|');
    let claims = SessionClaims {
        pool: parts.next().unwrap_or_default().to_string(),
        worker: parts.next().unwrap_or_default().to_string(),
        instance: data.len() as u64,
        user: parts.next().unwrap_or_default().to_string(),
        upstream_id: parts.next().unwrap_or_default().to_string(),
        issued_at: 0,
    };
    if let Ok(id) = sealer.seal(&claims) {
        let opened = sealer.open(id.as_bytes());
        if claims.pool.len() <= usize::from(u16::MAX)
            && claims.worker.len() <= usize::from(u16::MAX)
            && claims.user.len() <= usize::from(u16::MAX)
            && id.len() <= 2048
        {
            let opened = opened.expect("a sealed id opens");
            assert_eq!(opened.pool, claims.pool);
            assert_eq!(opened.user, claims.user);
            assert_eq!(opened.upstream_id, claims.upstream_id);
        }
        let mut tampered = id.into_bytes();
        let i = data.first().map(|b| usize::from(*b)).unwrap_or(0) % tampered.len();
        tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
        if let Ok(c) = sealer.open(&tampered) {
            // Base64 without padding can have two spellings only in the last character's
            // unused bits; anything that opens must still be the same claims.
            assert_eq!(c.upstream_id, claims.upstream_id);
            assert_eq!(c.user, claims.user);
        }
    }
});
