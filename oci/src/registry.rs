//! The network shell: push and pull jek artifacts with `oci-client`, on a one-thread tokio
//! runtime per call (the CLI is synchronous).

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::artifact::{self, ArtifactError, Attachment, Descriptor};

/// Why a push or pull failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error("{reference:?} is not an OCI reference (registry/repository[:tag|@digest])")]
    Reference {
        /// The text.
        reference: String,
        /// Cause.
        #[source]
        source: oci_client::ParseError,
    },
    /// The async runtime could not start.
    #[error("cannot start the I/O runtime")]
    Runtime(#[source] std::io::Error),
    /// A registry request failed.
    #[error("{operation} {reference}")]
    Request {
        /// What was being done.
        operation: &'static str,
        /// The reference.
        reference: String,
        /// Cause.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// The manifest at the reference is not a jek bundle (or is malformed).
    #[error("{reference} is not a jek bundle artifact")]
    Artifact {
        /// The reference.
        reference: String,
        /// Cause.
        #[source]
        source: ArtifactError,
    },
    /// A blob's bytes do not match the digest its manifest gives.
    #[error("{what} from {reference}: the registry served bytes with digest {actual}, the manifest says {expected}")]
    BlobDigest {
        /// Which blob.
        what: &'static str,
        /// The reference.
        reference: String,
        /// The manifest's digest.
        expected: String,
        /// The served bytes' digest.
        actual: String,
    },
}

impl RegistryError {
    /// The kind of failure: a bad reference is invalid input; an artifact that is not a
    /// bundle or bytes that do not match their digest are rejected; a failed request or
    /// runtime is the environment's.
    pub fn class(&self) -> jek_fsio::Class {
        use jek_fsio::Class;
        match self {
            RegistryError::Reference { .. } => Class::Invalid,
            RegistryError::Runtime(_) | RegistryError::Request { .. } => Class::Environment,
            RegistryError::Artifact { .. } | RegistryError::BlobDigest { .. } => Class::Rejected,
        }
    }
}

/// A registry client.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    runtime: tokio::runtime::Runtime,
}

/// What a push stored (`jek push --json` prints it).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pushed {
    /// The reference pushed to.
    pub reference: String,
    /// Digest of the bundle manifest.
    pub manifest_digest: String,
    /// Digest of the bundle layer (the bundle file's SHA-256).
    pub bundle_digest: String,
    /// Each attachment's kind and manifest digest.
    pub attachments: Vec<Attached>,
}

/// One attachment pushed as a referrer.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attached {
    /// Its kind.
    pub kind: artifact::AttachmentKind,
    /// Its manifest's digest.
    pub manifest_digest: String,
}

/// What a pull fetched: bytes whose digests match their manifests, not yet verified.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Digest of the bundle manifest.
    pub manifest_digest: String,
    /// The bundle file.
    pub bundle: Vec<u8>,
    /// Attachments found as referrers, in index order.
    pub attachments: Vec<Attachment>,
}

/// The error mapper for a failed request of `operation` on `reference`.
fn request_error<'a>(
    operation: &'static str,
    reference: &'a str,
) -> impl FnOnce(oci_client::errors::OciDistributionError) -> RegistryError + 'a {
    move |source| RegistryError::Request {
        operation,
        reference: reference.to_string(),
        source,
    }
}

fn parse_ref(reference: &str) -> Result<Reference, RegistryError> {
    reference
        .parse()
        .map_err(|source| RegistryError::Reference {
            reference: reference.into(),
            source,
        })
}

impl Registry {
    /// A client. `plain_http` talks HTTP instead of HTTPS (a registry on localhost);
    /// `basic_auth` is a user name and password, else access is anonymous.
    pub fn new(
        plain_http: bool,
        basic_auth: Option<(String, String)>,
    ) -> Result<Self, RegistryError> {
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // One PUT per blob: chunked uploads of a 33 MB bundle cost 10x the time here.
            use_monolithic_push: true,
            ..Default::default()
        };
        let auth = match basic_auth {
            Some((u, p)) => RegistryAuth::Basic(u, p),
            None => RegistryAuth::Anonymous,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RegistryError::Runtime)?;
        Ok(Registry {
            client: Client::new(config),
            auth,
            runtime,
        })
    }

    /// Pushes `bundle` to `reference` (a tag), then each attachment as a referrer of it.
    pub fn push(
        &self,
        bundle: &[u8],
        title: &str,
        reference: &str,
        attachments: &[Attachment],
    ) -> Result<Pushed, RegistryError> {
        let image = parse_ref(reference)?;
        self.runtime.block_on(async {
            let req = |operation| request_error(operation, reference);
            self.client
                .store_auth_if_needed(image.resolve_registry(), &self.auth)
                .await;
            self.client
                .auth(&image, &self.auth, oci_client::RegistryOperation::Push)
                .await
                .map_err(req("authenticate to"))?;
            let empty = artifact::digest(artifact::EMPTY_CONFIG);
            self.client
                .push_blob(&image, artifact::EMPTY_CONFIG.to_vec(), &empty)
                .await
                .map_err(req("push the empty config to"))?;
            let bundle_digest = artifact::digest(bundle);
            self.client
                .push_blob(&image, bundle.to_vec(), &bundle_digest)
                .await
                .map_err(req("push the bundle blob to"))?;
            let manifest = artifact::bundle_manifest(bundle, title);
            let subject = Descriptor::of(artifact::MANIFEST_MEDIA_TYPE, &manifest);
            self.client
                .push_manifest_raw(&image, manifest, manifest_content_type())
                .await
                .map_err(req("push the bundle manifest to"))?;
            let mut pushed = Vec::new();
            for att in attachments {
                let digest = self
                    .push_attachment(&image, att, &subject)
                    .await
                    .map_err(req("attach a referrer to"))?;
                pushed.push(Attached {
                    kind: att.kind,
                    manifest_digest: digest,
                });
            }
            Ok(Pushed {
                reference: reference.to_string(),
                manifest_digest: subject.digest,
                bundle_digest,
                attachments: pushed,
            })
        })
    }

    async fn push_attachment(
        &self,
        image: &Reference,
        att: &Attachment,
        subject: &Descriptor,
    ) -> Result<String, oci_client::errors::OciDistributionError> {
        let layer_digest = artifact::digest(&att.data);
        self.client
            .push_blob(image, att.data.clone(), &layer_digest)
            .await?;
        let manifest = artifact::attachment_manifest(att, subject);
        let desc = Descriptor::of(artifact::MANIFEST_MEDIA_TYPE, &manifest);
        let by_digest = image.clone_with_digest(desc.digest.clone());
        self.client
            .push_manifest_raw(&by_digest, manifest, manifest_content_type())
            .await?;
        // The referrers tag schema, for registries without the referrers API (harmless on
        // those that have it: clients there ask the API first).
        let tag_ref = Reference::with_tag(
            image.registry().to_string(),
            image.repository().to_string(),
            artifact::referrers_tag(&subject.digest),
        );
        let existing = self
            .client
            .pull_manifest_raw(&tag_ref, &self.auth, &[artifact::INDEX_MEDIA_TYPE])
            .await
            .ok()
            .map(|(bytes, _)| bytes.to_vec());
        let index = artifact::referrers_index(existing.as_deref(), &desc, att.kind.media_type())
            .map_err(|e| {
                oci_client::errors::OciDistributionError::GenericError(Some(e.to_string()))
            })?;
        self.client
            .push_manifest_raw(
                &tag_ref,
                index,
                http::HeaderValue::from_static(artifact::INDEX_MEDIA_TYPE),
            )
            .await?;
        Ok(desc.digest)
    }

    /// Pulls the bundle at `reference` and its attachments. Every blob is checked against
    /// its manifest's digest; nothing is verified beyond that.
    pub fn pull(&self, reference: &str) -> Result<Pulled, RegistryError> {
        let image = parse_ref(reference)?;
        self.runtime.block_on(async {
            let req = |operation| request_error(operation, reference);
            // The registry's digest header is not trusted: the digest is recomputed below.
            let (manifest, _) = self
                .client
                .pull_manifest_raw(&image, &self.auth, &[artifact::MANIFEST_MEDIA_TYPE])
                .await
                .map_err(req("pull the manifest of"))?;
            let artifact_err = |source| RegistryError::Artifact {
                reference: reference.to_string(),
                source,
            };
            if manifest.len() > artifact::MAX_MANIFEST_SIZE {
                return Err(artifact_err(ArtifactError::TooLarge {
                    what: "the manifest",
                    size: u64::try_from(manifest.len()).unwrap_or(u64::MAX),
                    limit: u64::try_from(artifact::MAX_MANIFEST_SIZE).unwrap_or(u64::MAX),
                }));
            }
            let manifest_digest_actual = artifact::digest(&manifest);
            if image.digest().is_some_and(|d| d != manifest_digest_actual) {
                return Err(RegistryError::BlobDigest {
                    what: "the manifest",
                    reference: reference.to_string(),
                    expected: image.digest().unwrap_or_default().to_string(),
                    actual: manifest_digest_actual,
                });
            }
            let layer = artifact::parse_bundle_manifest(&manifest).map_err(artifact_err)?;
            let bundle = self
                .fetch_blob(&image, &layer, "the bundle blob", reference)
                .await?;

            let by_digest = image.clone_with_digest(manifest_digest_actual.clone());
            let index = self
                .client
                .pull_referrers(&by_digest, None)
                .await
                .map_err(req("list the referrers of"))?;
            let mut attachments = Vec::new();
            for entry in index.manifests {
                let r = image.clone_with_digest(entry.digest.clone());
                let (bytes, _) = self
                    .client
                    .pull_manifest_raw(&r, &self.auth, &[artifact::MANIFEST_MEDIA_TYPE])
                    .await
                    .map_err(req("pull a referrer of"))?;
                if artifact::digest(&bytes) != entry.digest {
                    return Err(RegistryError::BlobDigest {
                        what: "a referrer manifest",
                        reference: reference.to_string(),
                        expected: entry.digest,
                        actual: artifact::digest(&bytes),
                    });
                }
                let Some((kind, layer)) =
                    artifact::parse_attachment_manifest(&bytes, &manifest_digest_actual)
                        .map_err(artifact_err)?
                else {
                    continue;
                };
                let data = self
                    .fetch_blob(&image, &layer, "an attachment blob", reference)
                    .await?;
                attachments.push(Attachment { kind, data });
            }
            Ok(Pulled {
                manifest_digest: manifest_digest_actual,
                bundle,
                attachments,
            })
        })
    }

    async fn fetch_blob(
        &self,
        image: &Reference,
        layer: &Descriptor,
        what: &'static str,
        reference: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let desc = oci_client::manifest::OciDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: i64::try_from(layer.size).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let mut out = Vec::new();
        let result = self.client.pull_blob(image, &desc, &mut out).await;
        // Check the bytes ourselves, whatever the client did: a registry serving other
        // bytes than the manifest names is the one failure a pull must always catch. Any
        // other failed request (no bytes, a dropped connection) stays a request error.
        let actual = artifact::digest(&out);
        match result {
            Ok(()) if actual == layer.digest => {}
            Ok(()) | Err(oci_client::errors::OciDistributionError::DigestError(_)) => {
                return Err(RegistryError::BlobDigest {
                    what,
                    reference: reference.to_string(),
                    expected: layer.digest.clone(),
                    actual,
                })
            }
            Err(source) => return Err(request_error("pull a blob of", reference)(source)),
        }
        Ok(out)
    }
}

fn manifest_content_type() -> http::HeaderValue {
    http::HeaderValue::from_static(artifact::MANIFEST_MEDIA_TYPE)
}
