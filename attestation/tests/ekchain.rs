//! The EK certificate chain as the TCG EK credential profile and RFC 5280 read it: each
//! defect in a fixture made by `tests/fixtures/recipe.sh` is refused with its own error.
#![allow(clippy::unwrap_used)]

use jek_attest::ekcert::{verify_chain, Cert, ChainError, MIN_RSA_BITS};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn der(name: &str) -> Cert {
    Cert::from_der(&std::fs::read(format!("{FIXTURES}/{name}")).unwrap(), name).unwrap()
}

fn pem(name: &str) -> Vec<Cert> {
    Cert::from_pem_chain(
        &std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap(),
        name,
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_profile_conformant_chain_is_accepted() {
    verify_chain(&der("ek-cert.der"), &[], &pem("ca.pem")[0], now()).unwrap();
}

#[test]
fn a_ca_without_key_cert_sign_is_refused() {
    let err =
        verify_chain(&der("nosign-ek.der"), &[], &pem("nosign-ca.pem")[0], now()).unwrap_err();
    assert!(matches!(err, ChainError::NoCertSign { .. }), "{err}");
}

#[test]
fn path_length_constraints_are_honoured() {
    let err = verify_chain(
        &der("inter-ek.der"),
        &pem("inter.pem"),
        &pem("root0.pem")[0],
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ChainError::PathLength {
                allowed: 0,
                below: 1,
                ..
            }
        ),
        "{err}"
    );
    // The intermediate itself, trusted directly, has no such limit.
    verify_chain(&der("inter-ek.der"), &[], &pem("inter.pem")[0], now()).unwrap();
}

#[test]
fn unknown_critical_extensions_are_refused() {
    let err = verify_chain(&der("critical-ek.der"), &[], &pem("ca.pem")[0], now()).unwrap_err();
    assert!(
        matches!(err, ChainError::UnknownCritical { ref oid, .. } if oid == "1.2.3.4"),
        "{err}"
    );
}

#[test]
fn rsa_keys_below_2048_bits_are_refused() {
    let err = verify_chain(&der("weak-ek.der"), &[], &pem("ca.pem")[0], now()).unwrap_err();
    assert!(
        matches!(err, ChainError::WeakKey { bits: 1024, .. }),
        "{err}"
    );
    assert_eq!(MIN_RSA_BITS, 2048);
}
