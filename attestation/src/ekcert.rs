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
/// id-ce-keyUsage.
const KEY_USAGE: &str = "2.5.29.15";
/// Extensions this verifier understands well enough to accept when marked critical:
/// basicConstraints and keyUsage (checked), subjectAltName (the TCG profile makes it
/// critical on EK certificates with an empty subject), subjectDirectoryAttributes (TPM
/// specification), certificatePolicies, extKeyUsage, and the key identifiers.
const KNOWN_CRITICAL: [&str; 8] = [
    BASIC_CONSTRAINTS,
    KEY_USAGE,
    "2.5.29.17",
    "2.5.29.9",
    "2.5.29.32",
    "2.5.29.37",
    "2.5.29.35",
    "2.5.29.14",
];
/// The smallest RSA modulus accepted, in bits (TCG EK credential profile: RSA 2048).
pub const MIN_RSA_BITS: usize = 2048;

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
    /// An issuing certificate without keyUsage keyCertSign.
    #[error("{which} signs certificates but its keyUsage does not allow keyCertSign")]
    NoCertSign {
        /// Which certificate.
        which: String,
    },
    /// A CA whose pathLenConstraint the chain exceeds.
    #[error("{which} allows {allowed} intermediate CA(s) below it (pathLenConstraint), the chain has {below}")]
    PathLength {
        /// Which certificate.
        which: String,
        /// Its pathLenConstraint.
        allowed: u8,
        /// Intermediate CAs below it in this chain.
        below: usize,
    },
    /// A critical extension this verifier does not understand.
    #[error("{which} has a critical extension {oid} this verifier does not understand")]
    UnknownCritical {
        /// Which certificate.
        which: String,
        /// The extension's OID.
        oid: String,
    },
    /// An RSA key shorter than the profile allows.
    #[error("{which} has a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required")]
    WeakKey {
        /// Which certificate.
        which: String,
        /// The key's size.
        bits: usize,
    },
    /// The EK certificate certifies another key than the TPM's EK.
    #[error("the EK certificate certifies another key than this TPM's EK")]
    NotThisEk,
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

    /// Parses every `CERTIFICATE` block of a PEM text; a text without one is an error (as
    /// x509-cert has it, whose reader would underflow on an empty text: checked first).
    pub fn from_pem_chain(text: &str, which: &str) -> Result<Vec<Cert>, ChainError> {
        if text.trim().is_empty() {
            return Err(ChainError::Parse {
                which: which.to_string(),
                reason: "no CERTIFICATE block".into(),
            });
        }
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

    /// The RSA public key in the certificate, of at least [`MIN_RSA_BITS`].
    pub fn rsa_key(&self, which: &str) -> Result<RsaPublicKey, ChainError> {
        use rsa::traits::PublicKeyParts;
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        let der = spki.to_der().map_err(|e| ChainError::Parse {
            which: which.to_string(),
            reason: e.to_string(),
        })?;
        let key = RsaPublicKey::from_public_key_der(&der).map_err(|_| ChainError::Algorithm {
            which: which.to_string(),
            what: "key",
            oid: spki.algorithm.oid.to_string(),
        })?;
        let bits = key.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(ChainError::WeakKey {
                which: which.to_string(),
                bits,
            });
        }
        Ok(key)
    }

    fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    fn basic_constraints(&self) -> Option<x509_cert::ext::pkix::BasicConstraints> {
        self.extension(BASIC_CONSTRAINTS)
            .and_then(|v| x509_cert::ext::pkix::BasicConstraints::from_der(v).ok())
    }

    /// Refuses critical extensions outside [`KNOWN_CRITICAL`].
    fn known_critical(&self, which: &str) -> Result<(), ChainError> {
        let unknown = self
            .cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|e| e.critical && !KNOWN_CRITICAL.contains(&e.extn_id.to_string().as_str()));
        match unknown {
            Some(e) => Err(ChainError::UnknownCritical {
                which: which.to_string(),
                oid: e.extn_id.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Checks that this certificate may issue certificates with `below` intermediate CAs
    /// between it and the EK: basicConstraints CA, keyUsage keyCertSign, pathLenConstraint.
    fn may_issue(&self, which: &str, below: usize) -> Result<(), ChainError> {
        self.known_critical(which)?;
        let Some(bc) = self.basic_constraints().filter(|b| b.ca) else {
            return Err(ChainError::NotCa {
                which: which.to_string(),
            });
        };
        let cert_sign = self
            .extension(KEY_USAGE)
            .and_then(|v| x509_cert::ext::pkix::KeyUsage::from_der(v).ok())
            .is_some_and(|ku| ku.key_cert_sign());
        if !cert_sign {
            return Err(ChainError::NoCertSign {
                which: which.to_string(),
            });
        }
        if let Some(allowed) = bc.path_len_constraint {
            if below > usize::from(allowed) {
                return Err(ChainError::PathLength {
                    which: which.to_string(),
                    allowed,
                    below,
                });
            }
        }
        Ok(())
    }

    /// When the certificate stops being valid (Unix seconds).
    pub fn not_after(&self) -> u64 {
        self.validity().1
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

/// Verifies that `ek` chains through `intermediates` (any order) to `ca`, as the TCG EK
/// credential profile and RFC 5280 read it: every certificate valid at `now`; every issuer
/// a CA (basicConstraints) allowed to sign certificates (keyUsage keyCertSign) whose
/// pathLenConstraint the chain respects; no critical extension this verifier does not
/// understand; every RSA key at least [`MIN_RSA_BITS`] bits. Returns the EK's public key.
pub fn verify_chain(
    ek: &Cert,
    intermediates: &[Cert],
    ca: &Cert,
    now: u64,
) -> Result<RsaPublicKey, ChainError> {
    ek.valid_at(now, "the EK certificate")?;
    ek.known_critical("the EK certificate")?;
    let ek_key = ek.rsa_key("the EK certificate")?;
    ca.valid_at(now, "the trusted CA certificate")?;
    let mut current = ek.clone();
    let mut which = "the EK certificate".to_string();
    // At most one pass per intermediate: a chain cannot be longer than what was given.
    for below in 0..=intermediates.len() {
        if current.cert.tbs_certificate.issuer == ca.cert.tbs_certificate.subject {
            ca.may_issue("the trusted CA certificate", below)?;
            current.signed_by(ca, &which)?;
            return Ok(ek_key);
        }
        let Some(next) = intermediates
            .iter()
            .find(|c| c.cert.tbs_certificate.subject == current.cert.tbs_certificate.issuer)
        else {
            break;
        };
        let next_which = format!("intermediate {}", next.subject());
        next.valid_at(now, &next_which)?;
        next.may_issue(&next_which, below)?;
        current.signed_by(next, &which)?;
        current = next.clone();
        which = next_which;
    }
    Err(ChainError::Untrusted { ca: ca.subject() })
}

/// Checks that the EK certificate's key is the TPM's EK, given the EK's TPMT_PUBLIC as the
/// TPM reports it.
pub fn check_ek_public(cert_key: &RsaPublicKey, ek_public: &[u8]) -> Result<(), ChainError> {
    use rsa::traits::PublicKeyParts;
    let Ok(p) = crate::tpm2::Public::parse(ek_public) else {
        return Err(ChainError::NotThisEk);
    };
    let crate::tpm2::PublicKey::Rsa {
        exponent, modulus, ..
    } = p.key
    else {
        return Err(ChainError::NotThisEk);
    };
    // A TPMT_PUBLIC exponent of 0 means the default, 65537.
    let e = if exponent == 0 { 65537 } else { exponent };
    if cert_key.n() == &rsa::BigUint::from_bytes_be(&modulus)
        && cert_key.e() == &rsa::BigUint::from(e)
    {
        Ok(())
    } else {
        Err(ChainError::NotThisEk)
    }
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
