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
use jek_verifier::Sha256Digest;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{json, Value};

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
}

/// The EK identity material exported next to the quote.
#[derive(Debug, Clone, Default)]
pub struct EkMaterial {
    /// The EK certificate (DER).
    pub cert: Vec<u8>,
    /// Its issuers (PEM).
    pub chain: String,
}

/// PCR values as JSON.
pub fn pcrs_json(pcrs: &PcrValues) -> Value {
    Value::Object(
        pcrs.iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_string())))
            .collect(),
    )
}

/// Reads `{"4": "hex", ...}`.
pub fn pcrs_from_json(v: &Value) -> Result<PcrValues, String> {
    let obj = v.as_object().ok_or("not a JSON object")?;
    let mut out = PcrValues::new();
    for (k, v) in obj {
        let pcr: u32 = k.parse().map_err(|_| format!("PCR index {k:?}"))?;
        let hex_str = v.as_str().ok_or(format!("PCR {pcr}: not a string"))?;
        let bytes = hex::decode(hex_str).map_err(|e| format!("PCR {pcr}: {e}"))?;
        let d: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("PCR {pcr}: not 32 bytes"))?;
        out.insert(pcr, Sha256Digest(d));
    }
    Ok(out)
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
    let point = ak.sec1_point().ok_or(EvidenceError::Malformed {
        file: "ak.tpmt",
        reason: "not an ECC key".into(),
    })?;
    let pem = p256::PublicKey::from_sec1_bytes(&point)
        .map_err(|e| EvidenceError::Malformed {
            file: "ak.tpmt",
            reason: e.to_string(),
        })?
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| EvidenceError::Malformed {
            file: "ak.pem",
            reason: e.to_string(),
        })?;
    let values: Vec<(u32, [u8; 32])> = evidence.pcrs.iter().map(|(k, v)| (*k, v.0)).collect();
    let meta = json!({
        "pod": pod,
        "nonce": hex::encode(nonce),
        "akName": hex::encode(ak.name()),
    });
    let mut files = BTreeMap::new();
    files.insert("quote.msg", evidence.attest.clone());
    files.insert("quote.sig", evidence.signature.clone());
    files.insert("ak.pem", pem.into_bytes());
    files.insert("ak.tpmt", evidence.ak_public.clone());
    files.insert("pcrs.ser", tpm2_tools_pcrs(&values));
    files.insert(
        "pcrs.json",
        serde_json::to_vec_pretty(&pcrs_json(&evidence.pcrs)).unwrap_or_default(),
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

/// Reads an evidence directory through `read` (file name → bytes, `None` if absent).
pub fn from_files(
    mut read: impl FnMut(&'static str) -> Option<Vec<u8>>,
) -> Result<(Evidence, EkMaterial, Value), EvidenceError> {
    let mut need = |f: &'static str| read(f).ok_or(EvidenceError::Missing(f));
    let attest = need("quote.msg")?;
    let signature = need("quote.sig")?;
    let ak_public = need("ak.tpmt")?;
    let pcrs_text = need("pcrs.json")?;
    let event_log = need("binary_bios_measurements")?;
    let cert = need("ek-cert.der")?;
    let chain = need("ek-chain.pem")?;
    let meta = need("evidence.json")?;
    let pcrs = serde_json::from_slice::<Value>(&pcrs_text)
        .map_err(|e| e.to_string())
        .and_then(|v| pcrs_from_json(&v))
        .map_err(|reason| EvidenceError::Malformed {
            file: "pcrs.json",
            reason,
        })?;
    let meta: Value = serde_json::from_slice(&meta).map_err(|e| EvidenceError::Malformed {
        file: "evidence.json",
        reason: e.to_string(),
    })?;
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
