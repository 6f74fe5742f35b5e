//! The policy file: YAML in, a validated [`Policy`] out. YAML stays here, outside the
//! verifier's trusted path. Every field: `docs/policy.md`.
//!
//! ```yaml
//! trusted_keys:
//!   - dev.pub                  # a path, relative to the policy file
//!   - file: ci.pub
//!     not_before: 2026-01-01T00:00:00Z
//!     not_after: 2027-01-01T00:00:00Z
//!   - pem: |
//!       -----BEGIN PUBLIC KEY-----
//!       ...
//! threshold: 1                 # distinct trusted keys that must sign (default 1)
//! min_security_version: 3      # required: the anti-rollback floor
//! revoked_keys:               # a key ID, or the key itself (file or pem, as above)
//!   - <key id hex>
//!   - file: leaked.pub
//! attestation:                 # for `jek attest` (ignored by verify, boot, predict)
//!   ek_ca: tpm-ca/swtpm-localca-rootca-cert.pem   # the CA pod EK certificates chain to
//! sigstore:                    # also (or, with no trusted_keys, only) require a Sigstore
//!   trusted_root: trusted_root.json               #   signature over the bundle file
//!   identities:                # keyless: the certificate must name one of these
//!     - issuer: https://token.actions.githubusercontent.com
//!       subject: https://github.com/org/kernels/.github/workflows/build.yml@refs/heads/main
//!   # or a managed key (cosign generate-key-pair / jek keygen --cosign):
//!   # public_key: cosign.pub  # with trusted_root: logged bundles only; without: bare
//!   #                          # cosign signatures are enough (no transparency log)
//! ```
//!
//! `trusted_keys` may be left out when a `sigstore` section is present.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jek_fsio::ReadError;
use jek_image::policy::{AllowRule, ImagePolicy};
use jek_verifier::sigstore::{Identity, SigstoreError, SigstorePolicy};
use jek_verifier::{
    KeyId, KeyRule, Policy, PolicyError, PublicKey, Sha256Digest, SignerRule, TrustedKey, UnixTime,
};
use serde::Deserialize;

use crate::{ConfigError, MAX_CONFIG_SIZE, MAX_REFERENCED_SIZE};

/// Why a policy file is invalid.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// Not valid YAML of the expected shape.
    #[error("not a valid policy document")]
    Yaml(#[source] serde_yaml::Error),
    /// A `trusted_keys` entry of the wrong shape.
    #[error("trusted_keys[{index}] is invalid")]
    Entry {
        /// Position in the list.
        index: usize,
        /// Cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// A `trusted_keys` entry with neither or both of `file` and `pem`.
    #[error("trusted_keys[{index}] needs exactly one of `file` or `pem`")]
    KeySource {
        /// Position in the list.
        index: usize,
    },
    /// A key file that cannot be read.
    #[error("trusted_keys[{index}]: cannot read {path}")]
    ReadKey {
        /// Position in the list.
        index: usize,
        /// The key file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: ReadError,
    },
    /// Key text that is not an Ed25519 SPKI PEM.
    #[error("trusted_keys[{index}] is not a usable public key")]
    Key {
        /// Position in the list.
        index: usize,
        /// Cause.
        #[source]
        source: jek_verifier::keys::KeyError,
    },
    /// A timestamp that is not RFC 3339.
    #[error("trusted_keys[{index}].{field} = {value:?} is not an RFC 3339 time")]
    Time {
        /// Position in the list.
        index: usize,
        /// `not_before` or `not_after`.
        field: &'static str,
        /// The text.
        value: String,
    },
    /// A revoked key ID that is not 64 lowercase hex digits.
    #[error("revoked_keys[{index}] = {value:?} is not a key ID (64 lowercase hex digits)")]
    RevokedId {
        /// Position in the list.
        index: usize,
        /// The text.
        value: String,
    },
    /// A `revoked_keys` entry of the wrong shape.
    #[error("revoked_keys[{index}] is invalid")]
    RevokedEntry {
        /// Position in the list.
        index: usize,
        /// Cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// A `revoked_keys` entry with neither or both of `file` and `pem`.
    #[error("revoked_keys[{index}] needs a key ID, or exactly one of `file` or `pem`")]
    RevokedSource {
        /// Position in the list.
        index: usize,
    },
    /// A revoked key file that cannot be read.
    #[error("revoked_keys[{index}]: cannot read {path}")]
    ReadRevoked {
        /// Position in the list.
        index: usize,
        /// The key file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: ReadError,
    },
    /// A revoked key that is not an Ed25519 SPKI PEM.
    #[error("revoked_keys[{index}] is not a usable public key")]
    RevokedKey {
        /// Position in the list.
        index: usize,
        /// Cause.
        #[source]
        source: jek_verifier::keys::KeyError,
    },
    /// A detached-only policy revoking a key by ID alone: its signatures could not be
    /// recognised once their keyid is stripped.
    #[error("revoked_keys names {key_id} by ID only; a policy without trusted_keys must give the revoked key itself (file: or pem:), so that its signatures are recognised whatever keyid they claim")]
    RevokedWithoutKey {
        /// The key ID.
        key_id: KeyId,
    },
    /// The rules contradict each other.
    #[error("the policy is inconsistent")]
    Policy(#[source] PolicyError),
    /// A `sigstore` section with neither or both of `identities` and `public_key`.
    #[error("sigstore needs exactly one of `identities` (with `trusted_root`) or `public_key`")]
    SigstoreRule,
    /// A file named in the `sigstore` section cannot be read.
    #[error("sigstore.{field}: cannot read {path}")]
    SigstoreRead {
        /// The field.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: ReadError,
    },
    /// A file named in the policy may be changed by another user.
    #[error("{field}: refused")]
    Untrusted {
        /// The field that names it.
        field: String,
        /// Who else could change it.
        #[source]
        source: jek_fsio::StrictError,
    },
    /// A file named in the policy is not UTF-8 text.
    #[error("{field}: {path} is not UTF-8 text")]
    NotText {
        /// The field.
        field: String,
        /// The file.
        path: PathBuf,
    },
    /// The trusted root, identities or key are unusable.
    #[error("sigstore section is unusable")]
    Sigstore(#[source] SigstoreError),
    /// An `images.allow` repository that is not one.
    #[error("images.allow[{index}].repository {value:?}: {reason}")]
    ImageRepository {
        /// Index.
        index: usize,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// An `images.allow[].cosign_key` file that cannot be read.
    #[error("images.allow[{index}].cosign_key: cannot read {path}")]
    ReadImageKey {
        /// Index.
        index: usize,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: ReadError,
    },
    /// An `images.allow[].cosign_key` that is not a P-256 public key.
    #[error("images.allow[{index}].cosign_key is unusable")]
    ImageKey {
        /// Index.
        index: usize,
        /// Why.
        #[source]
        source: SigstoreError,
    },
    /// An `images.allow` digest that is not `sha256:` and 64 lowercase hex digits.
    #[error("images.allow[{index}].digests: {value:?} is not a sha256 digest (sha256: and 64 lowercase hex digits)")]
    ImageDigest {
        /// Index.
        index: usize,
        /// The value.
        value: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    #[serde(default)]
    trusted_keys: Vec<serde_yaml::Value>,
    #[serde(default)]
    threshold: Option<usize>,
    min_security_version: u64,
    #[serde(default)]
    revoked_keys: Vec<serde_yaml::Value>,
    #[serde(default)]
    attestation: Option<AttestationDoc>,
    #[serde(default)]
    sigstore: Option<SigstoreDoc>,
    #[serde(default)]
    images: Option<ImagesDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesDoc {
    #[serde(default)]
    max_rootfs_bytes: Option<u64>,
    #[serde(default)]
    allow: Vec<AllowDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowDoc {
    repository: String,
    #[serde(default)]
    digests: Vec<String>,
    #[serde(default)]
    cosign_key: Option<PathBuf>,
}

fn parse_images(doc: ImagesDoc, base: Base<'_>) -> Result<ImagePolicy, PolicyFileError> {
    let mut allow = Vec::with_capacity(doc.allow.len());
    for (index, a) in doc.allow.into_iter().enumerate() {
        let repository =
            jek_image::policy::normalize_repository(&a.repository, base.dir).map_err(|reason| {
                PolicyFileError::ImageRepository {
                    index,
                    value: a.repository.clone(),
                    reason,
                }
            })?;
        for d in &a.digests {
            jek_image::manifest::check_digest(&a.repository, "images.allow", d).map_err(|_| {
                PolicyFileError::ImageDigest {
                    index,
                    value: d.clone(),
                }
            })?;
        }
        let cosign_key = match &a.cosign_key {
            Some(file) => {
                let pem = read_text_field(base, Field::ImageKey(index), file)?;
                let key = SigstorePolicy::public_key(&pem, None)
                    .map_err(|source| PolicyFileError::ImageKey { index, source })?;
                Some(Arc::new(key))
            }
            None => None,
        };
        allow.push(AllowRule {
            repository,
            digests: a.digests,
            cosign_key,
        });
    }
    Ok(ImagePolicy {
        allow,
        max_rootfs_bytes: doc
            .max_rootfs_bytes
            .unwrap_or(jek_image::policy::DEFAULT_MAX_ROOTFS_BYTES),
    })
}

/// A parsed policy document.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The trust policy.
    pub policy: Policy,
    /// The `attestation` section.
    pub attestation: Option<AttestationPolicy>,
    /// The `images` section.
    pub images: Option<ImagePolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SigstoreDoc {
    #[serde(default)]
    trusted_root: Option<PathBuf>,
    #[serde(default)]
    identities: Vec<IdentityDoc>,
    #[serde(default)]
    public_key: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityDoc {
    issuer: String,
    subject: String,
}

/// A loaded policy file.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The trust policy: signer rule, anti-rollback floor, revocations.
    pub policy: Policy,
    /// The `attestation` section, if present.
    pub attestation: Option<AttestationPolicy>,
    /// The `images` section, if present (without it no container image is allowed).
    pub images: Option<ImagePolicy>,
    /// SHA-256 of the file's bytes: the EAR's appraisal-policy-id.
    pub digest: Sha256Digest,
}

impl PolicyFile {
    /// The `attestation` section, which attestation commands require.
    pub fn attestation(&self) -> Result<&AttestationPolicy, ConfigError> {
        self.attestation
            .as_ref()
            .ok_or_else(|| ConfigError::NoAttestation {
                path: self.path.clone(),
            })
    }

    /// What every appraisal of a pod under this policy starts from, read once: the CA
    /// certificates of its `attestation` section and its identifier in results. The one
    /// constructor `jek attest` and the attestation verifier both call.
    pub fn appraisal(&self) -> Result<AppraisalPolicy, ConfigError> {
        let att = self.attestation()?;
        let text = crate::read_text("attestation.ek_ca", &att.ek_ca, MAX_REFERENCED_SIZE)?;
        let ek_ca = jek_attest::ekcert::Cert::from_pem_chain(&text, "attestation.ek_ca").map_err(
            |source| ConfigError::EkCa {
                path: att.ek_ca.clone(),
                source,
            },
        )?;
        Ok(AppraisalPolicy {
            ek_ca,
            policy_id: format!("jek:policy:sha256:{}", self.digest),
        })
    }
}

/// What every appraisal under a policy starts from, besides the bundle's verdict and the
/// image policy.
#[derive(Debug, Clone)]
pub struct AppraisalPolicy {
    /// The CAs pod EK certificates must chain to.
    pub ek_ca: Vec<jek_attest::ekcert::Cert>,
    /// `jek:policy:sha256:<policy file digest>`: the EAR's appraisal-policy-id.
    pub policy_id: String,
}

/// A file a policy names, and the field that names it.
#[derive(Clone, Copy)]
enum Field {
    /// `trusted_keys[i]`.
    Key(usize),
    /// `sigstore.<name>`.
    Sigstore(&'static str),
    /// `revoked_keys[i]`.
    Revoked(usize),
    /// `images.allow[i].cosign_key`.
    ImageKey(usize),
}

/// Where a policy's relative paths start, and whether the files it names must pass
/// [`jek_fsio::check_strict`].
#[derive(Clone, Copy)]
struct Base<'a> {
    dir: &'a Path,
    strict: bool,
}

fn field_name(field: Field) -> String {
    match field {
        Field::Key(index) => format!("trusted_keys[{index}]"),
        Field::Sigstore(name) => format!("sigstore.{name}"),
        Field::Revoked(index) => format!("revoked_keys[{index}]"),
        Field::ImageKey(index) => format!("images.allow[{index}].cosign_key"),
    }
}

fn read_text_field(base: Base<'_>, field: Field, file: &Path) -> Result<String, PolicyFileError> {
    let path = base.dir.join(file);
    if base.strict {
        jek_fsio::check_strict(&path).map_err(|source| PolicyFileError::Untrusted {
            field: field_name(field),
            source,
        })?;
    }
    let bytes = jek_fsio::read_file(&path, MAX_REFERENCED_SIZE).map_err(|source| match field {
        Field::Key(index) => PolicyFileError::ReadKey {
            index,
            path: path.clone(),
            source,
        },
        Field::Sigstore(field) => PolicyFileError::SigstoreRead {
            field,
            path: path.clone(),
            source,
        },
        Field::Revoked(index) => PolicyFileError::ReadRevoked {
            index,
            path: path.clone(),
            source,
        },
        Field::ImageKey(index) => PolicyFileError::ReadImageKey {
            index,
            path: path.clone(),
            source,
        },
    })?;
    String::from_utf8(bytes).map_err(|_| PolicyFileError::NotText {
        field: field_name(field),
        path,
    })
}

fn parse_sigstore(doc: SigstoreDoc, base: Base<'_>) -> Result<SigstorePolicy, PolicyFileError> {
    let root = doc
        .trusted_root
        .as_deref()
        .map(|f| read_text_field(base, Field::Sigstore("trusted_root"), f))
        .transpose()?;
    match (doc.identities.is_empty(), doc.public_key) {
        (false, None) => {
            let root = root.ok_or(PolicyFileError::SigstoreRule)?;
            let ids = doc
                .identities
                .into_iter()
                .map(|i| Identity {
                    issuer: i.issuer,
                    subject: i.subject,
                })
                .collect();
            SigstorePolicy::keyless(&root, ids).map_err(PolicyFileError::Sigstore)
        }
        (true, Some(key)) => {
            let pem = read_text_field(base, Field::Sigstore("public_key"), &key)?;
            SigstorePolicy::public_key(&pem, root.as_deref()).map_err(PolicyFileError::Sigstore)
        }
        _ => Err(PolicyFileError::SigstoreRule),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationDoc {
    ek_ca: PathBuf,
}

/// What attestation needs beyond the bundle policy.
#[derive(Debug, Clone)]
pub struct AttestationPolicy {
    /// The CA certificate(s) pod EK certificates must chain to (PEM), resolved against the
    /// policy file's directory.
    pub ek_ca: PathBuf,
}

/// A revoked key given by its public half.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokedSpec {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    pem: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySpec {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    pem: Option<String>,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    not_after: Option<String>,
}

fn parse_time(
    index: usize,
    field: &'static str,
    value: Option<String>,
) -> Result<Option<UnixTime>, PolicyFileError> {
    let Some(value) = value else { return Ok(None) };
    let t = humantime::parse_rfc3339_weak(&value)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .ok_or(PolicyFileError::Time {
            index,
            field,
            value,
        })?;
    Ok(Some(UnixTime(t.as_secs())))
}

/// Parses a policy document: the trust policy and its `attestation` section (paths
/// resolved against `base_dir`, where referenced key files are read).
pub fn parse(yaml: &str, base_dir: &Path) -> Result<Parsed, PolicyFileError> {
    parse_from(
        yaml,
        Base {
            dir: base_dir,
            strict: false,
        },
    )
}

fn parse_from(yaml: &str, base: Base<'_>) -> Result<Parsed, PolicyFileError> {
    let base_dir = base.dir;
    let doc: PolicyDoc = serde_yaml::from_str(yaml).map_err(PolicyFileError::Yaml)?;
    let images = doc.images.map(|i| parse_images(i, base)).transpose()?;
    let attestation = doc.attestation.map(|a| AttestationPolicy {
        ek_ca: base_dir.join(a.ek_ca),
    });
    if let (true, Some(a)) = (base.strict, &attestation) {
        jek_fsio::check_strict_or_nearest(&a.ek_ca).map_err(|source| {
            PolicyFileError::Untrusted {
                field: "attestation.ek_ca".into(),
                source,
            }
        })?;
    }
    let sigstore = doc.sigstore.map(|s| parse_sigstore(s, base)).transpose()?;
    let mut trusted = Vec::with_capacity(doc.trusted_keys.len());
    for (index, entry) in doc.trusted_keys.into_iter().enumerate() {
        let spec = match entry {
            serde_yaml::Value::String(path) => KeySpec {
                file: Some(path.into()),
                pem: None,
                not_before: None,
                not_after: None,
            },
            other => serde_yaml::from_value(other)
                .map_err(|source| PolicyFileError::Entry { index, source })?,
        };
        let pem = match (spec.file, spec.pem) {
            (Some(file), None) => read_text_field(base, Field::Key(index), &file)?,
            (None, Some(pem)) => pem,
            _ => return Err(PolicyFileError::KeySource { index }),
        };
        let key = PublicKey::from_spki_pem(&pem)
            .map_err(|source| PolicyFileError::Key { index, source })?;
        trusted.push(TrustedKey {
            key,
            not_before: parse_time(index, "not_before", spec.not_before)?,
            not_after: parse_time(index, "not_after", spec.not_after)?,
        });
    }
    let mut revoked = BTreeSet::new();
    let mut revoked_keys = Vec::new();
    for (index, entry) in doc.revoked_keys.into_iter().enumerate() {
        match entry {
            serde_yaml::Value::String(value) => {
                revoked.insert(
                    KeyId::from_hex(&value).ok_or(PolicyFileError::RevokedId { index, value })?,
                );
            }
            other => {
                let spec: RevokedSpec = serde_yaml::from_value(other)
                    .map_err(|source| PolicyFileError::RevokedEntry { index, source })?;
                let pem = match (spec.file, spec.pem) {
                    (Some(file), None) => read_text_field(base, Field::Revoked(index), &file)?,
                    (None, Some(pem)) => pem,
                    _ => return Err(PolicyFileError::RevokedSource { index }),
                };
                revoked_keys.push(
                    PublicKey::from_spki_pem(&pem)
                        .map_err(|source| PolicyFileError::RevokedKey { index, source })?,
                );
            }
        }
    }
    let keys = || KeyRule::new(trusted.clone(), doc.threshold).map_err(PolicyFileError::Policy);
    let signers = match sigstore.map(Arc::new) {
        Some(rule) if trusted.is_empty() && doc.threshold.is_none() => SignerRule::Detached(rule),
        Some(rule) => SignerRule::Both(keys()?, rule),
        None => SignerRule::Keys(keys()?),
    };
    let policy = Policy::with_signers(signers, doc.min_security_version, revoked)
        .with_revoked_keys(revoked_keys);
    if matches!(policy.signers(), SignerRule::Detached(_)) {
        if let Some(id) = policy.unresolved_revocations().next() {
            return Err(PolicyFileError::RevokedWithoutKey { key_id: *id });
        }
    }
    Ok(Parsed {
        policy,
        attestation,
        images,
    })
}

/// The policy of `jek verify --key FILE`, as `cosign verify-blob --key`: that one key
/// (Ed25519, SPKI PEM) must sign; any security version.
pub fn for_key(path: &Path) -> Result<Policy, ConfigError> {
    let pem = crate::read_text("public key", path, MAX_REFERENCED_SIZE)?;
    let key = PublicKey::from_spki_pem(&pem).map_err(|source| ConfigError::Key {
        path: path.to_path_buf(),
        source,
    })?;
    Policy::new(vec![TrustedKey::new(key)], None, 0, BTreeSet::new()).map_err(|source| {
        ConfigError::Policy {
            path: path.to_path_buf(),
            source: PolicyFileError::Policy(source),
        }
    })
}

/// Reads and parses a policy file.
pub fn load(path: &Path) -> Result<PolicyFile, ConfigError> {
    load_from(path, false)
}

/// Reads and parses a policy file that a process acting for others relies on (the
/// containerd shim): the file and every file it names must pass
/// [`jek_fsio::check_strict`] (owned by root or this user, writable by no one else).
pub fn load_strict(path: &Path) -> Result<PolicyFile, ConfigError> {
    jek_fsio::check_strict(path).map_err(|source| ConfigError::Untrusted {
        what: "policy file",
        source,
    })?;
    load_from(path, true)
}

fn load_from(path: &Path, strict: bool) -> Result<PolicyFile, ConfigError> {
    let bytes = crate::read("policy file", path, MAX_CONFIG_SIZE)?;
    let digest = Sha256Digest::of(&bytes);
    let text = String::from_utf8(bytes).map_err(|_| ConfigError::NotText {
        what: "policy file",
        path: path.to_path_buf(),
    })?;
    let base = Base {
        dir: crate::base_dir(path),
        strict,
    };
    let parsed = parse_from(&text, base).map_err(|source| ConfigError::Policy {
        path: path.to_path_buf(),
        source,
    })?;
    tracing::info!(policy = %path.display(), sha256 = %digest, "policy loaded");
    Ok(PolicyFile {
        path: path.to_path_buf(),
        policy: parsed.policy,
        attestation: parsed.attestation,
        images: parsed.images,
        digest,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(yaml: &str, base_dir: &Path) -> Result<Policy, PolicyFileError> {
        super::parse(yaml, base_dir).map(|p| p.policy)
    }

    #[test]
    fn reads_the_images_section() {
        let pin = format!("sha256:{}", "a".repeat(64));
        let y = inline(&format!("min_security_version: 1\nimages:\n  max_rootfs_bytes: 1000\n  allow:\n    - repository: busybox\n      digests: [{pin}]\n    - repository: oci:./layout\n"));
        let images = super::parse(&y, Path::new("/etc/jek"))
            .unwrap()
            .images
            .unwrap();
        assert_eq!(images.max_rootfs_bytes, 1000);
        assert_eq!(images.allow[0].repository, "docker.io/library/busybox");
        assert_eq!(images.allow[0].digests, [pin]);
        assert_eq!(images.allow[1].repository, "oci:/etc/jek/layout");
        assert!(
            super::parse(&inline("min_security_version: 1\n"), Path::new("."))
                .unwrap()
                .images
                .is_none()
        );
        for (bad, want) in [
            (
                "    - repository: busybox:1.35\n",
                "images.allow[0].repository",
            ),
            (
                "    - repository: busybox\n      digests: [sha256:ABC]\n",
                "is not a sha256 digest",
            ),
            (
                "    - repository: busybox\n      digest: x\n",
                "unknown field",
            ),
        ] {
            let y = inline(&format!(
                "min_security_version: 1\nimages:\n  allow:\n{bad}"
            ));
            let err = super::parse(&y, Path::new(".")).unwrap_err();
            let text = match &err {
                PolicyFileError::Yaml(e) => e.to_string(),
                e => e.to_string(),
            };
            assert!(text.contains(want), "{bad}: {text}");
        }
    }

    #[test]
    fn reads_the_attestation_section() {
        let att = super::parse(
            &inline("min_security_version: 1\nattestation:\n  ek_ca: ca.pem\n"),
            Path::new("."),
        )
        .unwrap()
        .attestation;
        assert_eq!(att.unwrap().ek_ca, PathBuf::from("./ca.pem"));
        let none = super::parse(&inline("min_security_version: 1\n"), Path::new("."))
            .unwrap()
            .attestation;
        assert!(none.is_none());
        assert!(super::parse(
            &inline("min_security_version: 1\nattestation: {ek_ca: a, extra: 1}\n"),
            Path::new(".")
        )
        .is_err());
    }

    #[test]
    fn an_appraisal_policy_names_its_unusable_ek_ca() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, inline("min_security_version: 1\n")).unwrap();
        let err = load(&path).unwrap().appraisal().unwrap_err();
        assert!(matches!(err, ConfigError::NoAttestation { .. }), "{err}");
        std::fs::write(
            &path,
            inline("min_security_version: 1\nattestation:\n  ek_ca: ca.pem\n"),
        )
        .unwrap();
        // Missing, then not certificates: each names the file and the field.
        let err = load(&path).unwrap().appraisal().unwrap_err();
        let text = jek_errors::chain_line(&err);
        assert!(
            text.contains("attestation.ek_ca") && text.contains("ca.pem"),
            "{text}"
        );
        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
        let err = load(&path).unwrap().appraisal().unwrap_err();
        assert!(
            matches!(&err, ConfigError::EkCa { path, .. } if path.ends_with("ca.pem")),
            "{err}"
        );
        assert_eq!(err.class(), jek_errors::Class::Invalid);
    }

    const PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

    fn inline(extra: &str) -> String {
        format!(
            "trusted_keys:\n  - pem: |\n{}{extra}",
            PEM.lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        )
    }

    #[test]
    fn reads_inline_keys_validity_and_revocations() {
        let y = inline("    not_after: 2030-01-01T00:00:00Z\nmin_security_version: 3\nrevoked_keys: [\"00000000000000000000000000000000000000000000000000000000000000aa\"]\n");
        let p = parse(&y, Path::new(".")).unwrap();
        assert_eq!(p.min_security_version(), 3);
        assert_eq!(p.threshold(), 1);
        assert_eq!(p.trusted()[0].not_after, Some(UnixTime(1_893_456_000)));
        assert_eq!(p.revoked().len(), 1);
    }

    #[test]
    fn revoked_keys_may_be_given_by_id_or_by_key() {
        let y = format!(
            "min_security_version: 1\nrevoked_keys:\n  - pem: |\n{}",
            PEM.lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        );
        // Same key trusted and revoked: revocation wins, known by its public half.
        let p = parse(&inline(&y), Path::new(".")).unwrap();
        assert_eq!(p.revoked_keys().len(), 1);
        assert_eq!(p.unresolved_revocations().count(), 0);
    }

    #[test]
    fn a_detached_only_policy_must_name_revoked_keys_by_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cosign.pub"), COSIGN_PEM).unwrap();
        let id = "00000000000000000000000000000000000000000000000000000000000000aa";
        let y = format!(
            "min_security_version: 1\nsigstore: {{public_key: cosign.pub}}\nrevoked_keys: [\"{id}\"]\n"
        );
        let err = parse(&y, dir.path()).unwrap_err();
        assert!(
            matches!(err, PolicyFileError::RevokedWithoutKey { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(id), "{err}");
        std::fs::write(dir.path().join("leaked.pub"), PEM).unwrap();
        let y = "min_security_version: 1\nsigstore: {public_key: cosign.pub}\nrevoked_keys: [{file: leaked.pub}]\n";
        assert_eq!(parse(y, dir.path()).unwrap().revoked_keys().len(), 1);
        let y = "min_security_version: 1\nsigstore: {public_key: cosign.pub}\nrevoked_keys: [{file: a, pem: b}]\n";
        assert_eq!(
            parse(y, dir.path()).unwrap_err().to_string(),
            "revoked_keys[0] needs a key ID, or exactly one of `file` or `pem`"
        );
    }

    const COSIGN_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEnVhZ/AkxaB2ojZDgsKyoZu/e1OKZ\nd3HVChXlfHuflKVjVHfYGXSAayL5LDizdvEuWiqNHUaMCAJCvT3UEiaP4g==\n-----END PUBLIC KEY-----\n";

    #[test]
    fn names_what_is_wrong() {
        let cases: [(String, &str); 7] = [
            (
                inline("min_security_version: 1\nextra: 1\n"),
                "not a valid policy document",
            ),
            (
                inline("    colour: red\nmin_security_version: 1\n"),
                "trusted_keys[0] is invalid",
            ),
            (
                "trusted_keys: [{not_after: 2030-01-01T00:00:00Z}]\nmin_security_version: 1\n"
                    .into(),
                "trusted_keys[0] needs exactly one of `file` or `pem`",
            ),
            (
                "trusted_keys: [missing.pub]\nmin_security_version: 1\n".into(),
                "trusted_keys[0]: cannot read ./missing.pub",
            ),
            (
                inline("    not_before: yesterday\nmin_security_version: 1\n"),
                "trusted_keys[0].not_before = \"yesterday\" is not an RFC 3339 time",
            ),
            (
                inline("min_security_version: 1\nrevoked_keys: [abc]\n"),
                "revoked_keys[0] = \"abc\" is not a key ID (64 lowercase hex digits)",
            ),
            (
                inline("min_security_version: 1\nthreshold: 2\n"),
                "the policy is inconsistent",
            ),
        ];
        for (yaml, want) in cases {
            let err = parse(&yaml, Path::new(".")).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn min_security_version_is_required() {
        let err = parse(&inline(""), Path::new(".")).unwrap_err();
        assert!(
            matches!(err, PolicyFileError::Yaml(ref e) if e.to_string().contains("min_security_version"))
        );
    }
}
