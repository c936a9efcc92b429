//! ML-DSA-87 backends side by side, in one run: `pqc/verify/backend=…,msg=…` and
//! `pqc/sign/backend=…,msg=…` at 100 B and at about a signed tx (7.3 KiB). aws-lc-rs (pqc's
//! backend) always; pqcrypto-mldsa too with `--features pqcrypto`. Both backends use the
//! same key bytes; keys and signatures are made before timing.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dag_core::{SignatureVerifier, Signer};
use std::hint::black_box;
use std::time::Duration;

/// (label, length): a short message, and about an encoded signed tx.
const MESSAGES: [(&str, usize); 2] = [("100B", 100), ("7.3KiB", 7_475)];

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(29)).collect()
}

/// One backend under test: a verifier and a signer holding the same key.
struct Backend {
    name: &'static str,
    verifier: Box<dyn SignatureVerifier>,
    signer: Box<dyn Signer>,
}

#[cfg(feature = "pqcrypto")]
fn backends() -> Vec<Backend> {
    use pqc::pqcrypto_backend::{PqcryptoKeypair, PqcryptoMlDsa87};
    let pq = PqcryptoKeypair::generate();
    let ours = pqc::Keypair::from_bytes(pq.public_key(), pq.secret_bytes()).expect("same key");
    vec![
        Backend {
            name: "aws-lc-rs",
            verifier: Box::new(pqc::MlDsa87),
            signer: Box::new(ours),
        },
        Backend {
            name: "pqcrypto",
            verifier: Box::new(PqcryptoMlDsa87),
            signer: Box::new(pq),
        },
    ]
}

#[cfg(not(feature = "pqcrypto"))]
fn backends() -> Vec<Backend> {
    vec![Backend {
        name: "aws-lc-rs",
        verifier: Box::new(pqc::MlDsa87),
        signer: Box::new(pqc::Keypair::generate()),
    }]
}

fn pqc_backends(c: &mut Criterion) {
    let backends = backends();
    let mut g = c.benchmark_group("pqc");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for (label, len) in MESSAGES {
        let msg = message(len);
        for b in &backends {
            let sig = b.signer.sign(&msg);
            // Every backend's signature is checked by the first one's verifier, once.
            backends[0]
                .verifier
                .verify(b.signer.public_key(), &msg, &sig)
                .expect("cross-verifies");
            let pk = b.signer.public_key();
            g.bench_function(
                BenchmarkId::new("verify", format!("backend={},msg={label}", b.name)),
                |bench| {
                    bench.iter(|| {
                        b.verifier
                            .verify(black_box(pk), black_box(&msg), black_box(&sig))
                            .expect("valid")
                    })
                },
            );
        }
        for b in &backends {
            g.bench_function(
                BenchmarkId::new("sign", format!("backend={},msg={label}", b.name)),
                |bench| bench.iter(|| b.signer.sign(black_box(&msg))),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, pqc_backends);
criterion_main!(benches);
