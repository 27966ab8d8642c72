//! Criterion benchmarks for the token hot paths: verify (valid, tampered, expired, unknown key,
//! malformed), issue, and a raw HMAC-SHA256 over the same signed bytes as the physical floor.
//!
//! Run: `cargo bench -p wsguard-token --bench verify`. Figures go to `BENCHMARKS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic here is a failure report

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use wsguard_token::{
    Claims, KeyFile, KeyRing, SessionData, SessionId, TokenPolicy, UserId, Verifier,
};

const NOW: u64 = 1_764_000_000;

fn setup() -> (Verifier, String) {
    let mut file = KeyFile::default();
    file.rotate(NOW - 10, 86_400);
    file.rotate(NOW, 86_400); // a verify-only key in the ring too, as in production
    let ring = KeyRing::from_file(&file).expect("key file");
    let v = Verifier::new(Arc::new(ring), TokenPolicy::default());
    let claims = Claims::new(
        SessionId::generate(),
        UserId::parse("user-1234567").expect("uid"),
        SessionData::parse(r#"{"role":"member","tenant":"acme"}"#).expect("data"),
        NOW,
    );
    let token = v.issue(&claims);
    (v, token)
}

fn bench(c: &mut Criterion) {
    let (v, token) = setup();
    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));

    g.bench_function("verify_valid", |b| {
        b.iter(|| v.verify(black_box(&token), black_box(NOW + 60)).is_ok())
    });

    let (signed, tag) = token.rsplit_once('.').expect("tag");
    let mut t = tag.as_bytes().to_vec();
    t[5] = if t[5] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{signed}.{}", String::from_utf8(t).expect("ascii"));
    assert!(v.verify(&tampered, NOW).is_err());
    g.bench_function("verify_tampered", |b| {
        b.iter(|| v.verify(black_box(&tampered), black_box(NOW + 60)).is_err())
    });

    let late = NOW + TokenPolicy::default().max_age;
    assert!(v.verify(&token, late).is_err());
    g.bench_function("verify_expired", |b| {
        b.iter(|| v.verify(black_box(&token), black_box(late)).is_err())
    });

    let unknown = token.replacen(v.keys().signing_key_id().as_str(), "retired-key", 1);
    g.bench_function("verify_unknown_key", |b| {
        b.iter(|| v.verify(black_box(&unknown), black_box(NOW)).is_err())
    });

    let garbage = "v1.".to_string() + &"x".repeat(4000);
    g.bench_function("verify_malformed_4k", |b| {
        b.iter(|| v.verify(black_box(&garbage), black_box(NOW)).is_err())
    });

    let claims = v.verify(&token, NOW).expect("valid").into_claims();
    g.bench_function("issue", |b| b.iter(|| v.issue(black_box(&claims))));

    // The floor: one HMAC-SHA256 over the token's signed bytes, with a pre-keyed context.
    let key = Hmac::<Sha256>::new_from_slice(&[7u8; 32]).expect("any key length");
    let msg = signed.as_bytes().to_vec();
    g.bench_function(format!("hmac_sha256_{}B", msg.len()), |b| {
        b.iter(|| {
            let mut m = key.clone();
            m.update(black_box(&msg));
            m.finalize().into_bytes()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
