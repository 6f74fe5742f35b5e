//! # jek-tpm: the TPM shell of measured boot
//!
//! The pure measurement core (`jek-measure`) says which digests go into which PCR; this
//! crate puts them into a real TPM and proves that it did:
//!
//! - [`swtpm`]: one software TPM per pod, a child process with its state in the pod's run
//!   directory, serving Unix sockets in a private 0700 directory: no other user can reach it.
//! - [`bridge`]: the loopback port pair tss-esapi 7.x needs (its only working transport to
//!   a swtpm, see `shared/FACTS.md`), forwarded to the sockets for this process only.
//! - [`client`]: a tss-esapi context with the few commands the loader needs (extend, read).
//! - [`identity`]: the pod TPM's EK certificate (local CA), attestation key, credential
//!   activation and quotes.
//! - [`measure()`]: the measured-boot step. It checks that every planned PCR starts from its
//!   reset value, extends each event in order, reads the PCRs back and compares them with
//!   the replay of the event log it returns. Any failure stops the boot and names the PCR.
#![forbid(unsafe_code)]

pub mod bridge;
pub mod client;
pub mod identity;
pub mod swtpm;

mod measure;

pub use client::{Tpm, TpmError};
pub use measure::{measure, measure_more, MeasureError};
pub use swtpm::{Swtpm, SwtpmError};
