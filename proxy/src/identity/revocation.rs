//! Revocation that reaches every replica: an event is applied to this process's caches at
//! once and, with Redis configured, published so every other replica applies it too (they
//! subscribe; delivery takes milliseconds). Without Redis the gateway is one node and the
//! local application is all there is.

use serde::{Deserialize, Serialize};

/// One thing to forget or refuse from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Invalidation {
    /// An API key (by SHA-256 hex of the key) was revoked.
    ApiKey { hash: String },
    /// A user's roles or status changed: every cached API key lookup may be stale.
    AllApiKeys,
    /// Access tokens of `user_id` issued at or before `not_before` are refused.
    UserCutoff { user_id: String, not_before: i64 },
    /// A stored service credential changed or was removed.
    Credential { user_id: String, service: String },
}

impl Invalidation {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(text: &[u8]) -> Option<Invalidation> {
        serde_json::from_slice(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let ev = Invalidation::UserCutoff {
            user_id: "u".into(),
            not_before: 7,
        };
        assert_eq!(Invalidation::decode(ev.encode().as_bytes()), Some(ev));
        assert_eq!(
            Invalidation::decode(br#"{"kind":"api_key","hash":"ab"}"#),
            Some(Invalidation::ApiKey { hash: "ab".into() })
        );
        assert_eq!(Invalidation::decode(b"{\"kind\":\"nope\"}"), None);
    }
}
