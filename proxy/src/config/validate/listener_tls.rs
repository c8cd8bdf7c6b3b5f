//! `tls`: the client listener's certificate and key, read and checked here (they parse,
//! and the key is the certificate's), the oldest version accepted and the handshake
//! deadline.

use std::time::Duration;

use super::super::file::TlsFile;
use super::super::model::{TlsConfig, TlsVersion};
use super::redis_topology::Pem;
use super::Validator;

/// `tls.handshake_timeout` is kept within these.
const HANDSHAKE_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(300));

impl Validator<'_> {
    pub(super) fn listener_tls(&mut self, t: &TlsFile) -> Option<TlsConfig> {
        let cert_pem = self.pem_file(&t.cert_file, "tls.cert_file", Pem::Certificates);
        let key_pem = self.pem_file(&t.key_file, "tls.key_file", Pem::Key);
        let min_version = match &t.min_version {
            None => Some(TlsVersion::Tls12),
            Some(v) => match v.value.trim() {
                "1.2" => Some(TlsVersion::Tls12),
                "1.3" => Some(TlsVersion::Tls13),
                other => {
                    self.err(
                        &v.referenced,
                        "tls.min_version",
                        format!("expected \"1.2\" or \"1.3\", not {other:?}"),
                    );
                    None
                }
            },
        };
        let timeout = t.handshake_timeout.value.0;
        let (low, high) = HANDSHAKE_TIMEOUT_RANGE;
        if timeout < low || timeout > high {
            self.err(
                &t.handshake_timeout.referenced,
                "tls.handshake_timeout",
                "expected 100ms to 5m",
            );
            return None;
        }
        let (cert_pem, key_pem, min_version) = (cert_pem?, key_pem?, min_version?);
        if let Err(e) = crate::tls::server_config(&cert_pem, &key_pem, min_version) {
            self.err(
                &t.key_file.referenced,
                "tls.key_file",
                format!("{} with {}: {e}", t.key_file.value, t.cert_file.value),
            );
            return None;
        }
        Some(TlsConfig {
            cert_file: t.cert_file.value.clone(),
            key_file: t.key_file.value.clone(),
            cert_pem,
            key_pem,
            min_version,
            handshake_timeout: timeout,
        })
    }
}
