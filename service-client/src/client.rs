//! What a relying party does with the service, for `jek attest --verifier` and `jek result
//! verify`: fetch a pod's signed result and check it against the verifier's JWKS, or check
//! a token on its own against a JWKS file or URL; and what a pod's starter does, the
//! containerd shim or `jek boot`: register the pod, and remove it when it is gone.
//! Blocking calls (each runs its own small runtime), for command-line tools and the shim's
//! threads.

use std::path::Path;
use std::time::Duration;

use jek_attest::ear::BindingError;
use jek_attest::Ear;
use jsonwebtoken::jwk::JwkSet;

use crate::wire::{PodState, RegisterRequest, SignedResult};

/// How a client reaches the verifier: extra trust roots, and its credential (a bearer
/// token, or a client certificate with its key, PEM).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reach<'a> {
    /// Extra trust roots (PEM) for the verifier's certificate.
    pub ca_pem: Option<&'a [u8]>,
    /// A bearer token.
    pub token: Option<&'a str>,
    /// A client certificate chain and its private key, PEM, one after the other.
    pub identity_pem: Option<&'a [u8]>,
}

/// The owned side of [`Reach`]: trust roots and a credential read from their files, kept
/// for as long as a client talks to the verifier (the CLI's `jek boot`, `jek tpm stop` and
/// `jek result`, the containerd shim).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Extra trust roots (PEM) for the verifier's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// A bearer token ([`crate::tls::read_token`]).
    pub token: Option<String>,
    /// A client certificate chain and its key ([`crate::tls::identity_pem`]).
    pub identity_pem: Option<Vec<u8>>,
}

impl Credentials {
    /// How to reach the verifier with these.
    pub fn reach(&self) -> Reach<'_> {
        Reach {
            ca_pem: self.ca_pem.as_deref(),
            token: self.token.as_deref(),
            identity_pem: self.identity_pem.as_deref(),
        }
    }
}

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
    /// The verifier answered with an error.
    #[error("{url}: {status}: {error}")]
    Answer {
        /// What was asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The answer's stable code (`not_found`, `pod_unreachable`, ...).
        code: String,
        /// Its sentence.
        error: String,
    },
    /// The verifier holds no valid result for the pod: its agent stopped answering, or
    /// its last result expired.
    #[error("pod {id} is not attested now: {reason}")]
    Unreachable {
        /// The pod asked for.
        id: String,
        /// The verifier's reason.
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
    /// The token verifies but speaks for another pod.
    #[error("the signed result is not pod {id}'s")]
    Unbound {
        /// The pod asked for.
        id: String,
        /// Why.
        #[source]
        source: BindingError,
    },
}

impl ClientError {
    /// The kind of failure: a result that does not verify is rejected; an unreachable
    /// verifier is the environment; a bad JWKS file is invalid input.
    pub fn class(&self) -> jek_errors::Class {
        match self {
            ClientError::Http { .. }
            | ClientError::Answer { .. }
            | ClientError::Unreachable { .. } => jek_errors::Class::Environment,
            ClientError::Jwks { .. } => jek_errors::Class::Invalid,
            ClientError::Invalid { .. } | ClientError::Unbound { .. } => {
                jek_errors::Class::Rejected
            }
        }
    }
}

fn get(url: &str, reach: Reach<'_>) -> Result<Vec<u8>, ClientError> {
    call(Method::Get, url, None, reach)
}

/// The HTTP methods the clients use.
#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    Post,
    Delete,
}

/// One request with a JSON body (or none); the answer's body, or the error it carried.
fn call(
    method: Method,
    url: &str,
    json: Option<Vec<u8>>,
    reach: Reach<'_>,
) -> Result<Vec<u8>, ClientError> {
    let err = |reason: String| ClientError::Http {
        url: url.to_string(),
        reason,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(e.to_string()))?;
    runtime.block_on(async {
        let http = crate::tls::client_with_identity(
            reach.ca_pem,
            reach.identity_pem,
            Duration::from_secs(10),
        )
        .map_err(err)?;
        let mut request = match method {
            Method::Get => http.get(url),
            Method::Post => http.post(url),
            Method::Delete => http.delete(url),
        };
        if let Some(body) = json {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        if let Some(token) = reach.token {
            request = request.bearer_auth(token);
        }
        let resp = request
            .send()
            .await
            .map_err(|e| err(jek_errors::chain_line(&e)))?;
        let status = resp.status();
        let body = crate::tls::read_body(resp, MAX_DOCUMENT)
            .await
            .map_err(err)?;
        if !status.is_success() {
            let answer =
                serde_json::from_slice::<crate::wire::ErrorBody>(&body).unwrap_or_else(|_| {
                    crate::wire::ErrorBody {
                        code: String::new(),
                        error: String::from_utf8_lossy(&body).into_owned(),
                    }
                });
            return Err(ClientError::Answer {
                url: url.to_string(),
                status: status.as_u16(),
                code: answer.code,
                error: answer.error,
            });
        }
        Ok(body)
    })
}

/// A JWKS from a file, or from an `http(s)://` URL.
pub fn jwks(source: &str, reach: Reach<'_>) -> Result<JwkSet, ClientError> {
    let bytes = if source.starts_with("https://") || source.starts_with("http://") {
        get(source, reach)?
    } else {
        jek_fsio::read_regular(Path::new(source), MAX_DOCUMENT as u64).map_err(|e| {
            ClientError::Jwks {
                source_name: source.to_string(),
                reason: jek_errors::chain_line(&e),
            }
        })?
    };
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Jwks {
        source_name: source.to_string(),
        reason: e.to_string(),
    })
}

/// Checks `token` against the JWKS at `source` (file or URL) now: the EAR it carries,
/// which has not expired and, given `registration`, is bound to that pod.
pub fn verify_token(
    token: &str,
    source: &str,
    reach: Reach<'_>,
    registration: Option<&str>,
) -> Result<Ear, ClientError> {
    let set = jwks(source, reach)?;
    check_token(token, &set, source, crate::now_s(), registration)
}

/// The pure part of [`verify_token`]: `token` under `set` (named `source`) at `now`.
pub fn check_token(
    token: &str,
    set: &JwkSet,
    source: &str,
    now: u64,
    registration: Option<&str>,
) -> Result<Ear, ClientError> {
    let ear = jek_attest::signed::verify(token.trim(), set, now).map_err(|source_err| {
        ClientError::Invalid {
            jwks: source.to_string(),
            source: source_err,
        }
    })?;
    if let Some(id) = registration {
        ear.bound_to(id).map_err(|source| ClientError::Unbound {
            id: id.to_string(),
            source,
        })?;
    }
    Ok(ear)
}

/// Asks the verifier at `base` for pod `id`'s last signed result and checks it against
/// that verifier's JWKS: the token and the EAR it proves, valid now and bound to `id`.
/// A verifier that holds no valid result for the pod (its agent stopped answering, its
/// last result expired) makes [`ClientError::Unreachable`].
pub fn fetch_result(base: &str, id: &str, reach: Reach<'_>) -> Result<(String, Ear), ClientError> {
    let base = base.trim_end_matches('/');
    if !crate::valid_pod_id(id) {
        return Err(ClientError::Http {
            url: base.to_string(),
            reason: format!("{id:?} is not a pod identifier (32 lowercase hex digits)"),
        });
    }
    let url = format!("{base}/v1/pods/{id}/result");
    let body = get(&url, reach).map_err(|e| match e {
        ClientError::Answer { code, error, .. }
            if code == "pod_unreachable" || code == "result_expired" =>
        {
            ClientError::Unreachable {
                id: id.to_string(),
                reason: error,
            }
        }
        other => other,
    })?;
    let result: SignedResult = serde_json::from_slice(&body).map_err(|e| ClientError::Http {
        url: url.clone(),
        reason: format!("not a signed result: {e}"),
    })?;
    // The decoded copy in the answer is not trusted: the EAR is the one the token proves.
    let ear = verify_token(&result.token, &format!("{base}/v1/jwks"), reach, Some(id))?;
    Ok((result.token, ear))
}

/// Registers a pod with the verifier at `base` (`POST /v1/pods`, which needs the admin
/// role): the verifier asks the pod's agent for its identity, proves its AK by credential
/// activation and attests it from then on. Returns the pod as the verifier now reports it.
pub fn register(
    base: &str,
    request: &RegisterRequest,
    reach: Reach<'_>,
) -> Result<PodState, ClientError> {
    let base = base.trim_end_matches('/');
    if !crate::valid_pod_id(&request.pod_id) {
        return Err(ClientError::Http {
            url: base.to_string(),
            reason: format!(
                "{:?} is not a pod identifier (32 lowercase hex digits)",
                request.pod_id
            ),
        });
    }
    let url = format!("{base}/v1/pods");
    let body = serde_json::to_vec(request).map_err(|e| ClientError::Http {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    let answer = call(Method::Post, &url, Some(body), reach)?;
    serde_json::from_slice(&answer).map_err(|e| ClientError::Http {
        url,
        reason: format!("not a registered pod: {e}"),
    })
}

/// Removes registration `id` from the verifier at `base` (`DELETE /v1/pods/{id}`, admin).
/// Returns false when the verifier did not hold it.
pub fn remove(base: &str, id: &str, reach: Reach<'_>) -> Result<bool, ClientError> {
    let base = base.trim_end_matches('/');
    if !crate::valid_pod_id(id) {
        return Err(ClientError::Http {
            url: base.to_string(),
            reason: format!("{id:?} is not a pod identifier (32 lowercase hex digits)"),
        });
    }
    match call(Method::Delete, &format!("{base}/v1/pods/{id}"), None, reach) {
        Ok(_) => Ok(true),
        Err(ClientError::Answer { status: 404, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use jek_attest::ear::{Submod, TrustVector};
    use jek_attest::signed::ResultKey;

    fn token(key: &ResultKey, registration: &str, exp: u64) -> String {
        let sub = Submod {
            status: jek_attest::Status::Affirming,
            trust_vector: TrustVector {
                instance_identity: 2,
                hardware: 2,
                executables: 2,
                configuration: 2,
            },
            policy_id: "jek:policy:sha256:00".into(),
            claims: Default::default(),
            pcrs: Default::default(),
            ak_name: Some("000b".into()),
            registration: Some(registration.into()),
            ek_subject: None,
            bundle: None,
            images: Vec::new(),
            kubernetes: None,
            timings_ms: None,
        };
        let mut ear = Ear::new("web", sub, b"nonce", 100);
        ear.exp = Some(exp);
        key.sign(&ear).unwrap()
    }

    #[test]
    fn a_token_speaks_only_for_its_pod_and_only_until_it_expires() {
        let key = ResultKey::generate();
        let (a, b) = ("a".repeat(32), "b".repeat(32));
        let t = token(&key, &a, 110);
        assert!(check_token(&t, &key.jwks(), "jwks", 105, Some(&a)).is_ok());
        assert!(check_token(&t, &key.jwks(), "jwks", 105, None).is_ok());
        // Pod A's token presented for pod B: refused, naming both.
        let moved = check_token(&t, &key.jwks(), "jwks", 105, Some(&b)).unwrap_err();
        assert_eq!(moved.class(), jek_errors::Class::Rejected);
        assert!(matches!(
            &moved,
            ClientError::Unbound { id, source: BindingError::OtherPod { actual, .. } }
                if id == &b && actual == &a
        ));
        // Kept past its expiry: refused.
        let old = check_token(&t, &key.jwks(), "jwks", 110, Some(&a)).unwrap_err();
        assert!(matches!(
            old,
            ClientError::Invalid {
                source: jek_attest::signed::SignedError::Expired { exp: 110, now: 110 },
                ..
            }
        ));
    }
}
