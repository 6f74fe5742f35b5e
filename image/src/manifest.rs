//! Image manifests, indexes and configs: parsed into oci-spec's typed records (a duplicated
//! field is refused), the linux/amd64 image selected from an index, every digest checked
//! before it is used.

use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Os};
use serde::Deserialize;

use jek_pod::image::ImageConfig;

/// The largest manifest, index or config accepted (the registry client's bound).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Media types a manifest may be asked for with.
pub const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Why an image document is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("{what} of {reference} is not a valid OCI document")]
    Json {
        /// Manifest, index or config.
        what: &'static str,
        /// The image.
        reference: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No linux/amd64 image in the index.
    #[error("{reference}: the image index has no linux/amd64 image")]
    NoPlatform {
        /// The image.
        reference: String,
    },
    /// An index within an index within an index.
    #[error("{reference}: image indexes nested more than twice")]
    Nested {
        /// The image.
        reference: String,
    },
    /// The config is for another platform.
    #[error("{reference}: the image is for {os}/{arch}, not linux/amd64")]
    Platform {
        /// The image.
        reference: String,
        /// Its OS.
        os: String,
        /// Its architecture.
        arch: String,
    },
    /// A layer of a media type jek cannot unpack.
    #[error("{reference}: layer {digest} has media type {media_type}, which is not a tar layer (plain, gzip or zstd)")]
    LayerType {
        /// The image.
        reference: String,
        /// The layer.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// A digest that is not `sha256:` and 64 lowercase hex digits.
    #[error("{reference}: {what} names digest {digest:?}; only sha256 digests are accepted")]
    Digest {
        /// The image.
        reference: String,
        /// Where.
        what: &'static str,
        /// The digest.
        digest: String,
    },
    /// Layer and diff_id counts differ.
    #[error(
        "{reference}: the manifest has {layers} layers but the config lists {diff_ids} diff_ids"
    )]
    LayerCount {
        /// The image.
        reference: String,
        /// Manifest layers.
        layers: usize,
        /// Config diff_ids.
        diff_ids: usize,
    },
}

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// A layer to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the (compressed) blob.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// Its compression.
    pub compression: Compression,
    /// The digest of the uncompressed tar stream (the config's diff_id).
    pub diff_id: String,
}

/// A manifest or an index, told apart by their fields.
pub enum Document {
    /// An image index (or Docker manifest list).
    Index(Box<ImageIndex>),
    /// An image manifest.
    Manifest(Box<ImageManifest>),
}

#[derive(Deserialize)]
struct Probe {
    manifests: Option<serde::de::IgnoredAny>,
}

fn json_err<'a>(
    what: &'static str,
    reference: &'a str,
) -> impl FnOnce(serde_json::Error) -> ManifestError + 'a {
    move |source| ManifestError::Json {
        what,
        reference: reference.to_string(),
        source,
    }
}

/// Checks that `digest` is a sha256 digest in canonical form (it goes into paths and URLs).
pub fn check_digest(
    reference: &str,
    what: &'static str,
    digest: &str,
) -> Result<(), ManifestError> {
    if jek_oci::artifact::is_sha256_digest(digest) {
        Ok(())
    } else {
        Err(ManifestError::Digest {
            reference: reference.to_string(),
            what,
            digest: digest.to_string(),
        })
    }
}

/// Parses a manifest or an index.
pub fn parse_document(reference: &str, bytes: &[u8]) -> Result<Document, ManifestError> {
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(json_err("the manifest", reference))?;
    if probe.manifests.is_some() {
        serde_json::from_slice(bytes)
            .map(|i| Document::Index(Box::new(i)))
            .map_err(json_err("the image index", reference))
    } else {
        serde_json::from_slice(bytes)
            .map(|m| Document::Manifest(Box::new(m)))
            .map_err(json_err("the manifest", reference))
    }
}

/// The index entry for linux/amd64 (or, with `tag`, the entry annotated with that
/// `org.opencontainers.image.ref.name`; an OCI layout's index without a tag must hold
/// exactly one entry or a linux/amd64 one).
pub fn select<'a>(
    reference: &str,
    index: &'a ImageIndex,
    tag: Option<&str>,
) -> Result<&'a Descriptor, ManifestError> {
    let manifests = index.manifests();
    if let Some(tag) = tag {
        return manifests
            .iter()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                    .is_some_and(|n| n == tag)
            })
            .ok_or_else(|| ManifestError::NoPlatform {
                reference: format!("{reference} (tag {tag})"),
            });
    }
    let amd64 = manifests.iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
    });
    match (amd64, manifests.as_slice()) {
        (Some(d), _) => Ok(d),
        (None, [only]) if only.platform().is_none() => Ok(only),
        _ => Err(ManifestError::NoPlatform {
            reference: reference.to_string(),
        }),
    }
}

/// The layers of `manifest`, with the config's diff_ids, after checking the config is
/// for linux/amd64.
pub fn layers(
    reference: &str,
    manifest: &ImageManifest,
    config: &ImageConfiguration,
) -> Result<Vec<Layer>, ManifestError> {
    if *config.os() != Os::Linux || *config.architecture() != Arch::Amd64 {
        return Err(ManifestError::Platform {
            reference: reference.to_string(),
            os: config.os().to_string(),
            arch: config.architecture().to_string(),
        });
    }
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ManifestError::LayerCount {
            reference: reference.to_string(),
            layers: manifest.layers().len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut out = Vec::new();
    for (d, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let digest = d.digest().to_string();
        check_digest(reference, "a layer", &digest)?;
        check_digest(reference, "a diff_id", diff_id)?;
        let media_type = d.media_type().to_string();
        let compression = match media_type.as_str() {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            _ => {
                return Err(ManifestError::LayerType {
                    reference: reference.to_string(),
                    digest,
                    media_type,
                })
            }
        };
        out.push(Layer {
            digest,
            size: d.size(),
            media_type,
            compression,
            diff_id: diff_id.clone(),
        });
    }
    Ok(out)
}

/// The process fields of the config.
pub fn process_config(config: &ImageConfiguration) -> ImageConfig {
    let Some(c) = config.config() else {
        return ImageConfig::default();
    };
    ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().filter(|d| !d.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
    }
}

/// Parses a config blob.
pub fn parse_config(reference: &str, bytes: &[u8]) -> Result<ImageConfiguration, ManifestError> {
    serde_json::from_slice(bytes).map_err(json_err("the image config", reference))
}

/// Fuzzing entry: every document parser on arbitrary bytes.
pub fn fuzz(data: &[u8]) {
    if let Ok(Document::Index(i)) = parse_document("fuzz", data) {
        let _ = select("fuzz", &i, None);
        let _ = select("fuzz", &i, Some("t"));
    }
    if let (Ok(Document::Manifest(m)), Ok(c)) =
        (parse_document("fuzz", data), parse_config("fuzz", data))
    {
        let _ = layers("fuzz", &m, &c);
        let _ = process_config(&c);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn index(entries: &[(&str, &str, &str)]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(os, arch, hexdigit)| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{}", hexdigit.repeat(64)),
                    "size": 1,
                    "platform": {"os": os, "architecture": arch},
                })
            })
            .collect();
        let bytes =
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
                .unwrap();
        match parse_document("r", &bytes).unwrap() {
            Document::Index(i) => *i,
            Document::Manifest(_) => panic!("not an index"),
        }
    }

    #[test]
    fn an_index_selects_linux_amd64() {
        let i = index(&[
            ("linux", "arm64", "a"),
            ("windows", "amd64", "b"),
            ("linux", "amd64", "c"),
        ]);
        assert_eq!(
            select("r", &i, None).unwrap().digest().to_string(),
            format!("sha256:{}", "c".repeat(64))
        );
        let none = index(&[("linux", "arm64", "a"), ("linux", "s390x", "b")]);
        assert!(matches!(
            select("r", &none, None),
            Err(ManifestError::NoPlatform { .. })
        ));
        assert!(matches!(
            select("r", &i, Some("v1")),
            Err(ManifestError::NoPlatform { .. })
        ));
    }

    #[test]
    fn digests_must_be_canonical_sha256() {
        check_digest("r", "x", &format!("sha256:{}", "a".repeat(64))).unwrap();
        for bad in [
            "sha256:AB",
            &format!("sha512:{}", "a".repeat(64)),
            &format!("sha256:{}/..", "a".repeat(62)),
        ] {
            assert!(check_digest("r", "x", bad).is_err(), "{bad}");
        }
    }
}
