//! Key files named on a command line: Ed25519 signing keys (PKCS#8 PEM, from a file or an
//! environment variable) and cosign's encrypted P-256 keys (password in
//! `COSIGN_PASSWORD`, as cosign reads it). Key text is wiped from memory after use.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use jek_config::ConfigError;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error(transparent)]
    Read(#[from] ConfigError),
    /// A private key file is invalid.
    #[error("invalid signing key file {path}")]
    SigningKey {
        /// The file (or `$VAR`).
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_builder::keys::KeyError,
    },
    /// A key's environment variable is not set.
    #[error("environment variable {var} is not set")]
    Env {
        /// The variable.
        var: String,
    },
    /// A cosign key file that cannot be decrypted or used.
    #[cfg(feature = "cosign")]
    #[error("cosign key {path}")]
    CosignKey {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_builder::cosign::CosignError,
    },
}

impl KeyFileError {
    /// The kind of failure: an unreadable file as its read says; the rest invalid input.
    pub fn class(&self) -> jek_errors::Class {
        match self {
            KeyFileError::Read(e) => e.class(),
            _ => jek_errors::Class::Invalid,
        }
    }
}

/// The largest key file read.
const MAX_KEY_FILE: u64 = 64 << 10;

/// Reads a PKCS#8 PEM signing key file.
pub fn signing_key(path: &Path) -> Result<ed25519_dalek::SigningKey, KeyFileError> {
    let pem = Zeroizing::new(jek_config::read_text("signing key", path, MAX_KEY_FILE)?);
    jek_builder::keys::read_private_key_pem(&pem).map_err(|source| KeyFileError::SigningKey {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PKCS#8 PEM signing key from the environment variable `var`.
pub fn signing_key_from_env(var: &str) -> Result<ed25519_dalek::SigningKey, KeyFileError> {
    let pem = Zeroizing::new(std::env::var(var).map_err(|_| KeyFileError::Env {
        var: var.to_string(),
    })?);
    jek_builder::keys::read_private_key_pem(&pem).map_err(|source| KeyFileError::SigningKey {
        path: PathBuf::from(format!("${var}")),
        source,
    })
}

/// The cosign key password, from `COSIGN_PASSWORD` (it may be empty, but must be set: jek
/// never prompts).
pub fn cosign_password() -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    std::env::var_os("COSIGN_PASSWORD")
        .map(|v| Zeroizing::new(v.into_encoded_bytes()))
        .ok_or_else(|| KeyFileError::Env {
            var: "COSIGN_PASSWORD".into(),
        })
}

/// Reads and decrypts a cosign private key file (password in `COSIGN_PASSWORD`).
#[cfg(feature = "cosign")]
pub fn cosign_key(path: &Path) -> Result<jek_builder::cosign::CosignKey, KeyFileError> {
    let password = cosign_password()?;
    let pem = Zeroizing::new(jek_config::read("cosign key", path, MAX_KEY_FILE)?);
    jek_builder::cosign::CosignKey::from_encrypted_pem(&pem, &password).map_err(|source| {
        KeyFileError::CosignKey {
            path: path.to_path_buf(),
            source,
        }
    })
}
