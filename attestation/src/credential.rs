//! TPM2_MakeCredential in software, for an RSA endorsement key (TPM Library Part 1,
//! "Credential Protection" and Annex B): the verifier wraps a secret so that only the TPM
//! holding the EK's private key, with an object of exactly the AK's name loaded, can
//! recover it with TPM2_ActivateCredential.
//!
//! - seed: random, the size of the EK's nameAlg digest (SHA-256: 32 bytes), encrypted with
//!   RSA-OAEP(SHA-256) under the EK and the label `"IDENTITY\0"`: the `TPM2B_ENCRYPTED_SECRET`;
//! - symKey = KDFa(SHA-256, seed, "STORAGE", AK name, "", 128) (the EK template's AES-128);
//! - encIdentity = AES-128-CFB(symKey, IV 0, `u16 size || credential`);
//! - HMACkey = KDFa(SHA-256, seed, "INTEGRITY", "", "", 256);
//! - outerHMAC = HMAC-SHA-256(HMACkey, encIdentity || AK name);
//! - the `TPM2B_ID_OBJECT` buffer: `u16 32 || outerHMAC || encIdentity`.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use rsa::{Oaep, RsaPublicKey};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A wrapped credential: what TPM2_ActivateCredential takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The `TPM2B_ID_OBJECT` buffer (without its outer size).
    pub id_object: Vec<u8>,
    /// The `TPM2B_ENCRYPTED_SECRET` buffer (without its outer size).
    pub encrypted_secret: Vec<u8>,
}

/// Why a credential cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// RSA-OAEP encryption under the EK failed.
    #[error("RSA-OAEP encryption of the seed under the EK failed")]
    Encrypt(#[source] rsa::Error),
    /// The credential is longer than a digest.
    #[error("credential of {0} bytes is longer than 64")]
    TooLong(usize),
}

/// KDFa with HMAC-SHA-256 (TPM Library Part 1, 11.4.10.2).
pub fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = usize::try_from(bits.div_ceil(8)).unwrap_or(0);
    let mut out = Vec::with_capacity(bytes + 32);
    let mut counter = 1u32;
    while out.len() < bytes {
        let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
            return Vec::new();
        };
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// Wraps `credential` for the TPM holding `ek` and an object named `ak_name`.
pub fn make_credential(
    ek: &RsaPublicKey,
    ak_name: &[u8],
    credential: &[u8],
) -> Result<Challenge, CredentialError> {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let encrypted_secret = ek
        .encrypt(
            &mut OsRng,
            Oaep::new_with_label::<Sha256, _>("IDENTITY\0"),
            &seed,
        )
        .map_err(CredentialError::Encrypt)?;
    Ok(Challenge {
        id_object: wrap(&seed, ak_name, credential)?,
        encrypted_secret,
    })
}

/// The ID object for a given seed (deterministic part of MakeCredential).
pub fn wrap(seed: &[u8], ak_name: &[u8], credential: &[u8]) -> Result<Vec<u8>, CredentialError> {
    let len = u16::try_from(credential.len())
        .ok()
        .filter(|l| *l <= 64)
        .ok_or(CredentialError::TooLong(credential.len()))?;
    let sym_key = kdfa(seed, "STORAGE", ak_name, &[], 128);
    let mut enc_identity = len.to_be_bytes().to_vec();
    enc_identity.extend_from_slice(credential);
    let cipher = cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym_key, &[0u8; 16])
        .map_err(|_| CredentialError::TooLong(credential.len()))?;
    cipher.encrypt(&mut enc_identity);
    let hmac_key = kdfa(seed, "INTEGRITY", &[], &[], 256);
    let mut mac = HmacSha256::new_from_slice(&hmac_key)
        .map_err(|_| CredentialError::TooLong(credential.len()))?;
    mac.update(&enc_identity);
    mac.update(ak_name);
    let outer = mac.finalize().into_bytes();
    let mut id = 32u16.to_be_bytes().to_vec();
    id.extend_from_slice(&outer);
    id.extend_from_slice(&enc_identity);
    Ok(id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kdfa_has_the_requested_length_and_depends_on_every_input() {
        let a = kdfa(b"seed", "STORAGE", b"name", &[], 128);
        assert_eq!(a.len(), 16);
        assert_eq!(kdfa(b"seed", "INTEGRITY", &[], &[], 256).len(), 32);
        assert_eq!(kdfa(b"seed", "X", &[], &[], 520).len(), 65);
        assert_ne!(a, kdfa(b"seed", "STORAGE", b"nama", &[], 128));
        assert_ne!(a, kdfa(b"seee", "STORAGE", b"name", &[], 128));
        // The first block is the prefix of a longer derivation with the same bits field
        // only when bits agree: the length is bound in.
        assert_ne!(
            a,
            kdfa(b"seed", "STORAGE", b"name", &[], 256)[..16].to_vec()
        );
    }

    #[test]
    fn id_object_layout() {
        let id = wrap(&[7; 32], &[0, 0xb, 1], b"0123456789abcdef").unwrap();
        assert_eq!(&id[..2], &[0, 32]);
        assert_eq!(id.len(), 2 + 32 + 2 + 16);
        assert!(matches!(
            wrap(&[7; 32], &[], &[0; 65]),
            Err(CredentialError::TooLong(65))
        ));
    }
}
