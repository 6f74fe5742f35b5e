//! A signed attestation result checked by an independent JWT library: PyJWT verifies the
//! ES256 token jek signs against the JWKS jek publishes, and refuses it under another key
//! or with a changed claim.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jek_attest::ear::{Ear, VerifierId, EAR_PROFILE};
use jek_attest::signed::ResultKey;

fn pyjwt(dir: &std::path::Path, jwks: &str, token: &str) -> std::process::Output {
    std::fs::write(dir.join("jwks.json"), jwks).unwrap();
    std::fs::write(dir.join("token.jwt"), token).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/interop/verify_ear_jwt.py"
    );
    std::process::Command::new("python3")
        .arg(script)
        .arg(dir.join("jwks.json"))
        .arg(dir.join("token.jwt"))
        .output()
        .expect("python3 with PyJWT (ci/install-deps.sh installs it)")
}

#[test]
fn pyjwt_verifies_a_signed_result_against_the_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let ear = Ear {
        eat_profile: EAR_PROFILE.into(),
        iat: 1_700_000_000,
        verifier_id: VerifierId {
            developer: "jek".into(),
            build: "jek test".into(),
        },
        eat_nonce: "bm9uY2U".into(),
        // PyJWT checks exp against the clock: far enough ahead.
        exp: Some(4_000_000_000),
        submods: Default::default(),
    };
    let key = ResultKey::generate();
    let token = key.sign(&ear).unwrap();
    let jwks = serde_json::to_string(&key.jwks()).unwrap();
    let out = pyjwt(dir.path(), &jwks, &token);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    // Another key under the same kid: refused. A claim changed after signing: refused.
    let other = ResultKey::generate();
    let mut forged = other.jwk();
    forged.common.key_id = Some(key.kid().to_string());
    let forged = serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys: vec![forged] }).unwrap();
    assert_eq!(pyjwt(dir.path(), &forged, &token).status.code(), Some(1));
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["iat"] = serde_json::json!(1_800_000_000u64);
    let edited = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    assert_eq!(pyjwt(dir.path(), &jwks, &edited).status.code(), Some(1));
}
