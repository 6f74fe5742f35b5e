//! # jek-measure: measured boot, as data
//!
//! What a jek loader hands the VMM ([`payload`]: kernel, initramfs with the pod segment,
//! command line) and extends into a pod's TPM before the first guest instruction, computed
//! from a [`Verified<Bundle>`](jek_verifier::Verified) alone ([`plan`]), and the TCG PC
//! Client crypto-agile event log that records it ([`eventlog`]). Both are pure: the same
//! bundle and pod configuration always give the same events, log bytes and PCR values, so
//! a verifier can predict a boot without a TPM and compare.
//!
//! The PCR allocation and the exact bytes of every event are specified in
//! `docs/bundle-format.md` ("Measured boot").
#![forbid(unsafe_code)]

pub mod eventlog;
pub mod payload;
pub mod plan;

pub use eventlog::{Event, EventLog, LogError, PcrValues};
pub use payload::{default_kernel, Payload, PayloadError};
pub use plan::{plan, Measured, PlannedEvent};
