//! cosign's signature layout for OCI images and artifacts: at tag `sha256-<hex>.sig` of the
//! signed manifest's repository, an image manifest whose layers are simple-signing payloads
//! (naming the signed manifest digest), each with its base64 signature in the
//! `dev.cosignproject.cosign/signature` annotation. `jek push --cosign-key` writes it for a
//! bundle; jek-image reads it for container images.

use std::collections::BTreeMap;

use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde::{Deserialize, Serialize};

use crate::artifact::{self, Descriptor};

/// The media type of a simple-signing payload layer.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation that holds a layer's signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a cosign image signature.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// The media type of the signature image's config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// The tag cosign stores the signatures of manifest `digest` under.
pub fn signature_tag(digest: &str) -> String {
    artifact::referrers_tag(digest) + ".sig"
}

/// A simple-signing payload (other fields, which cosign may add, are ignored on reading).
#[derive(Debug, Serialize, Deserialize)]
pub struct Payload {
    /// What is signed.
    pub critical: Critical,
    /// Free-form claims.
    #[serde(default)]
    pub optional: Option<serde_json::Value>,
}

/// `critical`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Critical {
    /// The repository the signature was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// The signed manifest.
    pub image: Image,
    /// [`PAYLOAD_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
}

/// `critical.identity`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Identity {
    /// `registry/repository`.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// `critical.image`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:...` of the signed manifest.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// A simple-signing payload for manifest `digest` of `repository`, as cosign writes it.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    let p = Payload {
        critical: Critical {
            identity: Some(Identity {
                docker_reference: repository.to_string(),
            }),
            image: Image {
                docker_manifest_digest: digest.to_string(),
            },
            kind: PAYLOAD_TYPE.to_string(),
        },
        optional: None,
    };
    // A derived Serialize of strings cannot fail.
    serde_json::to_vec(&p).unwrap_or_default()
}

/// The signature image's config: an image config whose one diff_id is the payload's.
pub fn config(payload: &[u8]) -> Vec<u8> {
    #[derive(Serialize)]
    struct RootFs {
        #[serde(rename = "type")]
        kind: &'static str,
        diff_ids: Vec<String>,
    }
    #[derive(Serialize)]
    struct Config {
        architecture: &'static str,
        os: &'static str,
        config: BTreeMap<String, String>,
        rootfs: RootFs,
    }
    let c = Config {
        architecture: "",
        os: "",
        config: BTreeMap::new(),
        rootfs: RootFs {
            kind: "layers",
            diff_ids: vec![artifact::digest(payload)],
        },
    };
    serde_json::to_vec(&c).unwrap_or_default()
}

/// The signature manifest for one payload, its base64 `signature`, and `config`.
pub fn signature_manifest(config: &[u8], payload: &[u8], signature: &str) -> Vec<u8> {
    let mut layer: OciDescriptor = Descriptor::of(PAYLOAD_MEDIA_TYPE, payload).to_oci();
    layer.annotations = Some(BTreeMap::from([(
        SIGNATURE_ANNOTATION.to_string(),
        signature.to_string(),
    )]));
    let m = OciImageManifest {
        schema_version: 2,
        media_type: Some(artifact::MANIFEST_MEDIA_TYPE.into()),
        config: Descriptor::of(CONFIG_MEDIA_TYPE, config).to_oci(),
        layers: vec![layer],
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    serde_json::to_vec(&m).unwrap_or_default()
}
