//! The TPM side against a real swtpm manufactured by swtpm_setup with a local CA: the EK
//! certificate chains to the CA, MakeCredential in Rust is accepted by the TPM's
//! ActivateCredential only for the AK it names, and a quote verifies in pure Rust.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use jek_attest::credential::make_credential;
use jek_attest::ekcert::{verify_chain, Cert};
use jek_attest::tpm2::{EcdsaSignature, Public, Quote};
use jek_tpm::identity::LocalCa;
use jek_tpm::{Swtpm, Tpm};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Pod {
    _swtpm: Swtpm,
    tpm: Tpm,
}

fn pod(ca: &LocalCa, dir: &std::path::Path) -> Pod {
    ca.manufacture(dir).unwrap();
    let swtpm = Swtpm::start(dir).unwrap();
    let tpm = swtpm.connect().unwrap();
    Pod { _swtpm: swtpm, tpm }
}

#[test]
fn ek_chain_activation_and_quote_against_swtpm() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = LocalCa::new(&tmp.path().join("ca"));
    let mut a = pod(&ca, &tmp.path().join("a"));
    let mut b = pod(&ca, &tmp.path().join("b"));

    let root =
        Cert::from_pem_chain(&std::fs::read_to_string(ca.root_cert()).unwrap(), "root").unwrap();
    let issuer = Cert::from_pem_chain(
        &std::fs::read_to_string(ca.issuer_cert()).unwrap(),
        "issuer",
    )
    .unwrap();
    let ek_a = Cert::from_der(&a.tpm.ek_certificate().unwrap(), "ek a").unwrap();
    let ek_key_a = verify_chain(&ek_a, &issuer, &root[0], now()).unwrap();
    // Without the intermediate, or against another CA, the chain does not hold.
    assert!(verify_chain(&ek_a, &[], &root[0], now()).is_err());
    // Naming the intermediate as the trusted CA is fine; another CA is not.
    verify_chain(&ek_a, &[], &issuer[0], now()).unwrap();
    let other = LocalCa::new(&tmp.path().join("other-ca"));
    other.manufacture(&tmp.path().join("c")).unwrap();
    let other_root = Cert::from_pem_chain(
        &std::fs::read_to_string(other.root_cert()).unwrap(),
        "other",
    )
    .unwrap();
    let other_issuer = Cert::from_pem_chain(
        &std::fs::read_to_string(other.issuer_cert()).unwrap(),
        "other",
    )
    .unwrap();
    let err = verify_chain(&ek_a, &other_issuer, &other_root[0], now()).unwrap_err();
    // Both local CAs are named alike, so the chain is found by name and fails on the signature.
    assert!(
        matches!(err, jek_attest::ekcert::ChainError::BadSignature { .. }),
        "{err}"
    );
    assert!(verify_chain(&ek_a, &issuer, &root[0], 0).is_err());

    let ak_a = a.tpm.create_ak().unwrap();
    let ak_b = b.tpm.create_ak().unwrap();
    let pub_a = Public::parse(&ak_a.public).unwrap();
    let pub_b = Public::parse(&ak_b.public).unwrap();
    let handle_a = a.tpm.load_ak(&ak_a).unwrap();

    // The credential for A's AK, under A's EK: A's TPM releases it.
    let secret = b"jek credential 0123456789abcdef!".to_vec();
    let ch = make_credential(&ek_key_a, &pub_a.name(), &secret).unwrap();
    assert_eq!(
        a.tpm
            .activate_credential(handle_a, &ch.id_object, &ch.encrypted_secret)
            .unwrap(),
        secret
    );
    // Made for B's AK name: A's TPM refuses (the loaded AK's name differs).
    let wrong = make_credential(&ek_key_a, &pub_b.name(), &secret).unwrap();
    assert!(a
        .tpm
        .activate_credential(handle_a, &wrong.id_object, &wrong.encrypted_secret)
        .is_err());
    // B's TPM cannot unwrap what was made for A's EK.
    let handle_b = b.tpm.load_ak(&ak_b).unwrap();
    let for_b_under_a = make_credential(&ek_key_a, &pub_b.name(), &secret).unwrap();
    assert!(b
        .tpm
        .activate_credential(
            handle_b,
            &for_b_under_a.id_object,
            &for_b_under_a.encrypted_secret
        )
        .is_err());

    // A quote verifies under A's AK in pure Rust, and carries the nonce.
    let nonce = [7u8; 32];
    let (attest, sig) = a
        .tpm
        .quote(handle_a, &nonce, &[4, 7, 8, 9, 11, 12])
        .unwrap();
    let q = Quote::parse(&attest).unwrap();
    assert_eq!(q.extra_data, nonce);
    assert_eq!(q.selection[0].pcrs, vec![4, 7, 8, 9, 11, 12]);
    let s = EcdsaSignature::parse(&sig).unwrap();
    assert_eq!(s.hash, jek_attest::tpm2::ALG_SHA256);
}
