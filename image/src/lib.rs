//! # jek-image: OCI container images for pods
//!
//! A pod file's `containers[].image` becomes a container segment ([`jek_pod::image`]): the
//! image is resolved (registry or OCI layout; an index selects linux/amd64), checked
//! against the image policy before a layer is fetched, unpacked in memory with the OCI
//! changeset rules ([`tree`]), and written as a deterministic `newc` archive that the
//! loader appends after the pod segment and measures into its own PCR. Every blob is
//! checked against its digest before it is parsed; every uncompressed layer against the
//! config's diff_id.
//!
//! A pure core ([`reference`], [`policy`], [`manifest`], [`tree`], [`layer`]) and a thin
//! I/O shell ([`source`], [`cache`], [`prepare`]).
#![forbid(unsafe_code)]

pub mod build;
pub mod cache;
pub mod layer;
pub mod manifest;
pub mod policy;
pub mod reference;
pub mod signature;
pub mod source;
pub mod tree;

use std::path::PathBuf;

use jek_pod::image::{ContainerImage, ContainerSegment, ResolveError};
use jek_pod::spec::PodSpec;

pub use cache::Cache;
pub use policy::{ImagePolicy, Refusal};
pub use reference::ImageRef;

use manifest::{Document, ManifestError};
use source::{Source, SourceError};

/// A container's image, ready to boot.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The container segment and its record.
    pub segment: ContainerSegment,
    /// Whether the segment came from the cache.
    pub cached: bool,
}

/// How images are fetched.
pub struct Options {
    /// The cache.
    pub cache: Cache,
    /// The directory relative `oci:` paths are taken from (the pod file's).
    pub base_dir: PathBuf,
    /// How to reach registries (`None`: registry references are refused, layouts only).
    registry: Option<RegistryConfig>,
}

/// A registry client, made on first use: a pod without registry images pays nothing for
/// TLS roots and an async runtime.
struct RegistryConfig {
    options: jek_oci::ClientOptions,
    client: std::sync::OnceLock<Result<jek_oci::Registry, String>>,
}

impl Options {
    /// The default cache ([`Cache::default_dir`]) and a registry client as `jek pull`
    /// makes it (protocol, credentials, trust roots), for a pod file in `base_dir`.
    pub fn new(base_dir: &std::path::Path, options: jek_oci::ClientOptions) -> Self {
        Options {
            cache: Cache::new(Cache::default_dir()),
            base_dir: base_dir.to_path_buf(),
            registry: Some(RegistryConfig {
                options,
                client: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Layouts only, with this cache.
    pub fn layouts_only(cache: Cache, base_dir: &std::path::Path) -> Self {
        Options {
            cache,
            base_dir: base_dir.to_path_buf(),
            registry: None,
        }
    }

    fn registry(&self) -> Result<&jek_oci::Registry, Cause> {
        let config = self.registry.as_ref().ok_or(Cause::NoRegistry)?;
        config
            .client
            .get_or_init(|| {
                jek_oci::Registry::new(&config.options).map_err(|e| jek_errors::chain_line(&e))
            })
            .as_ref()
            .map_err(|e| Cause::Client(e.clone()))
    }
}

/// What failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The reference does not parse.
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    /// Fetching failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A document is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The image policy refuses the image.
    #[error("the image policy refuses it")]
    Policy(#[from] Refusal),
    /// The signature the image policy requires is missing or invalid.
    #[error("the image policy refuses it")]
    Signature(#[from] signature::SignatureError),
    /// A layer cannot be unpacked.
    #[error(transparent)]
    Layer(#[from] layer::LayerError),
    /// The container's process cannot be worked out from the image.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The segment cannot be written.
    #[error(transparent)]
    Segment(#[from] jek_pod::image::ContainerSegmentError),
    /// The cache cannot be written.
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    /// A registry reference with no registry client.
    #[error("no registry client is configured")]
    NoRegistry,
    /// The registry client cannot be made.
    #[error("cannot make a registry client: {0}")]
    Client(String),
}

/// A container's image could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("container {container:?}: image {reference}")]
pub struct ImageError {
    /// The container.
    pub container: String,
    /// The image reference as written.
    pub reference: String,
    /// Why.
    #[source]
    pub cause: Box<Cause>,
}

impl ImageError {
    /// The exit-code class: a refused or broken image is rejected, a bad reference is
    /// invalid input, a failed fetch or cache the environment's.
    pub fn class(&self) -> jek_errors::Class {
        use jek_errors::Class;
        match self.cause.as_ref() {
            Cause::Reference(_) | Cause::NoRegistry => Class::Invalid,
            Cause::Source(e) => e.class(),
            Cause::Manifest(_)
            | Cause::Policy(_)
            | Cause::Signature(_)
            | Cause::Layer(_)
            | Cause::Resolve(_)
            | Cause::Segment(_) => Class::Rejected,
            Cause::Cache(_) | Cause::Client(_) => Class::Environment,
        }
    }
}

/// Prepares the image of every container of `spec` that has one, in container order,
/// under `policy` (`None`: the policy has no `images:`, so any image is refused). Nothing
/// of a refused image beyond its manifest is fetched.
pub fn prepare(
    spec: &PodSpec,
    policy: Option<&ImagePolicy>,
    opts: &Options,
) -> Result<Vec<Prepared>, ImageError> {
    let mut out = Vec::new();
    for c in &spec.containers {
        let Some(reference) = &c.image else { continue };
        let prepared = prepare_one(c, reference, policy, opts).map_err(|cause| ImageError {
            container: c.name.clone(),
            reference: reference.clone(),
            cause: Box::new(cause),
        })?;
        out.push(prepared);
    }
    Ok(out)
}

/// The manifest digest `text` names now (an index resolved to its linux/amd64 entry), without
/// fetching a config or layer: what an appraisal compares the measured image with.
pub fn current_manifest(text: &str, opts: &Options) -> Result<String, ImageError> {
    let err = |cause: Cause| ImageError {
        container: String::new(),
        reference: text.to_string(),
        cause: Box::new(cause),
    };
    let image = ImageRef::parse(text, &opts.base_dir).map_err(|e| err(e.into()))?;
    let source = source_of(&image, opts).map_err(err)?;
    resolve_manifest(text, &image, &source, &opts.cache)
        .map(|(digest, _)| digest)
        .map_err(err)
}

fn source_of<'a>(image: &ImageRef, opts: &'a Options) -> Result<Source<'a>, Cause> {
    Ok(match image {
        ImageRef::Registry(r) => Source::Registry {
            client: opts.registry()?,
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
        },
        ImageRef::Layout { dir, .. } => Source::Layout { dir: dir.clone() },
    })
}

/// The manifest (not an index) of an image: its digest and bytes.
fn resolve_manifest(
    text: &str,
    image: &ImageRef,
    source: &Source<'_>,
    cache: &Cache,
) -> Result<(String, Vec<u8>), Cause> {
    let fetch = |digest: &str| -> Result<Vec<u8>, Cause> {
        if let Some(b) = cache.blob(digest, manifest::MAX_MANIFEST_SIZE) {
            return Ok(b);
        }
        let b = source.manifest(digest)?;
        cache.put_blob(digest, &b)?;
        Ok(b)
    };
    let (mut digest, mut bytes, tag) = match image {
        ImageRef::Registry(r) => match r.digest() {
            Some(d) => {
                manifest::check_digest(text, "the reference", d)?;
                (d.to_string(), fetch(d)?, None)
            }
            None => {
                let b = source.top(r.tag())?;
                (source::digest_of(&b), b, None)
            }
        },
        ImageRef::Layout { tag, .. } => {
            let b = source.top(None)?;
            (source::digest_of(&b), b, tag.clone())
        }
    };
    let mut tag = tag;
    for _ in 0..3 {
        match manifest::parse_document(text, &bytes)? {
            Document::Manifest(_) => return Ok((digest, bytes)),
            Document::Index(index) => {
                let entry = manifest::select(text, &index, tag.take().as_deref())?;
                let next = entry.digest().to_string();
                manifest::check_digest(text, "an index entry", &next)?;
                bytes = fetch(&next)?;
                digest = next;
            }
        }
    }
    Err(ManifestError::Nested {
        reference: text.to_string(),
    }
    .into())
}

fn prepare_one(
    c: &jek_pod::spec::Container,
    text: &str,
    policy: Option<&ImagePolicy>,
    opts: &Options,
) -> Result<Prepared, Cause> {
    let image = ImageRef::parse(text, &opts.base_dir)?;
    let policy = policy.ok_or(Refusal::NoImagePolicy)?;
    let source = source_of(&image, opts)?;
    let cache = &opts.cache;
    let (manifest_digest, manifest_bytes) = resolve_manifest(text, &image, &source, cache)?;
    // Checked before any layer is fetched. A pin names the image manifest (for an
    // index, its linux/amd64 entry): the digest that is measured and attested.
    let repository = image.repository();
    policy.check(&repository, &manifest_digest)?;
    if let Some(key) = policy
        .rule(&repository)
        .and_then(|r| r.cosign_key.as_deref())
    {
        signature::require(text, &source, &manifest_digest, key)?;
    }
    tracing::info!(container = %c.name, image = text, manifest = %manifest_digest, "the image policy allows it");
    let limit = policy.max_rootfs_bytes;
    if let Some((record, segment)) = cache.segment(&manifest_digest, &c.name, text, limit) {
        tracing::info!(container = %c.name, "container segment from the image cache");
        return Ok(Prepared {
            segment: ContainerSegment {
                image: record,
                bytes: segment,
            },
            cached: true,
        });
    }
    let Document::Manifest(m) = manifest::parse_document(text, &manifest_bytes)? else {
        return Err(ManifestError::Nested {
            reference: text.to_string(),
        }
        .into());
    };
    let config_desc = m.config();
    let config_digest = config_desc.digest().to_string();
    manifest::check_digest(text, "the config", &config_digest)?;
    let blob = |digest: &str, size: u64, media_type: &str, what| -> Result<Vec<u8>, Cause> {
        if let Some(b) = cache.blob(digest, size) {
            return Ok(b);
        }
        let b = source.blob(digest, size, media_type, what)?;
        cache.put_blob(digest, &b)?;
        Ok(b)
    };
    let config_bytes = blob(
        &config_digest,
        config_desc.size().min(manifest::MAX_MANIFEST_SIZE),
        config_desc.media_type().as_ref(),
        "the image config",
    )?;
    let config = manifest::parse_config(text, &config_bytes)?;
    let layers = manifest::layers(text, &m, &config)?;
    let mut root = tree::RootFs::new();
    let mut budget = limit;
    for l in &layers {
        // A compressed layer larger than what is left of the cap cannot fit once
        // uncompressed either (gzip and zstd add well under 1/64 to incompressible data).
        if l.size > budget.saturating_add(budget / 64).saturating_add(64 << 10) {
            return Err(layer::LayerError::TooLarge { limit }.into());
        }
        let bytes = blob(&l.digest, l.size, &l.media_type, "a layer")?;
        tracing::info!(container = %c.name, layer = %l.digest, bytes = l.size, "applying a layer");
        layer::unpack(l, &bytes, &mut root, &mut budget, limit)?;
    }
    let record = ContainerImage {
        container: c.name.clone(),
        reference: text.to_string(),
        manifest: manifest_digest,
        config_digest,
        config: manifest::process_config(&config),
    };
    // The init's own rules, applied now: a container it could not start never boots.
    let read = |p: &str| {
        root.read(p)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    jek_pod::image::resolve(c, Some(&record.config), &read)?;
    let segment = jek_pod::image::container_segment(&record, &root.members())?;
    cache.put_segment(&record, &segment, limit - budget)?;
    tracing::info!(container = %c.name, manifest = %record.manifest, bytes = segment.len(), "container segment ready");
    Ok(Prepared {
        segment: ContainerSegment {
            image: record,
            bytes: segment,
        },
        cached: false,
    })
}
