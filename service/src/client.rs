//! What a relying party does with the service, for `jek attest --verifier` and `jek result
//! verify`: fetch a pod's signed result and check it against the verifier's JWKS, or check
//! a token on its own against a JWKS file or URL. Blocking calls (each runs its own small
//! runtime), for command-line tools.

use std::path::Path;
use std::time::Duration;

use jek_attest::Ear;
use jsonwebtoken::jwk::JwkSet;

use crate::wire::SignedResult;

/// The largest JWKS or result read.
const MAX_DOCUMENT: usize = 1 << 20;

/// Why a result could not be fetched or checked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The verifier (or JWKS URL) cannot be reached, or answered with an error.
    #[error("{url}: {reason}")]
    Http {
        /// What was asked.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// A JWKS file cannot be read or does not parse.
    #[error("JWKS {source_name}: {reason}")]
    Jwks {
        /// The file or URL.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// The token does not verify under the JWKS.
    #[error("the signed result is not valid under {jwks}")]
    Invalid {
        /// The JWKS it was checked against.
        jwks: String,
        /// Why.
        #[source]
        source: jek_attest::signed::SignedError,
    },
}

impl ClientError {
    /// The kind of failure: a result that does not verify is rejected; an unreachable
    /// verifier is the environment; a bad JWKS file is invalid input.
    pub fn class(&self) -> jek_fsio::Class {
        match self {
            ClientError::Http { .. } => jek_fsio::Class::Environment,
            ClientError::Jwks { .. } => jek_fsio::Class::Invalid,
            ClientError::Invalid { .. } => jek_fsio::Class::Rejected,
        }
    }
}

fn get(url: &str, ca_pem: Option<&[u8]>) -> Result<Vec<u8>, ClientError> {
    let err = |reason: String| ClientError::Http {
        url: url.to_string(),
        reason,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(e.to_string()))?;
    runtime.block_on(async {
        let http = crate::http::client(ca_pem, Duration::from_secs(10)).map_err(err)?;
        let resp = http
            .get(url)
            .send()
            .await
            .map_err(|e| err(jek_fsio::chain_line(&e)))?;
        let status = resp.status();
        let body = crate::http::read_body(resp, MAX_DOCUMENT)
            .await
            .map_err(err)?;
        if !status.is_success() {
            let text = serde_json::from_slice::<crate::wire::ErrorBody>(&body)
                .map_or_else(|_| String::from_utf8_lossy(&body).into_owned(), |e| e.error);
            return Err(err(format!("{status}: {text}")));
        }
        Ok(body)
    })
}

/// A JWKS from a file, or from an `http(s)://` URL.
pub fn jwks(source: &str, ca_pem: Option<&[u8]>) -> Result<JwkSet, ClientError> {
    let bytes = if source.starts_with("https://") || source.starts_with("http://") {
        get(source, ca_pem)?
    } else {
        jek_fsio::read_regular(Path::new(source), MAX_DOCUMENT as u64).map_err(|e| {
            ClientError::Jwks {
                source_name: source.to_string(),
                reason: jek_fsio::chain_line(&e),
            }
        })?
    };
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Jwks {
        source_name: source.to_string(),
        reason: e.to_string(),
    })
}

/// Checks `token` against the JWKS at `source` (file or URL): the EAR it carries.
pub fn verify_token(token: &str, source: &str, ca_pem: Option<&[u8]>) -> Result<Ear, ClientError> {
    let set = jwks(source, ca_pem)?;
    jek_attest::signed::verify(token.trim(), &set).map_err(|source_err| ClientError::Invalid {
        jwks: source.to_string(),
        source: source_err,
    })
}

/// Asks the verifier at `base` for pod `id`'s last signed result and checks it against
/// that verifier's JWKS: the token and the EAR it proves.
pub fn fetch_result(
    base: &str,
    id: &str,
    ca_pem: Option<&[u8]>,
) -> Result<(String, Ear), ClientError> {
    let base = base.trim_end_matches('/');
    if !crate::remote::valid_pod_id(id) {
        return Err(ClientError::Http {
            url: base.to_string(),
            reason: format!("{id:?} is not a pod identifier (32 lowercase hex digits)"),
        });
    }
    let url = format!("{base}/v1/pods/{id}/result");
    let body = get(&url, ca_pem)?;
    let result: SignedResult = serde_json::from_slice(&body).map_err(|e| ClientError::Http {
        url: url.clone(),
        reason: format!("not a signed result: {e}"),
    })?;
    // The decoded copy in the answer is not trusted: the EAR is the one the token proves.
    let ear = verify_token(&result.token, &format!("{base}/v1/jwks"), ca_pem)?;
    Ok((result.token, ear))
}
