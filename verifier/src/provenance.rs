//! SLSA provenance v1 (<https://slsa.dev/spec/v1.0/provenance>) as jek writes it, and its
//! verification: `jek provenance verify`.
//!
//! The builder writes these records; [`verify_provenance`] reads them strictly. A statement
//! is accepted only when its DSSE envelope is signed by the policy's trusted keys (the
//! same threshold, validity windows and revocations as a bundle), it is an in-toto v1
//! Statement of predicate type `https://slsa.dev/provenance/v1` with jek's build type, and
//! one of its subjects has the SHA-256 of the bundle file given.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dsse::{Envelope, EnvelopeError, IN_TOTO_PAYLOAD_TYPE};
use crate::verify::{Verified, VerifyError};
use crate::{KeyId, Policy, Sha256Digest, UnixTime};

/// The in-toto Statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The SLSA provenance v1 predicate type.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The build type jek's provenance declares.
pub const BUILD_TYPE: &str = "https://jek.dev/KernelBundleBuild/v1";
/// The prefix of jek's builder IDs (`...@VERSION`).
pub const BUILDER_ID_PREFIX: &str = "https://jek.dev/builder/jek@";

/// An in-toto v1 Statement carrying SLSA provenance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// What was built.
    pub subject: Vec<ResourceDescriptor>,
    /// Always [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The provenance.
    pub predicate: Provenance,
}

/// An in-toto ResourceDescriptor: at least one of `uri` and `digest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceDescriptor {
    /// A name (a file name, a path as the recipe wrote it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where it is (`file:///...` for local inputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Algorithm -> lower-case hex digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The SLSA provenance predicate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provenance {
    /// What was run, with which inputs.
    pub build_definition: BuildDefinition,
    /// Who ran it, and this run's details.
    pub run_details: RunDetails,
}

/// `buildDefinition`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BuildDefinition {
    /// [`BUILD_TYPE`].
    pub build_type: String,
    /// The recipe, as given.
    pub external_parameters: BTreeMap<String, serde_json::Value>,
    /// What the builder chose: the build time, the toolchain, where the kernel came from.
    #[serde(default)]
    pub internal_parameters: BTreeMap<String, serde_json::Value>,
    /// Every input with its URI and digest.
    #[serde(default)]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// `runDetails`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunDetails {
    /// The builder.
    pub builder: Builder,
    /// This run.
    #[serde(default)]
    pub metadata: Metadata,
    /// Outputs other than the subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byproducts: Vec<ResourceDescriptor>,
}

/// `runDetails.builder`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Builder {
    /// `https://jek.dev/builder/jek@VERSION`.
    pub id: String,
    /// Component -> version (`jek`, `commit`).
    #[serde(default)]
    pub version: BTreeMap<String, String>,
}

/// `runDetails.metadata`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The kernel cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
}

/// Why a provenance file is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    /// The envelope does not parse.
    #[error("malformed DSSE envelope")]
    Envelope(#[from] EnvelopeError),
    /// The envelope carries something other than an in-toto statement.
    #[error("the envelope's payload type is {0:?}, not {IN_TOTO_PAYLOAD_TYPE}")]
    PayloadType(String),
    /// The policy names no keys to check the envelope against.
    #[error("the policy trusts no signing keys (provenance is signed with the bundle's keys)")]
    NoKeys,
    /// The envelope's signatures do not satisfy the policy.
    #[error("signatures")]
    Signatures(#[source] VerifyError),
    /// The statement is not SLSA v1 provenance as jek writes it.
    #[error("not SLSA provenance v1: {0}")]
    Statement(String),
    /// No subject has the bundle's digest.
    #[error("no subject has the bundle's sha256 {bundle} (subjects: {subjects})")]
    Subject {
        /// The bundle file's digest.
        bundle: Sha256Digest,
        /// The subjects' digests.
        subjects: String,
    },
}

impl ProvenanceError {
    /// A stable code, as `verify` gives.
    pub fn code(&self) -> &'static str {
        match self {
            ProvenanceError::Envelope(_) => "malformed_envelope",
            ProvenanceError::PayloadType(_) => "wrong_payload_type",
            ProvenanceError::NoKeys => "no_trusted_keys",
            ProvenanceError::Signatures(e) => e.code(),
            ProvenanceError::Statement(_) => "not_slsa_provenance",
            ProvenanceError::Subject { .. } => "subject_mismatch",
        }
    }
}

impl Statement {
    /// Checks the fields the spec requires and jek's own types.
    fn check(&self) -> Result<(), String> {
        if self.statement_type != STATEMENT_TYPE {
            return Err(format!("_type is {:?}", self.statement_type));
        }
        if self.predicate_type != PREDICATE_TYPE {
            return Err(format!("predicateType is {:?}", self.predicate_type));
        }
        let def = &self.predicate.build_definition;
        if def.build_type != BUILD_TYPE {
            return Err(format!("buildType is {:?}", def.build_type));
        }
        if !self
            .predicate
            .run_details
            .builder
            .id
            .starts_with(BUILDER_ID_PREFIX)
        {
            return Err(format!(
                "builder.id {:?} is not jek's",
                self.predicate.run_details.builder.id
            ));
        }
        let descriptors = self.subject.iter().chain(&def.resolved_dependencies);
        for (i, d) in descriptors.enumerate() {
            if d.uri.is_none() && d.digest.is_empty() {
                return Err(format!("resource {i} has neither a uri nor a digest"));
            }
            if let Some(bad) = d.digest.iter().find(|(alg, hex)| {
                alg.as_str() == "sha256"
                    && !(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            }) {
                return Err(format!(
                    "resource {i}: sha256 {:?} is not 64 hex digits",
                    bad.1
                ));
            }
        }
        if self.subject.is_empty() {
            return Err("no subject".into());
        }
        Ok(())
    }
}

/// Verifies a provenance file (a DSSE envelope's JSON) for the bundle file `bundle` under
/// `policy`'s trusted keys at `now`.
pub fn verify_provenance(
    envelope_json: &[u8],
    bundle: &[u8],
    policy: &Policy,
    now: UnixTime,
) -> Result<Verified<Statement>, ProvenanceError> {
    let envelope = Envelope::from_json(envelope_json)?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(ProvenanceError::PayloadType(envelope.payload_type));
    }
    let keys = policy.signers().keys().ok_or(ProvenanceError::NoKeys)?;
    let signers: Vec<KeyId> = crate::verify::check_signatures(&envelope, keys, policy, now)
        .map_err(ProvenanceError::Signatures)?;
    let statement: Statement = serde_json::from_slice(&envelope.payload)
        .map_err(|e| ProvenanceError::Statement(e.to_string()))?;
    statement.check().map_err(ProvenanceError::Statement)?;
    let digest = Sha256Digest::of(bundle);
    let hex = digest.to_hex();
    if !statement
        .subject
        .iter()
        .any(|s| s.digest.get("sha256") == Some(&hex))
    {
        let subjects = statement
            .subject
            .iter()
            .filter_map(|s| s.digest.get("sha256").cloned())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ProvenanceError::Subject {
            bundle: digest,
            subjects,
        });
    }
    Ok(Verified::new_unapproved(statement, signers))
}

/// What `jek provenance verify --json` prints of an accepted statement.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenanceSummary<'a> {
    /// Always true (a rejection is an error).
    pub accepted: bool,
    /// The subject that matched the bundle.
    pub subject: Option<&'a str>,
    /// The builder.
    pub builder_id: &'a str,
    /// The builder's versions (`jek`, `commit`).
    pub builder_version: &'a BTreeMap<String, String>,
    /// The keys whose signatures counted.
    pub signers: &'a [KeyId],
    /// Every resolved dependency.
    pub dependencies: &'a [ResourceDescriptor],
}

impl<'a> ProvenanceSummary<'a> {
    /// The summary of a verified statement.
    pub fn of(v: &'a Verified<Statement>) -> Self {
        let run = &v.predicate.run_details;
        ProvenanceSummary {
            accepted: true,
            subject: v.subject.first().and_then(|s| s.name.as_deref()),
            builder_id: &run.builder.id,
            builder_version: &run.builder.version,
            signers: v.signers(),
            dependencies: &v.predicate.build_definition.resolved_dependencies,
        }
    }

    /// What `jek provenance verify` prints.
    pub fn text(&self) -> String {
        let mut lines = vec![format!(
            "ACCEPTED provenance of {} by {} (commit {})",
            self.subject.unwrap_or("?"),
            self.builder_id,
            self.builder_version
                .get("commit")
                .map_or("?", String::as_str)
        )];
        lines.extend(self.signers.iter().map(|s| format!("  signed by {s}")));
        for d in self.dependencies {
            let digest = d.digest.get("sha256").map_or("", String::as_str);
            let uri = d.uri.as_deref().unwrap_or("");
            lines.push(format!("  input sha256:{digest} {uri}"));
        }
        lines.join("\n")
    }
}
