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
    /// A well-formed public key of another algorithm.
    #[error("this is {algorithm} public key (OID {oid}), not an Ed25519 key (OID 1.3.101.112): jek bundle signatures are Ed25519{hint}")]
    Algorithm {
        /// The algorithm's name, with its article ("an ECDSA", "an RSA").
        algorithm: &'static str,
        /// Its OID.
        oid: String,
        /// Where such a key belongs, if jek uses it somewhere else.
        hint: &'static str,
    },
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
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| other_algorithm(pem).unwrap_or(KeyError::SpkiPem(e)))?;
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

/// A PEM public key of an algorithm other than Ed25519, named (the spki crate's own error
/// would only say which OID it expected).
fn other_algorithm(pem: &str) -> Option<KeyError> {
    use ed25519_dalek::pkcs8::spki::der::{pem as der_pem, Decode as _};
    let (_, der) = der_pem::decode_vec(pem.trim().as_bytes()).ok()?;
    let spki = ed25519_dalek::pkcs8::spki::SubjectPublicKeyInfoRef::from_der(&der).ok()?;
    let oid = spki.algorithm.oid.to_string();
    let (algorithm, hint) = match oid.as_str() {
        "1.2.840.10045.2.1" => (
            "an ECDSA",
            " (an ECDSA P-256 cosign key belongs under sigstore.public_key)",
        ),
        "1.2.840.113549.1.1.1" => ("an RSA", ""),
        "1.3.101.113" => ("an Ed448", ""),
        "1.3.101.112" => return None,
        _ => ("a", ""),
    };
    Some(KeyError::Algorithm {
        algorithm,
        oid,
        hint,
    })
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

    #[test]
    fn a_key_of_another_algorithm_is_named() {
        let ecdsa = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEnVhZ/AkxaB2ojZDgsKyoZu/e1OKZ\nd3HVChXlfHuflKVjVHfYGXSAayL5LDizdvEuWiqNHUaMCAJCvT3UEiaP4g==\n-----END PUBLIC KEY-----\n";
        let err = super::PublicKey::from_spki_pem(ecdsa)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("this is an ECDSA public key (OID 1.2.840.10045.2.1)"),
            "{err}"
        );
        assert!(err.contains("sigstore.public_key"), "{err}");
        let garbage = super::PublicKey::from_spki_pem("not a key").unwrap_err();
        assert!(matches!(garbage, super::KeyError::SpkiPem(_)));
    }

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
