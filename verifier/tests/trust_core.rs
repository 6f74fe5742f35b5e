//! The trust core through the library: every byte of a bundle is covered by its signature
//! (the tamper matrix), the signer rules of a policy, reproducible packing, and the checked-in
//! fixture. No swtpm, QEMU or kernel build: `cargo test -p jek-verifier`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cloned_ref_to_slice_refs
)]

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;
use jek_builder::kernel_image::synthetic_bzimage as fake_bzimage;
use jek_builder::pack::{pack, PackRequest};
use jek_verifier::format::{self, FormatError, Role};
use jek_verifier::{verify, KeyId, Policy, PublicKey, TrustedKey, UnixTime, VerifyError};

const NOW: UnixTime = UnixTime(1_800_000_000);

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(k: &SigningKey) -> PublicKey {
    PublicKey::from_verifying_key(k.verifying_key())
}

fn request<'a>(kernel: &'a [u8], initramfs: &'a [u8], sv: u64) -> PackRequest<'a> {
    PackRequest {
        kernel,
        vmlinux: None,
        initramfs: Some(initramfs),
        cmdline: "console=ttyS0 quiet",
        config: Some(b"CONFIG_64BIT=y\n"),
        name: "demo".into(),
        version: "1.0.0".into(),
        security_version: sv,
        kernel_release: None,
        created: UnixTime(1_700_000_000),
    }
}

fn policy(
    keys: &[&SigningKey],
    threshold: Option<usize>,
    min: u64,
    revoked: &[&SigningKey],
) -> Policy {
    Policy::new(
        keys.iter().map(|k| TrustedKey::new(public(k))).collect(),
        threshold,
        min,
        revoked
            .iter()
            .map(|k| public(k).id())
            .collect::<BTreeSet<KeyId>>(),
    )
    .unwrap()
}

fn sample(keys: &[SigningKey]) -> Vec<u8> {
    pack(
        &request(&fake_bzimage("6.1.192-jek"), b"INITRAMFS-CONTENT", 3),
        keys,
    )
    .unwrap()
}

#[test]
fn a_packed_bundle_verifies_and_exposes_exactly_its_components() {
    let k = key(1);
    let kernel = fake_bzimage("6.1.192-jek");
    let bytes = pack(&request(&kernel, b"INITRAMFS-CONTENT", 3), &[k.clone()]).unwrap();
    let v = verify(bytes, &policy(&[&k], None, 3, &[]), NOW).unwrap();
    assert_eq!(v.component(Role::BzImage), Some(&kernel[..]));
    assert_eq!(
        v.component(Role::Initramfs),
        Some(&b"INITRAMFS-CONTENT"[..])
    );
    assert_eq!(v.cmdline(), "console=ttyS0 quiet");
    assert_eq!(v.component(Role::Vmlinux), None);
    assert_eq!(v.signers(), &[public(&k).id()]);
    let m = v.manifest();
    assert_eq!(m.kernel_release, "6.1.192-jek");
    assert_eq!(m.kernel.boot_protocol.as_deref(), Some("2.15"));
    assert_eq!(m.kernel.payload_format.as_deref(), Some("lz4"));
    assert_eq!(m.created, "2023-11-14T22:13:20Z");
}

/// Every single-byte change anywhere in the file is rejected, and the reason matches the
/// region the byte lies in.
#[test]
fn tamper_matrix_every_byte_of_every_region_is_rejected_with_the_right_reason() {
    let k = key(1);
    let pol = policy(&[&k], None, 3, &[]);
    let bytes = sample(&[k.clone()]);
    let raw = format::parse(&bytes).unwrap();
    let data_role = |i: usize| {
        raw.sections
            .iter()
            .find(|s| s.range().contains(&i))
            .map(|s| s.role)
    };
    let env_start = raw.envelope_offset;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for i in 0..bytes.len() {
        let mut t = bytes.clone();
        t[i] ^= 0x01;
        let err = match verify(t, &pol, NOW) {
            Ok(_) => panic!("flipping byte {i} was accepted"),
            Err(e) => e,
        };
        let region = if i < format::HEADER_LEN {
            assert!(
                matches!(err, VerifyError::Format(_)),
                "header byte {i}: {err:?}"
            );
            "header"
        } else if let Some(role) = data_role(i) {
            match err {
                VerifyError::DigestMismatch { component, .. } => {
                    assert_eq!(component, role, "byte {i}")
                }
                other => panic!("{role} byte {i}: {other:?}"),
            }
            "component"
        } else if i >= env_start {
            assert!(
                matches!(
                    err,
                    VerifyError::Envelope(_)
                        | VerifyError::BadSignature { .. }
                        | VerifyError::UnknownSigner { .. }
                        | VerifyError::PayloadType { .. }
                ),
                "envelope byte {i}: {err:?}"
            );
            "envelope"
        } else {
            // A section header: kind, reserved bytes or length. A kind changed into another
            // valid kind parses, and then names a component the manifest does not list.
            assert!(
                matches!(
                    err,
                    VerifyError::Format(_) | VerifyError::UnlistedComponent { .. }
                ),
                "section header byte {i}: {err:?}"
            );
            "section header"
        };
        *counts.entry(region).or_default() += 1;
    }
    // Every region was exercised.
    assert_eq!(counts.len(), 4, "{counts:?}");
}

#[test]
fn length_fields_truncation_and_appended_bytes_are_rejected_with_offsets() {
    let k = key(1);
    let pol = policy(&[&k], None, 0, &[]);
    let bytes = sample(&[k]);
    let raw = format::parse(&bytes).unwrap();
    let first_len_at = raw.sections[0].offset - 8;
    let mut t = bytes.clone();
    t[first_len_at] = t[first_len_at].wrapping_add(1);
    assert!(matches!(verify(t, &pol, NOW), Err(VerifyError::Format(_))));
    for cut in [0, 1, 15, 16, 31, bytes.len() / 2, bytes.len() - 1] {
        let err = verify(bytes[..cut].to_vec(), &pol, NOW).unwrap_err();
        assert!(
            matches!(err, VerifyError::Format(_)),
            "cut at {cut}: {err:?}"
        );
    }
    let mut t = bytes.clone();
    t.extend_from_slice(b"xx");
    match verify(t, &pol, NOW) {
        Err(VerifyError::Format(FormatError::TrailingBytes { offset, count })) => {
            assert_eq!((offset, count), (bytes.len(), 2));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn components_swapped_between_two_validly_signed_bundles_are_rejected() {
    let k = key(1);
    let pol = policy(&[&k], None, 0, &[]);
    let a = pack(
        &request(&fake_bzimage("6.1.192-jek"), b"AAAA", 3),
        &[k.clone()],
    )
    .unwrap();
    let b = pack(
        &request(&fake_bzimage("6.1.193-jek"), b"BBBB", 3),
        &[k.clone()],
    )
    .unwrap();
    let ra = format::parse(&a).unwrap();
    let rb = format::parse(&b).unwrap();
    // A's kernel with B's initramfs, under A's envelope.
    let parts: Vec<(Role, &[u8])> = ra
        .sections
        .iter()
        .map(|s| {
            (
                s.role,
                if s.role == Role::Initramfs {
                    rb.section(Role::Initramfs).unwrap().data
                } else {
                    s.data
                },
            )
        })
        .collect();
    let mixed = format::encode(&parts, ra.envelope).unwrap();
    match verify(mixed, &pol, NOW) {
        Err(VerifyError::DigestMismatch {
            component: Role::Initramfs,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // A's components under B's envelope.
    let parts: Vec<(Role, &[u8])> = ra.sections.iter().map(|s| (s.role, s.data)).collect();
    let swapped = format::encode(&parts, rb.envelope).unwrap();
    match verify(swapped, &pol, NOW) {
        Err(VerifyError::DigestMismatch {
            component: Role::BzImage,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn signer_rules_are_enforced_with_precise_reasons() {
    let (a, b, c) = (key(1), key(2), key(3));
    let one = sample(&[a.clone()]);
    let two = sample(&[a.clone(), b.clone()]);

    match verify(one.clone(), &policy(&[&b], None, 0, &[]), NOW) {
        Err(VerifyError::UnknownSigner { key_ids }) => {
            assert_eq!(key_ids, vec![public(&a).id().to_string()])
        }
        other => panic!("wrong key: {other:?}"),
    }
    match verify(two.clone(), &policy(&[&a, &b], None, 0, &[&b]), NOW) {
        Err(VerifyError::RevokedKey { index: 1, key_id }) => assert_eq!(key_id, public(&b).id()),
        other => panic!("revoked: {other:?}"),
    }
    match verify(one.clone(), &policy(&[&a, &b], Some(2), 0, &[]), NOW) {
        Err(VerifyError::ThresholdNotMet {
            required: 2,
            valid: 1,
        }) => {}
        other => panic!("threshold: {other:?}"),
    }
    assert_eq!(
        verify(two.clone(), &policy(&[&a, &b, &c], Some(2), 0, &[]), NOW)
            .unwrap()
            .signers()
            .len(),
        2
    );
    match verify(one.clone(), &policy(&[&a], None, 4, &[]), NOW) {
        Err(VerifyError::Rollback {
            security_version: 3,
            minimum: 4,
        }) => {}
        other => panic!("rollback: {other:?}"),
    }
    let windowed = |nb, na| {
        Policy::new(
            vec![TrustedKey {
                key: public(&a),
                not_before: nb,
                not_after: na,
            }],
            None,
            0,
            BTreeSet::new(),
        )
        .unwrap()
    };
    match verify(one.clone(), &windowed(None, Some(UnixTime(NOW.0 - 1))), NOW) {
        Err(VerifyError::KeyExpired { not_after, .. }) => {
            assert_eq!(not_after, UnixTime(NOW.0 - 1))
        }
        other => panic!("expired: {other:?}"),
    }
    match verify(one.clone(), &windowed(Some(UnixTime(NOW.0 + 1)), None), NOW) {
        Err(VerifyError::KeyNotYetValid { .. }) => {}
        other => panic!("not yet valid: {other:?}"),
    }
    assert!(verify(one.clone(), &windowed(Some(NOW), Some(NOW)), NOW).is_ok());

    // A signature that claims a trusted key but was made by another.
    let raw = format::parse(&one).unwrap();
    let mut env = jek_verifier::dsse::Envelope::from_json(raw.envelope).unwrap();
    let forged = jek_builder::pack::add_signature(&one, &c).unwrap();
    let forged_env =
        jek_verifier::dsse::Envelope::from_json(format::parse(&forged).unwrap().envelope).unwrap();
    env.signatures[0].sig = forged_env.signatures[1].sig.clone();
    let parts: Vec<(Role, &[u8])> = raw.sections.iter().map(|s| (s.role, s.data)).collect();
    let bad = format::encode(&parts, &env.to_json()).unwrap();
    match verify(bad, &policy(&[&a], None, 0, &[]), NOW) {
        Err(VerifyError::BadSignature { index: 0, key_id }) => assert_eq!(key_id, public(&a).id()),
        other => panic!("bad signature: {other:?}"),
    }
    // An envelope with its signatures removed.
    env.signatures.clear();
    let unsigned = format::encode(&parts, &env.to_json()).unwrap();
    assert!(matches!(
        verify(unsigned, &policy(&[&a], None, 0, &[]), NOW),
        Err(VerifyError::NoSignatures)
    ));
}

#[test]
fn packing_is_reproducible_and_signing_order_is_kept() {
    let (a, b) = (key(1), key(2));
    assert_eq!(
        sample(&[a.clone(), b.clone()]),
        sample(&[a.clone(), b.clone()])
    );
    let signed_later = jek_builder::pack::add_signature(&sample(&[a.clone()]), &b).unwrap();
    assert_eq!(signed_later, sample(&[a.clone(), b.clone()]));
    assert!(matches!(
        jek_builder::pack::add_signature(&signed_later, &b),
        Err(jek_builder::pack::SignError::AlreadySigned { .. })
    ));
}

// ---------- through the binary ----------

/// `tests/fixtures/minimal.jek` is a bundle signed by the fixed test key `[1; 32]`; it seeds
/// the fuzzer (`fuzz/seeds/bundle`) and is the worked example of `docs/bundle-format.md`.
/// Recipe: `JEK_REGENERATE_FIXTURES=1 cargo test -p jek-verifier --test trust_core fixture`.
#[test]
fn fixture_minimal_bundle_is_current() {
    let k = key(1);
    let req = PackRequest {
        kernel: &fake_bzimage("6.1.192-jek"),
        vmlinux: None,
        initramfs: Some(b"070701"),
        cmdline: "console=ttyS0",
        config: None,
        name: "minimal".into(),
        version: "1".into(),
        security_version: 1,
        kernel_release: None,
        created: UnixTime(0),
    };
    let bytes = pack(&req, &[k.clone()]).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/minimal.jek");
    if std::env::var_os("JEK_REGENERATE_FIXTURES").is_some() {
        std::fs::write(path, &bytes).unwrap();
    }
    let on_disk = std::fs::read(path).expect("fixture exists (see the recipe above)");
    assert_eq!(
        on_disk, bytes,
        "fixture is stale: regenerate it with the recipe above"
    );
    assert!(verify(on_disk, &policy(&[&k], None, 1, &[]), NOW).is_ok());
}
