//! `mcp-bench token`: an HS256 JWT signed with a shared secret, the kind an
//! outside issuer such as Supabase hands out, so a benchmark can reach a
//! gateway that verifies tokens (`auth.issuers[]` with `secret_env`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Shortest secret accepted (the gateway requires 32 bytes for HMAC issuers).
pub const MIN_SECRET_BYTES: usize = 32;

/// Claims of a benchmark token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
}

impl Claims {
    /// Claims valid from `now` (seconds since the epoch) for `ttl`.
    pub fn new(iss: &str, aud: &str, sub: &str, now: u64, ttl: Duration) -> Claims {
        Claims {
            iss: iss.to_owned(),
            aud: aud.to_owned(),
            sub: sub.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs().max(1)),
        }
    }
}

/// Sign `claims` with HS256 and `secret`.
pub fn sign_hs256(claims: &Claims, secret: &[u8]) -> Result<String, String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the secret has {} bytes; at least {MIN_SECRET_BYTES} are needed",
            secret.len()
        ));
    }
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("cannot sign the token: {e}"))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Back {
        iss: String,
        sub: String,
        exp: u64,
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn signs_a_token_the_verifier_accepts() {
        let now = now_secs();
        let c = Claims::new(
            "bench-issuer",
            "authenticated",
            "bench-user",
            now,
            Duration::from_secs(3600),
        );
        let t = sign_hs256(&c, SECRET).expect("signed");
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&["bench-issuer"]);
        v.set_audience(&["authenticated"]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let back = decode::<Back>(&t, &DecodingKey::from_secret(SECRET), &v).expect("valid");
        assert_eq!(back.claims.iss, "bench-issuer");
        assert_eq!(back.claims.sub, "bench-user");
        assert_eq!(back.claims.exp, now + 3600);
        // Another secret does not verify it.
        let other = DecodingKey::from_secret(b"another secret, also 32 bytes long!!");
        assert!(decode::<Back>(&t, &other, &v).is_err());
    }

    #[test]
    fn refuses_short_secrets() {
        let c = Claims::new("i", "a", "s", 0, Duration::ZERO);
        assert_eq!(c.exp, 1);
        assert!(sign_hs256(&c, b"short").is_err());
    }
}
