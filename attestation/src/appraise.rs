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
//! | `images` | PCR 13 names, in order, exactly the pod's containers with an image, each with the reference the pod file gives, and the image policy allows each image's manifest digest now |

use std::collections::BTreeMap;
use std::path::PathBuf;

use jek_measure::eventlog::EventLog;
use jek_measure::plan::{
    added_container, added_container_event, containers_booted, containers_in_log, plan_with_images,
    ContainerEvent, Measured, PlannedEvent, PCRS,
};
use jek_measure::PcrValues;
use jek_verifier::format::Role;
use jek_verifier::{Bundle, Sha256Digest, Verified, VerifyError};
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};

use crate::registration::Registration;
use crate::tpm2::{attr, EcdsaSignature, Public, PublicKey, Quote, ALG_SHA256, ECC_NIST_P256};

/// What the appraisal judges, in report order. An enum, so a misspelt claim does not
/// compile (and cannot fail open).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Claim {
    /// The AK lives in the pod's certified TPM and signed the quote.
    TpmIdentity,
    /// The quote carries this appraisal's nonce.
    Freshness,
    /// The TPM was neither reset nor restarted since the pod registered, and its clock
    /// moves forward.
    BootEpoch,
    /// The quote covers jek's PCRs with these values; the event log parses.
    Evidence,
    /// PCR 4: the kernel image.
    Kernel,
    /// PCR 9: the initramfs.
    Initramfs,
    /// PCR 8: the command line.
    Cmdline,
    /// PCR 7: the signers.
    Signer,
    /// PCR 7: the security version.
    SecurityVersion,
    /// PCR 11: the signed manifest.
    Bundle,
    /// PCR 12: the pod segment.
    PodConfig,
    /// PCR 13: the container images.
    Images,
}

impl Claim {
    /// Every claim, in report order.
    pub const ALL: [Claim; 12] = [
        Claim::TpmIdentity,
        Claim::Freshness,
        Claim::BootEpoch,
        Claim::Evidence,
        Claim::Kernel,
        Claim::Initramfs,
        Claim::Cmdline,
        Claim::Signer,
        Claim::SecurityVersion,
        Claim::Bundle,
        Claim::PodConfig,
        Claim::Images,
    ];

    /// The claim's name in results.
    pub fn name(self) -> &'static str {
        match self {
            Claim::TpmIdentity => "tpm-identity",
            Claim::Freshness => "freshness",
            Claim::BootEpoch => "boot-epoch",
            Claim::Evidence => "evidence",
            Claim::Kernel => "kernel",
            Claim::Initramfs => "initramfs",
            Claim::Cmdline => "cmdline",
            Claim::Signer => "signer",
            Claim::SecurityVersion => "security-version",
            Claim::Bundle => "bundle",
            Claim::PodConfig => "pod-config",
            Claim::Images => "images",
        }
    }
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// EAR status tiers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
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

/// What the verifier established about the AK before appraisal. Its fields are private:
/// an activated identity is made only by [`crate::protocol`], when a credential bound to
/// the AK's name was released by the TPM whose EK certificate chains to a trusted CA, so no
/// caller can claim one it did not prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    kind: IdentityKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum IdentityKind {
    Activated { ak_name: Vec<u8>, ek: String },
    Pinned { ak_name: Vec<u8> },
    Unproven { reason: String },
}

impl Identity {
    pub(crate) fn activated(ak_name: Vec<u8>, ek_subject: String) -> Self {
        Identity {
            kind: IdentityKind::Activated {
                ak_name,
                ek: ek_subject,
            },
        }
    }

    pub(crate) fn pinned(ak_name: Vec<u8>) -> Self {
        Identity {
            kind: IdentityKind::Pinned { ak_name },
        }
    }

    /// An AK whose TPM was not proven, and why. Appraised, it is contraindicated.
    pub fn unproven(reason: impl Into<String>) -> Self {
        Identity {
            kind: IdentityKind::Unproven {
                reason: reason.into(),
            },
        }
    }

    /// The AK name that was proven or pinned.
    pub fn ak_name(&self) -> Option<&[u8]> {
        match &self.kind {
            IdentityKind::Activated { ak_name, .. } | IdentityKind::Pinned { ak_name } => {
                Some(ak_name)
            }
            IdentityKind::Unproven { .. } => None,
        }
    }

    /// The certified EK's subject, for an activated identity.
    pub fn ek_subject(&self) -> Option<&str> {
        match &self.kind {
            IdentityKind::Activated { ek, .. } => Some(ek),
            _ => None,
        }
    }

    /// Why the identity is not proven, if it is not.
    pub fn unproven_reason(&self) -> Option<&str> {
        match &self.kind {
            IdentityKind::Unproven { reason } => Some(reason),
            _ => None,
        }
    }
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

/// The image policy's verdict on the image a container ran.
pub type ImageVerdict<'a> = &'a (dyn Fn(&ContainerEvent) -> Result<(), String> + Sync);

/// A container's image as the verifier expects it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedImage {
    /// The container.
    pub container: String,
    /// The image reference as the pod file writes it.
    pub reference: String,
    /// The manifest digest the reference resolves to now (a tag asked of its registry at
    /// appraisal time), or why it could not be resolved.
    pub manifest: Result<String, String>,
}

/// What a pod was meant to get, from its pod file: the reference values its evidence is
/// appraised against, apart from the bundle.
#[derive(Debug, Clone, Default)]
pub struct PodReference {
    /// Its pod segment.
    pub segment: Vec<u8>,
    /// Its containers with an image, in order, with the digests their references name now.
    pub images: Vec<ExpectedImage>,
    /// The directory relative `oci:` references are taken from (the pod file's).
    pub base_dir: PathBuf,
    /// A pod sandbox: containers may join it while it runs (measured as they arrive).
    pub sandbox: bool,
}

impl PodReference {
    /// The reference of the pod `spec` read from a pod file in `base_dir`: its pod segment,
    /// and the manifest digest `current_manifest` says each image reference names now (the
    /// caller asks the registry or the OCI layout; a failure is kept, to contraindicate the
    /// claim, not to stop). The one constructor the CLI and the service both call.
    pub fn new(
        spec: &jek_pod::PodSpec,
        base_dir: PathBuf,
        current_manifest: impl Fn(&str) -> Result<String, String>,
    ) -> Result<Self, jek_pod::SegmentError> {
        Ok(PodReference {
            segment: jek_pod::segment(spec)?,
            images: spec
                .containers
                .iter()
                .filter_map(|c| {
                    let reference = c.image.clone()?;
                    let manifest = current_manifest(&reference);
                    Some(ExpectedImage {
                        container: c.name.clone(),
                        reference,
                        manifest,
                    })
                })
                .collect(),
            base_dir,
            sandbox: spec.agent,
        })
    }

    /// The rules for its containers' images, with the image policy's verdict `allow`.
    pub fn image_rules<'a>(&'a self, allow: ImageVerdict<'a>) -> ImageRules<'a> {
        ImageRules {
            expected: &self.images,
            allow: Some(allow),
            sandbox: self.sandbox,
        }
    }
}

/// What a pod's containers with images must have run.
#[derive(Clone, Copy, Default)]
pub struct ImageRules<'a> {
    /// The pod's containers with an image, in container order.
    pub expected: &'a [ExpectedImage],
    /// The image policy (`None`: it allows no image).
    pub allow: Option<ImageVerdict<'a>>,
    /// A pod sandbox: after its boot events, its log may hold containers added while it
    /// ran (each an `added_container_event`), which the image policy must allow.
    pub sandbox: bool,
}

/// The reference: the bundle as the policy judged it, the pod configuration segment, and
/// what the verifier recorded when the pod registered.
pub struct Reference<'a> {
    /// The verified bundle, or why the policy rejected it.
    pub bundle: Result<&'a Verified<Bundle>, &'a VerifyError>,
    /// The pod segment the pod was given (empty for none).
    pub pod_segment: &'a [u8],
    /// What its containers with images must have run.
    pub images: ImageRules<'a>,
    /// The pod's registration (`None`: not registered, which fails `boot-epoch`).
    pub registration: Option<&'a Registration>,
}

/// The appraisal of one pod.
#[derive(Debug, Clone)]
pub struct Appraisal {
    /// Findings per claim (empty = affirming).
    pub claims: BTreeMap<Claim, Vec<Finding>>,
    /// The AK name appraised.
    pub ak_name: Option<Vec<u8>>,
    /// The quoted PCR values.
    pub pcrs: PcrValues,
    /// The images the log says the containers ran, with their segment digests.
    pub images: Vec<(ContainerEvent, Sha256Digest)>,
}

impl std::fmt::Debug for ImageRules<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageRules")
            .field("expected", &self.expected)
            .field("allow", &self.allow.map(|_| "<image policy>"))
            .field("sandbox", &self.sandbox)
            .finish()
    }
}

impl Appraisal {
    fn new() -> Self {
        Appraisal {
            claims: Claim::ALL.iter().map(|c| (*c, Vec::new())).collect(),
            ak_name: None,
            pcrs: PcrValues::new(),
            images: Vec::new(),
        }
    }

    fn fail(
        &mut self,
        claim: Claim,
        reason: String,
        expected: Option<String>,
        actual: Option<String>,
    ) {
        self.add(claim, Status::Contraindicated, reason, expected, actual);
    }

    fn add(
        &mut self,
        claim: Claim,
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
    pub fn status(&self, claim: Claim) -> Status {
        self.claims
            .get(&claim)
            .and_then(|f| f.iter().map(|f| f.status).max())
            .unwrap_or(Status::Affirming)
    }

    /// The overall status: the worst claim.
    pub fn overall(&self) -> Status {
        Claim::ALL
            .iter()
            .map(|c| self.status(*c))
            .max()
            .unwrap_or(Status::None)
    }
}

/// The claim an event of this kind belongs to.
pub fn claim_of(what: &Measured) -> Claim {
    match what {
        Measured::Kernel(_) => Claim::Kernel,
        Measured::Signer(_) => Claim::Signer,
        Measured::SecurityVersion(_) => Claim::SecurityVersion,
        Measured::Cmdline => Claim::Cmdline,
        Measured::Initramfs => Claim::Initramfs,
        Measured::Manifest => Claim::Bundle,
        Measured::PodConfig => Claim::PodConfig,
        Measured::Container(_) | Measured::Containers(_) | Measured::ContainerAdded(_) => {
            Claim::Images
        }
    }
}

/// The claims whose events go into a PCR.
fn claims_of_pcr(pcr: u32) -> &'static [Claim] {
    match pcr {
        4 => &[Claim::Kernel],
        7 => &[Claim::Signer, Claim::SecurityVersion],
        8 => &[Claim::Cmdline],
        9 => &[Claim::Initramfs],
        11 => &[Claim::Bundle],
        12 => &[Claim::PodConfig],
        13 => &[Claim::Images],
        _ => &[Claim::Evidence],
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
    let quote = check_quote(evidence, nonce, identity, &mut a);
    check_epoch(quote.as_ref(), reference.registration, &mut a);
    let log = match EventLog::from_bytes(&evidence.event_log) {
        Ok(l) => Some(l),
        Err(e) => {
            a.fail(
                Claim::Evidence,
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
    if let Some(log) = &log {
        a.images = containers_in_log(log);
        check_images(&reference.images, &containers_booted(log), &mut a);
    }
    match reference.bundle {
        Err(e) => {
            let claim = if matches!(e, VerifyError::Rollback { .. }) {
                Claim::SecurityVersion
            } else {
                Claim::Signer
            };
            a.fail(
                claim,
                format!("the bundle does not pass the policy: {e}"),
                None,
                None,
            );
            for c in [
                Claim::Kernel,
                Claim::Initramfs,
                Claim::Cmdline,
                Claim::Bundle,
                Claim::PodConfig,
                Claim::Images,
            ] {
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
                check_events(log, bundle, reference, &mut a);
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
                Claim::TpmIdentity,
                format!("the AK public area does not parse: {e}"),
                None,
                None,
            );
            return None;
        }
    };
    let name = ak.name();
    a.ak_name = Some(name.clone());
    match &identity.kind {
        IdentityKind::Activated { ak_name, .. } | IdentityKind::Pinned { ak_name }
            if *ak_name != name =>
        {
            a.fail(
                Claim::TpmIdentity,
                "the quote's AK is not the AK proven to live in the pod's certified TPM".into(),
                Some(hex::encode(ak_name)),
                Some(hex::encode(&name)),
            );
        }
        IdentityKind::Unproven { reason } => {
            a.fail(
                Claim::TpmIdentity,
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
            Claim::TpmIdentity,
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
            Claim::TpmIdentity,
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
        a.fail(Claim::TpmIdentity, reason, None, Some(hex::encode(&name)));
        return None;
    }
    let quote = match Quote::parse(&evidence.attest) {
        Ok(q) => q,
        Err(e) => {
            a.fail(
                Claim::Evidence,
                format!("the signed quote does not parse: {e}"),
                None,
                None,
            );
            return None;
        }
    };
    if quote.extra_data != nonce {
        a.fail(
            Claim::Freshness,
            "the quote does not carry this appraisal's nonce (stale or replayed)".into(),
            Some(hex::encode(nonce)),
            Some(hex::encode(&quote.extra_data)),
        );
    }
    // The result reports only PCRs this quote covers.
    a.pcrs = evidence
        .pcrs
        .iter()
        .filter(|(p, _)| {
            quote
                .selection
                .iter()
                .any(|s| s.hash == ALG_SHA256 && s.pcrs.contains(p))
        })
        .map(|(p, v)| (*p, *v))
        .collect();
    let want: Vec<u32> = PCRS.to_vec();
    let covered =
        matches!(quote.selection.as_slice(), [s] if s.hash == ALG_SHA256 && s.pcrs == want);
    if !covered {
        a.fail(
            Claim::Evidence,
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
                Claim::Evidence,
                "the PCR values given are not the ones the TPM quoted".into(),
                Some(hex::encode(&quote.pcr_digest)),
                d.map(hex::encode),
            );
            None
        }
    }
}

/// The quote continues the registered epoch, under the registered AK.
fn check_epoch(quote: Option<&Quote>, registration: Option<&Registration>, a: &mut Appraisal) {
    let Some(reg) = registration else {
        a.fail(
            Claim::BootEpoch,
            "the pod is not registered with this verifier: its TPM's epoch is unknown".into(),
            None,
            None,
        );
        return;
    };
    if let Some(name) = &a.ak_name {
        if *name != reg.ak_name.0 {
            a.fail(
                Claim::TpmIdentity,
                "the quote's AK is not the one registered for this pod".into(),
                Some(reg.ak_name.to_string()),
                Some(hex::encode(name)),
            );
        }
    }
    match quote {
        Some(q) => {
            if let Err(e) = reg.check(q) {
                a.fail(
                    Claim::BootEpoch,
                    e.to_string(),
                    Some(format!(
                        "resetCount {}, restartCount {}, clock >= {}",
                        reg.epoch.reset_count,
                        reg.epoch.restart_count,
                        reg.last_clock.max(reg.epoch.clock)
                    )),
                    Some(format!(
                        "resetCount {}, restartCount {}, clock {}, safe {}",
                        q.reset_count, q.restart_count, q.clock, q.safe
                    )),
                );
            }
        }
        None => a.add(
            Claim::BootEpoch,
            Status::None,
            "no trusted quote to read the epoch from".into(),
            None,
            None,
        ),
    }
}

/// The log replays to exactly the quoted PCR values; a quoted PCR the log does not explain
/// replays to zero and fails here.
fn check_replay(log: &EventLog, pcrs: &PcrValues, a: &mut Appraisal) {
    let replay = log.replay();
    for ev in &log.events {
        if !PCRS.contains(&ev.pcr) {
            a.fail(
                Claim::Evidence,
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
                    *claim,
                    format!("PCR {p}: the quoted value is not what the event log replays to (extended outside the log, or the log was edited)"),
                    Some(got.to_string()),
                    Some(quoted.to_string()),
                );
            }
        }
    }
}

/// Each event, in order, is the reference event.
fn check_events(
    log: &EventLog,
    bundle: &Verified<Bundle>,
    meant: &Reference<'_>,
    a: &mut Appraisal,
) {
    let booted = containers_booted(log);
    let Some(mut reference) = reference_events(log, bundle, meant.pod_segment, &booted) else {
        a.fail(
            Claim::Kernel,
            "the bundle has no kernel image to derive references from".into(),
            None,
            None,
        );
        return;
    };
    if meant.images.sandbox {
        // What joined the running pod: each event exactly as the host makes it, after
        // the boot's. Anything else there is an extra measurement, as in any pod.
        reference.extend(
            log.events
                .iter()
                .skip(reference.len())
                .map_while(|e| Some(added_container_event(&added_container(e)?, e.digest))),
        );
    }
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
                        *claim,
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

/// The images claim: the containers the log names are, in order, the pod's containers
/// with an image, with the references the pod file gives, and the image policy allows each
/// image now. (Their events' form and digests are checked with every other event.)
fn check_images(
    rules: &ImageRules<'_>,
    booted: &[(ContainerEvent, Sha256Digest)],
    a: &mut Appraisal,
) {
    let ran: Vec<(String, String)> = booted
        .iter()
        .map(|(e, _)| (e.container.clone(), e.reference.clone()))
        .collect();
    let named: Vec<(String, String)> = rules
        .expected
        .iter()
        .map(|e| (e.container.clone(), e.reference.clone()))
        .collect();
    if ran != named {
        let list = |v: &[(String, String)]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|(c, r)| format!("{c}={r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        a.fail(
            Claim::Images,
            "the containers' images are not the ones the pod file names".into(),
            Some(list(&named)),
            Some(list(&ran)),
        );
    } else {
        // The same references: each must still name the image that ran.
        let mut moved = Vec::new();
        for ((event, _), want) in booted.iter().zip(rules.expected) {
            match &want.manifest {
                Ok(d) if *d == event.manifest => {}
                // The reference pins the very manifest that ran (the containerd shim
                // records `name@digest`): nothing can have moved, and nothing needs asking.
                Err(_) if pins(&event.reference, &event.manifest) => {}
                Ok(d) => moved.push((
                    format!(
                        "container {}: {} now names another image than the one that ran",
                        event.container, event.reference
                    ),
                    Some(d.clone()),
                    Some(event.manifest.clone()),
                )),
                Err(why) => moved.push((
                    format!(
                        "container {}: cannot resolve {} now: {why}",
                        event.container, event.reference
                    ),
                    None,
                    Some(event.manifest.clone()),
                )),
            }
        }
        for (reason, expected, actual) in moved {
            a.fail(Claim::Images, reason, expected, actual);
        }
    }
    let mut refusals = Vec::new();
    for (event, _) in &a.images {
        let verdict = match rules.allow {
            Some(allow) => allow(event),
            None => Err("the policy allows no images (it has no images: section)".into()),
        };
        if let Err(reason) = verdict {
            refusals.push((event.clone(), reason));
        }
    }
    for (event, reason) in refusals {
        a.fail(
            Claim::Images,
            format!("container {}: {reason}", event.container),
            None,
            Some(format!("{}@{}", event.reference, event.manifest)),
        );
    }
}

/// Whether `reference` ends in `@digest`.
fn pins(reference: &str, digest: &str) -> bool {
    reference.rsplit_once('@').is_some_and(|(_, d)| d == digest)
}

/// The reference events for the kernel the log says was booted (bzImage or vmlinux, both
/// signed), defaulting to the bzImage, with the containers `images`.
pub fn reference_events(
    log: &EventLog,
    bundle: &Verified<Bundle>,
    pod_segment: &[u8],
    images: &[(ContainerEvent, Sha256Digest)],
) -> Option<Vec<PlannedEvent>> {
    let booted = log.events.first().map(|e| e.digest);
    let mut fallback = None;
    for role in [Role::BzImage, Role::Vmlinux] {
        if let Some(events) = plan_with_images(bundle, role, pod_segment, images) {
            if events.first().map(|e| e.event.digest) == booted {
                return Some(events);
            }
            fallback.get_or_insert(events);
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ran(reference: &str, manifest: &str) -> Appraisal {
        let mut a = Appraisal::new();
        let event = ContainerEvent {
            container: "c".into(),
            manifest: manifest.into(),
            config: format!("sha256:{}", "c".repeat(64)),
            reference: reference.into(),
        };
        a.images = vec![(event, Sha256Digest([0; 32]))];
        a
    }

    fn images_status(reference: &str, manifest: &str, now: Result<String, String>) -> Status {
        let expected = [ExpectedImage {
            container: "c".into(),
            reference: reference.into(),
            manifest: now,
        }];
        let allow = |_: &ContainerEvent| Ok(());
        let rules = ImageRules {
            expected: &expected,
            allow: Some(&allow),
            sandbox: false,
        };
        let mut a = ran(reference, manifest);
        let booted = a.images.clone();
        check_images(&rules, &booted, &mut a);
        a.status(Claim::Images)
    }

    #[test]
    fn a_reference_that_pins_what_ran_needs_no_registry() {
        let m = format!("sha256:{}", "a".repeat(64));
        let other = format!("sha256:{}", "b".repeat(64));
        let unreachable = || Err("the registry is unreachable".to_string());
        let pinned = format!("docker.io/library/busybox:t@{m}");
        assert_eq!(images_status(&pinned, &m, unreachable()), Status::Affirming);
        // A tag cannot be appraised without asking what it names now.
        assert_ne!(
            images_status("docker.io/library/busybox:t", &m, unreachable()),
            Status::Affirming
        );
        // A pinned index (or anything else) that is not what ran still has to resolve.
        let index = format!("docker.io/library/busybox@{other}");
        assert_ne!(images_status(&index, &m, unreachable()), Status::Affirming);
        assert_eq!(images_status(&index, &m, Ok(m.clone())), Status::Affirming);
    }
}
