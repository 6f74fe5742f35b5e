//! Ed25519 public keys and their key IDs.

use std::fmt;

use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
use ed25519_dalek::VerifyingKey;

use crate::digest::Sha256Digest;

/// A key ID: the SHA-256 of the key's SubjectPublicKeyInfo DER, shown (and serialized) as
/// hex. The same value `openssl pkey -pubin -outform DER | sha256sum` prints.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct KeyId(pub Sha256Digest);

impl KeyId {
    /// Parses 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        Sha256Digest::from_hex(s).map(KeyId)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// Why a public key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not an Ed25519 SubjectPublicKeyInfo in PEM.
    #[error("not an Ed25519 public key in SPKI PEM form")]
    SpkiPem(#[source] ed25519_dalek::pkcs8::spki::Error),
    /// The bytes are not an Ed25519 SubjectPublicKeyInfo in DER.
    #[error("not an Ed25519 public key in SPKI DER form")]
    SpkiDer(#[source] ed25519_dalek::pkcs8::spki::Error),
}

/// An Ed25519 public key together with its key ID.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl PublicKey {
    /// Reads a `-----BEGIN PUBLIC KEY-----` PEM block.
    pub fn from_spki_pem(pem: &str) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_pem(pem).map_err(KeyError::SpkiPem)?;
        Ok(Self::from_verifying_key(key))
    }

    /// Reads SubjectPublicKeyInfo DER.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_public_key_der(der).map_err(KeyError::SpkiDer)?;
        Ok(Self::from_verifying_key(key))
    }

    /// Wraps a verifying key, computing its key ID.
    pub fn from_verifying_key(key: VerifyingKey) -> Self {
        let id = KeyId(Sha256Digest::of(&spki_der(&key)));
        PublicKey { key, id }
    }

    /// The key ID.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key itself.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The SubjectPublicKeyInfo DER (44 bytes for Ed25519).
    pub fn to_spki_der(&self) -> Vec<u8> {
        spki_der(&self.key)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

/// The SPKI DER of an Ed25519 key: a fixed 12-byte prefix and the 32 key bytes (RFC 8410).
fn spki_der(key: &VerifyingKey) -> Vec<u8> {
    match key.to_public_key_der() {
        Ok(doc) => doc.as_bytes().to_vec(),
        // Encoding a 32-byte key into a fixed-size structure cannot fail; fall back to the
        // RFC 8410 layout written out by hand rather than panic.
        Err(_) => {
            let mut der = vec![
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
            ];
            der.extend_from_slice(key.as_bytes());
            der
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // RFC 8410 section 10.1 example public key.
    const RFC8410_PEM: &str = "-----BEGIN PUBLIC KEY-----\n\
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
-----END PUBLIC KEY-----\n";

    #[test]
    fn reads_the_rfc_8410_example_and_derives_its_id_from_the_der() {
        let k = PublicKey::from_spki_pem(RFC8410_PEM).unwrap();
        let der = k.to_spki_der();
        assert_eq!(der.len(), 44);
        assert_eq!(
            &der[..12],
            &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]
        );
        assert_eq!(k.id(), KeyId(Sha256Digest::of(&der)));
        assert_eq!(PublicKey::from_spki_der(&der).unwrap(), k);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            PublicKey::from_spki_pem("nope"),
            Err(KeyError::SpkiPem(_))
        ));
        assert!(matches!(
            PublicKey::from_spki_der(&[0x30, 0]),
            Err(KeyError::SpkiDer(_))
        ));
    }
}
