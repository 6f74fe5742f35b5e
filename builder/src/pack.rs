//! Packing components into a signed bundle, and adding signatures to an existing one.

use ed25519_dalek::{Signer as _, SigningKey};
use jek_verifier::dsse::{self, Envelope, IN_TOTO_PAYLOAD_TYPE};
use jek_verifier::format::{self, EncodeError, Role};
use jek_verifier::manifest::{Component, Manifest, ManifestError};
use jek_verifier::{Sha256Digest, UnixTime, VerifyError};

use crate::kernel_image::{self, KernelImageError};
use crate::keys;

/// Everything a bundle is made of.
#[derive(Debug, Clone)]
pub struct PackRequest<'a> {
    /// The kernel image: a bzImage or an ELF vmlinux (recognised by its content).
    pub kernel: &'a [u8],
    /// An ELF vmlinux to carry next to a bzImage `kernel`.
    pub vmlinux: Option<&'a [u8]>,
    /// The initramfs.
    pub initramfs: Option<&'a [u8]>,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// The kernel's `.config`.
    pub config: Option<&'a [u8]>,
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// Kernel release; read from the image when `None`.
    pub kernel_release: Option<String>,
    /// Creation time recorded in the manifest (`SOURCE_DATE_EPOCH` for reproducible builds).
    pub created: UnixTime,
}

/// A bundle written, as `jek pack --json` prints it.
#[derive(Debug, serde::Serialize)]
pub struct Packed<'a> {
    /// Its path.
    pub bundle: &'a std::path::Path,
    /// Its size.
    pub size: usize,
    /// Its SHA-256.
    pub sha256: jek_verifier::Sha256Digest,
}

/// `SOURCE_DATE_EPOCH` is set to something other than whole seconds.
#[derive(Debug, thiserror::Error)]
#[error("SOURCE_DATE_EPOCH={value:?} is not a whole number of seconds")]
pub struct SourceDateEpochError {
    /// The value.
    pub value: String,
}

/// The creation time of what is built or packed: `SOURCE_DATE_EPOCH` when set (as
/// reproducible-builds.org defines it), else `default()`.
pub fn created_time(default: impl FnOnce() -> u64) -> Result<UnixTime, SourceDateEpochError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse::<u64>()
            .map(UnixTime)
            .map_err(|_| SourceDateEpochError { value }),
        Err(_) => Ok(UnixTime(default())),
    }
}

/// Why packing failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The kernel image is not recognised.
    #[error("kernel image is not usable")]
    Kernel(#[source] KernelImageError),
    /// `--vmlinux` was given something that is not an ELF vmlinux, or `kernel` is an ELF too.
    #[error("the vmlinux component must be an ELF file next to a bzImage kernel")]
    VmlinuxMismatch,
    /// Kernel release could not be determined.
    #[error("cannot read the kernel release from the image; give it explicitly")]
    NoRelease,
    /// The bzImage and vmlinux claim different releases.
    #[error("bzImage says release {bzimage} but vmlinux says {vmlinux}")]
    ReleaseMismatch {
        /// From the bzImage.
        bzimage: String,
        /// From the vmlinux.
        vmlinux: String,
    },
    /// No signing key.
    #[error("at least one signing key is required")]
    NoKeys,
    /// The same key given twice.
    #[error("signing key {key_id} given twice")]
    DuplicateKey {
        /// The key.
        key_id: jek_verifier::KeyId,
    },
    /// The manifest fields are invalid.
    #[error("invalid manifest")]
    Manifest(#[source] ManifestError),
    /// The container cannot hold these components.
    #[error("cannot encode the bundle")]
    Encode(#[source] EncodeError),
}

/// Why a signature could not be added.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The bundle is malformed or its components do not match its manifest.
    #[error("the bundle is not intact")]
    NotIntact(#[source] VerifyError),
    /// The key has already signed this bundle.
    #[error("key {key_id} has already signed this bundle")]
    AlreadySigned {
        /// The key.
        key_id: jek_verifier::KeyId,
    },
    /// Re-encoding failed.
    #[error("cannot encode the bundle")]
    Encode(#[source] EncodeError),
}

fn rfc3339(t: UnixTime) -> String {
    let st = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.0);
    humantime::format_rfc3339_seconds(st).to_string()
}

fn component(role: Role, data: &[u8]) -> Component {
    Component {
        role,
        size: u64::try_from(data.len()).unwrap_or(u64::MAX),
        sha256: Sha256Digest::of(data),
    }
}

fn signature(key: &SigningKey, envelope: &Envelope) -> dsse::Signature {
    dsse::Signature {
        keyid: keys::public_key(key).id().to_string(),
        sig: key.sign(&envelope.signed_bytes()).to_vec(),
    }
}

/// Builds the manifest, signs it with every key (in the order given) and encodes the
/// bundle. Deterministic: Ed25519 signatures are, and so is every encoding step.
pub fn pack(req: &PackRequest<'_>, signing_keys: &[SigningKey]) -> Result<Vec<u8>, PackError> {
    if signing_keys.is_empty() {
        return Err(PackError::NoKeys);
    }
    for (i, k) in signing_keys.iter().enumerate() {
        if signing_keys
            .iter()
            .take(i)
            .any(|o| o.verifying_key() == k.verifying_key())
        {
            return Err(PackError::DuplicateKey {
                key_id: keys::public_key(k).id(),
            });
        }
    }
    let facts = kernel_image::examine(req.kernel).map_err(PackError::Kernel)?;
    let mut parts: Vec<(Role, &[u8])> = vec![(facts.role, req.kernel)];
    let mut release = facts.release.clone();
    if let Some(vmlinux) = req.vmlinux {
        let vf = kernel_image::examine(vmlinux).map_err(PackError::Kernel)?;
        if facts.role != Role::BzImage || vf.role != Role::Vmlinux {
            return Err(PackError::VmlinuxMismatch);
        }
        if let (Some(b), Some(v)) = (&facts.release, &vf.release) {
            if b != v {
                return Err(PackError::ReleaseMismatch {
                    bzimage: b.clone(),
                    vmlinux: v.clone(),
                });
            }
        }
        release = release.or(vf.release);
        parts.push((Role::Vmlinux, vmlinux));
    }
    if let Some(i) = req.initramfs {
        parts.push((Role::Initramfs, i));
    }
    parts.push((Role::Cmdline, req.cmdline.as_bytes()));
    if let Some(c) = req.config {
        parts.push((Role::Config, c));
    }
    parts.sort_by_key(|(r, _)| r.kind());
    // The signed kernel facts come from the verifier's own reader, so what is signed is
    // exactly what verification recomputes.
    let part = |role| parts.iter().find(|(r, _)| *r == role).map(|(_, d)| *d);
    let info = jek_verifier::kernel::facts(part(Role::BzImage), part(Role::Vmlinux));
    let kernel_release = req
        .kernel_release
        .clone()
        .or(release)
        .ok_or(PackError::NoRelease)?;
    let manifest = Manifest {
        name: req.name.clone(),
        version: req.version.clone(),
        security_version: req.security_version,
        kernel_release,
        created: rfc3339(req.created),
        components: parts.iter().map(|(r, d)| component(*r, d)).collect(),
        kernel: info,
    };
    let payload = manifest.to_statement_json().map_err(PackError::Manifest)?;
    let mut envelope = Envelope {
        payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
        payload,
        signatures: Vec::new(),
    };
    envelope.signatures = signing_keys
        .iter()
        .map(|k| signature(k, &envelope))
        .collect();
    format::encode(&parts, &envelope.to_json()).map_err(PackError::Encode)
}

/// Adds `key`'s signature to a bundle whose components match its manifest. The payload and
/// components are kept byte for byte; only the envelope grows.
pub fn add_signature(bundle: &[u8], key: &SigningKey) -> Result<Vec<u8>, SignError> {
    let (raw, mut envelope) =
        jek_verifier::verify::check_integrity(bundle).map_err(SignError::NotIntact)?;
    let key_id = keys::public_key(key).id();
    if envelope
        .signatures
        .iter()
        .any(|s| s.keyid == key_id.to_string())
    {
        return Err(SignError::AlreadySigned { key_id });
    }
    envelope.signatures.push(signature(key, &envelope));
    let comps: Vec<(Role, &[u8])> = raw.sections.iter().map(|s| (s.role, s.data)).collect();
    format::encode(&comps, &envelope.to_json()).map_err(SignError::Encode)
}
