//! The image cache (default `~/.cache/jek/images`, mode 0700):
//!
//! - `blobs/sha256/<hex>`: manifests, configs and layers by digest, checked again on every
//!   read (a corrupted blob is a miss, fetched anew);
//! - `segments/<key>.cpio` and `.json`: the finished container segment and its record (the
//!   segment's SHA-256, the image's uncompressed layer bytes and the container record),
//!   keyed by the SHA-256 of manifest digest, container name and reference (all three are
//!   in the segment's bytes). A hit is used only when the segment still hashes to its
//!   record and its layers fit the policy's current cap.
//!
//! Tags are never cached: a tag is asked of the registry every time; a digest reference
//! whose segment is cached needs no network at all.

use std::path::{Path, PathBuf};

use jek_fsio::{write_atomic, Overwrite};
use jek_pod::image::ContainerImage;
use serde::{Deserialize, Serialize};

use crate::source::digest_of;

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// Why the cache cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Creating a directory failed.
    #[error("cannot create the image cache directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing an entry failed.
    #[error("cannot write into the image cache")]
    Write(#[source] jek_fsio::WriteError),
}

/// The record beside a cached segment.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentRecord {
    sha256: String,
    layer_bytes: u64,
    image: ContainerImage,
}

/// The largest segment the cache hands back (the format's 4 GiB bound is far above any
/// policy's cap).
const MAX_SEGMENT: u64 = 4 << 30;

impl Cache {
    /// The cache at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    /// The default: `$XDG_CACHE_HOME/jek/images`, else `~/.cache/jek/images`.
    pub fn default_dir() -> PathBuf {
        jek_fsio::cache_root().join("images")
    }

    fn ensure(&self, sub: &str) -> Result<PathBuf, CacheError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let path = self.dir.join(sub);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|source| CacheError::Dir {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap_or(digest))
    }

    /// A cached blob whose bytes still have `digest`.
    pub fn blob(&self, digest: &str, limit: u64) -> Option<Vec<u8>> {
        let bytes = jek_fsio::read_regular(&self.blob_path(digest), limit).ok()?;
        if digest_of(&bytes) == digest {
            Some(bytes)
        } else {
            tracing::warn!(
                digest,
                "a cached blob no longer matches its digest; fetching it again"
            );
            None
        }
    }

    /// Stores a blob (already checked against `digest`).
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), CacheError> {
        self.ensure("blobs/sha256")?;
        write_atomic(&self.blob_path(digest), bytes, 0o600, Overwrite::Allow)
            .map_err(CacheError::Write)
    }

    fn segment_paths(
        &self,
        manifest: &str,
        container: &str,
        reference: &str,
    ) -> (PathBuf, PathBuf) {
        let key = digest_of(format!("{manifest}\0{container}\0{reference}").as_bytes());
        let base = self
            .dir
            .join("segments")
            .join(key.strip_prefix("sha256:").unwrap_or(&key));
        (base.with_extension("cpio"), base.with_extension("json"))
    }

    /// The cached segment of `container` from the image with manifest `manifest` named by
    /// `reference`, if its layers fit in `limit` bytes.
    pub fn segment(
        &self,
        manifest: &str,
        container: &str,
        reference: &str,
        limit: u64,
    ) -> Option<(ContainerImage, Vec<u8>)> {
        let (cpio, json) = self.segment_paths(manifest, container, reference);
        let record: SegmentRecord =
            serde_json::from_slice(&jek_fsio::read_regular(&json, 1 << 20).ok()?).ok()?;
        if record.layer_bytes > limit {
            return None;
        }
        let bytes = jek_fsio::read_regular(&cpio, MAX_SEGMENT).ok()?;
        if digest_of(&bytes) != record.sha256
            || record.image.manifest != manifest
            || record.image.container != container
            || record.image.reference != reference
        {
            tracing::warn!(
                manifest,
                container,
                "a cached segment does not match its record; unpacking again"
            );
            return None;
        }
        Some((record.image, bytes))
    }

    /// Stores a segment and its record.
    pub fn put_segment(
        &self,
        image: &ContainerImage,
        bytes: &[u8],
        layer_bytes: u64,
    ) -> Result<(), CacheError> {
        self.ensure("segments")?;
        let (cpio, json) = self.segment_paths(&image.manifest, &image.container, &image.reference);
        let record = SegmentRecord {
            sha256: digest_of(bytes),
            layer_bytes,
            image: image.clone(),
        };
        write_atomic(&cpio, bytes, 0o600, Overwrite::Allow).map_err(CacheError::Write)?;
        let record = serde_json::to_vec(&record).unwrap_or_default();
        write_atomic(&json, &record, 0o600, Overwrite::Allow).map_err(CacheError::Write)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
