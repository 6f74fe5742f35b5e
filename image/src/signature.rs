//! Cosign image signatures, checked offline: cosign's signature tag layout
//! (`sha256-<manifest hex>.sig` in the image's repository) holding simple-signing payloads,
//! each signed (base64 DER ECDSA P-256, annotation `dev.cosignproject.cosign/signature`)
//! under the key the image policy names, verified with jek-verifier's Sigstore code. The
//! payload must name the image's manifest digest and be of cosign's type, so a signature
//! of another image, or a payload of another kind, never counts.

use jek_verifier::sigstore::SigstorePolicy;

use crate::manifest::{self, Document, ManifestError};
use crate::source::{Source, SourceError};

use jek_oci::cosign::Payload;
pub use jek_oci::cosign::{
    payload, signature_tag, PAYLOAD_MEDIA_TYPE, PAYLOAD_TYPE, SIGNATURE_ANNOTATION,
};

/// The most signature layers looked at.
pub const MAX_SIGNATURES: usize = 16;
/// The largest payload read.
pub const MAX_PAYLOAD: u64 = 64 << 10;

/// Why an image's signature is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// No signature manifest at the tag.
    #[error("the policy requires a cosign signature, and {tag} holds none")]
    Missing {
        /// The tag looked at.
        tag: String,
    },
    /// Fetching failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The signature manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Signatures were found, none verified and named this image.
    #[error("none of the {count} cosign signatures at {tag} is valid for this image under the policy's key: {reasons}")]
    Invalid {
        /// The tag.
        tag: String,
        /// How many payloads were tried.
        count: usize,
        /// Why each failed.
        reasons: String,
    },
}

/// Checks one payload and its base64 signature: the signature verifies under `key`, the
/// payload is a cosign image signature of `digest`.
pub fn check_payload(
    key: &SigstorePolicy,
    digest: &str,
    payload: &[u8],
    signature: &str,
) -> Result<(), String> {
    key.check(payload, signature.as_bytes())
        .map_err(|e| e.to_string())?;
    let p: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("the payload is not simple-signing JSON: {e}"))?;
    if p.critical.kind != PAYLOAD_TYPE {
        return Err(format!(
            "the payload's type is {:?}, not {PAYLOAD_TYPE:?}",
            p.critical.kind
        ));
    }
    if p.critical.image.docker_manifest_digest != digest {
        return Err(format!(
            "the payload signs {}, not this image ({digest})",
            p.critical.image.docker_manifest_digest
        ));
    }
    Ok(())
}

/// Requires a valid signature of manifest `digest` under `key` at cosign's tag in `source`
/// (`text` names the image in errors).
pub fn require(
    text: &str,
    source: &Source<'_>,
    digest: &str,
    key: &SigstorePolicy,
) -> Result<(), SignatureError> {
    let tag = signature_tag(digest);
    let bytes = match source.tagged(&tag) {
        Ok(Some(b)) => b,
        Ok(None) => return Err(SignatureError::Missing { tag }),
        Err(e) => return Err(e.into()),
    };
    let Document::Manifest(m) = manifest::parse_document(text, &bytes)? else {
        return Err(SignatureError::Missing { tag });
    };
    let mut reasons = Vec::new();
    for layer in m
        .layers()
        .iter()
        .filter(|l| l.media_type().to_string() == PAYLOAD_MEDIA_TYPE)
        .take(MAX_SIGNATURES)
    {
        let layer_digest = layer.digest().to_string();
        manifest::check_digest(text, "a signature layer", &layer_digest)?;
        let Some(sig) = layer
            .annotations()
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        else {
            reasons.push(format!(
                "{layer_digest}: no {SIGNATURE_ANNOTATION} annotation"
            ));
            continue;
        };
        if layer.size() > MAX_PAYLOAD {
            reasons.push(format!(
                "{layer_digest}: a payload of {} bytes",
                layer.size()
            ));
            continue;
        }
        let payload = source.blob(
            &layer_digest,
            layer.size(),
            PAYLOAD_MEDIA_TYPE,
            "a signature payload",
        )?;
        match check_payload(key, digest, &payload, sig) {
            Ok(()) => return Ok(()),
            Err(r) => reasons.push(format!("{layer_digest}: {r}")),
        }
    }
    if reasons.is_empty() {
        return Err(SignatureError::Missing { tag });
    }
    Err(SignatureError::Invalid {
        tag,
        count: reasons.len(),
        reasons: reasons.join("; "),
    })
}
