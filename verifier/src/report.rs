//! Serde views of what the verifier decided or saw, for `--json` output and services: a
//! verified bundle ([`BundleSummary`]) and an unverified look ([`InspectReport`]). Field
//! names are the documented JSON shapes (`docs/cli.md`).

use serde::Serialize;

use crate::digest::Sha256Digest;
use crate::keys::KeyId;
use crate::manifest::KernelInfo;
use crate::verify::{Bundle, Inspection, Verified};

/// A verified bundle.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleSummary<'a> {
    /// Manifest name.
    pub name: &'a str,
    /// Manifest version.
    pub version: &'a str,
    /// Anti-rollback version.
    pub security_version: u64,
    /// Kernel release.
    pub kernel_release: &'a str,
    /// Creation time (RFC 3339).
    pub created: &'a str,
    /// SHA-256 of the signed statement.
    pub manifest_digest: Sha256Digest,
    /// The trusted keys whose signatures were accepted.
    pub signers: &'a [KeyId],
    /// Who approved the file outside the envelope (Sigstore).
    pub approved_by: Option<&'a str>,
    /// The signed components.
    pub components: Vec<ComponentSummary>,
}

/// One signed component.
#[derive(Debug, Serialize)]
pub struct ComponentSummary {
    /// Its role.
    pub role: &'static str,
    /// Its size.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: Sha256Digest,
}

impl<'a> BundleSummary<'a> {
    /// The summary of a verified bundle.
    pub fn of(b: &'a Verified<Bundle>) -> Self {
        let m = b.manifest();
        BundleSummary {
            name: &m.name,
            version: &m.version,
            security_version: m.security_version,
            kernel_release: &m.kernel_release,
            created: &m.created,
            manifest_digest: b.manifest_digest(),
            signers: b.signers(),
            approved_by: b.approval(),
            components: m
                .components
                .iter()
                .map(|c| ComponentSummary {
                    role: c.role.name(),
                    size: c.size,
                    sha256: c.sha256,
                })
                .collect(),
        }
    }
}

/// What `inspect` saw. Nothing in it is authenticated (`verified` is always false).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectReport<'a> {
    /// Always false.
    pub verified: bool,
    /// The file's size.
    pub size: usize,
    /// The container format version.
    pub format_version: u16,
    /// The manifest as claimed, or why it does not parse.
    pub manifest: ClaimedManifest<'a>,
    /// The command line section's text, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<&'a str>,
    /// Every section with its actual digest.
    pub components: Vec<SectionReport>,
    /// The envelope's signatures (not checked).
    pub signatures: Vec<SignatureReport<'a>>,
}

/// The manifest a bundle claims.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ClaimedManifest<'a> {
    /// It parses.
    #[serde(rename_all = "camelCase")]
    Claimed {
        /// Name.
        name: &'a str,
        /// Version.
        version: &'a str,
        /// Security version.
        security_version: u64,
        /// Kernel release.
        kernel_release: &'a str,
        /// Creation time.
        created: &'a str,
        /// Kernel facts.
        kernel: &'a KernelInfo,
        /// SHA-256 of the statement.
        manifest_digest: Sha256Digest,
    },
    /// It does not.
    Invalid {
        /// Why.
        error: String,
    },
}

/// One section as found.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SectionReport {
    /// Role.
    pub role: &'static str,
    /// File offset of its data.
    pub offset: usize,
    /// Size.
    pub size: usize,
    /// Actual SHA-256.
    pub sha256: Sha256Digest,
    /// Whether it matches the claimed manifest (`None`: not listed, or no manifest).
    pub matches_manifest: Option<bool>,
}

/// One signature as found.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureReport<'a> {
    /// The key ID it claims.
    pub key_id: &'a str,
    /// Its size.
    pub size: usize,
}

impl InspectReport<'_> {
    /// The report as the lines `jek inspect` prints for `file` (untrusted text in them is
    /// escaped by the printer).
    pub fn text(&self, file: &str) -> Vec<String> {
        let mut out = vec![format!(
            "{file} ({} bytes, format v{}) -- not verified",
            self.size, self.format_version
        )];
        match &self.manifest {
            ClaimedManifest::Claimed {
                name,
                version,
                security_version,
                kernel_release,
                created,
                kernel,
                manifest_digest,
            } => {
                out.push(format!("  name             {name}"));
                out.push(format!("  version          {version}"));
                out.push(format!("  security version {security_version}"));
                out.push(format!("  kernel release   {kernel_release}"));
                out.push(format!("  created          {created}"));
                for (label, v) in [
                    ("boot protocol ", &kernel.boot_protocol),
                    ("payload       ", &kernel.payload_format),
                    ("ELF entry     ", &kernel.elf_entry),
                ] {
                    if let Some(v) = v {
                        out.push(format!("  {label}   {v}"));
                    }
                }
                out.push(format!("  manifest digest  sha256:{manifest_digest}"));
            }
            ClaimedManifest::Invalid { error } => {
                out.push(format!("  manifest         INVALID: {error}"));
            }
        }
        if let Some(c) = self.cmdline {
            out.push(format!("  command line     {c}"));
        }
        out.push("  components:".into());
        for s in &self.components {
            let note = match s.matches_manifest {
                Some(true) => "matches manifest",
                Some(false) => "DIFFERS FROM MANIFEST",
                None => "NOT IN MANIFEST",
            };
            out.push(format!(
                "    {:<10} {:>10} bytes at {:>9}  sha256:{}  {note}",
                s.role, s.size, s.offset, s.sha256
            ));
        }
        out.push("  signatures:".into());
        for s in &self.signatures {
            let id = if s.key_id.is_empty() {
                "(no key id)"
            } else {
                s.key_id
            };
            out.push(format!("    key {id}"));
        }
        out
    }
}

impl Inspection {
    /// Whether a section's actual digest matches the claimed manifest (`None` when the
    /// manifest does not parse or does not list the role).
    pub fn matches_manifest(
        &self,
        role: crate::format::Role,
        sha256: Sha256Digest,
    ) -> Option<bool> {
        self.manifest
            .as_ref()
            .ok()
            .and_then(|m| m.component(role))
            .map(|c| c.sha256 == sha256)
    }

    /// The report of a file of `size` bytes; `manifest_error` renders a manifest error.
    pub fn report(
        &self,
        size: usize,
        manifest_error: impl Fn(&crate::manifest::ManifestError) -> String,
    ) -> InspectReport<'_> {
        InspectReport {
            verified: false,
            size,
            format_version: crate::format::FORMAT_VERSION,
            manifest: match &self.manifest {
                Ok(m) => ClaimedManifest::Claimed {
                    name: &m.name,
                    version: &m.version,
                    security_version: m.security_version,
                    kernel_release: &m.kernel_release,
                    created: &m.created,
                    kernel: &m.kernel,
                    manifest_digest: Sha256Digest::of(&self.envelope.payload),
                },
                Err(e) => ClaimedManifest::Invalid {
                    error: manifest_error(e),
                },
            },
            cmdline: self.cmdline.as_deref(),
            components: self
                .sections
                .iter()
                .map(|s| SectionReport {
                    role: s.role.name(),
                    offset: s.offset,
                    size: s.size,
                    sha256: s.sha256,
                    matches_manifest: self.matches_manifest(s.role, s.sha256),
                })
                .collect(),
            signatures: self
                .envelope
                .signatures
                .iter()
                .map(|s| SignatureReport {
                    key_id: &s.keyid,
                    size: s.sig.len(),
                })
                .collect(),
        }
    }
}
