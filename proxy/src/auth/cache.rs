//! Verified tokens, cached in process by SHA-256 of the token until they expire.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::sync::Cache;
use moka::Expiry;
use sha2::{Digest, Sha256};

use super::Identity;

type Key = [u8; 32];

struct UntilExp;

impl Expiry<Key, Arc<Identity>> for UntilExp {
    fn expire_after_create(&self, _k: &Key, v: &Arc<Identity>, _at: Instant) -> Option<Duration> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Some(Duration::from_secs(v.expires_at.saturating_sub(now)))
    }
}

pub struct TokenCache {
    inner: Cache<Key, Arc<Identity>>,
}

pub fn token_key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    pub fn new(capacity: u64) -> TokenCache {
        TokenCache {
            inner: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExp)
                .build(),
        }
    }

    pub fn get(&self, token: &str) -> Option<Arc<Identity>> {
        self.inner.get(&token_key(token))
    }

    pub fn insert(&self, token: &str, id: Arc<Identity>) {
        self.inner.insert(token_key(token), id);
    }
}
