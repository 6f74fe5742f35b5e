//! One bundle, one encoding: each way a validly signed bundle could be re-spelled or
//! mis-described (a duplicated digest key, a non-UTC or impossible `created`, the URL-safe
//! base64 alphabet, a signed kernel fact the image contradicts, a revoked signer hiding
//! behind a stripped or forged keyid) is rejected. Each case is signed properly, so the
//! rejection comes from the canonical-encoding rule and not from a broken signature.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;

use ed25519_dalek::{Signer, SigningKey};
use jek_builder::kernel_image::synthetic_bzimage;
use jek_builder::pack::{pack, PackRequest};
use jek_verifier::dsse::{self, Envelope};
use jek_verifier::format::{self, Role};
use jek_verifier::manifest::ManifestError;
use jek_verifier::{verify, Policy, PublicKey, TrustedKey, UnixTime, VerifyError};

const NOW: UnixTime = UnixTime(1_800_000_000);

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(k: &SigningKey) -> PublicKey {
    PublicKey::from_verifying_key(k.verifying_key())
}

fn bundle(k: &SigningKey) -> Vec<u8> {
    let kernel = synthetic_bzimage("6.1.192-jek");
    pack(
        &PackRequest {
            kernel: &kernel,
            vmlinux: None,
            initramfs: Some(b"INITRAMFS"),
            cmdline: "console=ttyS0",
            config: None,
            name: "demo".into(),
            version: "1.0.0".into(),
            security_version: 1,
            kernel_release: None,
            created: UnixTime(1_700_000_000),
        },
        std::slice::from_ref(k),
    )
    .unwrap()
}

fn trusting(k: &SigningKey) -> Policy {
    Policy::new(vec![TrustedKey::new(public(k))], None, 1, BTreeSet::new()).unwrap()
}

/// The bundle with its statement edited by `edit` and signed again by `signers`, with
/// `keyid` as each signature's claimed key ID (`None`: the real one).
fn resigned(
    bytes: &[u8],
    edit: impl Fn(String) -> String,
    signers: &[&SigningKey],
    keyid: Option<&str>,
) -> Vec<u8> {
    let raw = format::parse(bytes).unwrap();
    let old = Envelope::from_json(raw.envelope).unwrap();
    let payload = edit(String::from_utf8(old.payload).unwrap()).into_bytes();
    let pae = dsse::pae(dsse::IN_TOTO_PAYLOAD_TYPE, &payload);
    let env = Envelope {
        payload_type: dsse::IN_TOTO_PAYLOAD_TYPE.into(),
        payload,
        signatures: signers
            .iter()
            .map(|k| dsse::Signature {
                keyid: keyid.map_or_else(|| public(k).id().to_string(), str::to_string),
                sig: k.sign(&pae).to_vec(),
            })
            .collect(),
    };
    let parts: Vec<(Role, &[u8])> = raw.sections.iter().map(|s| (s.role, s.data)).collect();
    format::encode(&parts, &env.to_json()).unwrap()
}

#[test]
fn the_unedited_resigned_bundle_still_verifies() {
    // The control for every case below: re-signing alone changes nothing.
    let k = key(1);
    let b = resigned(&bundle(&k), |s| s, &[&k], None);
    verify(b, &trusting(&k), NOW).unwrap();
}

#[test]
fn a_duplicated_sha256_key_in_a_subject_digest_is_rejected() {
    let k = key(1);
    let b = resigned(
        &bundle(&k),
        |s| {
            s.replacen(
                "{\"sha256\":",
                &format!("{{\"sha256\":\"{}\",\"sha256\":", "0".repeat(64)),
                1,
            )
        },
        &[&k],
        None,
    );
    let err = verify(b, &trusting(&k), NOW).unwrap_err();
    assert!(
        matches!(err, VerifyError::Manifest(ManifestError::Json(ref e)) if e.to_string().contains("duplicate field `sha256`")),
        "{err:?}"
    );
}

#[test]
fn created_must_be_strict_rfc3339_utc() {
    let k = key(1);
    let b = bundle(&k);
    let original = "2023-11-14T22:13:20Z";
    for bad in [
        "2023-11-14T22:13:20+00:00",
        "2023-11-14T23:13:20+01:00",
        "2023-11-14T21:13:20-01:00",
        "2023-13-14T22:13:20Z",
        "2023-02-30T22:13:20Z",
    ] {
        let edited = resigned(
            &b,
            |s| {
                assert!(s.contains(original), "{s}");
                s.replace(original, bad)
            },
            &[&k],
            None,
        );
        let err = verify(edited, &trusting(&k), NOW).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Manifest(ManifestError::Field {
                    field: "created",
                    ..
                })
            ),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn the_url_safe_base64_alphabet_is_not_a_second_encoding() {
    let k = key(1);
    // Pad the statement until its base64 holds both '+' and '/', the two characters the
    // URL-safe alphabet spells '-' and '_': a '>' (0x3e) or '?' (0x3f) as the third byte
    // of a group of three encodes as '+' or '/'.
    let mut pad = 1;
    let (b, json) = loop {
        let b = resigned(
            &bundle(&k),
            |s| {
                s.replace(
                    "\"version\":\"1.0.0\"",
                    &format!("\"version\":\"1.0.0{}\"", "???>>>".repeat(pad)),
                )
            },
            &[&k],
            None,
        );
        let env = format::parse(&b).unwrap().envelope.to_vec();
        let json = String::from_utf8(env).unwrap();
        let payload = json
            .split("\"payload\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        if payload.contains('+') && payload.contains('/') {
            break (b, json);
        }
        pad += 1;
        assert!(pad < 4, "no padding gives both characters");
    };
    verify(b.clone(), &trusting(&k), NOW).unwrap();
    let payload = json
        .split("\"payload\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let url_safe = payload.replace('+', "-").replace('/', "_");
    let respelled = json.replace(payload, &url_safe);
    let raw = format::parse(&b).unwrap();
    let parts: Vec<(Role, &[u8])> = raw.sections.iter().map(|s| (s.role, s.data)).collect();
    let other = format::encode(&parts, respelled.as_bytes()).unwrap();
    let err = verify(other, &trusting(&k), NOW).unwrap_err();
    assert!(
        matches!(err, VerifyError::Envelope(dsse::EnvelopeError::Base64 { ref field, .. }) if field == "payload"),
        "{err:?}"
    );
}

#[test]
fn a_signed_boot_protocol_the_kernel_does_not_have_is_rejected() {
    let k = key(1);
    let b = resigned(
        &bundle(&k),
        |s| s.replace("\"bootProtocol\":\"2.15\"", "\"bootProtocol\":\"2.14\""),
        &[&k],
        None,
    );
    let err = verify(b, &trusting(&k), NOW).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::KernelFact {
                field: "bootProtocol",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the manifest signs kernel.bootProtocol = \"2.14\", but the kernel image says \"2.15\""
    );
    // Leaving a fact out is not allowed either: the signed object is exactly the image's.
    let b = resigned(
        &bundle(&k),
        |s| s.replace("\"payloadFormat\":\"lz4\"", "\"payloadFormat\":\"gzip\""),
        &[&k],
        None,
    );
    assert!(matches!(
        verify(b, &trusting(&k), NOW).unwrap_err(),
        VerifyError::KernelFact {
            field: "payloadFormat",
            ..
        }
    ));
}

#[test]
fn a_revoked_signer_is_found_whatever_keyid_it_claims() {
    let good = key(1);
    let revoked = key(2);
    let b = bundle(&good);
    let policy = trusting(&good).with_revoked_keys([public(&revoked)]);
    // The good signature and a revoked one with its keyid stripped, or claiming the good
    // key's ID, or garbage: each rejects outright.
    for claim in [
        String::new(),
        public(&good).id().to_string(),
        "not-hex".to_string(),
    ] {
        let both = resigned(&b, |s| s, &[&good, &revoked], None);
        let raw = format::parse(&both).unwrap();
        let mut env = Envelope::from_json(raw.envelope).unwrap();
        env.signatures[1].keyid = claim.clone();
        let parts: Vec<(Role, &[u8])> = raw.sections.iter().map(|s| (s.role, s.data)).collect();
        let forged = format::encode(&parts, &env.to_json()).unwrap();
        let err = verify(forged, &policy, NOW).unwrap_err();
        assert!(
            matches!(err, VerifyError::RevokedKey { index: 1, ref key_id } if *key_id == public(&revoked).id()),
            "claim {claim:?}: {err:?}"
        );
    }
    // A trusted key revoked by ID alone is known by its public half too.
    let by_id = Policy::new(
        vec![
            TrustedKey::new(public(&good)),
            TrustedKey::new(public(&revoked)),
        ],
        None,
        1,
        BTreeSet::from([public(&revoked).id()]),
    )
    .unwrap();
    assert_eq!(by_id.unresolved_revocations().count(), 0);
    let stripped = resigned(&b, |s| s, &[&good, &revoked], Some(""));
    assert!(matches!(
        verify(stripped, &by_id, NOW).unwrap_err(),
        VerifyError::RevokedKey { index: 1, .. }
    ));
}
