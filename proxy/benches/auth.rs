//! Cost of the authentication step per request: a token seen before (cache hit) versus a
//! token seen for the first time (signature check), per algorithm.
//!
//! cargo bench -p mcp-proxy --bench auth

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use jsonwebtoken::{encode, Algorithm, DecodingKey, EncodingKey, Header};
use mcp_proxy::auth::jwt::{Issuer, IssuerKey, Verifier};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const ISS: &str = "https://bench.example";
const AUD: &str = "mcp";
const SECRET: &[u8] = b"a-benchmark-secret-of-at-least-32-bytes";

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct Case {
    name: &'static str,
    alg: Algorithm,
    sign: EncodingKey,
    verify: DecodingKey,
}

fn ok<T>(r: jsonwebtoken::errors::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "HS256",
            alg: Algorithm::HS256,
            sign: EncodingKey::from_secret(SECRET),
            verify: DecodingKey::from_secret(SECRET),
        },
        Case {
            name: "ES256",
            alg: Algorithm::ES256,
            sign: ok(EncodingKey::from_ec_pem(&pem("es256-private.pem"))),
            verify: ok(DecodingKey::from_ec_pem(&pem("es256-public.pem"))),
        },
        Case {
            name: "RS256",
            alg: Algorithm::RS256,
            sign: ok(EncodingKey::from_rsa_pem(&pem("rs256-private.pem"))),
            verify: ok(DecodingKey::from_rsa_pem(&pem("rs256-public.pem"))),
        },
        Case {
            name: "EdDSA",
            alg: Algorithm::EdDSA,
            sign: ok(EncodingKey::from_ed_pem(&pem("ed25519-private.pem"))),
            verify: ok(DecodingKey::from_ed_pem(&pem("ed25519-public.pem"))),
        },
    ]
}

fn token(case: &Case, n: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut h = Header::new(case.alg);
    h.kid = Some("k1".into());
    let claims = serde_json::json!({"iss": ISS, "aud": AUD, "sub": format!("user-{n}"),
        "exp": now + 3600, "iat": now, "roles": ["user"]});
    encode(&h, &claims, &case.sign).unwrap_or_else(|e| panic!("{e}"))
}

fn verifier(case: &Case) -> Verifier {
    let issuer = Issuer::new(
        case.name.into(),
        ISS.into(),
        &[AUD.to_string()],
        vec![case.alg],
        vec![IssuerKey {
            kid: Some("k1".into()),
            key: case.verify.clone(),
        }],
        "roles".into(),
        Duration::from_secs(30),
    );
    Verifier::new(vec![issuer], 100_000)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("auth_phase");
    for case in cases() {
        let v = verifier(&case);
        let t = token(&case, 0);
        v.verify(&t)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        g.bench_with_input(BenchmarkId::new("cached", case.name), &t, |b, t| {
            b.iter(|| v.verify(t).map(|id| id.expires_at).unwrap_or(0))
        });
        g.bench_with_input(BenchmarkId::new("first_sight", case.name), &t, |b, t| {
            b.iter(|| v.verify_uncached(t).map(|id| id.expires_at).unwrap_or(0))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
