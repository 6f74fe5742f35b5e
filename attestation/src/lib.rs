//! # jek-attest: did this pod boot clean?
//!
//! The verifier side of attestation, in pure Rust, so it runs on any machine:
//!
//! - [`tpm2`]: the TPM structures a quote is made of (TPMS_ATTEST, TPMT_SIGNATURE,
//!   TPMT_PUBLIC and object names), and the tpm2-tools PCR file;
//! - [`ekcert`]: the EK certificate chain to the CA the attestation policy names;
//! - [`credential`]: TPM2_MakeCredential for the EK, to prove the AK lives in that TPM;
//! - [`appraise`]: quote, event log and reference values from the signed bundle, to an
//!   attestation result in the IETF RATS EAR shape;
//! - [`evidence`]: the evidence directory (`tpm2_checkquote` reads its files).
//!
//! The TPM side (EK, AK, activation, quote) is in `jek-tpm`; the command is `jek attest`.

pub mod appraise;
pub mod credential;
pub mod ekcert;
pub mod evidence;
pub mod tpm2;
