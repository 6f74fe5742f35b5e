//! Where the pod's TPM comes from, and the two moments of a boot at which the host may
//! give that TPM an identity for attestation.
//!
//! The loader knows no CA, registration store or attestation key: a [`TpmIdentity`]
//! (the host attestation's, `jek_host_attest::identity::HostIdentity`) is called before
//! the swtpm first starts (to manufacture it with an EK certificate) and after the boot's
//! measurements, on the measuring connection and before any VM runs (to create the AK
//! and register the pod).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jek_errors::Class;
use jek_tpm::{Swtpm, Tpm};

use crate::run_dir::RunDir;

/// Where the pod's TPM comes from.
#[derive(Debug, Clone)]
pub enum TpmSource {
    /// Start a swtpm for the pod in the run directory.
    Spawn(SpawnTpm),
    /// Use an existing TPM through this TCTI (it must be fresh: PCRs at their reset value).
    Tcti(String),
}

/// A swtpm started for the pod.
#[derive(Debug, Clone)]
pub struct SpawnTpm {
    /// The swtpm program.
    pub program: PathBuf,
    /// Leave it running when the pod is gone (for attestation).
    pub keep: bool,
    /// Give the TPM an identity for attestation (EK certificate, attestation key,
    /// registration).
    pub identity: Option<Arc<dyn TpmIdentity>>,
}

/// The pod whose TPM was just measured, as [`TpmIdentity::register`] sees it.
pub struct MeasuredPod<'a> {
    /// The pod's name.
    pub name: &'a str,
    /// Its run directory (created).
    pub run: &'a RunDir,
    /// Its swtpm.
    pub swtpm: &'a Swtpm,
}

/// How a host gives a pod's TPM an identity for attestation.
pub trait TpmIdentity: std::fmt::Debug + Send + Sync {
    /// Before the swtpm first starts, with its state directory: manufacture the TPM (its
    /// EK and EK certificate).
    fn manufacture(&self, state_dir: &Path) -> Result<(), TpmIdentityError>;

    /// After the boot's measurements, on the measuring connection (which it must not
    /// keep) and before any VM runs: create the attestation key and register the pod.
    /// Returns the registration's identifier.
    fn register(&self, tpm: &mut Tpm, pod: &MeasuredPod<'_>) -> Result<String, TpmIdentityError>;
}

/// Why a [`TpmIdentity`] failed: its own error, shown as it is, with the kind of
/// failure it is.
#[derive(Debug)]
pub struct TpmIdentityError {
    class: Class,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl TpmIdentityError {
    /// `error`, of kind `class`.
    pub fn new(class: Class, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        TpmIdentityError {
            class,
            error: Box::new(error),
        }
    }

    /// The kind of failure.
    pub fn class(&self) -> Class {
        self.class
    }
}

impl std::fmt::Display for TpmIdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for TpmIdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}
