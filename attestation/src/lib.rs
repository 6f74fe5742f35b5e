//! # jek-attest: did this pod boot clean?
//!
//! The verifier side of attestation, in pure Rust, so it runs on any machine:
//!
//! - [`tpm2`]: the TPM structures a quote is made of (TPMS_ATTEST, TPMT_SIGNATURE,
//!   TPMT_PUBLIC and object names), and the tpm2-tools PCR file;
//! - [`ekcert`]: the EK certificate chain to the CA the attestation policy names;
//! - [`credential`]: TPM2_MakeCredential for the EK, to prove the AK lives in that TPM;
//! - [`appraise`]: quote, event log and reference values from the signed bundle, judged
//!   claim by claim ([`appraise::Claim`]);
//! - [`ear`]: the attestation result in the IETF RATS EAR shape, as serde types;
//! - [`protocol`]: the whole exchange with a pod's TPM ([`protocol::AttestationTpm`]) driven
//!   to an appraisal: EK chain, credential activation, fresh quote;
//! - [`evidence`]: the evidence directory (`tpm2_checkquote` reads its files).
//!
//! The TPM side (tss-esapi) is in `jek-tpm`, which implements [`protocol::AttestationTpm`];
//! the command is `jek attest`.
#![forbid(unsafe_code)]

pub mod appraise;
pub mod credential;
pub mod ear;
pub mod ekcert;
pub mod evidence;
pub mod protocol;
pub mod registration;
pub mod signed;
pub mod tpm2;

pub use appraise::{Claim, Identity, Status};
pub use ear::Ear;
pub use protocol::{
    attest, AkBlobs, AttestationTpm, Attested, PodMaterial, ProtocolError, Verifier,
};
pub use registration::{AkName, Epoch, Registration};
