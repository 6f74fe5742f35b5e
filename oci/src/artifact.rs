//! The OCI layout of a jek bundle and its attachments: media types, manifest writers and
//! strict manifest readers, on oci-client's typed manifest records. No I/O.

use std::collections::BTreeMap;

use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest};
use sha2::{Digest as _, Sha256};

/// `artifactType` of a bundle's manifest, and the media type of its one layer.
pub const BUNDLE_ARTIFACT_TYPE: &str = "application/vnd.jek.bundle.v1";
/// Media type of the bundle layer (the bundle file, byte for byte).
pub const BUNDLE_LAYER_MEDIA_TYPE: &str = "application/vnd.jek.bundle.v1+binary";
/// OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (the referrers tag schema).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The empty config descriptor's media type (image-spec 1.1).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty config blob: `{}`.
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// Annotation: the file name of a layer.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// The largest bundle layer accepted (the bundle format's own limit).
pub const MAX_BUNDLE_SIZE: u64 = jek_verifier::format::MAX_BUNDLE_SIZE;
/// The largest attachment a pull accepts (16 MiB).
pub const MAX_ATTACHMENT_SIZE: u64 = 16 << 20;
/// The largest manifest or index a pull accepts (4 MiB, as Distribution's own limit).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// What an attachment (referrer) holds; serialized as its [`AttachmentKind::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachmentKind {
    /// A Sigstore bundle (JSON) over the bundle file.
    SigstoreBundle,
    /// A cosign blob signature (base64 DER ECDSA) over the bundle file.
    CosignSignature,
    /// The builder's provenance (an in-toto statement, JSON).
    Provenance,
}

impl AttachmentKind {
    /// Every kind.
    pub const ALL: [AttachmentKind; 3] = [
        AttachmentKind::SigstoreBundle,
        AttachmentKind::CosignSignature,
        AttachmentKind::Provenance,
    ];

    /// The kind of a detached signature file: a Sigstore bundle if it is `.json`, else a
    /// cosign signature.
    pub fn of_signature_file(path: &std::path::Path) -> Self {
        if path.extension().is_some_and(|e| e == "json") {
            AttachmentKind::SigstoreBundle
        } else {
            AttachmentKind::CosignSignature
        }
    }

    /// The referrer's `artifactType` and its layer's media type.
    pub fn media_type(self) -> &'static str {
        match self {
            AttachmentKind::SigstoreBundle => "application/vnd.dev.sigstore.bundle.v0.3+json",
            AttachmentKind::CosignSignature => "application/vnd.jek.cosign-signature.v1+base64",
            AttachmentKind::Provenance => "application/vnd.in-toto+json",
        }
    }

    /// The kind with this media type.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.media_type() == media_type)
    }

    /// A short name for messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            AttachmentKind::SigstoreBundle => "sigstore-bundle",
            AttachmentKind::CosignSignature => "cosign-signature",
            AttachmentKind::Provenance => "provenance",
        }
    }

    /// Whether this kind is a signature over the bundle.
    pub fn is_signature(self) -> bool {
        !matches!(self, AttachmentKind::Provenance)
    }
}

/// An attachment's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// What it is.
    pub kind: AttachmentKind,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// A content descriptor: media type, `sha256:` digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

impl Descriptor {
    /// The descriptor of `data` with `media_type`.
    pub fn of(media_type: &str, data: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest: digest(data),
            size: u64::try_from(data.len()).unwrap_or(u64::MAX),
        }
    }

    pub(crate) fn to_oci(&self) -> OciDescriptor {
        OciDescriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: i64::try_from(self.size).unwrap_or(i64::MAX),
            urls: None,
            annotations: None,
            artifact_type: None,
        }
    }

    /// A descriptor read from a registry: a `sha256:` digest and a non-negative size.
    fn from_oci(d: &OciDescriptor, field: &'static str) -> Result<Self, ArtifactError> {
        check_digest(&d.digest)?;
        Ok(Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: u64::try_from(d.size).map_err(|_| ArtifactError::Field { field })?,
        })
    }
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A manifest or index that is not what jek pushes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// Not JSON.
    #[error("the manifest is not JSON: {0}")]
    Json(String),
    /// A required field is missing or of the wrong type.
    #[error("the manifest has no valid {field}")]
    Field {
        /// The field.
        field: &'static str,
    },
    /// The manifest is not a jek bundle.
    #[error("{what} is {actual:?}, expected {expected:?}: not a jek bundle")]
    NotABundle {
        /// The field.
        what: &'static str,
        /// What was found.
        actual: String,
        /// What a jek bundle has.
        expected: &'static str,
    },
    /// Not exactly one layer.
    #[error("the bundle manifest has {0} layers, expected exactly 1")]
    LayerCount(usize),
    /// A blob larger than jek accepts.
    #[error("{what} is {size} bytes, more than the {limit} bytes jek accepts")]
    TooLarge {
        /// Which blob.
        what: &'static str,
        /// Its declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A blob the registry served past its declared size.
    #[error("{what}: the registry served more than the {declared} bytes the manifest declares")]
    Oversized {
        /// Which blob.
        what: &'static str,
        /// The declared size.
        declared: u64,
    },
    /// A referrers index with more entries than jek looks at.
    #[error("the referrers index lists {0} manifests, more than the {MAX_REFERRERS} jek reads")]
    TooManyReferrers(usize),
    /// A digest that is not `sha256:` and 64 lowercase hex digits.
    #[error("unsupported digest {0:?} (jek accepts only sha256)")]
    Digest(String),
}

fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    // Serializing strings, numbers and maps into a Vec cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn empty_config() -> OciDescriptor {
    Descriptor::of(EMPTY_MEDIA_TYPE, EMPTY_CONFIG).to_oci()
}

/// The manifest of a bundle file.
pub fn bundle_manifest(bundle: &[u8], title: &str) -> Vec<u8> {
    let mut layer = Descriptor::of(BUNDLE_LAYER_MEDIA_TYPE, bundle).to_oci();
    layer.annotations = Some(BTreeMap::from([(
        TITLE_ANNOTATION.to_string(),
        title.to_string(),
    )]));
    to_json(&OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        config: empty_config(),
        layers: vec![layer],
        subject: None,
        artifact_type: Some(BUNDLE_ARTIFACT_TYPE.into()),
        annotations: None,
    })
}

/// The manifest of an attachment whose subject is the bundle manifest `subject`.
pub fn attachment_manifest(attachment: &Attachment, subject: &Descriptor) -> Vec<u8> {
    let media_type = attachment.kind.media_type();
    to_json(&OciImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        config: empty_config(),
        layers: vec![Descriptor::of(media_type, &attachment.data).to_oci()],
        subject: Some(subject.to_oci()),
        artifact_type: Some(media_type.into()),
        annotations: None,
    })
}

/// The referrers index (tag schema): `existing` (if any) plus `entry`, deduplicated by
/// digest.
pub fn referrers_index(
    existing: Option<&[u8]>,
    entry: &Descriptor,
    artifact_type: &str,
) -> Result<Vec<u8>, ArtifactError> {
    let mut manifests = match existing {
        Some(bytes) => parse_json::<OciImageIndex>(bytes)?.manifests,
        None => Vec::new(),
    };
    manifests.retain(|m| m.digest != entry.digest);
    manifests.push(ImageIndexEntry {
        media_type: entry.media_type.clone(),
        digest: entry.digest.clone(),
        size: i64::try_from(entry.size).unwrap_or(i64::MAX),
        platform: None,
        annotations: None,
        artifact_type: Some(artifact_type.into()),
    });
    Ok(to_json(&OciImageIndex {
        schema_version: 2,
        media_type: Some(INDEX_MEDIA_TYPE.into()),
        manifests,
        artifact_type: None,
        annotations: None,
    }))
}

/// The tag of the referrers index for a manifest digest: `sha256-<hex>`.
pub fn referrers_tag(manifest_digest: &str) -> String {
    manifest_digest.replacen(':', "-", 1)
}

/// Strict JSON into a typed record: a field given twice is an error (serde's derived
/// readers refuse duplicates), not "last value wins".
fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ArtifactError> {
    serde_json::from_slice(bytes).map_err(|e| ArtifactError::Json(e.to_string()))
}

/// Whether `d` is `sha256:` and 64 lowercase hex digits: the only digest form jek puts into
/// a path or URL.
pub fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn check_digest(d: &str) -> Result<(), ArtifactError> {
    if is_sha256_digest(d) {
        Ok(())
    } else {
        Err(ArtifactError::Digest(d.into()))
    }
}

/// The one layer of a jek manifest.
fn only_layer(m: &OciImageManifest) -> Result<Descriptor, ArtifactError> {
    match m.layers.as_slice() {
        [layer] => Descriptor::from_oci(layer, "layers[0].size"),
        other => Err(ArtifactError::LayerCount(other.len())),
    }
}

/// Reads a bundle manifest: returns the bundle layer's descriptor.
pub fn parse_bundle_manifest(bytes: &[u8]) -> Result<Descriptor, ArtifactError> {
    let m: OciImageManifest = parse_json(bytes)?;
    let media_type = m.media_type.as_deref().unwrap_or("");
    if media_type != MANIFEST_MEDIA_TYPE {
        return Err(ArtifactError::NotABundle {
            what: "mediaType",
            actual: media_type.into(),
            expected: MANIFEST_MEDIA_TYPE,
        });
    }
    let artifact_type = m.artifact_type.as_deref().unwrap_or("");
    if artifact_type != BUNDLE_ARTIFACT_TYPE {
        return Err(ArtifactError::NotABundle {
            what: "artifactType",
            actual: artifact_type.into(),
            expected: BUNDLE_ARTIFACT_TYPE,
        });
    }
    let layer = only_layer(&m)?;
    if layer.media_type != BUNDLE_LAYER_MEDIA_TYPE {
        return Err(ArtifactError::NotABundle {
            what: "the layer's mediaType",
            actual: layer.media_type,
            expected: BUNDLE_LAYER_MEDIA_TYPE,
        });
    }
    if layer.size > MAX_BUNDLE_SIZE {
        return Err(ArtifactError::TooLarge {
            what: "the bundle layer",
            size: layer.size,
            limit: MAX_BUNDLE_SIZE,
        });
    }
    Ok(layer)
}

/// Reads a referrer's manifest: its kind and layer, or `None` for an artifact type jek
/// does not know (other tools' referrers are ignored). The subject must be `subject`.
pub fn parse_attachment_manifest(
    bytes: &[u8],
    subject: &str,
) -> Result<Option<(AttachmentKind, Descriptor)>, ArtifactError> {
    let m: OciImageManifest = parse_json(bytes)?;
    let artifact_type = m.artifact_type.as_deref().unwrap_or("");
    let Some(kind) = AttachmentKind::from_media_type(artifact_type) else {
        return Ok(None);
    };
    let subject_digest = m
        .subject
        .as_ref()
        .map(|s| s.digest.as_str())
        .ok_or(ArtifactError::Field { field: "subject" })?;
    if subject_digest != subject {
        return Ok(None);
    }
    let layer = only_layer(&m)?;
    if layer.size > MAX_ATTACHMENT_SIZE {
        return Err(ArtifactError::TooLarge {
            what: "an attachment",
            size: layer.size,
            limit: MAX_ATTACHMENT_SIZE,
        });
    }
    Ok(Some((kind, layer)))
}

/// The most referrers a pull looks at.
pub const MAX_REFERRERS: usize = 64;

/// Reads a referrers index (API answer or tag schema): the digests of its entries, each a
/// well-formed `sha256:` digest (it becomes part of a URL), at most [`MAX_REFERRERS`].
pub fn parse_index(bytes: &[u8]) -> Result<Vec<String>, ArtifactError> {
    let index: OciImageIndex = parse_json(bytes)?;
    if index.manifests.len() > MAX_REFERRERS {
        return Err(ArtifactError::TooManyReferrers(index.manifests.len()));
    }
    index
        .manifests
        .into_iter()
        .map(|e| check_digest(&e.digest).map(|()| e.digest))
        .collect()
}

/// Fuzz entry (`fuzz/fuzz_targets/oci_manifest.rs`): the manifest and index readers on
/// arbitrary bytes never panic; an accepted bundle manifest names a sha256 layer within
/// the cap; an index that parses is one `referrers_index` can extend.
pub fn fuzz(data: &[u8]) {
    if let Ok(layer) = parse_bundle_manifest(data) {
        assert!(layer.size <= MAX_BUNDLE_SIZE);
        assert!(check_digest(&layer.digest).is_ok());
    }
    let subject = digest(b"subject");
    if let Ok(Some((_, layer))) = parse_attachment_manifest(data, &subject) {
        assert!(layer.size <= MAX_ATTACHMENT_SIZE);
    }
    if let Ok(digests) = parse_index(data) {
        assert!(digests.len() <= MAX_REFERRERS);
        let entry = Descriptor::of(MANIFEST_MEDIA_TYPE, b"entry");
        let grown = referrers_index(Some(data), &entry, "x");
        assert!(grown.is_ok(), "an index that parses can be extended");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fuzz_entry_survives_degenerate_inputs() {
        for d in [&b""[..], b"{}", b"[]", b"{\"manifests\":[]}"] {
            fuzz(d);
        }
        fuzz(&bundle_manifest(b"b", "t"));
    }

    #[test]
    fn bundle_manifests_round_trip_and_foreign_manifests_are_refused() {
        let m = bundle_manifest(b"bundle bytes", "demo.jek");
        let layer = parse_bundle_manifest(&m).unwrap();
        assert_eq!(layer.digest, digest(b"bundle bytes"));
        assert_eq!(layer.size, 12);

        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":1},"layers":[]}"#;
        assert!(matches!(
            parse_bundle_manifest(image),
            Err(ArtifactError::NotABundle {
                what: "artifactType",
                ..
            })
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        v["layers"][0]["digest"] = "sha512:abc".into();
        assert!(matches!(
            parse_bundle_manifest(v.to_string().as_bytes()),
            Err(ArtifactError::Digest(_))
        ));
        v["layers"] = serde_json::json!([]);
        assert_eq!(
            parse_bundle_manifest(v.to_string().as_bytes()),
            Err(ArtifactError::LayerCount(0))
        );
        let mut v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        v["layers"][0]["size"] = (MAX_BUNDLE_SIZE + 1).into();
        assert!(matches!(
            parse_bundle_manifest(v.to_string().as_bytes()),
            Err(ArtifactError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_bundle_manifest(b"{"),
            Err(ArtifactError::Json(_))
        ));
        // One manifest, one meaning: a field given twice is refused.
        let text = String::from_utf8(m.clone()).unwrap();
        let twice = text.replacen(
            "\"artifactType\":",
            "\"artifactType\":\"application/x-other\",\"artifactType\":",
            1,
        );
        assert!(matches!(
            parse_bundle_manifest(twice.as_bytes()),
            Err(ArtifactError::Json(e)) if e.contains("duplicate field")
        ));
    }

    #[test]
    fn referrer_indexes_are_bounded_and_their_digests_checked() {
        let d = Descriptor::of(MANIFEST_MEDIA_TYPE, b"m");
        let idx = referrers_index(None, &d, "x").unwrap();
        assert_eq!(parse_index(&idx).unwrap(), vec![d.digest.clone()]);
        let evil = String::from_utf8(idx.clone())
            .unwrap()
            .replace(&d.digest, "sha256:../../v2/other/manifests/x");
        assert!(matches!(
            parse_index(evil.as_bytes()),
            Err(ArtifactError::Digest(_))
        ));
        let mut many = idx;
        for i in 0..=MAX_REFERRERS {
            let e = Descriptor::of(MANIFEST_MEDIA_TYPE, format!("m{i}").as_bytes());
            many = referrers_index(Some(&many), &e, "x").unwrap();
        }
        assert!(matches!(
            parse_index(&many),
            Err(ArtifactError::TooManyReferrers(_))
        ));
    }

    #[test]
    fn attachments_name_their_subject_and_indexes_accumulate() {
        let m = bundle_manifest(b"bundle", "b");
        let subject = Descriptor::of(MANIFEST_MEDIA_TYPE, &m);
        let att = Attachment {
            kind: AttachmentKind::SigstoreBundle,
            data: b"{}".to_vec(),
        };
        let am = attachment_manifest(&att, &subject);
        let (kind, layer) = parse_attachment_manifest(&am, &subject.digest)
            .unwrap()
            .unwrap();
        assert_eq!(kind, AttachmentKind::SigstoreBundle);
        assert_eq!(layer.digest, digest(b"{}"));
        // Another subject: not ours.
        assert_eq!(
            parse_attachment_manifest(&am, &digest(b"other")).unwrap(),
            None
        );

        let d1 = Descriptor::of(MANIFEST_MEDIA_TYPE, &am);
        let idx = referrers_index(None, &d1, kind.media_type()).unwrap();
        let d2 = Descriptor::of(MANIFEST_MEDIA_TYPE, b"another");
        let idx = referrers_index(Some(&idx), &d2, "x").unwrap();
        let idx = referrers_index(Some(&idx), &d1, kind.media_type()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&idx).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(referrers_tag("sha256:ab"), "sha256-ab");
    }
}
