//! # jek-oci: jek bundles in OCI registries
//!
//! A bundle travels as an OCI artifact (image-spec 1.1): a manifest whose `artifactType` is
//! [`artifact::BUNDLE_ARTIFACT_TYPE`], the empty config, and one layer holding the bundle
//! file byte for byte. Its detached signatures (a Sigstore bundle, a cosign signature) and
//! its provenance are separate artifacts whose manifests name the bundle's manifest as
//! their `subject`: referrers. Registries without the referrers API (Distribution 2.x,
//! Debian's `docker-registry`) get the referrers tag schema: an image index at tag
//! `sha256-<hex of the bundle manifest digest>` listing them. `docs/bundle-format.md`
//! gives every media type and field.
//!
//! [`artifact`] is pure: it writes and strictly reads these manifests. [`registry`] is the
//! network shell, over `oci-client`. Nothing here decides whether a bundle is trusted: a
//! pull returns bytes whose digests match the manifest, and the caller verifies them
//! under its policy before it writes anything.
#![forbid(unsafe_code)]

pub mod artifact;
pub mod auth;
pub mod cosign;
pub mod registry;

pub use artifact::{ArtifactError, Attachment, AttachmentKind};
pub use auth::{AuthError, ClientOptions, Credentials};
pub use registry::{Pulled, Pushed, Registry, RegistryError};
