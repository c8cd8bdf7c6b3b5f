//! What the gateway does with a bearer token before and around jsonwebtoken's signature
//! check (header decode, unverified issuer peek, issuer/algorithm/key choice, claim mapping),
//! against a fixed key set. Only a token signed with the test secret may verify.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use libfuzzer_sys::fuzz_target;
use mcp_proxy::auth::jwt::{Issuer, IssuerKey, Verifier};

const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef0123456789";

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let hs = Issuer::new(
            "hs".into(),
            "https://issuer.test".into(),
            &["mcp".to_string()],
            vec![Algorithm::HS256],
            vec![IssuerKey {
                kid: Some("k1".into()),
                key: DecodingKey::from_secret(SECRET),
            }],
            "roles".into(),
            Duration::from_secs(0),
        );
        let es = Issuer::new(
            "es".into(),
            "https://es.test".into(),
            &["mcp".to_string()],
            vec![Algorithm::ES256],
            vec![],
            "app.roles".into(),
            Duration::from_secs(0),
        );
        Verifier::new(vec![hs, es], 0)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = verifier().verify_uncached(token);
});
