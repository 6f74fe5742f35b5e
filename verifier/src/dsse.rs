//! The DSSE signature envelope (Dead Simple Signing Envelope, v1.0), JSON encoding.
//!
//! A signature is computed over `PAE(payloadType, payload)`:
//! `"DSSEv1" SP LEN(type) SP type SP LEN(payload) SP payload`, where `LEN` is the ASCII
//! decimal byte length. The payload is carried base64-encoded in the JSON and is verified
//! as the exact decoded bytes: nothing is re-serialized before checking.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The payload type of an in-toto Statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The most signatures an envelope may carry.
pub const MAX_SIGNATURES: usize = 32;
/// The largest decoded payload accepted.
pub const MAX_PAYLOAD_LEN: usize = 256 * 1024;

/// Computes the DSSE v1 pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not valid envelope JSON (or unknown or duplicate fields).
    #[error("envelope is not valid DSSE JSON")]
    Json(#[source] serde_json::Error),
    /// A base64 field does not decode.
    #[error("envelope field {field} is not valid base64")]
    Base64 {
        /// Which field (`payload` or `signatures[i].sig`).
        field: String,
        /// The decoding error.
        #[source]
        source: base64::DecodeError,
    },
    /// More signatures than [`MAX_SIGNATURES`].
    #[error("envelope carries {count} signatures, more than the maximum of {MAX_SIGNATURES}")]
    TooManySignatures {
        /// How many there are.
        count: usize,
    },
    /// The payload is larger than [`MAX_PAYLOAD_LEN`].
    #[error("envelope payload is {len} bytes, more than the maximum of {MAX_PAYLOAD_LEN}")]
    PayloadTooLarge {
        /// Its length.
        len: usize,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeJson {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    signatures: Vec<SignatureJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    keyid: String,
    sig: String,
}

/// One signature in an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The signer's key ID as claimed by the envelope (a hint for lookup, not trusted).
    pub keyid: String,
    /// The raw signature bytes (64 for Ed25519).
    pub sig: Vec<u8>,
}

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The payload type.
    pub payload_type: String,
    /// The exact payload bytes that were signed.
    pub payload: Vec<u8>,
    /// The signatures, in envelope order.
    pub signatures: Vec<Signature>,
}

impl Envelope {
    /// Decodes envelope JSON. Unknown or duplicate fields are rejected.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let raw: EnvelopeJson = serde_json::from_slice(bytes).map_err(EnvelopeError::Json)?;
        if raw.signatures.len() > MAX_SIGNATURES {
            return Err(EnvelopeError::TooManySignatures {
                count: raw.signatures.len(),
            });
        }
        // Cheap bound before decoding: base64 expands by 4/3.
        if raw.payload.len() / 4 * 3 > MAX_PAYLOAD_LEN {
            return Err(EnvelopeError::PayloadTooLarge {
                len: raw.payload.len() / 4 * 3,
            });
        }
        let payload = STANDARD
            .decode(&raw.payload)
            .map_err(|source| EnvelopeError::Base64 {
                field: "payload".into(),
                source,
            })?;
        let signatures = raw
            .signatures
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let sig = STANDARD
                    .decode(&s.sig)
                    .map_err(|source| EnvelopeError::Base64 {
                        field: format!("signatures[{i}].sig"),
                        source,
                    })?;
                Ok(Signature {
                    keyid: s.keyid,
                    sig,
                })
            })
            .collect::<Result<Vec<_>, EnvelopeError>>()?;
        Ok(Envelope {
            payload_type: raw.payload_type,
            payload,
            signatures,
        })
    }

    /// Encodes the envelope as compact JSON with fields in a fixed order, so that equal
    /// envelopes give equal bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let raw = EnvelopeJson {
            payload: STANDARD.encode(&self.payload),
            payload_type: self.payload_type.clone(),
            signatures: self
                .signatures
                .iter()
                .map(|s| SignatureJson {
                    keyid: s.keyid.clone(),
                    sig: STANDARD.encode(&s.sig),
                })
                .collect(),
        };
        // Serializing plain strings and vectors into a Vec cannot fail.
        serde_json::to_vec(&raw).unwrap_or_default()
    }

    /// The bytes a signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn json_round_trips() {
        let e = Envelope {
            payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
            payload: b"{\"a\":1}".to_vec(),
            signatures: vec![Signature {
                keyid: "ab".into(),
                sig: vec![1, 2, 3],
            }],
        };
        assert_eq!(Envelope::from_json(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_base64() {
        let bad = br#"{"payload":"","payloadType":"x","signatures":[],"extra":1}"#;
        assert!(matches!(
            Envelope::from_json(bad),
            Err(EnvelopeError::Json(_))
        ));
        let dup = br#"{"payload":"","payload":"","payloadType":"x","signatures":[]}"#;
        assert!(matches!(
            Envelope::from_json(dup),
            Err(EnvelopeError::Json(_))
        ));
        let b64 = br#"{"payload":"!!","payloadType":"x","signatures":[]}"#;
        match Envelope::from_json(b64) {
            Err(EnvelopeError::Base64 { field, .. }) => assert_eq!(field, "payload"),
            other => panic!("{other:?}"),
        }
        let sig = br#"{"payload":"","payloadType":"x","signatures":[{"sig":"@"}]}"#;
        match Envelope::from_json(sig) {
            Err(EnvelopeError::Base64 { field, .. }) => assert_eq!(field, "signatures[0].sig"),
            other => panic!("{other:?}"),
        }
    }
}
