//! The records both APIs exchange, as serde types (docs/service-api.yaml describes them as
//! OpenAPI). Byte strings travel as standard base64 ([`B64`]); digests as `sha256:` hex.
//!
//! The agent API (`/v1/pods...` on `jek-agent`) is a thin, host-local view of each pod's
//! TPM: everything it returns is checked by the verifier cryptographically (EK chain,
//! credential activation, quote signature, nonce), so the agent is not trusted for any
//! verdict. The verifier API (`/v1/pods...`, `/v1/jwks`, `/v1/policy/reload` on
//! `jek-verifier`) registers pods and serves their signed results.

use base64::Engine as _;
pub use jek_attest::ear::KubernetesPod;
use jek_attest::{Claim, Status};
use jek_measure::PcrValues;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes as standard base64 (with padding) in JSON.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl std::fmt::Debug for B64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(B64)
            .map_err(|e| serde::de::Error::custom(format!("not standard base64: {e}")))
    }
}

/// An error answer of either API: what failed, as a stable code and a sentence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`not_found`, `bad_request`, `tpm_refused`, ...).
    pub code: String,
    /// What was wrong, naming the input.
    pub error: String,
}

// ---- the agent API ----

/// A pod on the agent's host (`GET /v1/pods`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentPod {
    /// The pod's identifier on this host (its registration in the host's store).
    pub id: String,
    /// The pod's name.
    pub pod: String,
    /// Whether its VM is running (the TPM is reached through the loader's proxy).
    pub running: bool,
}

/// `GET /v1/pods` on the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentPods {
    /// The pods, by identifier.
    pub pods: Vec<AgentPod>,
}

/// `GET /v1/pods/{id}/identity` on the agent: what registration checks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentIdentity {
    /// The pod's name.
    pub pod: String,
    /// The EK certificate (DER) from the TPM's NV index.
    pub ek_cert: B64,
    /// The EK's public area (TPMT_PUBLIC) as the TPM reports it.
    pub ek_public: B64,
    /// The certificates that issued the EK certificate (PEM).
    pub ek_chain_pem: String,
    /// The AK's public area (TPMT_PUBLIC).
    pub ak_public: B64,
    /// The AK's private blob (wrapped by the EK: useless outside that TPM).
    pub ak_private: B64,
    /// The pod's TCG event log, for the first appraisal.
    pub event_log: B64,
}

/// The AK the verifier asks the agent to load (it was given at registration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AkRef {
    /// TPMT_PUBLIC.
    pub public: B64,
    /// TPM2B_PRIVATE.
    pub private: B64,
}

/// `POST /v1/pods/{id}/activate` on the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActivateRequest {
    /// The AK the credential is bound to.
    pub ak: AkRef,
    /// MakeCredential's TPM2B_ID_OBJECT.
    pub id_object: B64,
    /// MakeCredential's TPM2B_ENCRYPTED_SECRET.
    pub encrypted_secret: B64,
}

/// The agent's answer to an activation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ActivateResponse {
    /// The secret the TPM released.
    pub secret: B64,
}

/// `POST /v1/pods/{id}/quote` on the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuoteRequest {
    /// The AK to quote with.
    pub ak: AkRef,
    /// The verifier's fresh nonce (16 to 64 bytes).
    pub nonce: B64,
    /// The PCRs to quote (SHA-256 bank).
    pub pcrs: Vec<u32>,
}

/// The agent's answer to a quote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuoteResponse {
    /// TPMS_ATTEST.
    pub attest: B64,
    /// TPMT_SIGNATURE.
    pub signature: B64,
    /// The SHA-256 values of the quoted PCRs, read after the quote.
    pub pcrs: PcrValues,
    /// The pod's TCG event log.
    pub event_log: B64,
}

// ---- the verifier API ----

/// `POST /v1/pods` on the verifier: register a pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterRequest {
    /// The agent of the pod's host (`http://` on loopback, else `https://`).
    pub agent: String,
    /// The pod's identifier on that host (`GET /v1/pods` on the agent).
    pub pod_id: String,
    /// The bundle the pod must have booted: the SHA-256 of a bundle file the verifier was
    /// started with (`GET /v1/bundles`).
    pub bundle: String,
    /// The pod file (pod.yaml text) the pod was meant to get; absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_yaml: Option<String>,
    /// The Kubernetes pod this is (namespace, name, uid), as the registering client knows
    /// it: shown on the fleet page and carried in every result (`jek.kubernetes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<jek_attest::ear::KubernetesPod>,
}

/// A registered pod as the verifier reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodState {
    /// The verifier's identifier of the registration (`<agent pod id>`).
    pub id: String,
    /// The pod's name.
    pub pod: String,
    /// Its agent.
    pub agent: String,
    /// The bundle it is appraised against.
    pub bundle: String,
    /// The AK name proven by credential activation at registration.
    pub ak_name: jek_attest::AkName,
    /// The Kubernetes pod the registration names, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<jek_attest::ear::KubernetesPod>,
    /// The last result's status, `unreachable` (the last round could not ask the agent),
    /// or `none` before the first round.
    pub status: PodStatus,
    /// Per claim, the status of the last result.
    pub claims: std::collections::BTreeMap<Claim, ClaimState>,
    /// When the last result was made (Unix seconds), if any.
    pub last_result_at: Option<u64>,
    /// Why the last round failed, when the status is `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which replica attests it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The last results' statuses, newest first.
    pub history: Vec<HistoryEntry>,
}

/// One claim of a result, for people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClaimState {
    /// Its status.
    pub status: Status,
    /// Why it is not affirming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A past result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    /// When (Unix seconds).
    pub at: u64,
    /// The status.
    pub status: PodStatus,
}

/// A registered pod's status as the verifier stores, serves and posts it: its last EAR's
/// status, `unreachable` when the last round could not ask its agent, `none` before the
/// first round, and `removed` as the last change of a removed registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodStatus {
    /// No round yet.
    #[default]
    None,
    /// The last result was affirming.
    Affirming,
    /// The last result was a warning.
    Warning,
    /// The last result was contraindicated.
    Contraindicated,
    /// The last round could not ask the pod's agent.
    Unreachable,
    /// The registration was removed (a status change's `to` only).
    Removed,
}

impl PodStatus {
    const ALL: [PodStatus; 6] = [
        PodStatus::None,
        PodStatus::Affirming,
        PodStatus::Warning,
        PodStatus::Contraindicated,
        PodStatus::Unreachable,
        PodStatus::Removed,
    ];

    /// Its name as stored and served.
    pub fn name(self) -> &'static str {
        match self {
            PodStatus::None => "none",
            PodStatus::Affirming => "affirming",
            PodStatus::Warning => "warning",
            PodStatus::Contraindicated => "contraindicated",
            PodStatus::Unreachable => "unreachable",
            PodStatus::Removed => "removed",
        }
    }

    /// The status named `name`.
    pub fn from_name(name: &str) -> Option<PodStatus> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl From<Status> for PodStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::None => PodStatus::None,
            Status::Affirming => PodStatus::Affirming,
            Status::Warning => PodStatus::Warning,
            Status::Contraindicated => PodStatus::Contraindicated,
        }
    }
}

impl std::fmt::Display for PodStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a verifier replica can serve: `ok`, or `unhealthy` when its store cannot be
/// reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// It serves.
    Ok,
    /// Its store cannot be reached.
    Unhealthy,
}

/// `GET /v1/pods` on the verifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PodStates {
    /// Every registered pod.
    pub pods: Vec<PodState>,
}

/// `GET /v1/pods/{id}/result`: the last signed result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedResult {
    /// The EAR as an ES256 JWT (verify it against `GET /v1/jwks`).
    pub token: String,
    /// The same EAR, decoded, for reading.
    pub ear: jek_attest::Ear,
}

/// `GET /v1/bundles`: the bundles registrations may name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bundles {
    /// Each bundle.
    pub bundles: Vec<BundleState>,
}

/// A bundle the verifier holds, and the policy's verdict on it now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundleState {
    /// SHA-256 of the bundle file (`sha256:<hex>`).
    pub digest: String,
    /// Its file.
    pub path: String,
    /// `accepted`, or why the policy rejects it.
    pub verdict: String,
}

/// `GET /v1/health` on the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentHealth {
    /// It serves (an agent that answers is healthy).
    pub status: HealthStatus,
}

/// `GET /v1/health` on the verifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Whether it serves.
    pub status: HealthStatus,
    /// Why it is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// This replica's identifier.
    pub replica: String,
    /// Rounds this replica has stored since it started.
    pub rounds: u64,
}

/// The JSON body POSTed to the webhook on every status change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusChange {
    /// The registration.
    pub id: String,
    /// The pod's name.
    pub pod: String,
    /// The status before.
    pub from: PodStatus,
    /// The status now.
    pub to: PodStatus,
    /// When (Unix seconds).
    pub at: u64,
    /// The failing claims, with why.
    pub failing: Vec<FailingClaim>,
    /// The signed result that made the change, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The client that made the change, when a client did (a removal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// What a client did to the fleet: one audit record (`GET /v1/audit`, and the webhook's
/// body for registrations and policy reloads).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditEvent {
    /// When (Unix seconds).
    pub at: u64,
    /// The client, `name (certificate|token)`.
    pub by: String,
    /// What it did.
    pub action: AuditAction,
    /// The registration it concerned (none for a policy reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The pod's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// What else: the removed pod's last status, the reloaded policy's identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An audited action.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// A pod was registered.
    Registered,
    /// A pod was removed.
    Removed,
    /// The policy was reloaded (by a client; SIGHUP is logged only).
    PolicyReloaded,
}

impl AuditAction {
    /// Its name as stored and served.
    pub fn name(self) -> &'static str {
        match self {
            AuditAction::Registered => "registered",
            AuditAction::Removed => "removed",
            AuditAction::PolicyReloaded => "policy-reloaded",
        }
    }

    /// The action named `name`.
    pub fn from_name(name: &str) -> Option<AuditAction> {
        [
            AuditAction::Registered,
            AuditAction::Removed,
            AuditAction::PolicyReloaded,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

/// `GET /v1/audit`'s answer: the newest records first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditLog {
    /// The records.
    pub events: Vec<AuditEvent>,
}

/// A failing claim in a status change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FailingClaim {
    /// The claim, or `agent` when the round could not ask the pod's agent.
    pub claim: FailingPart,
    /// Its status (`unreachable` for the agent).
    pub status: PodStatus,
    /// Why.
    pub reason: String,
}

/// What failed in a status change: one of the appraisal's claims, or the round itself.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum FailingPart {
    /// A claim of the appraisal.
    Claim(Claim),
    /// The round.
    Round(RoundPart),
}

/// The part of a round that failed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoundPart {
    /// The pod's agent could not be asked.
    Agent,
}

/// `POST /v1/policy/reload`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reloaded {
    /// The new policy's identifier.
    pub policy_id: String,
    /// The bundles' verdicts under it.
    pub bundles: Vec<BundleState>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn statuses_keep_their_stored_and_served_names() {
        for s in PodStatus::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
            assert_eq!(PodStatus::from_name(s.name()), Some(s));
            assert_eq!(serde_json::from_str::<PodStatus>(&json).unwrap(), s);
        }
        assert_eq!(PodStatus::from_name("Affirming"), None);
        assert!(serde_json::from_str::<PodStatus>("\"ok\"").is_err());
        assert_eq!(PodStatus::from(Status::Warning), PodStatus::Warning);
    }

    #[test]
    fn a_failing_part_is_a_claim_or_the_agent() {
        let claims = [
            FailingClaim {
                claim: FailingPart::Claim(Claim::Images),
                status: PodStatus::Contraindicated,
                reason: "moved".into(),
            },
            FailingClaim {
                claim: FailingPart::Round(RoundPart::Agent),
                status: PodStatus::Unreachable,
                reason: "no answer".into(),
            },
        ];
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"claim": "images", "status": "contraindicated", "reason": "moved"},
                {"claim": "agent", "status": "unreachable", "reason": "no answer"},
            ])
        );
        let back: Vec<FailingClaim> = serde_json::from_value(json).unwrap();
        assert_eq!(back, claims);
        let unknown = serde_json::json!({"claim": "astrology", "status": "warning", "reason": ""});
        assert!(serde_json::from_value::<FailingClaim>(unknown).is_err());
    }
}
