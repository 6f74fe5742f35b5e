//! Which image a container was made from, asked of containerd itself.
//!
//! The shim gets only a bundle and the snapshotter's mounts; the image's name and
//! digests live in containerd's metadata. They are read over containerd's gRPC API
//! (`containerd-client`): the container's image name, that image's target descriptor,
//! and from the content store the manifest (an index selects linux/amd64), checked
//! against its digest, for the config digest. The answers name the pod's image in its
//! container record, which is measured into PCR 13 and appears in the EAR.

use std::path::Path;

use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use jek_image::manifest::{self, Document};
use sha2::{Digest, Sha256};
use tonic::Request;

/// The largest manifest or index the shim reads.
const MAX_MANIFEST: usize = 4 << 20;

/// The container's image, as containerd knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIdentity {
    /// The image name (`docker.io/library/busybox:jek-test`).
    pub reference: String,
    /// The manifest's digest.
    pub manifest: String,
    /// The image config's digest.
    pub config: String,
}

/// Why the image cannot be found out.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No runtime for the gRPC client.
    #[error("cannot start the containerd client")]
    Runtime(#[source] std::io::Error),
    /// containerd cannot be reached.
    #[error("cannot reach containerd at {address}")]
    Connect {
        /// The socket.
        address: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// containerd refused a request.
    #[error("containerd: {what}: {status}", status = .source.message())]
    Call {
        /// Which request.
        what: String,
        /// Its answer.
        #[source]
        source: Box<tonic::Status>,
    },
    /// The container was not made from an image.
    #[error("container {0} has no image in containerd: jek runs containers made from images (the image is what the pod measures)")]
    NoImage(String),
    /// A manifest or index that does not parse or that has no linux/amd64 entry.
    #[error("image {reference}")]
    Manifest {
        /// The image.
        reference: String,
        /// Why.
        #[source]
        source: manifest::ManifestError,
    },
    /// Content that does not match its digest.
    #[error("containerd's content for {digest} does not match that digest")]
    Digest {
        /// The digest.
        digest: String,
    },
    /// Content larger than a manifest may be.
    #[error("containerd's content {digest} is larger than {MAX_MANIFEST} bytes")]
    TooLarge {
        /// The digest.
        digest: String,
    },
}

fn call(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> LookupError {
    let what = what.into();
    move |s| LookupError::Call {
        what,
        source: Box::new(s),
    }
}

fn with_ns<T>(msg: T, namespace: &str) -> Request<T> {
    let mut req = Request::new(msg);
    if let Ok(v) = namespace.parse() {
        req.metadata_mut().insert("containerd-namespace", v);
    }
    req
}

/// Asks containerd at `address` (its gRPC socket) which image container `id` of
/// `namespace` was made from.
pub fn lookup(address: &Path, namespace: &str, id: &str) -> Result<ImageIdentity, LookupError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LookupError::Runtime)?;
    rt.block_on(lookup_async(address, namespace, id))
}

async fn lookup_async(
    address: &Path,
    namespace: &str,
    id: &str,
) -> Result<ImageIdentity, LookupError> {
    let client = containerd_client::Client::from_path(address)
        .await
        .map_err(|source| LookupError::Connect {
            address: address.display().to_string(),
            source,
        })?;
    let container = client
        .containers()
        .get(with_ns(GetContainerRequest { id: id.into() }, namespace))
        .await
        .map_err(call(format!("container {id}")))?
        .into_inner()
        .container
        .ok_or_else(|| LookupError::NoImage(id.into()))?;
    if container.image.is_empty() {
        return Err(LookupError::NoImage(id.into()));
    }
    let reference = container.image;
    let target = client
        .images()
        .get(with_ns(
            GetImageRequest {
                name: reference.clone(),
            },
            namespace,
        ))
        .await
        .map_err(call(format!("image {reference}")))?
        .into_inner()
        .image
        .and_then(|i| i.target)
        .ok_or_else(|| LookupError::NoImage(id.into()))?;
    let manifest_err = |source| LookupError::Manifest {
        reference: reference.clone(),
        source,
    };
    let mut digest = target.digest;
    // An index names the platform's manifest; a manifest names the config.
    for _ in 0..2 {
        manifest::check_digest(&reference, "manifest", &digest).map_err(manifest_err)?;
        let bytes = read(&client, namespace, &digest).await?;
        match manifest::parse_document(&reference, &bytes).map_err(manifest_err)? {
            Document::Index(index) => {
                digest = manifest::select(&reference, &index, None)
                    .map_err(manifest_err)?
                    .digest()
                    .to_string();
            }
            Document::Manifest(m) => {
                return Ok(ImageIdentity {
                    reference: reference.clone(),
                    manifest: digest,
                    config: m.config().digest().to_string(),
                });
            }
        }
    }
    Err(manifest_err(manifest::ManifestError::NoPlatform {
        reference: format!("{reference} (an index inside an index)"),
    }))
}

async fn read(
    client: &containerd_client::Client,
    namespace: &str,
    digest: &str,
) -> Result<Vec<u8>, LookupError> {
    let mut stream = client
        .content()
        .read(with_ns(
            ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            },
            namespace,
        ))
        .await
        .map_err(call(format!("content {digest}")))?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(call(format!("content {digest}")))?
    {
        bytes.extend_from_slice(&chunk.data);
        if bytes.len() > MAX_MANIFEST {
            return Err(LookupError::TooLarge {
                digest: digest.into(),
            });
        }
    }
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if actual != digest {
        return Err(LookupError::Digest {
            digest: digest.into(),
        });
    }
    Ok(bytes)
}
