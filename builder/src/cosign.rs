//! cosign-format keys and blob signatures (feature `cosign`), with the `sigstore` crate.
//!
//! `cosign generate-key-pair` writes an ECDSA P-256 key encrypted under a password
//! (`-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----`: scrypt + NaCl secretbox) and its SPKI
//! PEM public key; `cosign sign-blob --key` writes the base64 of a DER ECDSA-SHA256
//! signature over the file. This module reads and writes the same formats, so
//! `cosign verify-blob --key cosign.pub --signature BUNDLE.sig BUNDLE` accepts what
//! `jek sign --cosign-key` produces, and jek can sign with a key cosign generated.

use base64::Engine as _;
use sigstore::crypto::{SigStoreSigner, SigningScheme};
use zeroize::Zeroizing;

/// Why a cosign key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CosignError {
    /// Key generation failed.
    #[error("cannot generate an ECDSA P-256 key")]
    Generate(#[source] sigstore::errors::SigstoreError),
    /// Encrypting or encoding the key failed.
    #[error("cannot encode the cosign key")]
    Encode(#[source] sigstore::errors::SigstoreError),
    /// The file is not an encrypted cosign private key at all.
    #[error("not an encrypted cosign private key ({0})")]
    NotCosignKey(&'static str),
    /// The file is a cosign key, but it does not decrypt under the password given.
    #[error("the password in COSIGN_PASSWORD does not decrypt this cosign key")]
    WrongPassword(#[source] sigstore::errors::SigstoreError),
    /// The key is not ECDSA P-256.
    #[error("the cosign key is not ECDSA P-256")]
    KeyType(#[source] sigstore::errors::SigstoreError),
    /// Signing failed.
    #[error("signing failed")]
    Sign(#[source] sigstore::errors::SigstoreError),
}

/// A cosign signing key, decrypted in memory.
pub struct CosignKey {
    signer: SigStoreSigner,
}

impl std::fmt::Debug for CosignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CosignKey(ECDSA P-256)")
    }
}

/// A new key pair: (encrypted private key PEM, public key PEM).
pub fn generate(password: &[u8]) -> Result<(Zeroizing<String>, String), CosignError> {
    let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
        .create_signer()
        .map_err(CosignError::Generate)?;
    let pair = signer.to_sigstore_keypair().map_err(CosignError::Encode)?;
    let private = pair
        .private_key_to_encrypted_pem(password)
        .map_err(CosignError::Encode)?;
    let public = pair.public_key_to_pem().map_err(CosignError::Encode)?;
    Ok((private, public))
}

/// The ID jek shows for a cosign public key: `sha256:` and the SHA-256 of its DER SPKI
/// (the same as the verifier's approval names). `None` if `pem` is not PEM.
pub fn key_id(pem: &str) -> Option<String> {
    use sha2::Digest as _;
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    Some(format!("sha256:{}", hex::encode(sha2::Sha256::digest(der))))
}

/// The fields of cosign's encrypted key (the JSON inside the PEM), as cosign writes them.
#[derive(serde::Deserialize)]
struct EncryptedKey {
    kdf: serde_json::Value,
    cipher: serde_json::Value,
    ciphertext: String,
}

/// Checks that `pem` is one `ENCRYPTED SIGSTORE` (or `COSIGN`) `PRIVATE KEY` block whose
/// body is cosign's JSON with a kdf, a cipher and a ciphertext.
fn check_shape(pem: &[u8]) -> Result<(), CosignError> {
    let text = std::str::from_utf8(pem).map_err(|_| CosignError::NotCosignKey("not text"))?;
    let begin = ["SIGSTORE", "COSIGN"]
        .iter()
        .find_map(|k| text.find(&format!("-----BEGIN ENCRYPTED {k} PRIVATE KEY-----")))
        .ok_or(CosignError::NotCosignKey(
            "no -----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY----- line",
        ))?;
    let body: String = text[begin..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let json = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| CosignError::NotCosignKey("the PEM body is not base64"))?;
    let key: EncryptedKey = serde_json::from_slice(&json).map_err(|_| {
        CosignError::NotCosignKey("the PEM body is not cosign's kdf/cipher/ciphertext JSON")
    })?;
    if !key.kdf.is_object() || !key.cipher.is_object() || key.ciphertext.is_empty() {
        return Err(CosignError::NotCosignKey(
            "kdf, cipher or ciphertext is empty",
        ));
    }
    Ok(())
}

impl CosignKey {
    /// Decrypts a cosign private key file's text with `password`.
    ///
    /// The key's shape is checked first, so a wrong file and a wrong password get
    /// different errors: the secretbox is authenticated, so a well-formed key that fails to
    /// open was encrypted under another password.
    pub fn from_encrypted_pem(pem: &[u8], password: &[u8]) -> Result<Self, CosignError> {
        check_shape(pem)?;
        let pair =
            sigstore::crypto::signing_key::SigStoreKeyPair::from_encrypted_pem(pem, password)
                .map_err(CosignError::WrongPassword)?;
        let signer = pair
            .to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1)
            .map_err(CosignError::KeyType)?;
        Ok(CosignKey { signer })
    }

    /// The public key, SPKI PEM (what `cosign public-key` prints).
    pub fn public_key_pem(&self) -> Result<String, CosignError> {
        self.signer
            .to_sigstore_keypair()
            .and_then(|p| p.public_key_to_pem())
            .map_err(CosignError::Encode)
    }

    /// [`CosignKey::sign_blob`] as a closure with a printable error (for signing the
    /// simple-signing payload of `jek push --cosign-key`).
    pub fn signer(&self) -> impl Fn(&[u8]) -> Result<String, String> + '_ {
        |data| self.sign_blob(data).map_err(|e| e.to_string())
    }

    /// A cosign blob signature over `data`: base64 of the DER ECDSA-SHA256 signature.
    pub fn sign_blob(&self, data: &[u8]) -> Result<String, CosignError> {
        let der = self.signer.sign(data).map_err(CosignError::Sign)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(der))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_the_password_matters() {
        let (private, public) = generate(b"pw").unwrap();
        assert!(
            private.contains("ENCRYPTED SIGSTORE PRIVATE KEY"),
            "{}",
            &*private
        );
        let key = CosignKey::from_encrypted_pem(private.as_bytes(), b"pw").unwrap();
        assert_eq!(key.public_key_pem().unwrap(), public);
        assert!(matches!(
            CosignKey::from_encrypted_pem(private.as_bytes(), b"wrong"),
            Err(CosignError::WrongPassword(_))
        ));
        assert!(matches!(
            CosignKey::from_encrypted_pem(public.as_bytes(), b"pw"),
            Err(CosignError::NotCosignKey(_))
        ));
        let ed = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nbm90IGpzb24=\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
        assert!(matches!(
            CosignKey::from_encrypted_pem(ed.as_bytes(), b"pw"),
            Err(CosignError::NotCosignKey(_))
        ));
        let sig = key.sign_blob(b"blob").unwrap();
        assert!(base64::engine::general_purpose::STANDARD
            .decode(sig)
            .is_ok());
    }
}
