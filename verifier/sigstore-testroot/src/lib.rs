//! # jek-sigstore-testroot: a private Sigstore, for tests only
//!
//! Keyless Sigstore signing needs Fulcio (a CA that issues short-lived certificates naming
//! an OIDC identity), a certificate-transparency log (whose SCT is embedded in the
//! certificate) and Rekor (a transparency log that returns a signed entry timestamp, an
//! inclusion proof and a signed checkpoint). None of them is reachable from a test, so this
//! crate plays all three with its own keys:
//!
//! - a "Fulcio" root CA (ECDSA P-256) that issues the leaf certificate with the OIDC issuer
//!   extension (1.3.6.1.4.1.57264.1.8), the subject as a URI SAN, the code-signing EKU and an
//!   embedded SCT over the precertificate (RFC 6962 section 3.2);
//! - a CT log key that signs that SCT;
//! - a "Rekor" key that signs the SET over the hashedrekord entry and the checkpoint (a
//!   signed note) over an RFC 6962 Merkle tree of a few entries, one of which is ours.
//!
//! [`TestRoot::trusted_root_json`] writes the matching `trusted_root.json`, and
//! [`TestRoot::sign`] returns a Sigstore bundle (v0.3 JSON) over an artifact. Every key is
//! derived from a seed, and ECDSA here is deterministic (RFC 6979), so the output is
//! reproducible. [`Faults`] breaks exactly one thing, for the negative tests.
//!
//! It is a fixture generator, not a Sigstore implementation: nothing here verifies.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used)] // fixtures: a failure is a bug in this crate, not bad input

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use p256::ecdsa::{signature::Signer as _, DerSignature, SigningKey};
use p256::pkcs8::EncodePublicKey as _;
use sha2::{Digest as _, Sha256};
use x509_cert::der::asn1::{BitString, Ia5String, OctetString, UtcTime, Utf8StringRef};
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

/// The reference time of a test root: 2023-11-14T22:13:20Z. The CA is valid from a year
/// before to ten years after; a leaf certificate lives ten minutes from `T0`.
pub const T0: u64 = 1_700_000_000;

const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const FULCIO_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
const CT_PRECERT_SCTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2");
const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const ID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_CE_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const ID_KP_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

/// Leaves in the test log's Merkle tree; ours is at [`LOG_INDEX`].
pub const TREE_SIZE: u64 = 5;
/// Our entry's index in the log.
pub const LOG_INDEX: u64 = 2;

/// Who the signing certificate names.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The OIDC issuer (Fulcio extension 1.3.6.1.4.1.57264.1.8).
    pub issuer: String,
    /// The subject (a URI SAN, as for a CI workflow identity).
    pub subject: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            issuer: "https://token.actions.example.invalid".into(),
            subject: "https://ci.example.invalid/jek/.github/workflows/kernel.yml@refs/heads/main"
                .into(),
        }
    }
}

/// One deliberate defect in a generated bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Faults {
    /// A correct bundle.
    #[default]
    None,
    /// The log integrated the entry after the certificate expired.
    SignedAfterExpiry,
    /// The inclusion proof and checkpoint are for a tree that does not contain the entry.
    EntryNotInTree,
    /// The checkpoint carries the log's key hint but another key's signature.
    BadCheckpointSignature,
    /// The SET is signed by another key.
    BadSet,
    /// No inclusion proof at all (only the SET).
    NoInclusionProof,
    /// The embedded SCT is signed by a key that is not the CT log's.
    BadSct,
}

/// A private Sigstore: CA, CT log and transparency log keys.
pub struct TestRoot {
    ca_key: SigningKey,
    ca_cert: Vec<u8>,
    ca_name: Name,
    ct_key: SigningKey,
    rekor_key: SigningKey,
    leaf_key: SigningKey,
}

fn key(seed: &str, label: &str) -> SigningKey {
    let bytes = Sha256::digest(format!("jek-sigstore-testroot/{seed}/{label}"));
    SigningKey::from_slice(&bytes).expect("a SHA-256 output is a valid P-256 scalar")
}

fn spki_der(key: &SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_public_key_der()
        .expect("P-256 SPKI encodes")
        .as_bytes()
        .to_vec()
}

fn sign_der(key: &SigningKey, message: &[u8]) -> Vec<u8> {
    let sig: DerSignature = key.sign(message);
    sig.as_bytes().to_vec()
}

fn utc(secs: u64) -> Time {
    Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(secs)).expect("time in range"))
}

fn ext(oid: ObjectIdentifier, critical: bool, value: Vec<u8>) -> Extension {
    Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).expect("extension value"),
    }
}

fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA256,
        parameters: None,
    }
}

fn sign_tbs(tbs: TbsCertificate, issuer: &SigningKey) -> Certificate {
    let der = tbs.to_der().expect("TBS encodes");
    let sig = sign_der(issuer, &der);
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ecdsa_sha256(),
        signature: BitString::from_bytes(&sig).expect("signature bit string"),
    }
}

fn rfc3339(secs: u64) -> String {
    // Days-from-civil inverse (Howard Hinnant's algorithm), enough for a fixture.
    let days = i64::try_from(secs / 86_400).expect("time in range");
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// RFC 6962 Merkle tree hash of `leaves` (already leaf-hashed).
fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// RFC 6962 audit path for leaf `m`.
fn path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = path(m, &leaves[..k]);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = path(m - k, &leaves[k..]);
        p.push(mth(&leaves[..k]));
        p
    }
}

/// The largest power of two smaller than `n`.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0]);
    h.update(data);
    h.finalize().into()
}

impl TestRoot {
    /// A root whose every key derives from `seed`.
    pub fn new(seed: &str) -> Self {
        Self::with_ca_seed(seed, seed)
    }

    /// A root with its own CT and Rekor keys but the CA from `ca_seed`: a bundle from
    /// `with_ca_seed("a", "b")` passes the log checks of `new("a")`'s trusted root and fails
    /// only its certificate chain.
    pub fn with_ca_seed(seed: &str, ca_seed: &str) -> Self {
        let ca_key = key(ca_seed, "fulcio");
        let ca_name: Name = format!("CN=jek test fulcio {ca_seed},O=jek-test")
            .parse()
            .expect("CA name");
        let ca_spki = SubjectPublicKeyInfoOwned::from_der(&spki_der(&ca_key)).expect("SPKI");
        let mut usages = KeyUsages::KeyCertSign.into();
        usages |= KeyUsages::CRLSign;
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&[1]).expect("serial"),
            signature: ecdsa_sha256(),
            issuer: ca_name.clone(),
            validity: Validity {
                not_before: utc(T0 - 365 * 86_400),
                not_after: utc(T0 + 3650 * 86_400),
            },
            subject: ca_name.clone(),
            subject_public_key_info: ca_spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(vec![
                ext(
                    ID_CE_BASIC_CONSTRAINTS,
                    true,
                    BasicConstraints {
                        ca: true,
                        path_len_constraint: Some(0),
                    }
                    .to_der()
                    .expect("basic constraints"),
                ),
                ext(
                    ID_CE_KEY_USAGE,
                    true,
                    KeyUsage(usages).to_der().expect("key usage"),
                ),
            ]),
        };
        let ca_cert = sign_tbs(tbs, &ca_key).to_der().expect("CA certificate");
        TestRoot {
            ca_key,
            ca_cert,
            ca_name,
            ct_key: key(seed, "ctlog"),
            rekor_key: key(seed, "rekor"),
            leaf_key: key(seed, "leaf"),
        }
    }

    /// The CA certificate (DER).
    pub fn ca_certificate(&self) -> &[u8] {
        &self.ca_cert
    }

    /// The leaf (signing) key's public half, SPKI PEM.
    pub fn signer_public_key_pem(&self) -> String {
        self.leaf_key
            .verifying_key()
            .to_public_key_pem(Default::default())
            .expect("PEM")
    }

    /// A Sigstore bundle (v0.3) holding a DSSE envelope of `payload_type` over
    /// `payload`, signed by the leaf key as a managed key (no certificate, no log entry):
    /// what `cosign attest-blob --key` makes, for policies without a trusted root.
    pub fn sign_dsse_with_key(&self, payload_type: &str, payload: &[u8]) -> String {
        let mut pae = format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            payload.len()
        )
        .into_bytes();
        pae.extend_from_slice(payload);
        let sig = sign_der(&self.leaf_key, &pae);
        format!(
            r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{{"publicKey":{{"hint":""}},"tlogEntries":[]}},"dsseEnvelope":{{"payload":"{}","payloadType":"{payload_type}","signatures":[{{"sig":"{}","keyid":""}}]}}}}"#,
            B64.encode(payload),
            B64.encode(sig),
        )
    }

    /// `trusted_root.json` (Sigstore trusted root, media type version 0.1) for this root.
    pub fn trusted_root_json(&self) -> String {
        let log = |key: &SigningKey, url: &str| {
            let spki = spki_der(key);
            format!(
                r#"{{"baseUrl":"{url}","hashAlgorithm":"SHA2_256","publicKey":{{"rawBytes":"{}","keyDetails":"PKIX_ECDSA_P256_SHA_256","validFor":{{"start":"{}"}}}},"logId":{{"keyId":"{}"}}}}"#,
                B64.encode(&spki),
                rfc3339(T0 - 365 * 86_400),
                B64.encode(Sha256::digest(&spki)),
            )
        };
        format!(
            r#"{{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","tlogs":[{}],"certificateAuthorities":[{{"subject":{{"organization":"jek-test","commonName":"jek test fulcio"}},"uri":"https://fulcio.test.invalid","certChain":{{"certificates":[{{"rawBytes":"{}"}}]}},"validFor":{{"start":"{}"}}}}],"ctlogs":[{}],"timestampAuthorities":[]}}"#,
            log(&self.rekor_key, "https://rekor.test.invalid"),
            B64.encode(&self.ca_cert),
            rfc3339(T0 - 365 * 86_400),
            log(&self.ct_key, "https://ctfe.test.invalid"),
        )
    }

    /// The leaf certificate for `identity`, valid `[T0, T0 + 600]`, with an embedded SCT.
    fn leaf_certificate(&self, identity: &Identity, fault: Faults) -> Vec<u8> {
        let leaf_spki =
            SubjectPublicKeyInfoOwned::from_der(&spki_der(&self.leaf_key)).expect("SPKI");
        let san = SubjectAltName(vec![GeneralName::UniformResourceIdentifier(
            Ia5String::new(&identity.subject).expect("subject is ASCII"),
        )]);
        let mut tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&Sha256::digest(identity.subject.as_bytes())[..16])
                .expect("serial"),
            signature: ecdsa_sha256(),
            issuer: self.ca_name.clone(),
            validity: Validity {
                not_before: utc(T0),
                not_after: utc(T0 + 600),
            },
            subject: Name::default(),
            subject_public_key_info: leaf_spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(vec![
                ext(
                    ID_CE_KEY_USAGE,
                    true,
                    KeyUsage(KeyUsages::DigitalSignature.into())
                        .to_der()
                        .expect("key usage"),
                ),
                ext(
                    ID_CE_EXT_KEY_USAGE,
                    false,
                    ExtendedKeyUsage(vec![ID_KP_CODE_SIGNING])
                        .to_der()
                        .expect("EKU"),
                ),
                ext(ID_CE_SUBJECT_ALT_NAME, true, san.to_der().expect("SAN")),
                ext(
                    FULCIO_ISSUER_V2,
                    false,
                    Utf8StringRef::new(&identity.issuer)
                        .expect("issuer")
                        .to_der()
                        .expect("issuer DER"),
                ),
            ]),
        };
        // The SCT signs the precertificate: this TBS without the SCT extension.
        let precert = tbs.to_der().expect("precert TBS");
        let timestamp_ms = T0 * 1000 + 1;
        let mut signed = vec![0u8, 0u8];
        signed.extend_from_slice(&timestamp_ms.to_be_bytes());
        signed.extend_from_slice(&1u16.to_be_bytes()); // precert_entry
        signed.extend_from_slice(&Sha256::digest(spki_der(&self.ca_key)));
        let len = u32::try_from(precert.len()).expect("TBS length");
        signed.extend_from_slice(&len.to_be_bytes()[1..]);
        signed.extend_from_slice(&precert);
        signed.extend_from_slice(&0u16.to_be_bytes()); // no extensions
        let ct_key = match fault {
            Faults::BadSct => key("another log", "ctlog"),
            _ => self.ct_key.clone(),
        };
        let sig = sign_der(&ct_key, &signed);
        let mut sct = vec![0u8];
        sct.extend_from_slice(&Sha256::digest(spki_der(&self.ct_key)));
        sct.extend_from_slice(&timestamp_ms.to_be_bytes());
        sct.extend_from_slice(&0u16.to_be_bytes());
        sct.extend_from_slice(&[4, 3]); // sha256, ecdsa
        sct.extend_from_slice(&u16::try_from(sig.len()).expect("sig").to_be_bytes());
        sct.extend_from_slice(&sig);
        let mut list = Vec::new();
        let total = u16::try_from(sct.len() + 2).expect("SCT list");
        list.extend_from_slice(&total.to_be_bytes());
        list.extend_from_slice(&u16::try_from(sct.len()).expect("SCT").to_be_bytes());
        list.extend_from_slice(&sct);
        let list = OctetString::new(list)
            .expect("SCT list")
            .to_der()
            .expect("DER");
        if let Some(exts) = tbs.extensions.as_mut() {
            exts.push(ext(CT_PRECERT_SCTS, false, list));
        }
        sign_tbs(tbs, &self.ca_key)
            .to_der()
            .expect("leaf certificate")
    }

    /// A Sigstore bundle (v0.3, keyless, hashedrekord 0.0.1) over `artifact`, signed by a
    /// certificate naming `identity`, with `fault` applied.
    pub fn sign(&self, artifact: &[u8], identity: &Identity, fault: Faults) -> String {
        let cert = self.leaf_certificate(identity, fault);
        let digest = Sha256::digest(artifact);
        let signature = sign_der(&self.leaf_key, artifact);
        let cert_pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            B64.encode(&cert)
        );
        let body = format!(
            r#"{{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{{"data":{{"hash":{{"algorithm":"sha256","value":"{}"}}}},"signature":{{"content":"{}","publicKey":{{"content":"{}"}}}}}}}}"#,
            hex::encode(digest),
            B64.encode(&signature),
            B64.encode(cert_pem),
        );
        let integrated_time = match fault {
            Faults::SignedAfterExpiry => T0 + 3600,
            _ => T0 + 60,
        };
        let rekor_spki = spki_der(&self.rekor_key);
        let log_id = Sha256::digest(&rekor_spki);
        // The SET: the log's promise over the entry, as canonical JSON (keys sorted).
        let set_payload = format!(
            r#"{{"body":"{}","integratedTime":{integrated_time},"logID":"{}","logIndex":{LOG_INDEX}}}"#,
            B64.encode(&body),
            hex::encode(log_id),
        );
        let set_key = match fault {
            Faults::BadSet => key("another log", "rekor"),
            _ => self.rekor_key.clone(),
        };
        let set = sign_der(&set_key, set_payload.as_bytes());
        // The tree: other entries around ours.
        let mut leaves: Vec<[u8; 32]> = (0..TREE_SIZE)
            .map(|i| leaf_hash(format!("another entry {i}").as_bytes()))
            .collect();
        let index = usize::try_from(LOG_INDEX).expect("index");
        if fault != Faults::EntryNotInTree {
            leaves[index] = leaf_hash(body.as_bytes());
        }
        let root = mth(&leaves);
        let hashes: Vec<String> = path(index, &leaves)
            .iter()
            .map(|h| format!("\"{}\"", B64.encode(h)))
            .collect();
        let origin = "rekor.test.invalid - 1";
        let note = format!("{origin}\n{TREE_SIZE}\n{}\n", B64.encode(root));
        let checkpoint_key = match fault {
            Faults::BadCheckpointSignature => key("another log", "rekor"),
            _ => self.rekor_key.clone(),
        };
        let mut note_sig = Sha256::digest(&rekor_spki)[..4].to_vec();
        note_sig.extend_from_slice(&sign_der(&checkpoint_key, note.as_bytes()));
        let envelope = format!(
            "{note}\n\u{2014} rekor.test.invalid {}\n",
            B64.encode(note_sig)
        );
        let proof = format!(
            r#","inclusionProof":{{"logIndex":"{LOG_INDEX}","rootHash":"{}","treeSize":"{TREE_SIZE}","hashes":[{}],"checkpoint":{{"envelope":{}}}}}"#,
            B64.encode(root),
            hashes.join(","),
            serde_json::Value::from(envelope),
        );
        let proof = if fault == Faults::NoInclusionProof {
            String::new()
        } else {
            proof
        };
        format!(
            r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{{"certificate":{{"rawBytes":"{}"}},"tlogEntries":[{{"logIndex":"{LOG_INDEX}","logId":{{"keyId":"{}"}},"kindVersion":{{"kind":"hashedrekord","version":"0.0.1"}},"integratedTime":"{integrated_time}","inclusionPromise":{{"signedEntryTimestamp":"{}"}}{proof},"canonicalizedBody":"{}"}}]}},"messageSignature":{{"messageDigest":{{"algorithm":"SHA2_256","digest":"{}"}},"signature":"{}"}}}}"#,
            B64.encode(&cert),
            B64.encode(log_id),
            B64.encode(set),
            B64.encode(&body),
            B64.encode(digest),
            B64.encode(&signature),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(T0), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn merkle_paths_lead_to_the_root() {
        let leaves: Vec<[u8; 32]> = (0u8..7).map(|i| leaf_hash(&[i])).collect();
        let root = mth(&leaves);
        for (m, leaf) in leaves.iter().enumerate() {
            // Recompute the root from the path, the RFC 9162 way.
            let p = path(m, &leaves);
            let (mut fnode, mut snode) = (m, leaves.len() - 1);
            let mut r = *leaf;
            for h in p {
                if fnode % 2 == 1 || fnode == snode {
                    r = node(&h, &r);
                    while fnode % 2 == 0 && fnode != 0 {
                        fnode >>= 1;
                        snode >>= 1;
                    }
                } else {
                    r = node(&r, &h);
                }
                fnode >>= 1;
                snode >>= 1;
            }
            assert_eq!(r, root, "leaf {m}");
        }
    }
}
