//! # jek-builder: the producer side
//!
//! Everything that makes bundles: Ed25519 key generation ([`keys`]), reading facts out of
//! kernel images ([`kernel_image`]), packing and signing ([`pack`]), kconfig checks
//! ([`kconfig`]), the cached kernel build ([`kernel`]), deterministic initramfs archives
//! ([`cpio`]), recipes ([`recipe`]), SLSA provenance ([`provenance`]) and the whole
//! `jek build` ([`build`]). Files are written atomically (`jek-fsio`). This is the only crate
//! that handles private keys.
#![forbid(unsafe_code)]

pub mod build;
pub mod cache;
#[cfg(feature = "cosign")]
pub mod cosign;
pub use jek_pod::cpio;

pub mod fuzzing;
pub mod kconfig;
pub mod kernel;
pub mod kernel_image;
pub mod keys;
pub mod pack;
pub mod progress;
pub mod provenance;
pub mod recipe;
#[cfg(feature = "cosign")]
pub mod sign;
