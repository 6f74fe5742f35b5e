//! The EK certificate chain: the pod TPM's EK certificate (from its NV index), the issuing
//! CA certificates, and the CA the attestation policy names. RSA PKCS#1 v1.5 with SHA-256
//! signatures (what swtpm_localca and TPM vendors issue); validity checked at a given time.

use der::{Decode, Encode};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use sha2::Sha256;
use x509_cert::Certificate;

/// sha256WithRSAEncryption.
const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
/// id-ce-basicConstraints.
const BASIC_CONSTRAINTS: &str = "2.5.29.19";

/// Why the chain is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A certificate does not parse.
    #[error("{which} is not a DER X.509 certificate: {reason}")]
    Parse {
        /// Which certificate.
        which: String,
        /// Why.
        reason: String,
    },
    /// No certificate in the chain is signed by the trusted CA.
    #[error("the EK certificate does not chain to the trusted CA {ca}")]
    Untrusted {
        /// The trusted CA's subject.
        ca: String,
    },
    /// A signature does not verify.
    #[error("signature of {which} does not verify under {issuer}")]
    BadSignature {
        /// Which certificate.
        which: String,
        /// The issuer tried.
        issuer: String,
    },
    /// An algorithm this verifier does not accept.
    #[error("{which} uses {what} {oid}, only RSA with SHA-256 is accepted")]
    Algorithm {
        /// Which certificate.
        which: String,
        /// Signature or key.
        what: &'static str,
        /// The OID.
        oid: String,
    },
    /// Outside its validity period.
    #[error("{which} is not valid at {now} (valid {not_before} to {not_after})")]
    Expired {
        /// Which certificate.
        which: String,
        /// The time checked (Unix seconds).
        now: u64,
        /// notBefore (Unix seconds).
        not_before: u64,
        /// notAfter (Unix seconds).
        not_after: u64,
    },
    /// An issuing certificate that is not a CA.
    #[error("{which} signs certificates but is not a CA (basicConstraints)")]
    NotCa {
        /// Which certificate.
        which: String,
    },
}

/// A parsed certificate with its DER.
#[derive(Debug, Clone)]
pub struct Cert {
    cert: Certificate,
    der: Vec<u8>,
}

impl Cert {
    /// Parses DER bytes.
    pub fn from_der(der: &[u8], which: &str) -> Result<Cert, ChainError> {
        let cert = Certificate::from_der(der).map_err(|e| ChainError::Parse {
            which: which.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Cert {
            cert,
            der: der.to_vec(),
        })
    }

    /// Parses every `CERTIFICATE` block of a PEM text.
    pub fn from_pem_chain(text: &str, which: &str) -> Result<Vec<Cert>, ChainError> {
        let certs =
            Certificate::load_pem_chain(text.as_bytes()).map_err(|e| ChainError::Parse {
                which: which.to_string(),
                reason: e.to_string(),
            })?;
        certs
            .into_iter()
            .map(|c| {
                let der = c.to_der().map_err(|e| ChainError::Parse {
                    which: which.to_string(),
                    reason: e.to_string(),
                })?;
                Ok(Cert { cert: c, der })
            })
            .collect()
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject as a string.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// The RSA public key in the certificate.
    pub fn rsa_key(&self, which: &str) -> Result<RsaPublicKey, ChainError> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        let der = spki.to_der().map_err(|e| ChainError::Parse {
            which: which.to_string(),
            reason: e.to_string(),
        })?;
        RsaPublicKey::from_public_key_der(&der).map_err(|_| ChainError::Algorithm {
            which: which.to_string(),
            what: "key",
            oid: spki.algorithm.oid.to_string(),
        })
    }

    fn is_ca(&self) -> bool {
        self.cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .filter(|e| e.extn_id.to_string() == BASIC_CONSTRAINTS)
            .any(|e| {
                x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes())
                    .is_ok_and(|b| b.ca)
            })
    }

    fn validity(&self) -> (u64, u64) {
        let v = &self.cert.tbs_certificate.validity;
        (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        )
    }

    /// Checks that `issuer` signed this certificate.
    fn signed_by(&self, issuer: &Cert, which: &str) -> Result<(), ChainError> {
        let oid = self.cert.signature_algorithm.oid.to_string();
        if oid != SHA256_WITH_RSA {
            return Err(ChainError::Algorithm {
                which: which.to_string(),
                what: "signature",
                oid,
            });
        }
        let tbs = self
            .cert
            .tbs_certificate
            .to_der()
            .map_err(|e| ChainError::Parse {
                which: which.to_string(),
                reason: e.to_string(),
            })?;
        let key = issuer.rsa_key("issuer")?;
        let bad = || ChainError::BadSignature {
            which: which.to_string(),
            issuer: issuer.subject(),
        };
        let sig = Signature::try_from(self.cert.signature.raw_bytes()).map_err(|_| bad())?;
        VerifyingKey::<Sha256>::new(key)
            .verify(&tbs, &sig)
            .map_err(|_| bad())
    }

    fn valid_at(&self, now: u64, which: &str) -> Result<(), ChainError> {
        let (not_before, not_after) = self.validity();
        if now < not_before || now > not_after {
            return Err(ChainError::Expired {
                which: which.to_string(),
                now,
                not_before,
                not_after,
            });
        }
        Ok(())
    }
}

/// Verifies that `ek` chains through `intermediates` (any order) to `ca`, every certificate
/// valid at `now` and every issuer a CA. Returns the EK's RSA public key.
pub fn verify_chain(
    ek: &Cert,
    intermediates: &[Cert],
    ca: &Cert,
    now: u64,
) -> Result<RsaPublicKey, ChainError> {
    ek.valid_at(now, "the EK certificate")?;
    ca.valid_at(now, "the trusted CA certificate")?;
    let mut current = ek.clone();
    let mut which = "the EK certificate".to_string();
    // At most one pass per intermediate: a chain cannot be longer than what was given.
    for _ in 0..=intermediates.len() {
        if current.cert.tbs_certificate.issuer == ca.cert.tbs_certificate.subject {
            if !ca.is_ca() {
                return Err(ChainError::NotCa {
                    which: "the trusted CA certificate".into(),
                });
            }
            current.signed_by(ca, &which)?;
            return ek.rsa_key("the EK certificate");
        }
        let Some(next) = intermediates
            .iter()
            .find(|c| c.cert.tbs_certificate.subject == current.cert.tbs_certificate.issuer)
        else {
            break;
        };
        let next_which = format!("intermediate {}", next.subject());
        next.valid_at(now, &next_which)?;
        if !next.is_ca() {
            return Err(ChainError::NotCa { which: next_which });
        }
        current.signed_by(next, &which)?;
        current = next.clone();
        which = next_which;
    }
    Err(ChainError::Untrusted { ca: ca.subject() })
}

/// [`verify_chain`] against each of several trusted CAs (a policy may name more than one):
/// the EK's key from the first chain that holds, or why the last one did not.
pub fn verify_chain_to_any(
    ek: &Cert,
    intermediates: &[Cert],
    cas: &[Cert],
    now: u64,
) -> Result<RsaPublicKey, ChainError> {
    let mut last = ChainError::Untrusted {
        ca: "(no CA certificate given)".into(),
    };
    for ca in cas {
        match verify_chain(ek, intermediates, ca, now) {
            Ok(key) => return Ok(key),
            Err(e) => last = e,
        }
    }
    Err(last)
}
