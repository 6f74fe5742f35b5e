//! # jek-config: the files people write for the consumers of a bundle
//!
//! Each YAML file the loader, the shim and the attestation services read has its schema
//! here, as `#[serde(deny_unknown_fields)]` raw
//! structs, and is turned into a validated type before anything else happens. YAML stays
//! in this crate: the trust core (`jek-verifier`), the loader and the services take the
//! validated types only. Field-by-field reference: `docs/policy.md`.
//!
//! - [`policy`]: `policy.yaml` → [`jek_verifier::Policy`] (signer rule, anti-rollback,
//!   revocation, Sigstore) and the `attestation` section;
//! - [`pod`]: `pod.yaml` (a Kubernetes Pod subset) → [`jek_pod::PodSpec`];
//! - [`runtime`]: `runtime.yaml`, how the containerd shim runs containers;
//! - [`signatures`]: the detached signatures found beside a bundle file;
//! - [`paths`]: where jek keeps its state by default (data directory, registration store,
//!   agent socket, local TPM CA) and the helper programs it runs.
//!
//! The producer's files (build recipes, kconfig policies, private keys) are read by
//! `jek-build-config`, so nothing here links the builder or private-key code.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("pod.yaml");
//! std::fs::write(&path, "apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  containers:\n    - {name: app, command: [/bin/app]}\n")?;
//! let pod = jek_config::pod::load(&path)?;
//! assert_eq!(pod.name, "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use jek_errors::Class;
use jek_fsio::ReadError;

pub mod fuzzing;
pub mod paths;
pub mod pod;
pub mod policy;
pub mod runtime;
pub mod signatures;

/// The largest configuration file jek reads (policies inline keys; still small).
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;
/// The largest file a configuration names (a key, a trusted root, a CA certificate).
pub const MAX_REFERENCED_SIZE: u64 = 4 << 20;

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {what} {path}")]
    Read {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: ReadError,
    },
    /// The file is not UTF-8 text.
    #[error("{what} {path} is not UTF-8 text")]
    NotText {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// The policy file is invalid.
    #[error("invalid policy file {path}")]
    Policy {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: policy::PolicyFileError,
    },
    /// A public key file (`jek verify --key`) is not an Ed25519 SPKI PEM key.
    #[error("invalid public key file {path}")]
    Key {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_verifier::keys::KeyError,
    },
    /// The pod file is invalid.
    #[error("invalid pod file {path}")]
    Pod {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: pod::PodFileError,
    },
    /// The containerd runtime file is invalid.
    #[error("invalid runtime file {path}")]
    Runtime {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: runtime::RuntimeFileError,
    },
    /// A file that decides trust may be changed by another user (strict loading).
    #[error("the {what} is refused")]
    Untrusted {
        /// What the file is.
        what: &'static str,
        /// Who else could change it.
        #[source]
        source: jek_fsio::StrictError,
    },
    /// An attestation command was given a policy without an `attestation` section.
    #[error("policy {path} has no `attestation:` section (attestation.ek_ca names the CA of pod EK certificates)")]
    NoAttestation {
        /// The policy file.
        path: PathBuf,
    },
    /// The attestation policy's CA certificates are unusable.
    #[error("attestation.ek_ca {path}")]
    EkCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_attest::ekcert::ChainError,
    },
}

impl ConfigError {
    /// The kind of failure.
    pub fn class(&self) -> Class {
        match self {
            ConfigError::Read { source, .. } => source.class(),
            ConfigError::Untrusted { source, .. } => source.class(),
            ConfigError::NotText { .. }
            | ConfigError::Policy { .. }
            | ConfigError::Key { .. }
            | ConfigError::Pod { .. }
            | ConfigError::Runtime { .. }
            | ConfigError::NoAttestation { .. }
            | ConfigError::EkCa { .. } => Class::Invalid,
        }
    }
}

/// Reads a configuration file a user named (symlinks followed; a regular file of at most
/// `limit` bytes, checked by size before reading).
pub fn read(what: &'static str, path: &Path, limit: u64) -> Result<Vec<u8>, ConfigError> {
    jek_fsio::read_file(path, limit).map_err(|source| ConfigError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a configuration file that must be UTF-8 text.
pub fn read_text(what: &'static str, path: &Path, limit: u64) -> Result<String, ConfigError> {
    String::from_utf8(read(what, path, limit)?).map_err(|_| ConfigError::NotText {
        what,
        path: path.to_path_buf(),
    })
}

/// The directory relative paths in a file are resolved against.
pub fn base_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
