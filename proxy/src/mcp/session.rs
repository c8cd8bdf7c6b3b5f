//! Sealed session ids: the worker's `Mcp-Session-Id` is never shown to the client as is.
//! The gateway encrypts it (AES-256-GCM) together with the pool, the worker's address and
//! process instance, the user, and the time it was issued. Any replica holding the same key
//! can open it and route the request to the same worker: no shared state is needed.

use std::time::{SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

const VERSION: u8 = 1;
const AAD: &[u8] = b"mcp-gateway/session/v1";
const NONCE_LEN: usize = 12;
/// Upstream session ids longer than this are refused (they would make huge headers).
pub const MAX_UPSTREAM_ID: usize = 1024;

/// What a sealed id carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaims {
    pub pool: String,
    /// The worker's address (`127.0.0.1:41001`).
    pub worker: String,
    /// The worker process instance (random per spawn; 0 for remote workers).
    pub instance: u64,
    /// The authenticated user ("" until identity is configured).
    pub user: String,
    /// The worker's own session id.
    pub upstream_id: String,
    /// Unix seconds.
    pub issued_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("malformed session id")]
    Malformed,
    #[error("session id not sealed by this gateway")]
    Forged,
    #[error("session id expired")]
    Expired,
    #[error("upstream session id too long")]
    TooLong,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("expected 32 bytes in base64 or 64 hex digits")]
    BadKey,
}

/// Parse a 32-byte key from base64 (standard or URL-safe) or hex.
pub fn parse_key(text: &str) -> Result<[u8; 32], KeyError> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| KeyError::BadKey)?
    } else {
        STANDARD
            .decode(t)
            .or_else(|_| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')))
            .map_err(|_| KeyError::BadKey)?
    };
    bytes.try_into().map_err(|_| KeyError::BadKey)
}

pub struct SessionSealer {
    cipher: Aes256Gcm,
    /// A key being rotated out: ids sealed with it still open; nothing new is sealed with it.
    previous: Option<Aes256Gcm>,
    ttl_secs: u64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SessionError> {
        if self.0.len() < n {
            return Err(SessionError::Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64, SessionError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self) -> Result<String, SessionError> {
        let l = self.take(2)?;
        let len = usize::from(u16::from_be_bytes([l[0], l[1]]));
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| SessionError::Malformed)
    }
}

impl SessionSealer {
    pub fn new(key: &[u8; 32], ttl_secs: u64) -> SessionSealer {
        SessionSealer {
            cipher: Aes256Gcm::new(key.into()),
            previous: None,
            ttl_secs,
        }
    }

    /// Also open ids sealed with `key` (the key before a rotation).
    pub fn with_previous(mut self, key: &[u8; 32]) -> SessionSealer {
        self.previous = Some(Aes256Gcm::new(key.into()));
        self
    }

    /// A random key, for a gateway started without one (sessions then live and die with
    /// this process and are not shared with other replicas).
    pub fn random_key() -> [u8; 32] {
        rand::random()
    }

    /// Seal claims into an id for the client. `issued_at` of the claims is ignored: now.
    pub fn seal(&self, c: &SessionClaims) -> Result<String, SessionError> {
        if c.upstream_id.len() > MAX_UPSTREAM_ID {
            return Err(SessionError::TooLong);
        }
        let mut plain = Vec::with_capacity(64 + c.upstream_id.len() + c.worker.len());
        plain.push(VERSION);
        plain.extend_from_slice(&now().to_be_bytes());
        plain.extend_from_slice(&c.instance.to_be_bytes());
        put_str(&mut plain, &c.pool);
        put_str(&mut plain, &c.worker);
        put_str(&mut plain, &c.user);
        put_str(&mut plain, &c.upstream_id);
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce_bytes),
                Payload {
                    msg: &plain,
                    aad: AAD,
                },
            )
            .map_err(|_| SessionError::Malformed)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Open a client's id. Anything not sealed with our key, or past its lifetime, fails.
    pub fn open(&self, id: &[u8]) -> Result<SessionClaims, SessionError> {
        // 2 KiB of base64 is far more than any id we issue.
        if id.len() > 2048 {
            return Err(SessionError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(id)
            .map_err(|_| SessionError::Malformed)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SessionError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let payload = || Payload {
            msg: sealed,
            aad: AAD,
        };
        let nonce = Nonce::from_slice(nonce);
        let plain = self
            .cipher
            .decrypt(nonce, payload())
            .or_else(|e| match &self.previous {
                Some(old) => old.decrypt(nonce, payload()),
                None => Err(e),
            })
            .map_err(|_| SessionError::Forged)?;
        let mut r = Reader(&plain);
        if r.take(1)? != [VERSION] {
            return Err(SessionError::Malformed);
        }
        let issued_at = r.u64()?;
        let instance = r.u64()?;
        let claims = SessionClaims {
            pool: r.string()?,
            worker: r.string()?,
            user: r.string()?,
            upstream_id: r.string()?,
            instance,
            issued_at,
        };
        if now().saturating_sub(issued_at) > self.ttl_secs {
            return Err(SessionError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> SessionClaims {
        SessionClaims {
            pool: "tools".into(),
            worker: "127.0.0.1:41001".into(),
            instance: 42,
            user: "".into(),
            upstream_id: "9c1f5e2a-0000-4000-8000-000000000001".into(),
            issued_at: 0,
        }
    }

    #[test]
    fn round_trip() {
        let s = SessionSealer::new(&[7u8; 32], 3600);
        let id = s.seal(&claims()).unwrap();
        assert!(
            !id.contains("9c1f5e2a"),
            "the worker's id must not be visible"
        );
        let back = s.open(id.as_bytes()).unwrap();
        assert_eq!(back.upstream_id, claims().upstream_id);
        assert_eq!(back.worker, "127.0.0.1:41001");
        assert_eq!(back.instance, 42);
        assert!(back.issued_at > 0);
    }

    #[test]
    fn a_rotation_accepts_the_previous_key_and_seals_with_the_new_one() {
        let (old_key, new_key) = ([1u8; 32], [2u8; 32]);
        let old = SessionSealer::new(&old_key, 3600);
        let from_old = old.seal(&claims()).unwrap();
        // Step 1 of a rotation: the new key is known as the previous one everywhere.
        let step1 = SessionSealer::new(&old_key, 3600).with_previous(&new_key);
        // Step 2: the new key is current, the old one previous. Replicas on either step
        // open each other's ids.
        let step2 = SessionSealer::new(&new_key, 3600).with_previous(&old_key);
        let from_step2 = step2.seal(&claims()).unwrap();
        assert_eq!(
            step2.open(from_old.as_bytes()).unwrap().worker,
            "127.0.0.1:41001"
        );
        assert_eq!(step1.open(from_step2.as_bytes()).unwrap().instance, 42);
        assert_eq!(step1.open(from_old.as_bytes()).unwrap().instance, 42);
        // Step 3: the old key dropped: its ids are refused, new ones still open.
        let step3 = SessionSealer::new(&new_key, 3600);
        assert_eq!(step3.open(from_old.as_bytes()), Err(SessionError::Forged));
        assert!(step3.open(from_step2.as_bytes()).is_ok());
        // A third key is never accepted.
        let other = SessionSealer::new(&[3u8; 32], 3600)
            .seal(&claims())
            .unwrap();
        assert_eq!(step2.open(other.as_bytes()), Err(SessionError::Forged));
    }

    #[test]
    fn tampered_wrong_key_and_garbage_fail() {
        let s = SessionSealer::new(&[7u8; 32], 3600);
        let id = s.seal(&claims()).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&id).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(s.open(tampered.as_bytes()), Err(SessionError::Forged));
        let other = SessionSealer::new(&[8u8; 32], 3600);
        assert_eq!(other.open(id.as_bytes()), Err(SessionError::Forged));
        assert_eq!(s.open(b"not base64 !!"), Err(SessionError::Malformed));
        assert_eq!(s.open(b"abcd"), Err(SessionError::Malformed));
        assert_eq!(s.open(&[b'A'; 4096]), Err(SessionError::Malformed));
    }

    #[test]
    fn expired_fails() {
        let s = SessionSealer::new(&[7u8; 32], 0);
        let id = s.seal(&claims()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(s.open(id.as_bytes()), Err(SessionError::Expired));
    }

    #[test]
    fn keys_parse() {
        assert_eq!(parse_key(&"ab".repeat(32)).unwrap(), [0xab; 32]);
        assert_eq!(parse_key(&STANDARD.encode([1u8; 32])).unwrap(), [1; 32]);
        assert!(parse_key("short").is_err());
        assert!(parse_key(&STANDARD.encode([1u8; 31])).is_err());
    }
}
