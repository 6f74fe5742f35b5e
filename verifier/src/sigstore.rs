//! Sigstore signatures over a bundle file (feature `sigstore`), checked fully offline.
//!
//! A CI pipeline signs the jek bundle file as a blob, keyless (`cosign sign-blob --bundle`:
//! a Fulcio certificate naming the workflow identity, logged in Rekor) or with a managed
//! key (`jek sign --cosign-key`, `cosign sign-blob --key`). A host pins what it trusts in a
//! [`SigstorePolicy`]: a `trusted_root.json` and the identities (OIDC issuer and subject)
//! it accepts, or a public key. [`SigstorePolicy::check`] turns a signature into a
//! [`DetachedApproval`] for [`crate::verify_bundle`], or names the step that failed.
//!
//! The checks are those of `sigstore-verify` (certificate chain to the pinned CA at the
//! logged signing time, the embedded SCT, the SET, the Merkle inclusion proof, the signed
//! checkpoint, the log entry's consistency with the bundle, the signature over the
//! artifact). On top of them this module insists on what that library treats as optional:
//! at least one transparency-log entry, and an inclusion proof with a checkpoint and an
//! SET on every entry, so an offline verifier never accepts a signature that was never
//! shown to be in the log.

use sigstore_verify::crypto::{verify_signature, SigningScheme};
use sigstore_verify::trust_root::TrustedRoot;
use sigstore_verify::types::bundle::SignatureContent;
use sigstore_verify::types::{Bundle as SigstoreBundle, DerPublicKey, Sha256Hash, SignatureBytes};
use sigstore_verify::{
    CertificateError, Error as LibError, PublicKeyVerificationPolicy, TransparencyLogError,
    VerificationPolicy, Verifier,
};

use crate::digest::Sha256Digest;
use crate::verify::DetachedApproval;

/// The verification step that failed: each has a stable name (`Step::name`), printed in
/// errors and `--json` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The trusted root itself is unusable.
    TrustedRoot,
    /// The Sigstore bundle or signature file is malformed or of an unsupported kind.
    BundleFormat,
    /// The signing certificate does not chain to a CA of the trusted root.
    CertificateChain,
    /// The certificate was not valid at the logged signing time.
    CertificateValidity,
    /// The embedded signed certificate timestamp is missing or does not verify.
    Sct,
    /// The transparency-log entry names a log the trusted root does not list.
    TlogUnknownLog,
    /// The signed entry timestamp (SET) is missing or does not verify.
    TlogSet,
    /// The Merkle inclusion proof is missing or does not lead to the root.
    TlogInclusionProof,
    /// The checkpoint (signed tree head) is missing or not signed by the log.
    TlogCheckpoint,
    /// The log entry describes another signature, key or artifact.
    TlogEntry,
    /// The entry's integrated time is in the future or outside the certificate's validity.
    TlogIntegratedTime,
    /// The certificate's OIDC issuer is not one the policy accepts.
    IdentityIssuer,
    /// The certificate's subject is not one the policy accepts for its issuer.
    IdentitySubject,
    /// The signature does not verify over the bundle.
    Signature,
    /// The Sigstore bundle is for another artifact.
    Artifact,
    /// An RFC 3161 timestamp did not verify.
    Timestamp,
}

impl Step {
    /// The stable name of the step.
    pub fn name(self) -> &'static str {
        match self {
            Step::TrustedRoot => "trusted-root",
            Step::BundleFormat => "bundle-format",
            Step::CertificateChain => "certificate-chain",
            Step::CertificateValidity => "certificate-validity",
            Step::Sct => "sct",
            Step::TlogUnknownLog => "tlog-unknown-log",
            Step::TlogSet => "tlog-set",
            Step::TlogInclusionProof => "tlog-inclusion-proof",
            Step::TlogCheckpoint => "tlog-checkpoint",
            Step::TlogEntry => "tlog-entry",
            Step::TlogIntegratedTime => "tlog-integrated-time",
            Step::IdentityIssuer => "identity-issuer",
            Step::IdentitySubject => "identity-subject",
            Step::Signature => "signature",
            Step::Artifact => "artifact",
            Step::Timestamp => "timestamp",
        }
    }
}

impl Step {
    /// The `--json` code of a failure at this step: `sigstore_` and the name with `_`.
    pub fn code(self) -> &'static str {
        match self {
            Step::TrustedRoot => "sigstore_trusted_root",
            Step::BundleFormat => "sigstore_bundle_format",
            Step::CertificateChain => "sigstore_certificate_chain",
            Step::CertificateValidity => "sigstore_certificate_validity",
            Step::Sct => "sigstore_sct",
            Step::TlogUnknownLog => "sigstore_tlog_unknown_log",
            Step::TlogSet => "sigstore_tlog_set",
            Step::TlogInclusionProof => "sigstore_tlog_inclusion_proof",
            Step::TlogCheckpoint => "sigstore_tlog_checkpoint",
            Step::TlogEntry => "sigstore_tlog_entry",
            Step::TlogIntegratedTime => "sigstore_tlog_integrated_time",
            Step::IdentityIssuer => "sigstore_identity_issuer",
            Step::IdentitySubject => "sigstore_identity_subject",
            Step::Signature => "sigstore_signature",
            Step::Artifact => "sigstore_artifact",
            Step::Timestamp => "sigstore_timestamp",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A Sigstore check that failed, with the step and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sigstore {step}: {detail}")]
pub struct SigstoreError {
    /// The failed step.
    pub step: Step,
    /// What was wrong.
    pub detail: String,
}

impl SigstoreError {
    fn new(step: Step, detail: impl Into<String>) -> Self {
        SigstoreError {
            step,
            detail: detail.into(),
        }
    }
}

/// An accepted signer identity: the certificate's OIDC issuer and its subject (the SAN:
/// a CI workflow URI or an email address), both compared exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// OIDC issuer, e.g. `https://token.actions.githubusercontent.com`.
    pub issuer: String,
    /// Subject, e.g. `https://github.com/org/repo/.github/workflows/kernel.yml@refs/heads/main`.
    pub subject: String,
}

enum Rule {
    Keyless(Vec<Identity>),
    PublicKey {
        key: DerPublicKey,
        require_tlog: bool,
    },
}

/// What a host accepts as a Sigstore signature over a bundle. Built once (parsing the
/// trusted root and keys), then [`SigstorePolicy::check`]ed against any number of bundles.
pub struct SigstorePolicy {
    verifier: Verifier,
    rule: Rule,
}

impl std::fmt::Debug for SigstorePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.rule {
            Rule::Keyless(ids) => f
                .debug_struct("SigstorePolicy")
                .field("identities", ids)
                .finish(),
            Rule::PublicKey { require_tlog, .. } => f
                .debug_struct("SigstorePolicy")
                .field("public_key", &true)
                .field("require_tlog", require_tlog)
                .finish(),
        }
    }
}

fn trusted_root(json: &str) -> Result<Verifier, SigstoreError> {
    let root = TrustedRoot::from_json(json)
        .map_err(|e| SigstoreError::new(Step::TrustedRoot, e.to_string()))?;
    Verifier::new(&root).map_err(|e| SigstoreError::new(Step::TrustedRoot, e.to_string()))
}

impl SigstorePolicy {
    /// Keyless: certificates from the CAs of `trusted_root_json`, logged in its
    /// transparency logs, naming one of `identities`.
    pub fn keyless(
        trusted_root_json: &str,
        identities: Vec<Identity>,
    ) -> Result<Self, SigstoreError> {
        if identities.is_empty() {
            return Err(SigstoreError::new(
                Step::TrustedRoot,
                "a keyless policy needs at least one identity",
            ));
        }
        Ok(SigstorePolicy {
            verifier: trusted_root(trusted_root_json)?,
            rule: Rule::Keyless(identities),
        })
    }

    /// A managed key (PEM SPKI, ECDSA P-256 as cosign makes). With `trusted_root_json`,
    /// signatures must come as Sigstore bundles logged in its transparency logs; without
    /// it, a cosign signature file (`cosign sign-blob --key`: base64 DER ECDSA over the
    /// file) is enough, as with `cosign verify-blob --key --insecure-ignore-tlog`.
    pub fn public_key(pem: &str, trusted_root_json: Option<&str>) -> Result<Self, SigstoreError> {
        let key = DerPublicKey::from_pem(pem)
            .map_err(|e| SigstoreError::new(Step::TrustedRoot, format!("public key: {e}")))?;
        check_p256(key.as_bytes())?;
        let verifier = match trusted_root_json {
            Some(json) => trusted_root(json)?,
            None => trusted_root(EMPTY_TRUSTED_ROOT)?,
        };
        Ok(SigstorePolicy {
            verifier,
            rule: Rule::PublicKey {
                key,
                require_tlog: trusted_root_json.is_some(),
            },
        })
    }

    /// Checks `signature` (a Sigstore bundle JSON, or for a managed key without a trusted
    /// root also a bare cosign signature) over `artifact`, the bundle file's bytes.
    pub fn check(
        &self,
        artifact: &[u8],
        signature: &[u8],
    ) -> Result<DetachedApproval, SigstoreError> {
        // Hash once, with SHA-NI where the CPU has it, and hand the library the digest: it
        // would otherwise hash the whole file again for each check that needs it.
        let digest = Sha256Digest::of(artifact);
        let prehashed = Sha256Hash::new(*digest.as_bytes());
        match &self.rule {
            Rule::Keyless(identities) => {
                let bundle = parse_bundle(signature)?;
                require_log_evidence(&bundle)?;
                let result = self
                    .verifier
                    .verify(prehashed, &bundle, &VerificationPolicy::any_identity())
                    .map_err(classify)?;
                let issuer = result.issuer().unwrap_or_default().to_string();
                let subject = result
                    .identity()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default();
                let same_issuer: Vec<&Identity> =
                    identities.iter().filter(|i| i.issuer == issuer).collect();
                if same_issuer.is_empty() {
                    return Err(SigstoreError::new(
                        Step::IdentityIssuer,
                        format!(
                            "certificate issuer {issuer:?} is not accepted (accepted: {})",
                            list(identities.iter().map(|i| &i.issuer))
                        ),
                    ));
                }
                if !same_issuer.iter().any(|i| i.subject == subject) {
                    return Err(SigstoreError::new(
                        Step::IdentitySubject,
                        format!(
                            "certificate subject {subject:?} is not accepted for issuer {issuer:?} (accepted: {})",
                            list(same_issuer.iter().map(|i| &i.subject))
                        ),
                    ));
                }
                Ok(DetachedApproval::new(
                    digest,
                    format!("sigstore {subject} (issuer {issuer})"),
                ))
            }
            Rule::PublicKey { key, require_tlog } => {
                let signer = format!("cosign key sha256:{}", Sha256Digest::of(key.as_bytes()));
                if signature.trim_ascii_start().starts_with(b"{") {
                    let bundle = parse_bundle(signature)?;
                    let mut policy = PublicKeyVerificationPolicy::new(key.clone());
                    if *require_tlog {
                        require_log_evidence(&bundle)?;
                    } else {
                        policy = policy.skip_tlog_unsafe();
                    }
                    self.verifier
                        .verify(prehashed, &bundle, &policy)
                        .map_err(classify)?;
                    return Ok(DetachedApproval::new(digest, signer));
                }
                if *require_tlog {
                    return Err(SigstoreError::new(
                        Step::BundleFormat,
                        "the policy requires a Sigstore bundle with a transparency-log entry, not a bare signature",
                    ));
                }
                let sig = cosign_signature(signature)?;
                verify_signature(key, artifact, &sig, SigningScheme::EcdsaP256Sha256)
                    .map_err(|e| SigstoreError::new(Step::Signature, e.to_string()))?;
                Ok(DetachedApproval::new(digest, signer))
            }
        }
    }
}

/// A managed Sigstore key must be ECDSA P-256 (what cosign makes and what
/// [`SigstorePolicy::check`] verifies with): any other key is refused when the policy
/// loads, not at the first verification.
fn check_p256(der: &[u8]) -> Result<(), SigstoreError> {
    use ed25519_dalek::pkcs8::spki::der::Decode as _;
    const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
    const P256: &str = "1.2.840.10045.3.1.7";
    let spki = ed25519_dalek::pkcs8::spki::SubjectPublicKeyInfoRef::from_der(der)
        .map_err(|e| SigstoreError::new(Step::TrustedRoot, format!("public key: {e}")))?;
    let oid = spki.algorithm.oid.to_string();
    let curve = spki
        .algorithm
        .parameters_oid()
        .map(|o| o.to_string())
        .unwrap_or_default();
    if oid == EC_PUBLIC_KEY && curve == P256 {
        return Ok(());
    }
    Err(SigstoreError::new(
        Step::TrustedRoot,
        format!(
            "public key: sigstore.public_key must be an ECDSA P-256 key (cosign's), this one has algorithm OID {oid}{} (an Ed25519 key signs the bundle itself: put it under trusted_keys)",
            if curve.is_empty() { String::new() } else { format!(" on curve {curve}") }
        ),
    ))
}

/// A trusted root with no authorities and no logs: for a managed key without a log.
const EMPTY_TRUSTED_ROOT: &str = r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","tlogs":[],"certificateAuthorities":[],"ctlogs":[],"timestampAuthorities":[]}"#;

fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = items.map(|s| format!("{s:?}")).collect();
    v.join(", ")
}

/// The DSSE payload type of a Sigstore attestation that approves a jek bundle file (an
/// in-toto statement whose subject is the file). Any other DSSE attestation (a SLSA
/// provenance, an SBOM, a scan result) says something else about the file and is no
/// approval, even when an accepted identity signed it.
pub const APPROVAL_PAYLOAD_TYPE: &str = "application/vnd.jek.bundle-approval.v1+json";

fn parse_bundle(bytes: &[u8]) -> Result<SigstoreBundle, SigstoreError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| SigstoreError::new(Step::BundleFormat, "the Sigstore bundle is not UTF-8"))?;
    let bundle = SigstoreBundle::from_json(text)
        .map_err(|e| SigstoreError::new(Step::BundleFormat, e.to_string()))?;
    check_content(&bundle)?;
    Ok(bundle)
}

/// What a Sigstore bundle signs decides whether it can approve: a message signature over
/// the file (`cosign sign-blob`), or a DSSE envelope of [`APPROVAL_PAYLOAD_TYPE`]. Checked
/// before any cryptography, so an attestation of another kind is refused by what it is.
fn check_content(bundle: &SigstoreBundle) -> Result<(), SigstoreError> {
    match &bundle.content {
        SignatureContent::MessageSignature(_) => Ok(()),
        SignatureContent::DsseEnvelope(env) if env.payload_type == APPROVAL_PAYLOAD_TYPE => Ok(()),
        SignatureContent::DsseEnvelope(env) => Err(SigstoreError::new(
            Step::BundleFormat,
            format!(
                "the Sigstore bundle is a DSSE attestation of type {:?}, not a signature over the bundle file (a message signature, or a DSSE envelope of type {APPROVAL_PAYLOAD_TYPE:?})",
                env.payload_type
            ),
        )),
        #[allow(unreachable_patterns)]
        _ => Err(SigstoreError::new(
            Step::BundleFormat,
            "the Sigstore bundle holds neither a message signature nor a DSSE envelope",
        )),
    }
}

/// A cosign blob signature file: base64 of a DER ECDSA signature (surrounding whitespace
/// allowed).
fn cosign_signature(bytes: &[u8]) -> Result<SignatureBytes, SigstoreError> {
    use base64::Engine as _;
    let text = std::str::from_utf8(bytes).map_err(|_| {
        SigstoreError::new(
            Step::BundleFormat,
            "the cosign signature is not base64 text",
        )
    })?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| SigstoreError::new(Step::BundleFormat, format!("cosign signature: {e}")))?;
    Ok(SignatureBytes::new(der))
}

/// Every entry must carry the full offline proof: an SET, an inclusion proof and its
/// checkpoint. `sigstore-verify` checks each of them only when present.
fn require_log_evidence(bundle: &SigstoreBundle) -> Result<(), SigstoreError> {
    let entries = &bundle.verification_material.tlog_entries;
    if entries.is_empty() {
        return Err(SigstoreError::new(
            Step::TlogInclusionProof,
            "the bundle has no transparency-log entry",
        ));
    }
    for (i, entry) in entries.iter().enumerate() {
        if entry.inclusion_promise.is_none() {
            return Err(SigstoreError::new(
                Step::TlogSet,
                format!("log entry {i} has no signed entry timestamp"),
            ));
        }
        let Some(proof) = &entry.inclusion_proof else {
            return Err(SigstoreError::new(
                Step::TlogInclusionProof,
                format!("log entry {i} has no inclusion proof"),
            ));
        };
        if proof.checkpoint.envelope().trim().is_empty() {
            return Err(SigstoreError::new(
                Step::TlogCheckpoint,
                format!("log entry {i} has no checkpoint"),
            ));
        }
    }
    Ok(())
}

/// Maps the library's error to the step it belongs to.
fn classify(e: LibError) -> SigstoreError {
    let detail = e.to_string();
    let step = match &e {
        LibError::Certificate(c) => match c {
            CertificateError::NotYetValid { .. } | CertificateError::Expired { .. } => {
                Step::CertificateValidity
            }
            CertificateError::ChainInvalid(m)
                if m.contains("CertExpired") || m.contains("CertNotValidYet") =>
            {
                Step::CertificateValidity
            }
            CertificateError::Sct(_) => Step::Sct,
            _ => Step::CertificateChain,
        },
        LibError::TransparencyLog(t) => match t {
            TransparencyLogError::UnknownLog { .. } => Step::TlogUnknownLog,
            TransparencyLogError::InclusionProof(_) => Step::TlogInclusionProof,
            TransparencyLogError::Checkpoint(_) => Step::TlogCheckpoint,
            TransparencyLogError::InclusionPromise(_) => Step::TlogSet,
            TransparencyLogError::IntegratedTime(_) => Step::TlogIntegratedTime,
            _ => Step::TlogEntry,
        },
        LibError::IdentityMismatch { .. } => Step::IdentitySubject,
        LibError::IssuerMismatch { .. } => Step::IdentityIssuer,
        LibError::SignatureInvalid(_) => Step::Signature,
        LibError::ArtifactMismatch(_) | LibError::UnsupportedArtifact(_) => Step::Artifact,
        LibError::Timestamp(_) => Step::Timestamp,
        LibError::InvalidTrustRoot(_)
        | LibError::TrustRoot(_)
        | LibError::TrustedCertificate(_) => Step::TrustedRoot,
        _ => Step::BundleFormat,
    };
    SigstoreError::new(step, detail)
}

/// Fuzz entry (`fuzz/fuzz_targets/sigstore_bundle.rs`): arbitrary bytes as a detached
/// signature under a managed-key policy and a keyless one never panic and never approve
/// (no fuzzer finds an ECDSA signature or a log entry by chance).
pub fn fuzz(data: &[u8]) {
    const KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEnVhZ/AkxaB2ojZDgsKyoZu/e1OKZ\nd3HVChXlfHuflKVjVHfYGXSAayL5LDizdvEuWiqNHUaMCAJCvT3UEiaP4g==\n-----END PUBLIC KEY-----\n";
    let artifact = b"a jek bundle";
    if let Ok(policy) = SigstorePolicy::public_key(KEY, None) {
        assert!(policy.check(artifact, data).is_err());
    }
    if let Ok(policy) = SigstorePolicy::keyless(
        EMPTY_TRUSTED_ROOT,
        vec![Identity {
            issuer: "https://issuer.invalid".into(),
            subject: "someone".into(),
        }],
    ) {
        assert!(policy.check(artifact, data).is_err());
    }
}

#[cfg(test)]
mod fuzz_tests {
    #![allow(clippy::unwrap_used)]
    #[test]
    fn a_managed_key_must_be_p256() {
        let ed25519 = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        let err = super::SigstorePolicy::public_key(ed25519, None).unwrap_err();
        assert!(err.detail.contains("OID 1.3.101.112"), "{err}");
        assert!(err.detail.contains("trusted_keys"), "{err}");
    }

    #[test]
    fn fuzz_entry_refuses_degenerate_inputs() {
        for d in [&b""[..], b"{}", b"MEUCIQ==", b"{\"mediaType\":1}"] {
            super::fuzz(d);
        }
    }
}
