//! The attestation result: an EAT Attestation Result (EAR, draft-ietf-rats-ear) as serde
//! types, one claims set per pod under `submods`, with jek's per-claim detail in
//! `jek.claims`. Field by field: `docs/cli.md` ("jek attest").

use std::collections::BTreeMap;

use jek_verifier::{Bundle, Sha256Digest, Verified};
use serde::{Deserialize, Serialize};

use crate::appraise::{Appraisal, Claim, Identity, Status};

/// The EAR profile jek's results follow.
pub const EAR_PROFILE: &str = "tag:github.com,2023:veraison/ear";

/// An attestation result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ear {
    /// `eat_profile`: [`EAR_PROFILE`].
    pub eat_profile: String,
    /// `iat`: when the appraisal was made (Unix seconds).
    pub iat: u64,
    /// `ear.verifier-id`.
    #[serde(rename = "ear.verifier-id")]
    pub verifier_id: VerifierId,
    /// `eat_nonce`: the verifier's nonce, base64url without padding.
    pub eat_nonce: String,
    /// `exp` (RFC 7519): when the result stops vouching for the pod (Unix seconds). Every
    /// signed result of `jek-verifier` carries it, a few attestation intervals after
    /// `iat`: a result that is not renewed (the pod stopped answering) expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// One appraisal per pod, by pod name.
    pub submods: BTreeMap<String, Submod>,
}

/// Who appraised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierId {
    /// `jek`.
    pub developer: String,
    /// `jek <version>`.
    pub build: String,
}

/// The appraisal of one pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submod {
    /// The worst claim's status.
    #[serde(rename = "ear.status")]
    pub status: Status,
    /// The AR4SI trustworthiness vector.
    #[serde(rename = "ear.trustworthiness-vector")]
    pub trust_vector: TrustVector,
    /// `jek:policy:sha256:<digest of the policy file>`.
    #[serde(rename = "ear.appraisal-policy-id")]
    pub policy_id: String,
    /// Every claim, with why it is not affirming.
    #[serde(rename = "jek.claims")]
    pub claims: BTreeMap<Claim, ClaimResult>,
    /// The quoted PCR values.
    #[serde(rename = "jek.pcrs")]
    pub pcrs: BTreeMap<u32, Sha256Digest>,
    /// The appraised AK's name (hex).
    #[serde(rename = "jek.ak-name")]
    pub ak_name: Option<String>,
    /// The registration the pod was appraised under (the verifier's pod identifier): what
    /// binds a result to one pod, so that no other pod's result can stand in for it.
    #[serde(
        rename = "jek.registration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub registration: Option<String>,
    /// The certified EK's subject, when the AK was activated.
    #[serde(
        rename = "jek.ek-subject",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ek_subject: Option<String>,
    /// The bundle the pod was appraised against, when the policy accepted it.
    #[serde(
        rename = "jek.bundle",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bundle: Option<BundleRef>,
    /// The images the pod's containers ran (PCR 13), in container order.
    #[serde(rename = "jek.images", default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<RanImage>,
    /// The Kubernetes pod the registration names, as the registering client (an admin:
    /// the containerd shim from CRI's annotations) asserted it; not measured.
    #[serde(
        rename = "jek.kubernetes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes: Option<KubernetesPod>,
    /// How long each step took, for online attestation.
    #[serde(
        rename = "jek.timingsMs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timings_ms: Option<Timings>,
}

/// A Kubernetes pod's identity: its namespace, name and uid (what `kubectl get pod -n
/// NAMESPACE NAME -o jsonpath={.metadata.uid}` shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesPod {
    /// The namespace (a DNS label).
    pub namespace: String,
    /// The pod's name (a DNS subdomain).
    pub name: String,
    /// The pod's uid (a UUID).
    pub uid: String,
}

impl KubernetesPod {
    /// Checks each field against what the Kubernetes API server admits: the namespace a DNS
    /// label (RFC 1123, at most 63), the name a DNS subdomain (at most 253), the uid a UUID
    /// (36 characters, lowercase hex and dashes). Names the field that is wrong.
    pub fn check(&self) -> Result<(), String> {
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !label(&self.namespace) {
            return Err(format!(
                "kubernetes.namespace {:?} is not a DNS label (a-z, 0-9, '-', at most 63)",
                self.namespace
            ));
        }
        if self.name.is_empty() || self.name.len() > 253 || !self.name.split('.').all(label) {
            return Err(format!(
                "kubernetes.name {:?} is not a DNS subdomain (labels joined by '.', at most 253)",
                self.name
            ));
        }
        let uuid = self.uid.len() == 36
            && self.uid.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        if !uuid {
            return Err(format!(
                "kubernetes.uid {:?} is not a UUID (8-4-4-4-12 lowercase hex digits)",
                self.uid
            ));
        }
        Ok(())
    }
}

/// AR4SI trustworthiness claims (0 none, 2 affirming, 32 warning, 96 contraindicated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TrustVector {
    /// TPM identity and freshness.
    pub instance_identity: u8,
    /// TPM identity.
    pub hardware: u8,
    /// Kernel, initramfs, bundle, signer, security version, evidence.
    pub executables: u8,
    /// Command line, pod configuration, evidence.
    pub configuration: u8,
}

/// One claim's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimResult {
    /// The claim's status.
    pub status: Status,
    /// The first finding's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The reference value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What the evidence shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    /// Further findings' reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<String>,
}

/// The bundle a pod was appraised against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleRef {
    /// Manifest name.
    pub name: String,
    /// Security version.
    pub security_version: u64,
    /// SHA-256 of the signed statement.
    pub manifest_digest: Sha256Digest,
}

/// An image a container ran, as PCR 13 measured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RanImage {
    /// The container.
    pub container: String,
    /// The image reference as the pod file wrote it.
    pub reference: String,
    /// The image manifest's digest.
    pub manifest_digest: String,
    /// The image config's digest.
    pub config_digest: String,
    /// The SHA-256 of the container segment (the root file system as booted).
    pub segment_digest: Sha256Digest,
}

/// Online attestation's step durations, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timings {
    /// EK certificate, chain, AK load, credential activation.
    pub identity: f64,
    /// From drawing the nonce to the verdict.
    pub nonce_to_verdict: f64,
    /// The appraisal alone.
    pub appraise: f64,
    /// The whole exchange.
    pub total: f64,
}

impl Submod {
    /// The claims set of one appraisal.
    pub fn new(
        appraisal: &Appraisal,
        identity: &Identity,
        bundle: Option<&Verified<Bundle>>,
        policy_id: &str,
    ) -> Self {
        let claims = Claim::ALL
            .iter()
            .map(|c| {
                let findings = appraisal.claims.get(c).map_or(&[][..], Vec::as_slice);
                let first = findings.first();
                (
                    *c,
                    ClaimResult {
                        status: appraisal.status(*c),
                        reason: first.map(|f| f.reason.clone()),
                        expected: first.and_then(|f| f.expected.clone()),
                        actual: first.and_then(|f| f.actual.clone()),
                        more: findings.iter().skip(1).map(|f| f.reason.clone()).collect(),
                    },
                )
            })
            .collect();
        let worst = |cs: &[Claim]| {
            cs.iter()
                .map(|c| appraisal.status(*c))
                .max()
                .unwrap_or(Status::None)
                .tier()
        };
        Submod {
            status: appraisal.overall(),
            trust_vector: TrustVector {
                instance_identity: worst(&[Claim::TpmIdentity, Claim::Freshness, Claim::BootEpoch]),
                hardware: worst(&[Claim::TpmIdentity]),
                executables: worst(&[
                    Claim::Images,
                    Claim::Kernel,
                    Claim::Initramfs,
                    Claim::Bundle,
                    Claim::Signer,
                    Claim::SecurityVersion,
                    Claim::Evidence,
                ]),
                configuration: worst(&[Claim::Cmdline, Claim::PodConfig, Claim::Evidence]),
            },
            policy_id: policy_id.to_string(),
            claims,
            pcrs: appraisal.pcrs.clone(),
            ak_name: appraisal.ak_name.as_ref().map(hex::encode),
            registration: None,
            ek_subject: identity.ek_subject().map(str::to_string),
            bundle: bundle.map(|b| BundleRef {
                name: b.manifest().name.clone(),
                security_version: b.manifest().security_version,
                manifest_digest: b.manifest_digest(),
            }),
            images: appraisal
                .images
                .iter()
                .map(|(e, d)| RanImage {
                    container: e.container.clone(),
                    reference: e.reference.clone(),
                    manifest_digest: e.manifest.clone(),
                    config_digest: e.config.clone(),
                    segment_digest: *d,
                })
                .collect(),
            kubernetes: None,
            timings_ms: None,
        }
    }

    /// The claims that are not affirming, in report order.
    pub fn failing(&self) -> impl Iterator<Item = (Claim, &ClaimResult)> {
        self.claims
            .iter()
            .filter(|(_, r)| r.status != Status::Affirming)
            .map(|(c, r)| (*c, r))
    }
}

impl Ear {
    /// A result for one pod.
    pub fn new(pod: &str, submod: Submod, nonce: &[u8], iat: u64) -> Self {
        use base64::Engine;
        Ear {
            eat_profile: EAR_PROFILE.to_string(),
            iat,
            verifier_id: VerifierId {
                developer: "jek".into(),
                build: concat!("jek ", env!("CARGO_PKG_VERSION")).into(),
            },
            eat_nonce: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce),
            exp: None,
            submods: [(pod.to_string(), submod)].into_iter().collect(),
        }
    }

    /// The claims set of `pod`.
    pub fn submod(&self, pod: &str) -> Option<&Submod> {
        self.submods.get(pod)
    }

    /// The one claims set this result holds, if it is bound to `registration` (its
    /// `jek.registration` names it, and the appraised AK is named): the pod's name and
    /// its claims. A result for another pod, for several, or for none is refused.
    pub fn bound_to(&self, registration: &str) -> Result<(&str, &Submod), BindingError> {
        let mut subs = self.submods.iter();
        let (Some((pod, sub)), None) = (subs.next(), subs.next()) else {
            return Err(BindingError::PodCount {
                count: self.submods.len(),
            });
        };
        match sub.registration.as_deref() {
            Some(r) if r == registration => {}
            other => {
                return Err(BindingError::OtherPod {
                    expected: registration.to_string(),
                    actual: other.unwrap_or("none").to_string(),
                    pod: pod.clone(),
                })
            }
        }
        if sub.ak_name.is_none() {
            return Err(BindingError::NoAk { pod: pod.clone() });
        }
        Ok((pod, sub))
    }
}

/// Why a result does not speak for the pod it was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// The result holds no pod, or several.
    #[error("the result holds {count} pods, not exactly one")]
    PodCount {
        /// How many it holds.
        count: usize,
    },
    /// The result is bound to another registration (or to none).
    #[error("the result is for registration {actual} (pod {pod:?}), not {expected}")]
    OtherPod {
        /// The registration asked for.
        expected: String,
        /// The one it names.
        actual: String,
        /// Its pod's name.
        pod: String,
    },
    /// The result names no appraised AK.
    #[error("the result for pod {pod:?} names no attestation key")]
    NoAk {
        /// The pod's name.
        pod: String,
    },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn submod(registration: Option<&str>, ak: Option<&str>) -> Submod {
        Submod {
            status: Status::Affirming,
            trust_vector: TrustVector {
                instance_identity: 2,
                hardware: 2,
                executables: 2,
                configuration: 2,
            },
            policy_id: "jek:policy:sha256:00".into(),
            claims: BTreeMap::new(),
            pcrs: BTreeMap::new(),
            ak_name: ak.map(str::to_string),
            registration: registration.map(str::to_string),
            ek_subject: None,
            bundle: None,
            images: Vec::new(),
            kubernetes: None,
            timings_ms: None,
        }
    }

    #[test]
    fn a_kubernetes_pod_is_checked_field_by_field() {
        let ok = KubernetesPod {
            namespace: "kube-system".into(),
            name: "coredns-5d78c9869d-x7k2p.a".into(),
            uid: "0d1c3a5e-7f00-4b1e-9a53-2c4e5f6a7b8c".into(),
        };
        assert_eq!(ok.check(), Ok(()));
        let with = |f: &dyn Fn(&mut KubernetesPod)| {
            let mut k = ok.clone();
            f(&mut k);
            k.check().unwrap_err()
        };
        for (e, field) in [
            (
                with(&|k| k.namespace = "Kube".into()),
                "kubernetes.namespace",
            ),
            (
                with(&|k| k.namespace = "a".repeat(64)),
                "kubernetes.namespace",
            ),
            (with(&|k| k.namespace = "-a".into()), "kubernetes.namespace"),
            (with(&|k| k.name = String::new()), "kubernetes.name"),
            (with(&|k| k.name = "web..0".into()), "kubernetes.name"),
            (with(&|k| k.name = "web/0".into()), "kubernetes.name"),
            (with(&|k| k.name = "a".repeat(254)), "kubernetes.name"),
            (with(&|k| k.uid = ok.uid.to_uppercase()), "kubernetes.uid"),
            (
                with(&|k| k.uid = ok.uid.replace('-', "x")),
                "kubernetes.uid",
            ),
            (with(&|k| k.uid = format!("{}0", ok.uid)), "kubernetes.uid"),
        ] {
            assert!(e.starts_with(field), "{e}");
        }
    }

    #[test]
    fn a_result_is_bound_to_its_registration_only() {
        let a = Ear::new("a", submod(Some("aa"), Some("000b")), b"nonce", 1);
        let (pod, _) = a.bound_to("aa").unwrap();
        assert_eq!(pod, "a");
        assert_eq!(
            a.bound_to("bb").unwrap_err(),
            BindingError::OtherPod {
                expected: "bb".into(),
                actual: "aa".into(),
                pod: "a".into()
            }
        );
        // No registration named, no AK named, or two pods in one result: bound to nothing.
        let unbound = Ear::new("a", submod(None, Some("000b")), b"nonce", 1);
        assert!(matches!(
            unbound.bound_to("aa"),
            Err(BindingError::OtherPod { .. })
        ));
        let no_ak = Ear::new("a", submod(Some("aa"), None), b"nonce", 1);
        assert_eq!(
            no_ak.bound_to("aa").unwrap_err(),
            BindingError::NoAk { pod: "a".into() }
        );
        let mut two = a.clone();
        two.submods
            .insert("b".into(), submod(Some("aa"), Some("000c")));
        assert_eq!(
            two.bound_to("aa").unwrap_err(),
            BindingError::PodCount { count: 2 }
        );
    }
}
