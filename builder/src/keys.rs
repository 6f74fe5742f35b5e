//! Ed25519 signing keys: generation and PEM encodings that OpenSSL reads.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, KeypairBytes};
use ed25519_dalek::SigningKey;
use jek_verifier::PublicKey;
use zeroize::Zeroizing;

/// Why a key could not be encoded or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not an Ed25519 PKCS#8 private key in PEM.
    #[error("not an Ed25519 private key in PKCS#8 PEM form")]
    Pkcs8(#[source] ed25519_dalek::pkcs8::Error),
    /// Encoding failed.
    #[error("cannot encode the key as PEM")]
    Encode(#[source] ed25519_dalek::pkcs8::Error),
    /// Encoding the public key failed.
    #[error("cannot encode the public key as PEM")]
    EncodePublic(#[source] ed25519_dalek::pkcs8::spki::Error),
}

/// A fresh key from the operating system's random number generator.
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// The private key as PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`), without the optional
/// embedded public key: OpenSSL 3.0 cannot read the v2 form that `to_pkcs8_pem` writes.
pub fn private_key_pem(key: &SigningKey) -> Result<Zeroizing<String>, KeyError> {
    let pair = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    pair.to_pkcs8_pem(LineEnding::LF).map_err(KeyError::Encode)
}

/// The public key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn public_key_pem(key: &SigningKey) -> Result<String, KeyError> {
    key.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(KeyError::EncodePublic)
}

/// Reads a PKCS#8 private key (v1 or v2) in PEM.
pub fn read_private_key_pem(pem: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem).map_err(KeyError::Pkcs8)
}

/// The verifier's view of a signing key's public half.
pub fn public_key(key: &SigningKey) -> PublicKey {
    PublicKey::from_verifying_key(key.verifying_key())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pem_round_trips_and_is_pkcs8_v1() {
        let k = SigningKey::from_bytes(&[9; 32]);
        let pem = private_key_pem(&k).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        // PKCS#8 v1 for Ed25519 is exactly 48 bytes of DER: 64 base64 characters.
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(body.len(), 64);
        assert_eq!(read_private_key_pem(&pem).unwrap().to_bytes(), k.to_bytes());
        let public = PublicKey::from_spki_pem(&public_key_pem(&k).unwrap()).unwrap();
        assert_eq!(public, public_key(&k));
    }

    #[test]
    fn rejects_a_public_key_where_a_private_one_is_needed() {
        let k = SigningKey::from_bytes(&[9; 32]);
        let err = read_private_key_pem(&public_key_pem(&k).unwrap()).unwrap_err();
        assert!(matches!(err, KeyError::Pkcs8(_)));
    }
}
