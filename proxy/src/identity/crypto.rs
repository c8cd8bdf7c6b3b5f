//! Small cryptographic helpers: the AES-256-GCM envelope for secrets at rest, password
//! hashing (argon2id), random tokens and SHA-256 hashes.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::distr::Alphanumeric;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

use super::IdentityError;

const NONCE_LEN: usize = 12;

/// A sealed value as stored: ciphertext (with the GCM tag), nonce, and the id of the key.
pub(crate) struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub key_id: String,
}

/// AES-256-GCM under a list of keys: the first seals, any of them opens (by key id).
pub(crate) struct Envelope {
    keys: Vec<(String, Aes256Gcm)>,
}

impl Envelope {
    pub fn new(keys: &[(String, [u8; 32])]) -> Result<Envelope, IdentityError> {
        if keys.is_empty() {
            return Err(IdentityError::Config(
                "at least one encryption key is required".into(),
            ));
        }
        Ok(Envelope {
            keys: keys
                .iter()
                .map(|(id, k)| (id.clone(), Aes256Gcm::new(k.into())))
                .collect(),
        })
    }

    /// Seals `plain` under the current key; `aad` binds the ciphertext to its place (row).
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Sealed, IdentityError> {
        let (key_id, cipher) = self
            .keys
            .first()
            .ok_or_else(|| IdentityError::Crypto("no encryption key".into()))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| IdentityError::Crypto("encryption failed".into()))?;
        Ok(Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
            key_id: key_id.clone(),
        })
    }

    /// Opens a value sealed by any key of the list.
    pub fn open(
        &self,
        ciphertext: &[u8],
        nonce: &[u8],
        key_id: &str,
        aad: &[u8],
    ) -> Result<Vec<u8>, IdentityError> {
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .ok_or_else(|| {
                IdentityError::Crypto(format!("unknown encryption key id {key_id:?}"))
            })?;
        if nonce.len() != NONCE_LEN {
            return Err(IdentityError::Crypto(
                "stored nonce has a wrong length".into(),
            ));
        }
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| IdentityError::Crypto(format!("cannot decrypt (key id {key_id:?})")))
    }
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// `n` random base62 characters.
pub(crate) fn random_base62(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// `n` random bytes, base64url without padding.
pub(crate) fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// argon2id (default parameters) as a PHC string. CPU-heavy: call from a blocking thread.
pub(crate) fn hash_password(password: &str) -> Result<String, IdentityError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| IdentityError::Crypto(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Crypto(e.to_string()))
}

/// Checks a password against a PHC string; a malformed hash verifies nothing.
/// CPU-heavy: call from a blocking thread.
pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Runs a password hash on tokio's blocking pool.
pub(crate) async fn hash_password_blocking(password: String) -> Result<String, IdentityError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| IdentityError::Crypto(format!("hashing task failed: {e}")))?
}

/// Runs a password check on tokio's blocking pool.
pub(crate) async fn verify_password_blocking(
    password: String,
    phc: String,
) -> Result<bool, IdentityError> {
    tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .map_err(|e| IdentityError::Crypto(format!("verification task failed: {e}")))
}
