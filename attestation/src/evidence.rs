//! The evidence directory: everything a verifier that never touches the host needs, in
//! formats tpm2-tools reads, as name → bytes (the CLI writes and reads the files).
//!
//! | file | content |
//! |---|---|
//! | `quote.msg` | the TPMS_ATTEST bytes the AK signed (`tpm2_checkquote -m`) |
//! | `quote.sig` | the TPMT_SIGNATURE (`tpm2_checkquote -s`) |
//! | `ak.pem` | the AK public key, SubjectPublicKeyInfo PEM (`tpm2_checkquote -u`) |
//! | `ak.tpmt` | the AK's TPMT_PUBLIC (its name is computed over these bytes) |
//! | `pcrs.ser` | the PCR values, tpm2-tools "serialized" format (`tpm2_checkquote -f`) |
//! | `pcrs.json` | the same values as `{"4": "hex", ...}` |
//! | `binary_bios_measurements` | the TCG event log |
//! | `ek-cert.der` | the EK certificate from the TPM's NV index |
//! | `ek-chain.pem` | the certificates that issued it |
//! | `evidence.json` | pod name, nonce, AK name |

use std::collections::BTreeMap;

use jek_measure::PcrValues;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};

use crate::appraise::Evidence;
use crate::tpm2::{tpm2_tools_pcrs, Public};

/// Why an evidence directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// A file is missing.
    #[error("evidence file {0} is missing")]
    Missing(&'static str),
    /// A file is malformed.
    #[error("evidence file {file} is malformed: {reason}")]
    Malformed {
        /// The file.
        file: &'static str,
        /// Why.
        reason: String,
    },
    /// Two files that carry the same thing do not agree.
    #[error("evidence file {file} does not agree with {other}")]
    Disagree {
        /// The file.
        file: &'static str,
        /// The file it must agree with.
        other: &'static str,
    },
}

/// The EK identity material exported next to the quote.
#[derive(Debug, Clone, Default)]
pub struct EkMaterial {
    /// The EK certificate (DER).
    pub cert: Vec<u8>,
    /// Its issuers (PEM).
    pub chain: String,
}

/// `evidence.json`: what the exporting verifier asked and got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceMeta {
    /// The pod's name.
    pub pod: String,
    /// The nonce the quote was asked with (hex).
    pub nonce: String,
    /// The AK's name.
    pub ak_name: crate::registration::AkName,
}

fn ak_pem(ak: &Public) -> Result<String, EvidenceError> {
    let point = ak.sec1_point().ok_or(EvidenceError::Malformed {
        file: "ak.tpmt",
        reason: "not an ECC key".into(),
    })?;
    p256::PublicKey::from_sec1_bytes(&point)
        .map_err(|e| EvidenceError::Malformed {
            file: "ak.tpmt",
            reason: e.to_string(),
        })?
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| EvidenceError::Malformed {
            file: "ak.pem",
            reason: e.to_string(),
        })
}

fn pcrs_ser(pcrs: &PcrValues) -> Vec<u8> {
    let values: Vec<(u32, [u8; 32])> = pcrs.iter().map(|(k, v)| (*k, v.0)).collect();
    tpm2_tools_pcrs(&values)
}

/// The files of an evidence directory.
pub fn to_files(
    evidence: &Evidence,
    ek: &EkMaterial,
    pod: &str,
    nonce: &[u8],
) -> Result<BTreeMap<&'static str, Vec<u8>>, EvidenceError> {
    let ak = Public::parse(&evidence.ak_public).map_err(|e| EvidenceError::Malformed {
        file: "ak.tpmt",
        reason: e.to_string(),
    })?;
    let pem = ak_pem(&ak)?;
    let meta = EvidenceMeta {
        pod: pod.to_string(),
        nonce: hex::encode(nonce),
        ak_name: crate::registration::AkName(ak.name()),
    };
    let mut files = BTreeMap::new();
    files.insert("quote.msg", evidence.attest.clone());
    files.insert("quote.sig", evidence.signature.clone());
    files.insert("ak.pem", pem.into_bytes());
    files.insert("ak.tpmt", evidence.ak_public.clone());
    files.insert("pcrs.ser", pcrs_ser(&evidence.pcrs));
    // Derived Serialize of maps of integers to hex strings cannot fail.
    files.insert(
        "pcrs.json",
        serde_json::to_vec_pretty(&evidence.pcrs).unwrap_or_default(),
    );
    files.insert("binary_bios_measurements", evidence.event_log.clone());
    files.insert("ek-cert.der", ek.cert.clone());
    files.insert("ek-chain.pem", ek.chain.clone().into_bytes());
    files.insert(
        "evidence.json",
        serde_json::to_vec_pretty(&meta).unwrap_or_default(),
    );
    Ok(files)
}

/// Reads an evidence directory through `read` (file name → bytes, `None` if absent). The
/// copies must agree: `ak.pem` is the key of `ak.tpmt`, and `pcrs.ser` holds the values of
/// `pcrs.json`, so a checker reading one file sees what the appraisal read in the other.
pub fn from_files(
    mut read: impl FnMut(&'static str) -> Option<Vec<u8>>,
) -> Result<(Evidence, EkMaterial, EvidenceMeta), EvidenceError> {
    let mut need = |f: &'static str| read(f).ok_or(EvidenceError::Missing(f));
    let attest = need("quote.msg")?;
    let signature = need("quote.sig")?;
    let ak_public = need("ak.tpmt")?;
    let pcrs_text = need("pcrs.json")?;
    let event_log = need("binary_bios_measurements")?;
    let cert = need("ek-cert.der")?;
    let chain = need("ek-chain.pem")?;
    let meta = need("evidence.json")?;
    let pem = need("ak.pem")?;
    let ser = need("pcrs.ser")?;
    let pcrs: PcrValues =
        serde_json::from_slice(&pcrs_text).map_err(|e| EvidenceError::Malformed {
            file: "pcrs.json",
            reason: e.to_string(),
        })?;
    let meta: EvidenceMeta =
        serde_json::from_slice(&meta).map_err(|e| EvidenceError::Malformed {
            file: "evidence.json",
            reason: e.to_string(),
        })?;
    let ak = Public::parse(&ak_public).map_err(|e| EvidenceError::Malformed {
        file: "ak.tpmt",
        reason: e.to_string(),
    })?;
    if ak_pem(&ak)?.as_bytes() != pem.as_slice() {
        return Err(EvidenceError::Disagree {
            file: "ak.pem",
            other: "ak.tpmt",
        });
    }
    if pcrs_ser(&pcrs) != ser {
        return Err(EvidenceError::Disagree {
            file: "pcrs.ser",
            other: "pcrs.json",
        });
    }
    let chain = String::from_utf8(chain).map_err(|e| EvidenceError::Malformed {
        file: "ek-chain.pem",
        reason: e.to_string(),
    })?;
    Ok((
        Evidence {
            attest,
            signature,
            ak_public,
            pcrs,
            event_log,
        },
        EkMaterial { cert, chain },
        meta,
    ))
}

/// Fuzz entry (`fuzz/fuzz_targets/evidence.rs`): an evidence directory from arbitrary
/// bytes (the files in the order [`from_files`] asks for them, separated by `0xff 0x00`;
/// a missing piece is a missing file) is read or refused, never a panic.
pub fn fuzz(data: &[u8]) {
    let mut pieces = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(2).position(|w| w == [0xff, 0x00]) {
        pieces.push(rest.get(..i).unwrap_or_default().to_vec());
        rest = rest.get(i.saturating_add(2)..).unwrap_or_default();
    }
    pieces.push(rest.to_vec());
    let mut files = pieces.into_iter();
    let _ = from_files(|_| files.next());
}

#[cfg(test)]
mod fuzz_tests {
    #[test]
    fn fuzz_entry_survives_degenerate_inputs() {
        for d in [
            &b""[..],
            b"\xff\x00",
            &[0xff, 0x00].repeat(12),
            b"{}\xff\x00{}",
        ] {
            super::fuzz(d);
        }
    }
}
