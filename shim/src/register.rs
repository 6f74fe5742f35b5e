//! Pods that register themselves: when the runtime file names a verifier
//! (`attestation.verifier`), each pod is registered with it as soon as its VM runs, under
//! the shim's client credential (the verifier's `admin` role), with the Kubernetes pod the
//! CRI plugin's annotations name; and removed from it when containerd deletes the
//! container (or, after the shim died, when `containerd-shim-jek-v2 delete` cleans up).
//!
//! A registration the verifier refuses stops the pod when the runtime file says
//! `required: true` (the default): a pod that nobody attests is a pod nobody can tell from
//! a tampered one.

use std::path::PathBuf;

use jek_config::runtime::{RuntimeVerifier, VerifierCredential};
use jek_service_client::client::{ClientError, Credentials};
use jek_service_client::tls::IdentityError;
use jek_service_client::wire::{PodState, RegisterRequest};

/// Why a pod could not be registered with (or removed from) the verifier.
#[derive(Debug, thiserror::Error)]
pub enum SelfRegisterError {
    /// The verifier's CA file cannot be read.
    #[error("the verifier's CA file {path}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The client credential cannot be used.
    #[error("the shim's credential for the verifier")]
    Credential(#[source] IdentityError),
    /// The verifier refused, or could not be reached.
    #[error("the verifier {url}")]
    Verifier {
        /// The verifier.
        url: String,
        /// Why.
        #[source]
        source: ClientError,
    },
}

/// What the shim presents to the verifier, read from the files the runtime file names.
fn credentials(v: &RuntimeVerifier) -> Result<Credentials, SelfRegisterError> {
    let ca_pem = match &v.ca {
        Some(path) => Some(std::fs::read(path).map_err(|source| SelfRegisterError::Ca {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let mut credentials = Credentials {
        ca_pem,
        ..Credentials::default()
    };
    match &v.credential {
        VerifierCredential::Token(path) => {
            credentials.token = Some(
                jek_service_client::tls::read_token(path).map_err(SelfRegisterError::Credential)?,
            );
        }
        VerifierCredential::Certificate { cert, key } => {
            credentials.identity_pem = Some(
                jek_service_client::tls::identity_pem(cert, key)
                    .map_err(SelfRegisterError::Credential)?,
            );
        }
    }
    Ok(credentials)
}

/// Registers the pod `request` names with the verifier `v`.
pub fn register(
    v: &RuntimeVerifier,
    request: &RegisterRequest,
) -> Result<PodState, SelfRegisterError> {
    let credentials = credentials(v)?;
    jek_service_client::client::register(&v.url, request, credentials.reach()).map_err(|source| {
        SelfRegisterError::Verifier {
            url: v.url.clone(),
            source,
        }
    })
}

/// Removes registration `id` from the verifier `v`; false if it held none.
pub fn remove(v: &RuntimeVerifier, id: &str) -> Result<bool, SelfRegisterError> {
    let credentials = credentials(v)?;
    jek_service_client::client::remove(&v.url, id, credentials.reach()).map_err(|source| {
        SelfRegisterError::Verifier {
            url: v.url.clone(),
            source,
        }
    })
}
