//! # jek-builder: the producer side
//!
//! Everything that makes bundles: Ed25519 key generation ([`keys`]), reading facts out of
//! kernel images ([`kernel_image`]), packing and signing ([`pack`]), and writing files
//! atomically ([`fsio`]). This is the only crate that handles private keys.
#![forbid(unsafe_code)]

pub mod fsio;
pub mod kernel_image;
pub mod keys;
pub mod pack;
