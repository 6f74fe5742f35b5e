//! SLSA provenance v1 for a built bundle, as an in-toto Statement signed in a DSSE envelope
//! with the bundle's own signing keys. The records are the verifier's
//! ([`jek_verifier::provenance`]), so what `jek build` writes is what
//! `jek provenance verify` reads.

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::{Signer as _, SigningKey};
use jek_verifier::dsse::{Envelope, Signature, IN_TOTO_PAYLOAD_TYPE};
use jek_verifier::provenance::{
    BuildDefinition, Builder, Metadata, Provenance, ResourceDescriptor, RunDetails, Statement,
    BUILDER_ID_PREFIX, BUILD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE,
};
use serde_json::Value;

use crate::keys;

/// The commit jek was built from (`git rev-parse HEAD` at compile time, `-dirty` when the
/// work tree had changes), or `unknown` outside a git checkout.
pub const COMMIT: &str = env!("JEK_GIT_COMMIT");

/// One resolved dependency: a name, where it is, and its SHA-256.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// Name (the path as the recipe wrote it, or a file name).
    pub name: String,
    /// `file:///absolute/path`.
    pub uri: String,
    /// Hex SHA-256.
    pub sha256: String,
}

impl Dependency {
    /// A local file: its URI is its absolute path (resolved when it exists).
    pub fn file(name: String, path: &Path, sha256: String) -> Self {
        let abs = std::fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path))
            .unwrap_or_else(|_| path.to_path_buf());
        let uri = url::Url::from_file_path(&abs)
            .map(String::from)
            .unwrap_or_else(|()| format!("file://{}", abs.display()));
        Dependency { name, uri, sha256 }
    }
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

fn sha256(hex: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_string(), hex.to_string())])
}

/// The statement.
pub fn statement(p: &ProvenanceInput<'_>) -> Statement {
    let external = match p.recipe {
        Value::Object(m) => m.clone().into_iter().collect(),
        other => BTreeMap::from([("recipe".to_string(), other.clone())]),
    };
    let origin = if p.kernel_from_cache {
        "cache"
    } else {
        "build"
    };
    Statement {
        statement_type: STATEMENT_TYPE.into(),
        subject: vec![ResourceDescriptor {
            name: Some(p.subject_name.into()),
            digest: sha256(p.subject_sha256),
            ..Default::default()
        }],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Provenance {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE.into(),
                external_parameters: external,
                internal_parameters: BTreeMap::from([
                    ("sourceDateEpoch".into(), p.source_date_epoch.into()),
                    ("toolchain".into(), p.toolchain.to_vec().into()),
                    // Compiled by this run, or taken from the kernel cache under the
                    // invocation ID (the cache key).
                    ("kernelOrigin".into(), origin.into()),
                ]),
                resolved_dependencies: p
                    .dependencies
                    .iter()
                    .map(|d| ResourceDescriptor {
                        name: Some(d.name.clone()),
                        uri: Some(d.uri.clone()),
                        digest: sha256(&d.sha256),
                        ..Default::default()
                    })
                    .collect(),
            },
            run_details: RunDetails {
                builder: Builder {
                    id: format!("{BUILDER_ID_PREFIX}{}", env!("CARGO_PKG_VERSION")),
                    version: BTreeMap::from([
                        ("jek".into(), env!("CARGO_PKG_VERSION").into()),
                        ("commit".into(), COMMIT.into()),
                    ]),
                },
                metadata: Metadata {
                    invocation_id: Some(p.invocation_id.into()),
                },
                byproducts: Vec::new(),
            },
        },
    }
}

/// The statement in a DSSE envelope signed by every key.
pub fn signed(p: &ProvenanceInput<'_>, signing_keys: &[SigningKey]) -> Vec<u8> {
    let mut env = Envelope {
        payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
        // Serializing maps, strings and numbers into a Vec cannot fail.
        payload: serde_json::to_vec(&statement(p)).unwrap_or_default(),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use jek_verifier::provenance::{verify_provenance, ProvenanceError};
    use jek_verifier::{Policy, Sha256Digest, TrustedKey, UnixTime};

    fn input<'a>(recipe: &'a Value, sha: &'a str) -> ProvenanceInput<'a> {
        ProvenanceInput {
            subject_name: "demo-1.0.0.jek",
            subject_sha256: sha,
            recipe,
            dependencies: vec![Dependency::file(
                "kernel-config/base.config".into(),
                Path::new("/src/kernel config/base.config"),
                "ab".repeat(32),
            )],
            toolchain: &[],
            invocation_id: "key",
            source_date_epoch: 1,
            kernel_from_cache: true,
        }
    }

    fn policy(key: &SigningKey) -> Policy {
        let trusted = TrustedKey::new(keys::public_key(key));
        Policy::new(vec![trusted], None, 1, Default::default()).unwrap()
    }

    #[test]
    fn signed_provenance_verifies_for_its_bundle_only() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let bundle = b"the bundle file";
        let sha = Sha256Digest::of(bundle).to_hex();
        let recipe = serde_json::json!({"name": "demo"});
        let env = signed(&input(&recipe, &sha), std::slice::from_ref(&key));
        let now = UnixTime(2);
        let v = verify_provenance(&env, bundle, &policy(&key), now).unwrap();
        let deps = &v.predicate.build_definition.resolved_dependencies;
        assert_eq!(
            deps[0].uri.as_deref(),
            Some("file:///src/kernel%20config/base.config")
        );
        assert_eq!(v.predicate.run_details.builder.version["commit"], COMMIT);
        // Another bundle, another key, a flipped payload byte: each named.
        let e = verify_provenance(&env, b"other", &policy(&key), now).unwrap_err();
        assert!(matches!(e, ProvenanceError::Subject { .. }), "{e}");
        let other = SigningKey::from_bytes(&[8; 32]);
        let e = verify_provenance(&env, bundle, &policy(&other), now).unwrap_err();
        assert_eq!(e.code(), "unknown_signer");
        let mut parsed = Envelope::from_json(&env).unwrap();
        parsed.payload[10] ^= 1;
        let e = verify_provenance(&parsed.to_json(), bundle, &policy(&key), now).unwrap_err();
        assert_eq!(e.code(), "bad_signature");
    }
}
