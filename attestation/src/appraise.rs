//! Appraisal: evidence from a pod's TPM against the reference values of its signed bundle.
//! Pure: no TPM, no files, no clock (the time comes in), so it runs on any machine.
//!
//! A pod booted clean when every claim below is affirming:
//!
//! | claim | what is checked |
//! |---|---|
//! | `tpm-identity` | the AK was proven to live in the TPM of the certified EK (credential activation), has the attributes of a restricted TPM-resident signing key, and signed this quote |
//! | `freshness` | the quote carries this appraisal's nonce |
//! | `evidence` | the quote covers exactly jek's PCRs, its digest is that of the PCR values, the event log parses |
//! | `kernel`, `initramfs`, `cmdline`, `signer`, `security-version`, `bundle`, `pod-config` | the event log replays to the quoted PCRs, and each event is, in order, the one `jek predict` derives from the bundle and the pod configuration; the bundle passes the policy |

use std::collections::BTreeMap;

use jek_measure::eventlog::EventLog;
use jek_measure::plan::{plan, Measured, PlannedEvent, PCRS};
use jek_measure::PcrValues;
use jek_verifier::format::Role;
use jek_verifier::{Bundle, Sha256Digest, Verified, VerifyError};
use p256::ecdsa::signature::Verifier;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::tpm2::{attr, EcdsaSignature, Public, PublicKey, Quote, ALG_SHA256, ECC_NIST_P256};

/// The claims, in report order.
pub const CLAIMS: [&str; 10] = [
    "tpm-identity",
    "freshness",
    "evidence",
    "kernel",
    "initramfs",
    "cmdline",
    "signer",
    "security-version",
    "bundle",
    "pod-config",
];

/// EAR status tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Not appraised.
    None,
    /// Passed.
    Affirming,
    /// Could not be fully established.
    Warning,
    /// Failed.
    Contraindicated,
}

impl Status {
    /// The EAR name.
    pub fn name(self) -> &'static str {
        match self {
            Status::None => "none",
            Status::Affirming => "affirming",
            Status::Warning => "warning",
            Status::Contraindicated => "contraindicated",
        }
    }

    /// The EAR trustworthiness-vector value.
    pub fn tier(self) -> u8 {
        match self {
            Status::None => 0,
            Status::Affirming => 2,
            Status::Warning => 32,
            Status::Contraindicated => 96,
        }
    }
}

/// Why a claim is not affirming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The status this finding gives the claim.
    pub status: Status,
    /// What is wrong.
    pub reason: String,
    /// The reference value, when there is one.
    pub expected: Option<String>,
    /// What the evidence shows.
    pub actual: Option<String>,
}

/// What the verifier established about the AK before appraisal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Credential activation succeeded for an object of this name in the TPM whose EK
    /// certificate (subject given) chains to the trusted CA.
    Activated {
        /// The AK name the credential was bound to.
        ak_name: Vec<u8>,
        /// The EK certificate's subject.
        ek: String,
    },
    /// The AK was pinned by the verifier beforehand (evidence mode).
    Pinned {
        /// The pinned name.
        ak_name: Vec<u8>,
    },
    /// The AK's identity could not be established.
    Unproven {
        /// Why.
        reason: String,
    },
}

/// The evidence of one pod.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// TPMS_ATTEST bytes of the quote.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE bytes.
    pub signature: Vec<u8>,
    /// TPMT_PUBLIC bytes of the AK.
    pub ak_public: Vec<u8>,
    /// The PCR values read with the quote.
    pub pcrs: PcrValues,
    /// The TCG event log (binary_bios_measurements).
    pub event_log: Vec<u8>,
}

/// The reference: the bundle as the policy judged it, and the pod configuration segment.
pub struct Reference<'a> {
    /// The verified bundle, or why the policy rejected it.
    pub bundle: Result<&'a Verified<Bundle>, &'a VerifyError>,
    /// The pod segment the pod was given (empty for none).
    pub pod_segment: &'a [u8],
}

/// The appraisal of one pod.
#[derive(Debug, Clone)]
pub struct Appraisal {
    /// Findings per claim (empty = affirming).
    pub claims: BTreeMap<&'static str, Vec<Finding>>,
    /// The AK name appraised.
    pub ak_name: Option<Vec<u8>>,
    /// The quoted PCR values.
    pub pcrs: PcrValues,
}

impl Appraisal {
    fn new() -> Self {
        Appraisal {
            claims: CLAIMS.iter().map(|c| (*c, Vec::new())).collect(),
            ak_name: None,
            pcrs: PcrValues::new(),
        }
    }

    fn fail(
        &mut self,
        claim: &'static str,
        reason: String,
        expected: Option<String>,
        actual: Option<String>,
    ) {
        self.add(claim, Status::Contraindicated, reason, expected, actual);
    }

    fn add(
        &mut self,
        claim: &'static str,
        status: Status,
        reason: String,
        expected: Option<String>,
        actual: Option<String>,
    ) {
        self.claims.entry(claim).or_default().push(Finding {
            status,
            reason,
            expected,
            actual,
        });
    }

    /// The status of one claim: the worst of its findings, affirming when it has none.
    pub fn status(&self, claim: &str) -> Status {
        self.claims
            .get(claim)
            .and_then(|f| f.iter().map(|f| f.status).max())
            .unwrap_or(Status::Affirming)
    }

    /// The overall status: the worst claim.
    pub fn overall(&self) -> Status {
        CLAIMS
            .iter()
            .map(|c| self.status(c))
            .max()
            .unwrap_or(Status::None)
    }
}

/// The claim an event of this kind belongs to.
pub fn claim_of(what: &Measured) -> &'static str {
    match what {
        Measured::Kernel(_) => "kernel",
        Measured::Signer(_) => "signer",
        Measured::SecurityVersion(_) => "security-version",
        Measured::Cmdline => "cmdline",
        Measured::Initramfs => "initramfs",
        Measured::Manifest => "bundle",
        Measured::PodConfig => "pod-config",
    }
}

/// The claims whose events go into a PCR.
fn claims_of_pcr(pcr: u32) -> &'static [&'static str] {
    match pcr {
        4 => &["kernel"],
        7 => &["signer", "security-version"],
        8 => &["cmdline"],
        9 => &["initramfs"],
        11 => &["bundle"],
        12 => &["pod-config"],
        _ => &["evidence"],
    }
}

/// The SHA-256 of the PCR values in `pcrs` order (what a quote's pcrDigest is).
pub fn pcr_digest(pcrs: &PcrValues, order: &[u32]) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    for p in order {
        h.update(pcrs.get(p)?.as_bytes());
    }
    Some(h.finalize().into())
}

/// Appraises `evidence` against `reference`, with the verifier's `nonce` and what it knows
/// of the AK.
pub fn appraise(
    evidence: &Evidence,
    reference: &Reference<'_>,
    nonce: &[u8],
    identity: &Identity,
) -> Appraisal {
    let mut a = Appraisal::new();
    a.pcrs = evidence.pcrs.clone();
    let quote = check_quote(evidence, nonce, identity, &mut a);
    let log = match EventLog::from_bytes(&evidence.event_log) {
        Ok(l) => Some(l),
        Err(e) => {
            a.fail(
                "evidence",
                format!("the event log does not parse: {e}"),
                None,
                None,
            );
            None
        }
    };
    if let (Some(_), Some(log)) = (quote, &log) {
        check_replay(log, &evidence.pcrs, &mut a);
    }
    match reference.bundle {
        Err(e) => {
            let claim = if matches!(e, VerifyError::Rollback { .. }) {
                "security-version"
            } else {
                "signer"
            };
            a.fail(
                claim,
                format!("the bundle does not pass the policy: {e}"),
                None,
                None,
            );
            for c in ["kernel", "initramfs", "cmdline", "bundle", "pod-config"] {
                a.add(
                    c,
                    Status::None,
                    "no reference values: the bundle was rejected".into(),
                    None,
                    None,
                );
            }
        }
        Ok(bundle) => {
            if let Some(log) = &log {
                check_events(log, bundle, reference.pod_segment, &mut a);
            }
        }
    }
    a
}

/// Signature, AK, nonce, selection and PCR digest. Returns the quote when it can be
/// trusted to bind the PCR values (the replay is checked against them only then).
fn check_quote(
    evidence: &Evidence,
    nonce: &[u8],
    identity: &Identity,
    a: &mut Appraisal,
) -> Option<Quote> {
    let ak = match Public::parse(&evidence.ak_public) {
        Ok(ak) => ak,
        Err(e) => {
            a.fail(
                "tpm-identity",
                format!("the AK public area does not parse: {e}"),
                None,
                None,
            );
            return None;
        }
    };
    let name = ak.name();
    a.ak_name = Some(name.clone());
    match identity {
        Identity::Activated { ak_name, .. } | Identity::Pinned { ak_name } if *ak_name != name => {
            a.fail(
                "tpm-identity",
                "the quote's AK is not the AK proven to live in the pod's certified TPM".into(),
                Some(hex::encode(ak_name)),
                Some(hex::encode(&name)),
            );
        }
        Identity::Unproven { reason } => {
            a.fail(
                "tpm-identity",
                format!("the AK's TPM is not proven: {reason}"),
                None,
                None,
            );
        }
        _ => {}
    }
    if ak.attributes & attr::AK_REQUIRED != attr::AK_REQUIRED || ak.attributes & attr::DECRYPT != 0
    {
        a.fail(
            "tpm-identity",
            "the AK is not a restricted, TPM-generated, fixedTPM signing key".into(),
            Some(format!("{:#010x} set, decrypt clear", attr::AK_REQUIRED)),
            Some(format!("{:#010x}", ak.attributes)),
        );
    }
    let key = match (&ak.key, ak.sec1_point()) {
        (PublicKey::Ecc { curve, .. }, Some(point)) if *curve == ECC_NIST_P256 => {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).ok()
        }
        _ => None,
    };
    let Some(key) = key else {
        a.fail(
            "tpm-identity",
            "the AK is not an ECC NIST P-256 key".into(),
            None,
            None,
        );
        return None;
    };
    let signed = EcdsaSignature::parse(&evidence.signature)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            if s.hash != ALG_SHA256 {
                return Err(format!("signature hash {:#06x} is not SHA-256", s.hash));
            }
            let pad = |v: &[u8]| -> Option<[u8; 32]> {
                let mut b = [0u8; 32];
                let off = 32usize.checked_sub(v.len())?;
                b.get_mut(off..)?.copy_from_slice(v);
                Some(b)
            };
            let (Some(r), Some(s)) = (pad(&s.r), pad(&s.s)) else {
                return Err("signature scalars longer than 32 bytes".into());
            };
            let sig = p256::ecdsa::Signature::from_scalars(r, s).map_err(|e| e.to_string())?;
            key.verify(&evidence.attest, &sig)
                .map_err(|_| "the quote signature does not verify under the AK".to_string())
        });
    if let Err(reason) = signed {
        a.fail("tpm-identity", reason, None, Some(hex::encode(&name)));
        return None;
    }
    let quote = match Quote::parse(&evidence.attest) {
        Ok(q) => q,
        Err(e) => {
            a.fail(
                "evidence",
                format!("the signed quote does not parse: {e}"),
                None,
                None,
            );
            return None;
        }
    };
    if quote.extra_data != nonce {
        a.fail(
            "freshness",
            "the quote does not carry this appraisal's nonce (stale or replayed)".into(),
            Some(hex::encode(nonce)),
            Some(hex::encode(&quote.extra_data)),
        );
    }
    let want: Vec<u32> = PCRS.to_vec();
    let covered =
        matches!(quote.selection.as_slice(), [s] if s.hash == ALG_SHA256 && s.pcrs == want);
    if !covered {
        a.fail(
            "evidence",
            "the quote does not cover exactly jek's PCRs in the SHA-256 bank".into(),
            Some(format!("sha256:{want:?}")),
            Some(
                quote
                    .selection
                    .iter()
                    .map(|s| format!("{:#06x}:{:?}", s.hash, s.pcrs))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        );
        return None;
    }
    match pcr_digest(&evidence.pcrs, &want) {
        Some(d) if d.as_slice() == quote.pcr_digest => Some(quote),
        d => {
            a.fail(
                "evidence",
                "the PCR values given are not the ones the TPM quoted".into(),
                Some(hex::encode(&quote.pcr_digest)),
                d.map(hex::encode),
            );
            None
        }
    }
}

/// The log replays to exactly the quoted PCR values; a quoted PCR the log does not explain
/// replays to zero and fails here.
fn check_replay(log: &EventLog, pcrs: &PcrValues, a: &mut Appraisal) {
    let replay = log.replay();
    for ev in &log.events {
        if !PCRS.contains(&ev.pcr) {
            a.fail(
                "evidence",
                format!(
                    "the event log extends PCR {}, which jek does not use",
                    ev.pcr
                ),
                None,
                None,
            );
        }
    }
    for p in PCRS {
        let zero = Sha256Digest([0; 32]);
        let got = replay.get(&p).copied().unwrap_or(zero);
        let quoted = pcrs.get(&p).copied().unwrap_or(zero);
        if got != quoted {
            for claim in claims_of_pcr(p) {
                a.fail(
                    claim,
                    format!("PCR {p}: the quoted value is not what the event log replays to (extended outside the log, or the log was edited)"),
                    Some(got.to_string()),
                    Some(quoted.to_string()),
                );
            }
        }
    }
}

/// Each event, in order, is the reference event.
fn check_events(log: &EventLog, bundle: &Verified<Bundle>, pod_segment: &[u8], a: &mut Appraisal) {
    let Some(reference) = reference_events(log, bundle, pod_segment) else {
        a.fail(
            "kernel",
            "the bundle has no kernel image to derive references from".into(),
            None,
            None,
        );
        return;
    };
    let n = reference.len().max(log.events.len());
    for i in 0..n {
        match (reference.get(i), log.events.get(i)) {
            (Some(want), Some(got)) if want.event == *got => {}
            (Some(want), Some(got)) => {
                let claim = claim_of(&want.what);
                let what = &want.what;
                let (expected, actual) =
                    if want.event.pcr != got.pcr || want.event.event_type != got.event_type {
                        (
                            format!("PCR {} type {:#x}", want.event.pcr, want.event.event_type),
                            format!("PCR {} type {:#x}", got.pcr, got.event_type),
                        )
                    } else if want.event.digest != got.digest {
                        (want.event.digest.to_string(), got.digest.to_string())
                    } else {
                        (hex::encode(&want.event.data), hex::encode(&got.data))
                    };
                a.fail(
                    claim,
                    format!(
                        "event {i} ({what}, PCR {}) differs from the reference",
                        want.event.pcr
                    ),
                    Some(expected),
                    Some(actual),
                );
            }
            (Some(want), None) => a.fail(
                claim_of(&want.what),
                format!(
                    "event {i} ({}, PCR {}) is missing: the log is truncated",
                    want.what, want.event.pcr
                ),
                Some(want.event.digest.to_string()),
                None,
            ),
            (None, Some(got)) => {
                for claim in claims_of_pcr(got.pcr) {
                    a.fail(
                        claim,
                        format!(
                            "event {i} (PCR {}) is not in the reference: an extra measurement",
                            got.pcr
                        ),
                        None,
                        Some(got.digest.to_string()),
                    );
                }
            }
            (None, None) => {}
        }
    }
}

/// The reference events for the kernel the log says was booted (bzImage or vmlinux, both
/// signed), defaulting to the bzImage.
pub fn reference_events(
    log: &EventLog,
    bundle: &Verified<Bundle>,
    pod_segment: &[u8],
) -> Option<Vec<PlannedEvent>> {
    let booted = log.events.first().map(|e| e.digest);
    let mut fallback = None;
    for role in [Role::BzImage, Role::Vmlinux] {
        if let Some(events) = plan(bundle, role, pod_segment) {
            if events.first().map(|e| e.event.digest) == booted {
                return Some(events);
            }
            fallback.get_or_insert(events);
        }
    }
    fallback
}

/// The attestation result in the IETF RATS EAR shape (draft-ietf-rats-ear), unsigned: the
/// claims set of one pod under `submods`, with jek's per-claim detail in `jek.claims`.
pub fn ear(
    appraisal: &Appraisal,
    pod: &str,
    nonce: &[u8],
    iat: u64,
    policy_id: &str,
    extra: Value,
) -> Value {
    use base64::Engine;
    let claims: serde_json::Map<String, Value> = CLAIMS
        .iter()
        .map(|c| {
            let findings = appraisal.claims.get(c).cloned().unwrap_or_default();
            let mut v = json!({ "status": appraisal.status(c).name() });
            if let Some(first) = findings.first() {
                v["reason"] = json!(first.reason);
                if let Some(e) = &first.expected {
                    v["expected"] = json!(e);
                }
                if let Some(a) = &first.actual {
                    v["actual"] = json!(a);
                }
                if findings.len() > 1 {
                    v["more"] = json!(findings[1..]
                        .iter()
                        .map(|f| f.reason.clone())
                        .collect::<Vec<_>>());
                }
            }
            ((*c).to_string(), v)
        })
        .collect();
    let worst = |cs: &[&str]| {
        cs.iter()
            .map(|c| appraisal.status(c))
            .max()
            .unwrap_or(Status::None)
            .tier()
    };
    let mut sub = json!({
        "ear.status": appraisal.overall().name(),
        "ear.trustworthiness-vector": {
            "instance-identity": worst(&["tpm-identity", "freshness"]),
            "hardware": worst(&["tpm-identity"]),
            "executables": worst(&["kernel", "initramfs", "bundle", "signer", "security-version", "evidence"]),
            "configuration": worst(&["cmdline", "pod-config", "evidence"]),
        },
        "ear.appraisal-policy-id": policy_id,
        "jek.claims": Value::Object(claims),
        "jek.pcrs": Value::Object(appraisal.pcrs.iter().map(|(k, v)| (k.to_string(), json!(v.to_string()))).collect()),
        "jek.ak-name": appraisal.ak_name.as_ref().map(hex::encode),
    });
    if let (Value::Object(s), Value::Object(e)) = (&mut sub, extra) {
        s.extend(e);
    }
    json!({
        "eat_profile": "tag:github.com,2023:veraison/ear",
        "iat": iat,
        "ear.verifier-id": { "developer": "jek", "build": concat!("jek ", env!("CARGO_PKG_VERSION")) },
        "eat_nonce": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce),
        "submods": { pod: sub },
    })
}
