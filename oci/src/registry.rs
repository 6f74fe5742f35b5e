//! The network shell: push and pull jek artifacts with `oci-client`, on a one-thread tokio
//! runtime per call (the CLI is synchronous).
//!
//! Everything a pull reads from the registry is bounded by what jek accepts, not by what
//! the registry declares: manifests and the referrers index are fetched here (oci-client
//! buffers whole bodies) with the body streamed and the read stopped at
//! [`artifact::MAX_MANIFEST_SIZE`]; blobs are streamed into a writer that refuses a byte
//! past the size the manifest declared (itself capped). A registry that declares 100 bytes
//! and serves gigabytes costs one cap's worth of memory.

use std::pin::Pin;
use std::task::{Context, Poll};

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
    /// A manifest request failed at the HTTP level.
    #[error("{operation} {reference}")]
    Http {
        /// What was being done.
        operation: &'static str,
        /// The reference.
        reference: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered a manifest request with an error status.
    #[error("{operation} {reference}: the registry answered HTTP {status}")]
    Status {
        /// What was being done.
        operation: &'static str,
        /// The reference.
        reference: String,
        /// The status code.
        status: u16,
    },
    /// HTTPS was tried and the registry answered in plain HTTP.
    #[error("{reference}: the registry answered in plain HTTP, not HTTPS (for a registry on localhost, pass --plain-http)")]
    PlainHttp {
        /// The reference.
        reference: String,
    },
    /// The cosign key could not sign the simple-signing payload.
    #[error("cannot sign the cosign payload: {reason}")]
    CosignSign {
        /// Why.
        reason: String,
    },
    /// The registry has no manifest at the reference (HTTP 404: no such tag or digest).
    #[error("{reference} not found: the registry has no such tag or digest")]
    NotFound {
        /// The reference.
        reference: String,
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
    pub fn class(&self) -> jek_errors::Class {
        use jek_errors::Class;
        match self {
            RegistryError::Reference { .. } => Class::Invalid,
            RegistryError::Runtime(_)
            | RegistryError::Request { .. }
            | RegistryError::Http { .. }
            | RegistryError::PlainHttp { .. }
            | RegistryError::Status { .. }
            | RegistryError::CosignSign { .. } => Class::Environment,
            RegistryError::Artifact { .. }
            | RegistryError::BlobDigest { .. }
            | RegistryError::NotFound { .. } => Class::Rejected,
        }
    }
}

/// A registry client.
pub struct Registry {
    client: Client,
    http: reqwest::Client,
    plain_http: bool,
    credentials: crate::auth::Credentials,
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
    /// The cosign signature manifest pushed at `sha256-<hex>.sig`, if one was signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosign_signature: Option<Attached>,
}

/// Signs a simple-signing payload for a cosign signature: the payload's bytes in, the
/// base64 signature (or why not) out.
pub type CosignSigner<'a> = &'a dyn Fn(&[u8]) -> Result<String, String>;

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

/// Why a cosign signature could not be pushed.
enum CosignPushError {
    Sign(String),
    Push(oci_client::errors::OciDistributionError),
}

impl From<oci_client::errors::OciDistributionError> for CosignPushError {
    fn from(e: oci_client::errors::OciDistributionError) -> Self {
        CosignPushError::Push(e)
    }
}

/// The error mapper for a failed request of `operation` on `reference`.
fn request_error<'a>(
    operation: &'static str,
    reference: &'a str,
) -> impl FnOnce(oci_client::errors::OciDistributionError) -> RegistryError + 'a {
    move |source| {
        // rustls's words for a TLS client that got a plain-HTTP answer.
        if jek_errors::chain_line(&source).contains("InvalidContentType") {
            return RegistryError::PlainHttp {
                reference: reference.to_string(),
            };
        }
        RegistryError::Request {
            operation,
            reference: reference.to_string(),
            source,
        }
    }
}

/// The repository `repository` at `registry`, as the client addresses it.
fn repo_ref(registry: &str, repository: &str) -> Reference {
    Reference::with_tag(
        registry.to_string(),
        repository.to_string(),
        "latest".to_string(),
    )
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
    /// A client with these options (protocol, credentials, extra trust roots).
    pub fn new(options: &crate::auth::ClientOptions) -> Result<Self, RegistryError> {
        let plain_http = options.plain_http;
        let roots = match &options.ca_pem {
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| RegistryError::Runtime(std::io::Error::other(e)))?,
            None => Vec::new(),
        };
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // One PUT per blob: chunked uploads of a 33 MB bundle cost 10x the time here.
            use_monolithic_push: true,
            extra_root_certificates: options
                .ca_pem
                .iter()
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            ..Default::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RegistryError::Runtime)?;
        let http = reqwest::Client::builder()
            .tls_certs_merge(roots)
            .redirect(reqwest::redirect::Policy::limited(4))
            .build()
            .map_err(|e| RegistryError::Runtime(std::io::Error::other(e)))?;
        Ok(Registry {
            client: Client::new(config),
            http,
            plain_http,
            credentials: options.credentials.clone(),
            runtime,
        })
    }

    /// The credentials for `image`'s repository (see [`crate::auth`]).
    fn auth_for(&self, image: &Reference) -> RegistryAuth {
        match self
            .credentials
            .lookup(image.registry(), image.repository())
        {
            Some(b) => RegistryAuth::Basic(b.username.clone(), b.password.to_string()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Pushes `bundle` to `reference` (a tag), then each attachment as a referrer of it,
    /// then, with `cosign`, a cosign signature of the bundle manifest in cosign's tag
    /// layout ([`crate::cosign`]), which `cosign verify --key` checks.
    pub fn push(
        &self,
        bundle: &[u8],
        title: &str,
        reference: &str,
        attachments: &[Attachment],
        cosign: Option<CosignSigner<'_>>,
    ) -> Result<Pushed, RegistryError> {
        let image = parse_ref(reference)?;
        self.runtime.block_on(async {
            let req = |operation| request_error(operation, reference);
            self.client
                .store_auth_if_needed(image.resolve_registry(), &self.auth_for(&image))
                .await;
            self.client
                .auth(
                    &image,
                    &self.auth_for(&image),
                    oci_client::RegistryOperation::Push,
                )
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
            tracing::info!(reference, digest = %subject.digest, "pushed the bundle manifest");
            let mut pushed = Vec::new();
            for att in attachments {
                tracing::info!(kind = att.kind.name(), "attaching a referrer");
                let digest = self
                    .push_attachment(&image, att, &subject)
                    .await
                    .map_err(req("attach a referrer to"))?;
                pushed.push(Attached {
                    kind: att.kind,
                    manifest_digest: digest,
                });
            }
            let cosign_signature = match cosign {
                Some(sign) => Some(
                    self.push_cosign_signature(&image, &subject.digest, sign)
                        .await
                        .map_err(|e| match e {
                            CosignPushError::Sign(reason) => RegistryError::CosignSign { reason },
                            CosignPushError::Push(e) => req("push the cosign signature to")(e),
                        })?,
                ),
                None => None,
            };
            Ok(Pushed {
                reference: reference.to_string(),
                manifest_digest: subject.digest,
                bundle_digest,
                attachments: pushed,
                cosign_signature,
            })
        })
    }

    async fn push_cosign_signature(
        &self,
        image: &Reference,
        digest: &str,
        sign: CosignSigner<'_>,
    ) -> Result<Attached, CosignPushError> {
        let repository = format!("{}/{}", image.registry(), image.repository());
        let payload = crate::cosign::payload(&repository, digest);
        let signature = sign(&payload).map_err(CosignPushError::Sign)?;
        let config = crate::cosign::config(&payload);
        for blob in [&config, &payload] {
            self.client
                .push_blob(image, blob.clone(), &artifact::digest(blob))
                .await?;
        }
        let manifest = crate::cosign::signature_manifest(&config, &payload, &signature);
        let manifest_digest = artifact::digest(&manifest);
        let tag = Reference::with_tag(
            image.registry().to_string(),
            image.repository().to_string(),
            crate::cosign::signature_tag(digest),
        );
        self.client
            .push_manifest_raw(&tag, manifest, manifest_content_type())
            .await?;
        Ok(Attached {
            kind: artifact::AttachmentKind::CosignSignature,
            manifest_digest,
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
            .pull_manifest_raw(
                &tag_ref,
                &self.auth_for(image),
                &[artifact::INDEX_MEDIA_TYPE],
            )
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
            // Authenticate once for the repository; manifests are then fetched with a
            // bounded read (oci-client would buffer whole bodies).
            let token = self
                .client
                .auth(
                    &image,
                    &self.auth_for(&image),
                    oci_client::RegistryOperation::Pull,
                )
                .await
                .map_err(req("authenticate to"))?;
            // The registry's digest header is not trusted: the digest is recomputed below.
            let tag_or_digest = image
                .digest()
                .or(image.tag())
                .unwrap_or("latest")
                .to_string();
            let manifest = self
                .get_manifest(
                    &image,
                    &tag_or_digest,
                    artifact::MANIFEST_MEDIA_TYPE,
                    token.as_deref(),
                    "pull the manifest of",
                )
                .await?
                .ok_or_else(|| RegistryError::NotFound {
                    reference: reference.to_string(),
                })?;
            let artifact_err = |source| RegistryError::Artifact {
                reference: reference.to_string(),
                source,
            };
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

            let index = self
                .referrers(&image, &manifest_digest_actual, token.as_deref(), reference)
                .await?;
            let mut attachments = Vec::new();
            for entry in index {
                let bytes = self
                    .get_manifest(
                        &image,
                        &entry,
                        artifact::MANIFEST_MEDIA_TYPE,
                        token.as_deref(),
                        "pull a referrer of",
                    )
                    .await?
                    .ok_or_else(|| RegistryError::Status {
                        operation: "pull a referrer of",
                        reference: reference.to_string(),
                        status: 404,
                    })?;
                if artifact::digest(&bytes) != entry {
                    return Err(RegistryError::BlobDigest {
                        what: "a referrer manifest",
                        reference: reference.to_string(),
                        expected: entry,
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
        let mut out = Bounded::new(layer.size);
        let result = self.client.pull_blob(image, &desc, &mut out).await;
        if out.overflowed {
            return Err(RegistryError::Artifact {
                reference: reference.to_string(),
                source: ArtifactError::Oversized {
                    what,
                    declared: layer.size,
                },
            });
        }
        let out = out.bytes;
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

impl Registry {
    /// GETs the manifest or index `tag_or_digest` of `repository` at `registry` (any OCI
    /// or Docker image media type in `accept`), with the bounded read every manifest gets.
    /// `None`: the registry has no such manifest. The caller checks the digest. (The caller
    /// has parsed the reference: no second parse, whose regular expression costs 40 ms.)
    pub fn image_manifest(
        &self,
        registry: &str,
        repository: &str,
        tag_or_digest: &str,
        accept: &[&str],
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let image = repo_ref(registry, repository);
        let reference = &format!("{registry}/{repository}");
        self.runtime.block_on(async {
            let token = self
                .client
                .auth(
                    &image,
                    &self.auth_for(&image),
                    oci_client::RegistryOperation::Pull,
                )
                .await
                .map_err(request_error("authenticate to", reference))?;
            self.get_manifest(
                &image,
                tag_or_digest,
                &accept.join(", "),
                token.as_deref(),
                "pull an image manifest of",
            )
            .await
        })
    }

    /// Fetches blob `digest` of `repository` at `registry`: at most `size` bytes (the size
    /// its descriptor declares), checked against the digest.
    pub fn image_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &str,
        size: u64,
        media_type: &str,
        what: &'static str,
    ) -> Result<Vec<u8>, RegistryError> {
        let image = repo_ref(registry, repository);
        let reference = &format!("{registry}/{repository}");
        let desc = Descriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
        };
        self.runtime.block_on(async {
            self.client
                .auth(
                    &image,
                    &self.auth_for(&image),
                    oci_client::RegistryOperation::Pull,
                )
                .await
                .map_err(request_error("authenticate to", reference))?;
            self.fetch_blob(&image, &desc, what, reference).await
        })
    }
}

impl Registry {
    /// GETs the manifest (or index) `tag_or_digest` of `image`'s repository, accepting
    /// `accept` (see [`Registry::get_bounded`]).
    async fn get_manifest(
        &self,
        image: &Reference,
        tag_or_digest: &str,
        accept: &str,
        token: Option<&str>,
        operation: &'static str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let url = self.v2_url(image, "manifests", tag_or_digest);
        self.get_bounded(&url, accept, token, operation, image)
            .await
    }

    fn v2_url(&self, image: &Reference, kind: &str, tail: &str) -> String {
        format!(
            "{}://{}/v2/{}/{kind}/{tail}",
            if self.plain_http { "http" } else { "https" },
            image.resolve_registry(),
            image.repository(),
        )
    }

    /// A GET with the body streamed and the read stopped at
    /// [`artifact::MAX_MANIFEST_SIZE`], whatever the registry declares. `None`: HTTP 404.
    async fn get_bounded(
        &self,
        url: &str,
        accept: &str,
        token: Option<&str>,
        operation: &'static str,
        image: &Reference,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let reference = || format!("{}/{}", image.registry(), image.repository());
        let http_err = |source| RegistryError::Http {
            operation,
            reference: reference(),
            source,
        };
        let mut request = self.http.get(url).header(http::header::ACCEPT, accept);
        request = match (token, self.auth_for(image)) {
            (Some(t), _) => request.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => request.basic_auth(u, Some(p)),
            (None, _) => request,
        };
        let mut response = request.send().await.map_err(http_err)?;
        let status = response.status();
        if status == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                operation,
                reference: reference(),
                status: status.as_u16(),
            });
        }
        let limit = u64::try_from(artifact::MAX_MANIFEST_SIZE).unwrap_or(u64::MAX);
        let too_large = |size: u64| RegistryError::Artifact {
            reference: reference(),
            source: ArtifactError::TooLarge {
                what: "a manifest",
                size,
                limit,
            },
        };
        if let Some(declared) = response.content_length().filter(|&n| n > limit) {
            return Err(too_large(declared));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_err)? {
            let total = u64::try_from(body.len().saturating_add(chunk.len())).unwrap_or(u64::MAX);
            if total > limit {
                return Err(too_large(total));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }

    /// The referrers of `subject`: the referrers API, or (HTTP 404, a registry without it)
    /// the referrers tag schema; no index at all is no referrers. Each entry's digest is
    /// checked when its manifest is fetched.
    async fn referrers(
        &self,
        image: &Reference,
        subject: &str,
        token: Option<&str>,
        reference: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let url = self.v2_url(image, "referrers", subject);
        let operation = "list the referrers of";
        let via_api = self
            .get_bounded(&url, artifact::INDEX_MEDIA_TYPE, token, operation, image)
            .await?;
        let bytes = match via_api {
            Some(b) => Some(b),
            None => {
                self.get_manifest(
                    image,
                    &artifact::referrers_tag(subject),
                    artifact::INDEX_MEDIA_TYPE,
                    token,
                    operation,
                )
                .await?
            }
        };
        match bytes {
            None => Ok(Vec::new()),
            Some(b) => artifact::parse_index(&b).map_err(|source| RegistryError::Artifact {
                reference: reference.to_string(),
                source,
            }),
        }
    }
}

/// A blob sink that holds at most the size the manifest declared: the write past it fails
/// (stopping the download) and marks the pull as oversized.
struct Bounded {
    bytes: Vec<u8>,
    limit: u64,
    overflowed: bool,
}

impl Bounded {
    fn new(limit: u64) -> Self {
        Bounded {
            bytes: Vec::new(),
            limit,
            overflowed: false,
        }
    }
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let total = u64::try_from(self.bytes.len().saturating_add(buf.len())).unwrap_or(u64::MAX);
        if total > self.limit {
            self.overflowed = true;
            return Poll::Ready(Err(std::io::Error::other(
                "the registry served more bytes than the manifest declares",
            )));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn manifest_content_type() -> http::HeaderValue {
    http::HeaderValue::from_static(artifact::MANIFEST_MEDIA_TYPE)
}

/// A pull that the policy accepted: the verified bundle and the referrer that approved
/// it (a Sigstore bundle or cosign signature), if the policy has a detached rule.
#[derive(Debug)]
pub struct VerifiedPull {
    /// The manifest digest pulled.
    pub manifest_digest: String,
    /// The bundle, verified.
    pub bundle: jek_verifier::Verified<jek_verifier::Bundle>,
    /// The approving attachment, to keep beside the bundle file.
    pub approval: Option<Attachment>,
}

/// What `jek pull --json` prints.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullSummary<'a> {
    /// Always true (a rejection is an error).
    pub accepted: bool,
    /// Where the bundle was written.
    pub out: &'a std::path::Path,
    /// The manifest digest pulled.
    pub manifest_digest: &'a str,
    /// The bundle's name.
    pub name: &'a str,
    /// Its version.
    pub version: &'a str,
    /// Its security version.
    pub security_version: u64,
    /// The keys whose signatures counted.
    pub signers: &'a [jek_verifier::KeyId],
    /// The detached rule's approver, if any.
    pub approved_by: Option<&'a str>,
}

impl VerifiedPull {
    /// The JSON summary, for a bundle written to `out`.
    pub fn summary<'a>(&'a self, out: &'a std::path::Path) -> PullSummary<'a> {
        let m = self.bundle.manifest();
        PullSummary {
            accepted: true,
            out,
            manifest_digest: &self.manifest_digest,
            name: &m.name,
            version: &m.version,
            security_version: m.security_version,
            signers: self.bundle.signers(),
            approved_by: self.bundle.approval(),
        }
    }
}

/// Why a verified pull failed: the registry, or the policy.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Fetching failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The policy rejected what was fetched.
    #[error("{reference} rejected")]
    Rejected {
        /// The reference pulled.
        reference: String,
        /// Why.
        #[source]
        source: jek_verifier::VerifyError,
    },
}

impl Registry {
    /// Pulls `reference` and verifies it under `policy` at `now`, with every attached
    /// signature as a candidate for the policy's detached rule (the verifier takes the
    /// first it accepts, or reports the first one's failure). Nothing is written.
    pub fn pull_verified(
        &self,
        reference: &str,
        policy: &jek_verifier::Policy,
        now: jek_verifier::UnixTime,
    ) -> Result<VerifiedPull, PullError> {
        let pulled = self.pull(reference)?;
        tracing::info!(
            reference,
            digest = %pulled.manifest_digest,
            attachments = pulled.attachments.len(),
            "pulled; verifying under the policy"
        );
        let mut signatures: Vec<Attachment> = pulled
            .attachments
            .into_iter()
            .filter(|a| a.kind.is_signature())
            .collect();
        let origin = format!("{reference}@{} (referrer)", pulled.manifest_digest);
        let candidates: Vec<jek_verifier::DetachedSignature<'_>> = signatures
            .iter()
            .map(|a| jek_verifier::DetachedSignature {
                origin: &origin,
                bytes: &a.data,
            })
            .collect();
        let bundle = jek_verifier::verify_bundle(pulled.bundle, policy, &candidates, now).map_err(
            |source| PullError::Rejected {
                reference: reference.to_string(),
                source,
            },
        )?;
        let approval = bundle
            .approving_signature()
            .filter(|i| *i < signatures.len())
            .map(|i| signatures.swap_remove(i));
        Ok(VerifiedPull {
            manifest_digest: pulled.manifest_digest,
            bundle,
            approval,
        })
    }
}
