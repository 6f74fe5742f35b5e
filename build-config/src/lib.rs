//! # jek-build-config: the files a producer reads
//!
//! The build side's inputs: a build recipe (→ [`jek_builder::recipe::Recipe`], with its
//! kconfig policy), a kconfig policy (→ [`jek_builder::kconfig::Policy`]) and private key
//! files (Ed25519 signing keys, cosign's encrypted keys). Each is read with
//! [`jek_config`]'s bounded readers and turned into a validated type before any build
//! step. Kept apart from `jek-config`, which the consumers (the loader, the shim, the
//! attestation services) read: they link neither the builder nor private-key code.
//!
//! - [`recipe`]: a build recipe, with its kconfig policy;
//! - [`kconfig`]: a kconfig policy;
//! - [`keys`]: signing keys and cosign keys.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use jek_config::ConfigError;
use jek_errors::Class;

pub mod fuzzing;
pub mod kconfig;
pub mod keys;
pub mod recipe;

/// Why a recipe or a kconfig policy cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BuildConfigError {
    /// The file cannot be read, or is not text.
    #[error(transparent)]
    Read(#[from] ConfigError),
    /// The recipe is invalid.
    #[error("invalid recipe {path}")]
    Recipe {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: recipe::RecipeError,
    },
    /// The kconfig policy is invalid.
    #[error("invalid kconfig policy {path}")]
    KconfigPolicy {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: kconfig::KconfigPolicyError,
    },
}

impl BuildConfigError {
    /// The kind of failure: an unreadable file as its read says; the rest invalid input.
    pub fn class(&self) -> Class {
        match self {
            BuildConfigError::Read(e) => e.class(),
            BuildConfigError::Recipe { .. } | BuildConfigError::KconfigPolicy { .. } => {
                Class::Invalid
            }
        }
    }
}
