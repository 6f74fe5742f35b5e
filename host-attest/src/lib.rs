//! # jek-host-attest: attestation on the host that runs the pods
//!
//! What a host does for attestation, apart from booting: the loader boots and measures
//! (`jek-loader`), the pure appraisal judges (`jek-attest`); this crate is between them.
//!
//! - [`identity`]: [`HostIdentity`](identity::HostIdentity), the loader's
//!   [`TpmIdentity`](jek_loader::tpm::TpmIdentity) on this host: a pod's TPM manufactured
//!   with an EK certificate from the local CA, given an attestation key, and registered;
//! - [`registrations`]: the host's registration store (one private JSON file per pod),
//!   which the agent serves and `jek attest` checks against;
//! - [`driver`]: `jek attest`, one-shot: a pod's kept TPM quoted through its run directory
//!   and appraised, or exported evidence appraised;
//! - [`kept`]: the TPMs kept for attestation (`jek tpm list`, `jek tpm stop`).
#![forbid(unsafe_code)]

pub mod driver;
pub mod identity;
pub mod kept;
pub mod registrations;
