//! The policy file: YAML in, a validated [`Policy`] out. YAML stays here, outside the
//! verifier's trusted path.
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
//! revoked_keys: [<key id hex>]
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

use jek_verifier::sigstore::{Identity, SigstoreError, SigstorePolicy};
use jek_verifier::{KeyId, Policy, PolicyError, PublicKey, TrustedKey, UnixTime};
use serde::Deserialize;

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
        source: std::io::Error,
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
        source: std::io::Error,
    },
    /// The trusted root, identities or key are unusable.
    #[error("sigstore section is unusable")]
    Sigstore(#[source] SigstoreError),
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
    revoked_keys: Vec<String>,
    #[serde(default)]
    attestation: Option<AttestationDoc>,
    #[serde(default)]
    sigstore: Option<SigstoreDoc>,
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

/// A parsed policy file: the bundle policy and, if the file has a `sigstore` section, the
/// Sigstore rule every bundle must also pass.
#[derive(Debug)]
pub struct LoadedPolicy {
    /// The bundle policy (requires a detached approval when `sigstore` is set).
    pub policy: Policy,
    /// The Sigstore rule.
    pub sigstore: Option<SigstorePolicy>,
}

/// Where a bundle's detached signature is looked for when none is named: the Sigstore
/// bundle `BUNDLE.sigstore.json`, then the cosign signature `BUNDLE.sig`.
pub fn default_signature_paths(bundle: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut s = bundle.as_os_str().to_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    [with(".sigstore.json"), with(".sig")]
}

/// `--sigstore FILE`, shared by every command that verifies a bundle file.
#[derive(Debug, Clone, clap::Args)]
pub struct SignatureArg {
    /// Detached signature for the policy's `sigstore` rule: a Sigstore bundle (JSON) or a
    /// cosign signature (default: BUNDLE.sigstore.json, then BUNDLE.sig).
    #[arg(long = "sigstore", value_name = "FILE")]
    pub path: Option<PathBuf>,
}

impl LoadedPolicy {
    /// The Sigstore step over candidate signatures, each `(where it came from, bytes)`:
    /// the first one the rule accepts, with its position; if none is accepted, the first
    /// failure. `Ok(None)` when the policy has no rule or there is no candidate (the
    /// verifier then rejects a bundle whose policy requires one).
    pub fn approve_any(
        &self,
        bundle: &Path,
        bytes: &[u8],
        candidates: &[(PathBuf, &[u8])],
    ) -> Result<Option<(usize, jek_verifier::DetachedApproval)>, crate::error::CliError> {
        let Some(rule) = &self.sigstore else {
            return Ok(None);
        };
        let mut first_failure = None;
        for (i, (origin, signature)) in candidates.iter().enumerate() {
            match rule.check(bytes, signature) {
                Ok(approval) => return Ok(Some((i, approval))),
                Err(source) => {
                    first_failure.get_or_insert(crate::error::CliError::Sigstore {
                        path: bundle.to_path_buf(),
                        signature: origin.clone(),
                        source,
                    });
                }
            }
        }
        first_failure.map_or(Ok(None), Err)
    }

    /// The Sigstore step for a bundle file: the signature file `explicit`, or the first of
    /// [`default_signature_paths`] that exists.
    pub fn approve(
        &self,
        bundle: &Path,
        bytes: &[u8],
        explicit: Option<&Path>,
    ) -> Result<Option<jek_verifier::DetachedApproval>, crate::error::CliError> {
        if self.sigstore.is_none() {
            return Ok(None);
        }
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => match default_signature_paths(bundle)
                .into_iter()
                .find(|p| p.is_file())
            {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let signature = crate::error::read("Sigstore signature", &path)?;
        Ok(self
            .approve_any(bundle, bytes, &[(path, &signature)])?
            .map(|(_, approval)| approval))
    }

    /// The verifier's step, after the Sigstore step gave `approval`.
    pub fn verify_approved(
        &self,
        bundle: &Path,
        bytes: Vec<u8>,
        approval: Option<jek_verifier::DetachedApproval>,
    ) -> Result<jek_verifier::Verified<jek_verifier::Bundle>, crate::error::CliError> {
        jek_verifier::verify_approved(bytes, &self.policy, UnixTime::now(), approval).map_err(
            |source| crate::error::CliError::Rejected {
                path: bundle.to_path_buf(),
                source,
            },
        )
    }

    /// The whole check of a bundle file's bytes: the Sigstore step, then the verifier.
    pub fn verify(
        &self,
        bundle: &Path,
        bytes: Vec<u8>,
        explicit_signature: Option<&Path>,
    ) -> Result<jek_verifier::Verified<jek_verifier::Bundle>, crate::error::CliError> {
        let approval = self.approve(bundle, &bytes, explicit_signature)?;
        self.verify_approved(bundle, bytes, approval)
    }
}

fn read_field(base: &Path, field: &'static str, file: &Path) -> Result<String, PolicyFileError> {
    let path = base.join(file);
    std::fs::read_to_string(&path).map_err(|source| PolicyFileError::SigstoreRead {
        field,
        path,
        source,
    })
}

fn parse_sigstore(doc: SigstoreDoc, base: &Path) -> Result<SigstorePolicy, PolicyFileError> {
    let root = doc
        .trusted_root
        .as_deref()
        .map(|f| read_field(base, "trusted_root", f))
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
            let pem = read_field(base, "public_key", &key)?;
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

/// What `jek attest` needs beyond the bundle policy.
#[derive(Debug, Clone)]
pub struct AttestationPolicy {
    /// The CA certificate(s) pod EK certificates must chain to (PEM), resolved against the
    /// policy file's directory.
    pub ek_ca: PathBuf,
    /// SHA-256 of the policy file: the EAR's appraisal-policy-id.
    pub digest: String,
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

/// Parses a policy document: the bundle policy and its `attestation` section, if any.
fn parse_doc(
    yaml: &str,
    base_dir: &Path,
) -> Result<(LoadedPolicy, Option<AttestationDoc>), PolicyFileError> {
    let doc: PolicyDoc = serde_yaml::from_str(yaml).map_err(PolicyFileError::Yaml)?;
    let attestation = doc.attestation;
    let sigstore = doc
        .sigstore
        .map(|s| parse_sigstore(s, base_dir))
        .transpose()?;
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
            (Some(file), None) => {
                let path = base_dir.join(file);
                std::fs::read_to_string(&path).map_err(|source| PolicyFileError::ReadKey {
                    index,
                    path,
                    source,
                })?
            }
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
    let revoked = doc
        .revoked_keys
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            KeyId::from_hex(&value).ok_or(PolicyFileError::RevokedId { index, value })
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    let policy = match (&sigstore, trusted.is_empty()) {
        (Some(_), true) if doc.threshold.is_none() => {
            Policy::detached_only(doc.min_security_version, revoked)
        }
        (Some(_), _) => Policy::new(trusted, doc.threshold, doc.min_security_version, revoked)
            .map_err(PolicyFileError::Policy)?
            .with_detached_required(),
        (None, _) => Policy::new(trusted, doc.threshold, doc.min_security_version, revoked)
            .map_err(PolicyFileError::Policy)?,
    };
    Ok((LoadedPolicy { policy, sigstore }, attestation))
}

/// Reads and parses a policy file.
pub fn load(path: &Path) -> Result<LoadedPolicy, crate::error::CliError> {
    load_doc(path).map(|(policy, _, _)| policy)
}

/// Reads a policy file once for `jek attest`: the bundle policy and its `attestation`
/// section, which must be present.
pub fn load_for_attestation(
    path: &Path,
) -> Result<(LoadedPolicy, AttestationPolicy), crate::error::CliError> {
    use sha2::Digest;
    let (policy, attestation, text) = load_doc(path)?;
    let att = attestation.ok_or_else(|| crate::error::CliError::NoAttestationPolicy {
        path: path.to_path_buf(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok((
        policy,
        AttestationPolicy {
            ek_ca: base.join(att.ek_ca),
            digest: hex::encode(sha2::Sha256::digest(text.as_bytes())),
        },
    ))
}

/// Reads and parses a policy file; also returns its text.
fn load_doc(
    path: &Path,
) -> Result<(LoadedPolicy, Option<AttestationDoc>, String), crate::error::CliError> {
    let text = crate::error::read_text("policy file", path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let (policy, attestation) =
        parse_doc(&text, base).map_err(|source| crate::error::CliError::Policy {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((policy, attestation, text))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(yaml: &str, base_dir: &Path) -> Result<Policy, PolicyFileError> {
        parse_doc(yaml, base_dir).map(|(loaded, _)| loaded.policy)
    }

    #[test]
    fn reads_the_attestation_section() {
        let (_, att) = parse_doc(
            &inline("min_security_version: 1\nattestation:\n  ek_ca: ca.pem\n"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(att.unwrap().ek_ca, PathBuf::from("ca.pem"));
        let (_, none) = parse_doc(&inline("min_security_version: 1\n"), Path::new(".")).unwrap();
        assert!(none.is_none());
        assert!(parse_doc(
            &inline("min_security_version: 1\nattestation: {ek_ca: a, extra: 1}\n"),
            Path::new(".")
        )
        .is_err());
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
