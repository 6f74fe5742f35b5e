//! Where image documents and blobs come from: a registry (through jek-oci's bounded,
//! digest-checking client, with `jek pull`'s credentials and TLS options) or a local OCI
//! image layout. Every blob is checked against its digest here, before anyone parses it.

use std::path::{Path, PathBuf};

use jek_oci::{Registry, RegistryError};

use crate::manifest::MAX_MANIFEST_SIZE;

/// Why a document or blob could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The registry failed or refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The registry has no such manifest.
    #[error("the registry has no manifest {0}")]
    NotFound(String),
    /// A file of the layout cannot be read.
    #[error("cannot read {path} of the OCI layout")]
    Layout {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_fsio::ReadError,
    },
    /// Bytes whose digest is not the one asked for.
    #[error("{what} {expected} has digest {actual}")]
    Digest {
        /// What was fetched.
        what: &'static str,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
}

impl SourceError {
    /// Exit-code class.
    pub fn class(&self) -> jek_errors::Class {
        match self {
            SourceError::Registry(e) => e.class(),
            SourceError::NotFound(_) | SourceError::Digest { .. } => jek_errors::Class::Rejected,
            SourceError::Layout { source, .. } => source.class(),
        }
    }
}

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    jek_oci::artifact::digest(data)
}

/// Checks `data` against `expected`.
pub fn check(what: &'static str, expected: &str, data: &[u8]) -> Result<(), SourceError> {
    let actual = digest_of(data);
    if actual == expected {
        Ok(())
    } else {
        Err(SourceError::Digest {
            what,
            expected: expected.to_string(),
            actual,
        })
    }
}

/// An image's origin.
pub enum Source<'a> {
    /// A registry repository.
    Registry {
        /// The client.
        client: &'a Registry,
        /// The registry host (and port).
        registry: String,
        /// The repository.
        repository: String,
    },
    /// A local OCI image layout.
    Layout {
        /// Its directory.
        dir: PathBuf,
    },
}

impl Source<'_> {
    /// The manifest or index `tag_or_digest` (a layout has only its `index.json`: pass
    /// `None`).
    pub fn top(&self, tag_or_digest: Option<&str>) -> Result<Vec<u8>, SourceError> {
        match self {
            Source::Registry {
                client,
                registry,
                repository,
            } => {
                let t = tag_or_digest.unwrap_or("latest");
                client
                    .image_manifest(registry, repository, t, crate::manifest::ACCEPT)?
                    .ok_or_else(|| SourceError::NotFound(format!("{registry}/{repository} ({t})")))
            }
            Source::Layout { dir } => read_layout(&dir.join("index.json"), MAX_MANIFEST_SIZE),
        }
    }

    /// The manifest tagged `tag` (a registry tag, or in a layout the `index.json` entry
    /// annotated with that `org.opencontainers.image.ref.name`), or `None` if there is none.
    pub fn tagged(&self, tag: &str) -> Result<Option<Vec<u8>>, SourceError> {
        match self {
            Source::Registry {
                client,
                registry,
                repository,
            } => Ok(client.image_manifest(registry, repository, tag, crate::manifest::ACCEPT)?),
            Source::Layout { .. } => {
                let index = self.top(None)?;
                let Ok(crate::manifest::Document::Index(index)) =
                    crate::manifest::parse_document(tag, &index)
                else {
                    return Ok(None);
                };
                let Ok(entry) = crate::manifest::select(tag, &index, Some(tag)) else {
                    return Ok(None);
                };
                let digest = entry.digest().to_string();
                if crate::manifest::check_digest(tag, "an index entry", &digest).is_err() {
                    return Ok(None);
                }
                self.manifest(&digest).map(Some)
            }
        }
    }

    /// The manifest or index `digest`, checked.
    pub fn manifest(&self, digest: &str) -> Result<Vec<u8>, SourceError> {
        let bytes = match self {
            Source::Registry {
                client,
                registry,
                repository,
            } => client
                .image_manifest(registry, repository, digest, crate::manifest::ACCEPT)?
                .ok_or_else(|| {
                    SourceError::NotFound(format!("{registry}/{repository}@{digest}"))
                })?,
            Source::Layout { dir } => read_layout(&blob_path(dir, digest), MAX_MANIFEST_SIZE)?,
        };
        check("the manifest", digest, &bytes)?;
        Ok(bytes)
    }

    /// Blob `digest` of at most `size` bytes, checked.
    pub fn blob(
        &self,
        digest: &str,
        size: u64,
        media_type: &str,
        what: &'static str,
    ) -> Result<Vec<u8>, SourceError> {
        let bytes = match self {
            Source::Registry {
                client,
                registry,
                repository,
            } => client.image_blob(registry, repository, digest, size, media_type, what)?,
            Source::Layout { dir } => read_layout(&blob_path(dir, digest), size)?,
        };
        check(what, digest, &bytes)?;
        Ok(bytes)
    }
}

/// `DIR/blobs/sha256/<hex>` (the digest was checked to be a canonical sha256 digest).
fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    dir.join("blobs").join("sha256").join(hex)
}

fn read_layout(path: &Path, limit: u64) -> Result<Vec<u8>, SourceError> {
    jek_fsio::read_file(path, limit).map_err(|source| SourceError::Layout {
        path: path.to_path_buf(),
        source,
    })
}
