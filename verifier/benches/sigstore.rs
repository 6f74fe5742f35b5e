//! Sigstore bundle verification time: `cargo bench -p jek-verifier --features sigstore
//! --bench sigstore`. A keyless bundle from the test-only private Sigstore over artifacts of
//! several sizes; prints the median of many checks (chain, SCT, SET, inclusion proof,
//! checkpoint, identity, signature, artifact digest).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use jek_sigstore_testroot::{Faults, Identity as TestIdentity, TestRoot};
use jek_verifier::sigstore::{Identity, SigstorePolicy};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let root = TestRoot::new("bench");
    let id = TestIdentity::default();
    let policy = SigstorePolicy::keyless(
        &root.trusted_root_json(),
        vec![Identity {
            issuer: id.issuer.clone(),
            subject: id.subject.clone(),
        }],
    )
    .unwrap();
    let t = Instant::now();
    let _ = SigstorePolicy::keyless(
        &root.trusted_root_json(),
        vec![Identity {
            issuer: id.issuer.clone(),
            subject: id.subject.clone(),
        }],
    )
    .unwrap();
    println!(
        "sigstore policy load (parse trusted_root.json): {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    for (label, size) in [
        ("1 KiB", 1usize << 10),
        ("2 MiB", 2 << 20),
        ("33 MiB", 33 << 20),
    ] {
        let artifact = vec![0x5au8; size];
        let bundle = root.sign(&artifact, &id, Faults::None);
        let runs = if size > 4 << 20 { 15 } else { 200 };
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            policy.check(&artifact, bundle.as_bytes()).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "sigstore check, artifact {label}: median {:.3} ms over {runs} runs",
            median(times)
        );
    }
}
