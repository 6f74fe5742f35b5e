//! # jek-verifier: the trust core
//!
//! A jek bundle is one file holding a Linux kernel image, its initramfs, its command line,
//! its `.config` and a DSSE-signed in-toto manifest that lists every component by role,
//! size and SHA-256 (byte layout: `docs/bundle-format.md`). This crate parses bundles and
//! decides whether a [`Policy`] accepts them. It has no YAML, KVM or TPM dependency and no
//! private-key code: it can only say yes or no.
//!
//! The yes is a value, not a bool: [`verify`] returns a [`Verified<Bundle>`] that no other
//! code can construct, and everything downstream (measurement, boot) accepts nothing else.
//!
//! ```
//! use ed25519_dalek::{Signer, SigningKey};
//! use jek_verifier::{dsse, format::{self, Role}, manifest::{Component, Manifest}};
//! use jek_verifier::{verify, Policy, PublicKey, Sha256Digest, TrustedKey, UnixTime};
//!
//! // A producer (in jek, the builder crate) writes a manifest, signs it, and packs.
//! let kernel = b"not really a kernel".to_vec();
//! let cmdline = b"console=ttyS0".to_vec();
//! let manifest = Manifest {
//!     name: "demo".into(),
//!     version: "1.0.0".into(),
//!     security_version: 3,
//!     kernel_release: "6.1.0".into(),
//!     created: "2026-01-01T00:00:00Z".into(),
//!     components: vec![
//!         Component { role: Role::BzImage, size: kernel.len() as u64, sha256: Sha256Digest::of(&kernel) },
//!         Component { role: Role::Cmdline, size: cmdline.len() as u64, sha256: Sha256Digest::of(&cmdline) },
//!     ],
//!     kernel: Default::default(),
//! };
//! let signing_key = SigningKey::from_bytes(&[7; 32]);
//! let public = PublicKey::from_verifying_key(signing_key.verifying_key());
//! let payload = manifest.to_statement_json()?;
//! let sig = signing_key.sign(&dsse::pae(dsse::IN_TOTO_PAYLOAD_TYPE, &payload));
//! let envelope = dsse::Envelope {
//!     payload_type: dsse::IN_TOTO_PAYLOAD_TYPE.into(),
//!     payload,
//!     signatures: vec![dsse::Signature { keyid: public.id().to_string(), sig: sig.to_vec() }],
//! };
//! let bytes = format::encode(&[(Role::BzImage, &kernel), (Role::Cmdline, &cmdline)], &envelope.to_json())?;
//!
//! // A host trusts that key and requires security version 3 or later.
//! let policy = Policy::new(vec![TrustedKey::new(public)], None, 3, Default::default())?;
//! let verified = verify(bytes, &policy, UnixTime::now())?;
//! assert_eq!(verified.cmdline(), "console=ttyS0");
//! assert_eq!(verified.component(Role::BzImage), Some(&kernel[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod digest;
pub mod dsse;
pub mod format;
pub mod fuzzing;
pub mod kernel;
pub mod keys;
pub mod manifest;
pub mod policy;
pub mod provenance;
pub mod report;
#[cfg(feature = "sigstore")]
pub mod sigstore;
pub mod verify;

pub use digest::Sha256Digest;
pub use keys::{KeyId, PublicKey};
pub use policy::{KeyRule, Policy, PolicyError, SignerRule, TrustedKey, UnixTime};
pub use verify::{
    detached_signature_paths, inspect, verify, verify_bundle, Bundle, DetachedApproval,
    DetachedSignature, Inspection, Verified, VerifyError,
};
