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

/// Why a key-pair prefix cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The prefix names a directory (or ends in `/`): the files would be hidden `.key` and
    /// `.pub`.
    #[error("{prefix} is a directory: give a file prefix inside it, such as {prefix}/dev (writes dev.key and dev.pub)", prefix = .0.trim_end_matches('/'))]
    Directory(String),
    /// The directory the files would go into does not exist.
    #[error("directory {0} does not exist")]
    NoParent(String),
}

/// The two files of a key pair with this prefix: `PREFIX.key` and `PREFIX.pub`, checked
/// so that a directory or a missing parent is refused by name before any key is made.
pub fn pair_paths(
    prefix: &std::path::Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf), PrefixError> {
    let text = prefix.to_string_lossy();
    if text.ends_with('/') || prefix.is_dir() || prefix.file_name().is_none() {
        return Err(PrefixError::Directory(text.into_owned()));
    }
    if let Some(parent) = prefix.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(PrefixError::NoParent(parent.display().to_string()));
        }
    }
    let with = |suffix: &str| {
        let mut s = prefix.as_os_str().to_os_string();
        s.push(suffix);
        std::path::PathBuf::from(s)
    };
    Ok((with(".key"), with(".pub")))
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
    fn key_pair_prefixes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let (k, p) = pair_paths(&dir.path().join("dev")).unwrap();
        assert_eq!(k, dir.path().join("dev.key"));
        assert_eq!(p, dir.path().join("dev.pub"));
        assert_eq!(
            pair_paths(std::path::Path::new("dev")).unwrap().0,
            std::path::Path::new("dev.key")
        );
        let err = pair_paths(dir.path()).unwrap_err();
        assert_eq!(err.to_string(), format!("{d} is a directory: give a file prefix inside it, such as {d}/dev (writes dev.key and dev.pub)"));
        assert!(matches!(
            pair_paths(std::path::Path::new("adir/")),
            Err(PrefixError::Directory(_))
        ));
        assert_eq!(
            pair_paths(&dir.path().join("nodir/dev")).unwrap_err(),
            PrefixError::NoParent(format!("{d}/nodir"))
        );
    }

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
