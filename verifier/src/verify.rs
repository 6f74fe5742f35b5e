//! Verification: the only way to obtain a [`Verified<Bundle>`].

use std::collections::BTreeSet;
use std::ops::{Deref, Range};

use ed25519_dalek::Signature as EdSignature;

use crate::digest::Sha256Digest;
use crate::dsse::{Envelope, EnvelopeError, IN_TOTO_PAYLOAD_TYPE};
use crate::format::{self, FormatError, RawBundle, Role};
use crate::keys::KeyId;
use crate::manifest::{Manifest, ManifestError};
use crate::policy::{KeyRule, Policy, SignerRule, TrustedKey, UnixTime};

/// A value that passed verification. Its fields are private to this module and it has no
/// public constructor, so the only way to hold one is to call [`verify`]: code that takes a
/// `Verified<Bundle>` cannot be handed bytes that were not checked.
#[derive(Debug)]
pub struct Verified<T> {
    value: T,
    signers: Vec<KeyId>,
    approval: Option<(usize, String)>,
}

impl<T> Verified<T> {
    /// A value whose envelope `signers` verified, with no detached approval (provenance).
    pub(crate) fn new_unapproved(value: T, signers: Vec<KeyId>) -> Self {
        Verified {
            value,
            signers,
            approval: None,
        }
    }

    /// The distinct trusted, valid, unrevoked keys whose signatures were accepted, sorted.
    pub fn signers(&self) -> &[KeyId] {
        &self.signers
    }

    /// Who approved the bundle file outside the Ed25519 envelope (a Sigstore identity or
    /// managed key), if the policy asked for it.
    pub fn approval(&self) -> Option<&str> {
        self.approval.as_ref().map(|(_, s)| s.as_str())
    }

    /// Which of the detached signatures handed to [`verify_bundle`] approved the bundle.
    pub fn approving_signature(&self) -> Option<usize> {
        self.approval.as_ref().map(|(i, _)| *i)
    }
}

/// A detached signature over a bundle file that a policy's Sigstore rule may accept: a
/// Sigstore bundle (JSON) or a bare cosign signature, with where it came from (a file, a
/// registry referrer) for the error that names it.
#[derive(Debug, Clone, Copy)]
pub struct DetachedSignature<'a> {
    /// Where it came from.
    pub origin: &'a str,
    /// Its bytes.
    pub bytes: &'a [u8],
}

/// Where jek keeps a bundle file's detached signatures: `BUNDLE.sigstore.json` (a Sigstore
/// bundle), then `BUNDLE.sig` (a cosign blob signature). `jek sign` writes them there and
/// `jek verify` looks for them there, in that order.
pub fn detached_signature_paths(bundle: &std::path::Path) -> [std::path::PathBuf; 2] {
    let with = |suffix: &str| {
        let mut s = bundle.as_os_str().to_os_string();
        s.push(suffix);
        std::path::PathBuf::from(s)
    };
    [with(".sigstore.json"), with(".sig")]
}

/// Proof that a signer the policy accepts, outside the bundle's own Ed25519 envelope,
/// signed these exact bundle bytes: made only by this crate's Sigstore check (feature
/// `sigstore`) and consumed by [`verify_bundle`]. It names the file digest it covers, so
/// an approval of one bundle cannot be presented with another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedApproval {
    digest: Sha256Digest,
    signer: String,
}

impl DetachedApproval {
    #[cfg_attr(not(feature = "sigstore"), allow(dead_code))]
    pub(crate) fn new(digest: Sha256Digest, signer: String) -> Self {
        DetachedApproval { digest, signer }
    }

    /// SHA-256 of the bundle file the approval covers.
    pub fn digest(&self) -> Sha256Digest {
        self.digest
    }

    /// Who signed, e.g. `sigstore <subject> (issuer <issuer>)`.
    pub fn signer(&self) -> &str {
        &self.signer
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A bundle held in memory: the exact bytes that were read, with the positions of its
/// components and the parsed manifest. Only [`verify`] creates one.
#[derive(Debug)]
pub struct Bundle {
    bytes: Vec<u8>,
    sections: Vec<(Role, Range<usize>)>,
    manifest: Manifest,
    manifest_digest: Sha256Digest,
    statement: Vec<u8>,
}

impl Bundle {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bytes of the component with this role.
    pub fn component(&self, role: Role) -> Option<&[u8]> {
        self.sections
            .iter()
            .find(|(r, _)| *r == role)
            .and_then(|(_, range)| self.bytes.get(range.clone()))
    }

    /// The kernel command line (the container format guarantees printable ASCII).
    pub fn cmdline(&self) -> &str {
        self.component(Role::Cmdline)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// The whole bundle file as read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of the signed statement: the bundle's identity, unchanged by adding signatures.
    pub fn manifest_digest(&self) -> Sha256Digest {
        self.manifest_digest
    }

    /// The exact signed statement bytes (the DSSE payload).
    pub fn statement(&self) -> &[u8] {
        &self.statement
    }
}

/// Why a bundle was rejected.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The container is malformed.
    #[error("malformed bundle")]
    Format(#[from] FormatError),
    /// The envelope is malformed.
    #[error("malformed signature envelope")]
    Envelope(#[from] EnvelopeError),
    /// The envelope does not carry an in-toto statement.
    #[error("envelope payloadType is {actual:?}, expected {IN_TOTO_PAYLOAD_TYPE:?}")]
    PayloadType {
        /// The type found.
        actual: String,
    },
    /// The envelope has no signature.
    #[error("the bundle is not signed")]
    NoSignatures,
    /// No signature is by a trusted key.
    #[error("no signature is by a trusted key (signers: {})", key_ids.join(", "))]
    UnknownSigner {
        /// The key IDs the signatures claim (`(none)` when a signature names no key).
        key_ids: Vec<String>,
    },
    /// A signature claiming a trusted key does not verify.
    #[error("signature {index} by key {key_id} does not verify")]
    BadSignature {
        /// Position in the envelope.
        index: usize,
        /// The key.
        key_id: KeyId,
    },
    /// A signature by a revoked key.
    #[error("signature {index} is by revoked key {key_id}")]
    RevokedKey {
        /// Position in the envelope.
        index: usize,
        /// The key.
        key_id: KeyId,
    },
    /// A trusted key used before its validity window.
    #[error("key {key_id} is not valid before {not_before} (now {now})")]
    KeyNotYetValid {
        /// The key.
        key_id: KeyId,
        /// Start of its validity.
        not_before: UnixTime,
        /// Verification time.
        now: UnixTime,
    },
    /// A trusted key used after its validity window.
    #[error("key {key_id} expired at {not_after} (now {now})")]
    KeyExpired {
        /// The key.
        key_id: KeyId,
        /// End of its validity.
        not_after: UnixTime,
        /// Verification time.
        now: UnixTime,
    },
    /// Fewer distinct valid trusted signers than the threshold.
    #[error("threshold not met: {valid} of the required {required} distinct trusted keys signed")]
    ThresholdNotMet {
        /// Required signers.
        required: usize,
        /// Valid signers found.
        valid: usize,
    },
    /// The signed payload is not a valid manifest.
    #[error("signed manifest is invalid")]
    Manifest(#[from] ManifestError),
    /// A component in the file that the manifest does not list.
    #[error("component {role} is in the bundle but not in the signed manifest")]
    UnlistedComponent {
        /// The role.
        role: Role,
    },
    /// A component the manifest lists that the file does not carry.
    #[error("component {role} is listed in the signed manifest but missing from the bundle")]
    MissingComponent {
        /// The role.
        role: Role,
    },
    /// A component whose size differs from the manifest.
    #[error(
        "size mismatch for component {component}: manifest says {expected}, bundle has {actual}"
    )]
    SizeMismatch {
        /// The role.
        component: Role,
        /// Signed size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A component whose digest differs from the manifest.
    #[error("digest mismatch for component {component}: expected sha256:{expected}, actual sha256:{actual}")]
    DigestMismatch {
        /// The role.
        component: Role,
        /// Signed digest.
        expected: Sha256Digest,
        /// Actual digest.
        actual: Sha256Digest,
    },
    /// The policy requires a detached (Sigstore) signature and none was given.
    #[error("the policy requires a Sigstore signature over the bundle and none was supplied")]
    ApprovalMissing,
    /// No detached signature the policy's Sigstore rule accepts: the first candidate's
    /// failure.
    #[cfg(feature = "sigstore")]
    #[error("its Sigstore signature {origin} failed")]
    Sigstore {
        /// Where the signature came from.
        origin: String,
        /// The failed step.
        #[source]
        source: crate::sigstore::SigstoreError,
    },
    /// The detached approval covers another file.
    #[error("the Sigstore signature covers sha256:{approved}, but the bundle is sha256:{actual}")]
    ApprovalForOtherBundle {
        /// What was approved.
        approved: Sha256Digest,
        /// The bundle's digest.
        actual: Sha256Digest,
    },
    /// A signed kernel fact that the kernel image bytes contradict.
    #[error("the manifest signs kernel.{field} = {}, but the kernel image says {}", show(.signed), show(.actual))]
    KernelFact {
        /// The manifest field (`bootProtocol`, `payloadFormat`, `elfEntry`).
        field: &'static str,
        /// What the manifest signs.
        signed: Option<String>,
        /// What the image bytes say.
        actual: Option<String>,
    },
    /// The security version is below the policy's minimum.
    #[error("security version {security_version} is below the minimum {minimum} (rollback)")]
    Rollback {
        /// The bundle's security version.
        security_version: u64,
        /// The policy's minimum.
        minimum: u64,
    },
}

impl VerifyError {
    /// A stable, machine-readable name for the reason (used in `--json` output).
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Format(_) => "malformed_bundle",
            VerifyError::Envelope(_) => "malformed_envelope",
            VerifyError::PayloadType { .. } => "wrong_payload_type",
            VerifyError::NoSignatures => "not_signed",
            VerifyError::UnknownSigner { .. } => "unknown_signer",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::RevokedKey { .. } => "revoked_key",
            VerifyError::KeyNotYetValid { .. } => "key_not_yet_valid",
            VerifyError::KeyExpired { .. } => "key_expired",
            VerifyError::ThresholdNotMet { .. } => "threshold_not_met",
            VerifyError::Manifest(_) => "invalid_manifest",
            VerifyError::UnlistedComponent { .. } => "unlisted_component",
            VerifyError::MissingComponent { .. } => "missing_component",
            VerifyError::SizeMismatch { .. } => "size_mismatch",
            VerifyError::DigestMismatch { .. } => "digest_mismatch",
            VerifyError::KernelFact { .. } => "kernel_fact_mismatch",
            VerifyError::Rollback { .. } => "rollback",
            VerifyError::ApprovalMissing => "sigstore_signature_missing",
            VerifyError::ApprovalForOtherBundle { .. } => "sigstore_other_bundle",
            #[cfg(feature = "sigstore")]
            VerifyError::Sigstore { source, .. } => source.step.code(),
        }
    }
}

fn show(v: &Option<String>) -> String {
    v.as_deref()
        .map_or_else(|| "nothing".to_string(), |s| format!("{s:?}"))
}

/// The first steps of every check: container structure, envelope, payload type.
fn open(bytes: &[u8]) -> Result<(RawBundle<'_>, Envelope), VerifyError> {
    let raw = format::parse(bytes)?;
    let envelope = Envelope::from_json(raw.envelope)?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(VerifyError::PayloadType {
            actual: envelope.payload_type,
        });
    }
    Ok((raw, envelope))
}

/// Verifies `bytes` as a bundle under a policy of Ed25519 signers at time `now` (a policy
/// whose rule needs a detached signature rejects: use [`verify_bundle`]).
pub fn verify(
    bytes: Vec<u8>,
    policy: &Policy,
    now: UnixTime,
) -> Result<Verified<Bundle>, VerifyError> {
    verify_bundle(bytes, policy, &[], now)
}

/// The trust decision: is `bytes` a bundle that `policy` accepts at time `now`, given the
/// `detached` signatures found beside it?
///
/// Order of checks: the policy's detached (Sigstore) rule over the whole file, trying each
/// candidate until one is accepted (none: the first one's failure; no candidate at all:
/// [`VerifyError::ApprovalMissing`]); then the container structure, the envelope, the
/// Ed25519 signatures over the exact payload bytes (before the payload is parsed), the
/// manifest, each component's size and digest, and the security version. The first failure
/// is returned. Candidates are ignored by a policy with no detached rule.
pub fn verify_bundle(
    bytes: Vec<u8>,
    policy: &Policy,
    detached: &[DetachedSignature<'_>],
    now: UnixTime,
) -> Result<Verified<Bundle>, VerifyError> {
    let approval = approve(&bytes, policy.signers(), detached)?;
    if let Some((_, a)) = &approval {
        let actual = Sha256Digest::of(&bytes);
        if a.digest != actual {
            return Err(VerifyError::ApprovalForOtherBundle {
                approved: a.digest,
                actual,
            });
        }
    }
    let (raw, envelope) = open(&bytes)?;
    let signers = match policy.signers().keys() {
        Some(keys) => check_signatures(&envelope, keys, policy, now)?,
        None => {
            // Detached-only policy: the approval above vouches for every byte; the
            // envelope's own signatures are not required, but a revoked signer still
            // rejects.
            check_revocation(&envelope, policy)?;
            Vec::new()
        }
    };
    let manifest = Manifest::from_statement_json(&envelope.payload)?;
    check_components(&raw, &manifest)?;
    check_kernel_facts(&raw, &manifest)?;
    if manifest.security_version < policy.min_security_version() {
        return Err(VerifyError::Rollback {
            security_version: manifest.security_version,
            minimum: policy.min_security_version(),
        });
    }
    let sections = raw.sections.iter().map(|s| (s.role, s.range())).collect();
    let manifest_digest = Sha256Digest::of(&envelope.payload);
    Ok(Verified {
        value: Bundle {
            bytes,
            sections,
            manifest,
            manifest_digest,
            statement: envelope.payload,
        },
        signers,
        approval: approval.map(|(i, a)| (i, a.signer)),
    })
}

/// The detached step: `None` when the rule needs no detached signature.
#[cfg_attr(not(feature = "sigstore"), allow(clippy::unnecessary_wraps))]
fn approve(
    bytes: &[u8],
    rule: &SignerRule,
    detached: &[DetachedSignature<'_>],
) -> Result<Option<(usize, DetachedApproval)>, VerifyError> {
    #[cfg(feature = "sigstore")]
    if let Some(sigstore) = rule.detached() {
        let mut first_failure = None;
        for (i, candidate) in detached.iter().enumerate() {
            match sigstore.check(bytes, candidate.bytes) {
                Ok(approval) => return Ok(Some((i, approval))),
                Err(source) => {
                    first_failure.get_or_insert(VerifyError::Sigstore {
                        origin: candidate.origin.to_string(),
                        source,
                    });
                }
            }
        }
        return Err(first_failure.unwrap_or(VerifyError::ApprovalMissing));
    }
    let _ = (bytes, rule, detached);
    Ok(None)
}

/// A signature by a revoked key rejects the bundle outright: one that claims a revoked
/// keyid, and one that any revoked public key verifies, whatever keyid it claims.
fn check_revocation(envelope: &Envelope, policy: &Policy) -> Result<(), VerifyError> {
    let message = envelope.signed_bytes();
    for (index, sig) in envelope.signatures.iter().enumerate() {
        if let Some(key_id) = KeyId::from_hex(&sig.keyid).filter(|id| policy.is_revoked(id)) {
            return Err(VerifyError::RevokedKey { index, key_id });
        }
        let Ok(ed_sig) = EdSignature::from_slice(&sig.sig) else {
            continue;
        };
        if let Some(key) = policy
            .revoked_keys()
            .iter()
            .find(|k| k.verifying_key().verify_strict(&message, &ed_sig).is_ok())
        {
            return Err(VerifyError::RevokedKey {
                index,
                key_id: key.id(),
            });
        }
    }
    Ok(())
}

/// The signed `kernel` object must be exactly what the kernel bytes say
/// ([`crate::kernel::facts`]): a signer cannot claim a boot protocol, payload format or
/// entry point that the image does not have.
fn check_kernel_facts(raw: &RawBundle<'_>, manifest: &Manifest) -> Result<(), VerifyError> {
    let data = |role| raw.section(role).map(|s| s.data);
    let actual = crate::kernel::facts(data(Role::BzImage), data(Role::Vmlinux));
    let signed = &manifest.kernel;
    let mismatch = |field: &'static str, signed: &Option<String>, actual: &Option<String>| {
        (signed != actual).then(|| VerifyError::KernelFact {
            field,
            signed: signed.clone(),
            actual: actual.clone(),
        })
    };
    match mismatch("bootProtocol", &signed.boot_protocol, &actual.boot_protocol)
        .or_else(|| {
            mismatch(
                "payloadFormat",
                &signed.payload_format,
                &actual.payload_format,
            )
        })
        .or_else(|| mismatch("elfEntry", &signed.elf_entry, &actual.elf_entry))
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The envelope's signatures under `keys` (threshold, validity, revocation): the bundle's,
/// and those of other envelopes signed with the bundle's keys (provenance).
pub(crate) fn check_signatures(
    envelope: &Envelope,
    keys: &KeyRule,
    policy: &Policy,
    now: UnixTime,
) -> Result<Vec<KeyId>, VerifyError> {
    if envelope.signatures.is_empty() {
        return Err(VerifyError::NoSignatures);
    }
    // Every revocation is decided here, before any signature counts: a claimed revoked
    // keyid, and any signature a revoked key verifies (trusted keys revoked by ID
    // included, see `Policy::revoked_keys`).
    check_revocation(envelope, policy)?;
    let message = envelope.signed_bytes();
    let mut valid = BTreeSet::new();
    let mut unknown = Vec::new();
    let mut disqualified: Option<VerifyError> = None;
    for (index, sig) in envelope.signatures.iter().enumerate() {
        let ed_sig = EdSignature::from_slice(&sig.sig).ok();
        let verifies = |t: &TrustedKey| {
            ed_sig.is_some_and(|s| t.key.verifying_key().verify_strict(&message, &s).is_ok())
        };
        let signer: &TrustedKey = if sig.keyid.is_empty() {
            // No key ID: try every trusted key.
            match keys.trusted().iter().find(|t| verifies(t)) {
                Some(t) => t,
                None => {
                    unknown.push("(none)".to_string());
                    continue;
                }
            }
        } else {
            let Some(id) = KeyId::from_hex(&sig.keyid) else {
                unknown.push(sig.keyid.clone());
                continue;
            };
            let Some(t) = keys.find(&id) else {
                unknown.push(sig.keyid.clone());
                continue;
            };
            if !verifies(t) {
                return Err(VerifyError::BadSignature { index, key_id: id });
            }
            t
        };
        let key_id = signer.key.id();
        if let Some(not_before) = signer.not_before.filter(|nb| now < *nb) {
            disqualified.get_or_insert(VerifyError::KeyNotYetValid {
                key_id,
                not_before,
                now,
            });
            continue;
        }
        if let Some(not_after) = signer.not_after.filter(|na| now > *na) {
            disqualified.get_or_insert(VerifyError::KeyExpired {
                key_id,
                not_after,
                now,
            });
            continue;
        }
        valid.insert(key_id);
    }
    if valid.len() >= keys.threshold() {
        return Ok(valid.into_iter().collect());
    }
    if valid.is_empty() {
        return Err(disqualified.unwrap_or(VerifyError::UnknownSigner { key_ids: unknown }));
    }
    Err(VerifyError::ThresholdNotMet {
        required: keys.threshold(),
        valid: valid.len(),
    })
}

fn check_components(raw: &RawBundle<'_>, manifest: &Manifest) -> Result<(), VerifyError> {
    if let Some(s) = raw
        .sections
        .iter()
        .find(|s| manifest.component(s.role).is_none())
    {
        return Err(VerifyError::UnlistedComponent { role: s.role });
    }
    for c in &manifest.components {
        let section = raw
            .section(c.role)
            .ok_or(VerifyError::MissingComponent { role: c.role })?;
        let actual = u64::try_from(section.data.len()).unwrap_or(u64::MAX);
        if actual != c.size {
            return Err(VerifyError::SizeMismatch {
                component: c.role,
                expected: c.size,
                actual,
            });
        }
        let digest = Sha256Digest::of(section.data);
        if digest != c.sha256 {
            return Err(VerifyError::DigestMismatch {
                component: c.role,
                expected: c.sha256,
                actual: digest,
            });
        }
    }
    Ok(())
}

/// Checks everything but the signatures: structure, envelope, manifest, and that every
/// component matches the manifest. For producers adding a signature (they must not sign
/// something inconsistent); it says nothing about who signed.
pub fn check_integrity(bytes: &[u8]) -> Result<(RawBundle<'_>, Envelope), VerifyError> {
    let (raw, envelope) = open(bytes)?;
    let manifest = Manifest::from_statement_json(&envelope.payload)?;
    check_components(&raw, &manifest)?;
    check_kernel_facts(&raw, &manifest)?;
    Ok((raw, envelope))
}

/// What `inspect` shows of one section: where it is and what it actually hashes to.
#[derive(Debug, Clone)]
pub struct SectionInfo {
    /// Role.
    pub role: Role,
    /// File offset of its data.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// Actual SHA-256 of its bytes.
    pub sha256: Sha256Digest,
}

/// An unverified look at a bundle: structure, claimed manifest and claimed signers. Nothing
/// in it is authenticated.
#[derive(Debug)]
pub struct Inspection {
    /// The component sections.
    pub sections: Vec<SectionInfo>,
    /// The envelope.
    pub envelope: Envelope,
    /// The manifest as claimed by the payload, or why it does not parse.
    pub manifest: Result<Manifest, ManifestError>,
    /// The command line section's text (invalid UTF-8 replaced), if there is one.
    pub cmdline: Option<String>,
}

/// Why a bundle could not even be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The container is malformed.
    #[error("malformed bundle")]
    Format(#[from] FormatError),
    /// The envelope is malformed.
    #[error("malformed signature envelope")]
    Envelope(#[from] EnvelopeError),
}

impl InspectError {
    /// The same stable code `verify` gives the same malformation.
    pub fn code(&self) -> &'static str {
        match self {
            InspectError::Format(_) => "malformed_bundle",
            InspectError::Envelope(_) => "malformed_envelope",
        }
    }
}

/// One component of a bundle as stored, without verifying anything (`jek extract`):
/// `Ok(None)` when the bundle has no component of that role.
pub fn extract(bytes: &[u8], role: Role) -> Result<Option<&[u8]>, InspectError> {
    let raw = format::parse(bytes)?;
    Envelope::from_json(raw.envelope)?;
    Ok(raw.section(role).map(|s| s.data))
}

/// Reads a bundle's structure without verifying anything.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, InspectError> {
    let raw = format::parse(bytes)?;
    let envelope = Envelope::from_json(raw.envelope)?;
    let sections = raw
        .sections
        .iter()
        .map(|s| SectionInfo {
            role: s.role,
            offset: s.offset,
            size: s.data.len(),
            sha256: Sha256Digest::of(s.data),
        })
        .collect();
    let manifest = Manifest::from_statement_json(&envelope.payload);
    let cmdline = raw
        .section(Role::Cmdline)
        .map(|s| String::from_utf8_lossy(s.data).into_owned());
    Ok(Inspection {
        sections,
        envelope,
        manifest,
        cmdline,
    })
}
