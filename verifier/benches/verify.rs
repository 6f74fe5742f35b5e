//! Verify time and SHA-256 throughput for 1, 10 and 100 MiB bundles, next to OpenSSL on the
//! same bytes. Run: `cargo bench -p jek-verifier --bench verify`. Prints a Markdown table.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss
)]

use std::process::Command;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer as _, SigningKey};
use jek_verifier::dsse::{pae, Envelope, Signature, IN_TOTO_PAYLOAD_TYPE};
use jek_verifier::format::{encode, Role};
use jek_verifier::manifest::{Component, Manifest};
use jek_verifier::{verify, Policy, PublicKey, Sha256Digest, TrustedKey, UnixTime};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bundle(size: usize, key: &SigningKey) -> Vec<u8> {
    // Deterministic pseudo-random content: 90% kernel+initramfs split, small cmdline.
    let mut data = vec![0u8; size];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x.to_le_bytes()[0];
    }
    let (kernel, initramfs) = data.split_at(size / 4);
    let cmdline = b"console=ttyS0".as_slice();
    let comp = |role, d: &[u8]| Component {
        role,
        size: d.len() as u64,
        sha256: Sha256Digest::of(d),
    };
    let m = Manifest {
        name: "bench".into(),
        version: "1".into(),
        security_version: 1,
        kernel_release: "6.1.0".into(),
        created: "2026-01-01T00:00:00Z".into(),
        components: vec![
            comp(Role::BzImage, kernel),
            comp(Role::Initramfs, initramfs),
            comp(Role::Cmdline, cmdline),
        ],
        kernel: Default::default(),
    };
    let payload = m.to_statement_json().unwrap();
    let sig = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
    let env = Envelope {
        payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
        payload,
        signatures: vec![Signature {
            keyid: PublicKey::from_verifying_key(key.verifying_key())
                .id()
                .to_string(),
            sig: sig.to_vec(),
        }],
    };
    encode(
        &[
            (Role::BzImage, kernel),
            (Role::Initramfs, initramfs),
            (Role::Cmdline, cmdline),
        ],
        &env.to_json(),
    )
    .unwrap()
}

/// In-memory OpenSSL SHA-256 throughput in MB/s (16 KiB blocks, `openssl speed`).
fn openssl_speed() -> Option<f64> {
    let out = Command::new("openssl")
        .args([
            "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "2",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Last line: "sha256   12345.67k" (thousands of bytes per second).
    let line = text.lines().rev().find(|l| l.starts_with("sha256"))?;
    let k: f64 = line
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(k * 1000.0 / 1e6)
}

/// Wall time of `openssl dgst -sha256 FILE` (process start and file read included).
fn openssl_dgst(path: &std::path::Path, runs: usize) -> Option<Duration> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let ok = Command::new("openssl")
            .arg("dgst")
            .arg("-sha256")
            .arg(path)
            .output()
            .ok()?
            .status
            .success();
        if !ok {
            return None;
        }
        times.push(t.elapsed());
    }
    Some(median(times))
}

fn main() {
    let key = SigningKey::from_bytes(&[5; 32]);
    let policy = Policy::new(
        vec![TrustedKey::new(PublicKey::from_verifying_key(
            key.verifying_key(),
        ))],
        None,
        1,
        Default::default(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!("| bundle | jek verify (median) | jek SHA-256 | openssl dgst -sha256 file (median) |");
    println!("|---|---|---|---|");
    let mut ours_10 = 0.0;
    for mib in [1usize, 10, 100] {
        let size = mib << 20;
        let b = bundle(size, &key);
        let runs = if mib == 100 { 7 } else { 31 };
        let verify_t = median(
            (0..runs)
                .map(|_| {
                    let copy = b.clone();
                    let t = Instant::now();
                    let v = verify(copy, &policy, UnixTime(0)).expect("bench bundle verifies");
                    let e = t.elapsed();
                    drop(v);
                    e
                })
                .collect(),
        );
        let hash_t = median(
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(Sha256Digest::of(std::hint::black_box(&b)));
                    t.elapsed()
                })
                .collect(),
        );
        let mbps = b.len() as f64 / hash_t.as_secs_f64() / 1e6;
        if mib == 10 {
            ours_10 = mbps;
        }
        let path = dir.path().join(format!("b{mib}"));
        std::fs::write(&path, &b).unwrap();
        let od = openssl_dgst(&path, if mib == 100 { 5 } else { 11 })
            .map_or("n/a".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3));
        println!(
            "| {mib} MiB | {:.2} ms | {mbps:.0} MB/s | {od} |",
            verify_t.as_secs_f64() * 1e3
        );
    }
    match openssl_speed() {
        Some(o) => println!(
            "\nSHA-256 throughput: jek (sha2 crate) {ours_10:.0} MB/s, openssl speed {o:.0} MB/s: ratio {:.2}",
            ours_10 / o
        ),
        None => println!("\nopenssl speed: not available"),
    }
}
