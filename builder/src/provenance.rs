//! SLSA provenance v1 for a built bundle, as an in-toto Statement signed in a DSSE envelope
//! with the bundle's own signing keys.

use ed25519_dalek::{Signer as _, SigningKey};
use jek_verifier::dsse::{Envelope, Signature, IN_TOTO_PAYLOAD_TYPE};
use serde_json::{json, Value};

use crate::keys;

/// The build type URI jek's provenance declares.
pub const BUILD_TYPE: &str = "https://jek.dev/KernelBundleBuild/v1";

/// One resolved dependency: a name and its SHA-256.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// Name (path or file name).
    pub name: String,
    /// Hex SHA-256.
    pub sha256: String,
}

/// What the provenance says.
#[derive(Debug, Clone)]
pub struct ProvenanceInput<'a> {
    /// The bundle file name.
    pub subject_name: &'a str,
    /// The bundle file's SHA-256 (hex).
    pub subject_sha256: &'a str,
    /// The recipe, as given.
    pub recipe: &'a Value,
    /// Every input.
    pub dependencies: Vec<Dependency>,
    /// Toolchain version strings.
    pub toolchain: &'a [String],
    /// The kernel cache key.
    pub invocation_id: &'a str,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: u64,
    /// Whether the kernel was taken from the build cache (checked against its recorded
    /// outputs and the policy) rather than compiled in this build.
    pub kernel_from_cache: bool,
}

/// The statement JSON bytes.
pub fn statement(p: &ProvenanceInput<'_>) -> Vec<u8> {
    let v = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{ "name": p.subject_name, "digest": { "sha256": p.subject_sha256 } }],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": { "recipe": p.recipe },
                "internalParameters": { "sourceDateEpoch": p.source_date_epoch },
                "resolvedDependencies": p.dependencies.iter().map(|d| json!({
                    "name": d.name, "digest": { "sha256": d.sha256 },
                })).collect::<Vec<_>>(),
            },
            "runDetails": {
                "builder": {
                    "id": format!("https://jek.dev/builder/jek@{}", env!("CARGO_PKG_VERSION")),
                    "version": { "jek": env!("CARGO_PKG_VERSION"), "toolchain": p.toolchain },
                },
                "metadata": { "invocationId": p.invocation_id },
                // Where the kernel came from: compiled by this run, or taken from the
                // kernel cache under the invocation ID (the cache key).
                "byproducts": [{
                    "name": "kernel",
                    "annotations": {
                        "jek.dev/kernel-origin": if p.kernel_from_cache { "cache" } else { "build" },
                    },
                }],
            },
        },
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The statement in a DSSE envelope signed by every key.
pub fn signed(p: &ProvenanceInput<'_>, signing_keys: &[SigningKey]) -> Vec<u8> {
    let mut env = Envelope {
        payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
        payload: statement(p),
        signatures: vec![],
    };
    let message = env.signed_bytes();
    env.signatures = signing_keys
        .iter()
        .map(|k| Signature {
            keyid: keys::public_key(k).id().to_string(),
            sig: k.sign(&message).to_vec(),
        })
        .collect();
    env.to_json()
}
