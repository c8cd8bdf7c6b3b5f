//! Throwaway certificates for TLS tests: a CA, and certificates it signs.

/// A self-signed CA: its parameters and key (to sign with) and its certificate as PEM.
pub fn new_ca(name: &str) -> (rcgen::CertificateParams, rcgen::KeyPair, String) {
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let pem = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("{e}"))
        .pem();
    (params, key, pem)
}

/// A certificate `issuer` signs for `names` (DNS names or IP addresses), with common name
/// `cn`, valid until `not_after` (rcgen's far-off default when `None`): (certificate PEM,
/// key PEM).
pub fn leaf(
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    names: &[&str],
    cn: &str,
    not_after: Option<(i32, u8, u8)>,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap_or_else(|e| panic!("{e}"));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    if let Some((y, m, d)) = not_after {
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let cert = params
        .signed_by(&key, issuer)
        .unwrap_or_else(|e| panic!("{e}"));
    (cert.pem(), key.serialize_pem())
}

/// The DER bytes of the first certificate in a PEM text.
pub fn first_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap_or_else(|| panic!("no certificate in PEM"))
        .unwrap_or_else(|e| panic!("bad PEM: {e}"))
        .to_vec()
}
