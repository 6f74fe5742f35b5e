//! Signed attestation results: an [`Ear`] as a JWT signed with ES256 (ECDSA P-256,
//! SHA-256), as the EAR profile `tag:github.com,2023:veraison/ear` carries it, and the
//! JWKS that publishes the verifier's public key. A relying party that trusts the JWKS
//! needs nothing else from jek to check a result: any JWT library does (the tests use
//! PyJWT as the independent one).
//!
//! The JWT is made and checked with the `jsonwebtoken` crate. The header names the key by
//! `kid` (the SHA-256 of its DER SPKI, hex), so a JWKS can hold old and new keys during a
//! rotation. Verification takes the key by that `kid` only from the JWKS given, accepts
//! only ES256, and requires the EAR profile: a token signed by another key, with another
//! algorithm (`none`, HS256 with the public key as secret), or of another kind is refused.
//! A signed result must carry `exp` and is refused from that second on: the time is the
//! caller's (injected), so an old result cannot stand for a pod that stopped answering.

use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use p256::ecdsa::SigningKey;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use sha2::Digest as _;

use crate::ear::{Ear, EAR_PROFILE};

/// The JWT `typ` of a signed EAR.
pub const JWT_TYPE: &str = "JWT";

/// Why a result cannot be signed or is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignedError {
    /// The key file is not a PKCS#8 PEM P-256 private key.
    #[error("not a PKCS#8 PEM ECDSA P-256 private key")]
    Key,
    /// Signing failed.
    #[error("cannot sign the result")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The token's header does not parse, or names no key.
    #[error("not a signed EAR: {0}")]
    Header(String),
    /// The JWKS has no key with the token's `kid`.
    #[error("the JWKS has no key {kid:?}")]
    UnknownKey {
        /// The token's key ID.
        kid: String,
    },
    /// The signature, algorithm or claims are not accepted.
    #[error("the signed result is not valid")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The claims are not an EAR of jek's profile.
    #[error("the token's claims are not an EAR of profile {EAR_PROFILE}: {0}")]
    NotEar(String),
    /// The result carries no expiry: it would vouch for the pod forever.
    #[error("the signed result has no expiry (exp)")]
    NoExpiry,
    /// The result has expired.
    #[error("the signed result expired at {exp} (Unix seconds; now {now}): the pod has not been attested since")]
    Expired {
        /// Its `exp`.
        exp: u64,
        /// The time it was checked at.
        now: u64,
    },
}

/// The verifier's result-signing key.
pub struct ResultKey {
    signing: SigningKey,
    kid: String,
}

impl std::fmt::Debug for ResultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResultKey({})", self.kid)
    }
}

impl ResultKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self::from_signing(SigningKey::random(&mut rand_core::OsRng))
    }

    /// Reads a PKCS#8 PEM P-256 private key (`openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256` writes one).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SignedError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(Self::from_signing)
            .map_err(|_| SignedError::Key)
    }

    /// The key as PKCS#8 PEM (to store it).
    pub fn to_pkcs8_pem(&self) -> Result<zeroize::Zeroizing<String>, SignedError> {
        self.signing
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .map_err(|_| SignedError::Key)
    }

    fn from_signing(signing: SigningKey) -> Self {
        let der = signing
            .verifying_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        let kid = hex::encode(sha2::Sha256::digest(der));
        ResultKey { signing, kid }
    }

    /// The key ID: hex SHA-256 of the DER public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (`kty` EC, `crv` P-256, `alg` ES256, `use` sig).
    pub fn jwk(&self) -> Jwk {
        let point = self.signing.verifying_key().to_encoded_point(false);
        let b64 = |b: Option<&[u8]>| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b.unwrap_or_default())
        };
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::ES256),
                key_id: Some(self.kid.clone()),
                ..Default::default()
            },
            algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x: b64(point.x().map(|x| x.as_slice())),
                y: b64(point.y().map(|y| y.as_slice())),
            }),
        }
    }

    /// A JWKS of this key alone.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk()],
        }
    }

    /// The result as a compact JWT (ES256, `kid` in the header, the EAR as the claims).
    ///
    /// Encoded here (RFC 7515's compact form: base64url header, claims and the 64-byte
    /// `r || s`) rather than by `jsonwebtoken::encode`, which takes the key as PKCS#8 DER
    /// and parses it again at every call: with the public key derived for the DER and
    /// again when it is checked, that is three P-256 scalar multiplications per result
    /// instead of one, a third of the verifier's CPU at 300 results a second. Tokens are
    /// still verified by jsonwebtoken ([`verify`]), and by PyJWT in the tests.
    pub fn sign(&self, ear: &Ear) -> Result<String, SignedError> {
        use base64::Engine as _;
        use p256::ecdsa::signature::Signer as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some(JWT_TYPE.into());
        let json = |e: serde_json::Error| SignedError::Sign(e.into());
        let header = serde_json::to_vec(&header).map_err(json)?;
        let claims = serde_json::to_vec(ear).map_err(json)?;
        let mut jws = format!("{}.{}", b64.encode(header), b64.encode(claims));
        let signature: p256::ecdsa::Signature = self.signing.sign(jws.as_bytes());
        jws.push('.');
        jws.push_str(&b64.encode(signature.to_bytes()));
        Ok(jws)
    }
}

/// Checks a signed result against `jwks` at `now` (Unix seconds) and returns its EAR: the
/// key is the one its `kid` names, the algorithm ES256 only, the claims an EAR of jek's
/// profile, and its `exp` later than `now`. Which pod it speaks for is
/// [`Ear::bound_to`]'s question.
pub fn verify(token: &str, jwks: &JwkSet, now: u64) -> Result<Ear, SignedError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| SignedError::Header(e.to_string()))?;
    if header.alg != Algorithm::ES256 {
        return Err(SignedError::Header(format!(
            "algorithm {:?}, not ES256",
            header.alg
        )));
    }
    let kid = header
        .kid
        .ok_or_else(|| SignedError::Header("no kid in the header".into()))?;
    let jwk = jwks
        .find(&kid)
        .filter(|k| matches!(k.algorithm, AlgorithmParameters::EllipticCurve(_)))
        .ok_or_else(|| SignedError::UnknownKey { kid: kid.clone() })?;
    let key = DecodingKey::from_jwk(jwk).map_err(SignedError::Invalid)?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .map_err(SignedError::Invalid)?;
    let ear: Ear =
        serde_json::from_value(data.claims).map_err(|e| SignedError::NotEar(e.to_string()))?;
    if ear.eat_profile != EAR_PROFILE {
        return Err(SignedError::NotEar(format!(
            "eat_profile is {:?}",
            ear.eat_profile
        )));
    }
    match ear.exp {
        None => Err(SignedError::NoExpiry),
        Some(exp) if now >= exp => Err(SignedError::Expired { exp, now }),
        Some(_) => Ok(ear),
    }
}

/// Fuzz entry: any bytes as a token are refused under a JWKS whose private key nobody
/// else holds (no algorithm, header or claims trick gets one accepted), without panicking.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    static KEY: std::sync::OnceLock<ResultKey> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(ResultKey::generate);
    let token = String::from_utf8_lossy(data);
    assert!(
        verify(&token, &key.jwks(), 0).is_err(),
        "an unsigned token was accepted"
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ear::VerifierId;

    fn ear() -> Ear {
        Ear {
            eat_profile: EAR_PROFILE.into(),
            iat: 1_700_000_000,
            verifier_id: VerifierId {
                developer: "jek".into(),
                build: "jek test".into(),
            },
            eat_nonce: "bm9uY2U".into(),
            exp: Some(1_700_000_006),
            submods: Default::default(),
        }
    }

    /// A time at which [`ear`] is valid.
    const NOW: u64 = 1_700_000_001;

    #[test]
    fn a_signed_result_verifies_under_its_jwks_only() {
        let key = ResultKey::generate();
        let token = key.sign(&ear()).unwrap();
        assert_eq!(verify(&token, &key.jwks(), NOW).unwrap(), ear());
        // The JWKS survives JSON, as a relying party fetches it.
        let jwks: JwkSet =
            serde_json::from_str(&serde_json::to_string(&key.jwks()).unwrap()).unwrap();
        assert_eq!(verify(&token, &jwks, NOW).unwrap(), ear());
        // Another key's JWKS: no such kid; the right kid with another key's numbers: invalid.
        let other = ResultKey::generate();
        assert!(matches!(
            verify(&token, &other.jwks(), NOW),
            Err(SignedError::UnknownKey { .. })
        ));
        let mut forged = other.jwk();
        forged.common.key_id = Some(key.kid().to_string());
        let forged = JwkSet { keys: vec![forged] };
        assert!(matches!(
            verify(&token, &forged, NOW),
            Err(SignedError::Invalid(_))
        ));
        // A flipped signature byte, and a token of another profile.
        let mut t = token.clone().into_bytes();
        let last = t.len() - 3;
        t[last] = if t[last] == b'A' { b'B' } else { b'A' };
        assert!(verify(std::str::from_utf8(&t).unwrap(), &key.jwks(), NOW).is_err());
        let mut other_profile = ear();
        other_profile.eat_profile = "tag:example.com,2024:other".into();
        let token = key.sign(&other_profile).unwrap();
        assert!(matches!(
            verify(&token, &key.jwks(), NOW),
            Err(SignedError::NotEar(_))
        ));
    }

    #[test]
    fn unsigned_and_symmetric_tokens_are_refused() {
        use base64::Engine as _;
        let key = ResultKey::generate();
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let claims = serde_json::to_string(&ear()).unwrap();
        let none = format!(
            "{}.{}.",
            b64(&format!(r#"{{"alg":"none","kid":"{}"}}"#, key.kid())),
            b64(&claims)
        );
        assert!(verify(&none, &key.jwks(), NOW).is_err());
        // HS256 keyed with the public JWK's text: the classic confusion, refused by alg.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_string());
        let secret = serde_json::to_vec(&key.jwk()).unwrap();
        let hs = jsonwebtoken::encode(
            &header,
            &ear(),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert!(matches!(
            verify(&hs, &key.jwks(), NOW),
            Err(SignedError::Header(_))
        ));
    }

    #[test]
    fn a_result_is_refused_from_its_expiry_on_and_without_one() {
        let key = ResultKey::generate();
        let token = key.sign(&ear()).unwrap();
        assert!(verify(&token, &key.jwks(), 1_700_000_005).is_ok());
        match verify(&token, &key.jwks(), 1_700_000_006) {
            Err(SignedError::Expired { exp, now }) => {
                assert_eq!((exp, now), (1_700_000_006, 1_700_000_006));
            }
            other => panic!("expected Expired, got {other:?}"),
        }
        let mut forever = ear();
        forever.exp = None;
        let token = key.sign(&forever).unwrap();
        assert!(matches!(
            verify(&token, &key.jwks(), NOW),
            Err(SignedError::NoExpiry)
        ));
    }

    #[test]
    fn keys_round_trip_through_pkcs8() {
        let key = ResultKey::generate();
        let again = ResultKey::from_pkcs8_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert!(ResultKey::from_pkcs8_pem("not a key").is_err());
    }
}
