//! The verifier's store: registered pods, their last results and status history, the
//! webhook outbox, the result keys every replica signs with, and which replica attests
//! which pod (a lease).
//!
//! Two backends behind one trait: SQLite (the default: one file, WAL, embedded) and
//! PostgreSQL (given a URL, for several replicas sharing one fleet). Every change a round
//! makes (the result, the history row, the webhook to send) is one transaction, so a
//! database that goes away mid-round leaves no half-written row. The calls are
//! synchronous and run on tokio's blocking pool.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use jek_attest::{AkName, Claim};

use jek_service_client::wire::{
    AuditAction, AuditEvent, ClaimState, HistoryEntry, PodStatus, StatusChange,
};

/// How many status changes each pod's history keeps.
pub const HISTORY: usize = 20;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or answered with an error.
    #[error("the {backend} store: {reason}")]
    Database {
        /// `sqlite` or `postgresql`.
        backend: &'static str,
        /// What failed.
        reason: String,
    },
    /// The pod identifier is registered already. Registrations are never replaced: a pod
    /// is registered again only after an explicit (and announced) removal, so a TPM that
    /// was reset cannot make its new epoch the baseline by registering over itself.
    #[error("pod {id} is registered already; remove it first (DELETE /v1/pods/{id}) to register it again")]
    AlreadyRegistered {
        /// The pod.
        id: String,
    },
    /// The TPM's AK is registered under another pod identifier: one TPM speaks for one pod.
    #[error("the TPM's AK {ak_name} is registered already, as pod {holder}")]
    AkInUse {
        /// The AK's name (hex).
        ak_name: String,
        /// The registration that holds it.
        holder: String,
    },
    /// The TPM's EK (its certificate) is registered under another pod identifier, with
    /// another AK: one TPM speaks for one pod, whatever AK it made.
    #[error(
        "the TPM's EK (certificate sha256:{ek_sha256}) is registered already, as pod {holder}"
    )]
    EkInUse {
        /// The SHA-256 of the EK certificate (hex).
        ek_sha256: String,
        /// The registration that holds it.
        holder: String,
    },
    /// A stored row does not decode.
    #[error("stored pod {id}: {reason}")]
    Corrupt {
        /// The pod.
        id: String,
        /// Why.
        reason: String,
    },
}

/// A registered pod as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRow {
    /// The agent's pod identifier (also the verifier's).
    pub id: String,
    /// The pod's name.
    pub pod: String,
    /// Its agent's base URL.
    pub agent: String,
    /// The bundle digest it is appraised against.
    pub bundle: String,
    /// The pod file it was meant to get.
    pub pod_yaml: Option<String>,
    /// The Kubernetes pod the registration names (asserted by its client).
    pub kubernetes: Option<jek_attest::ear::KubernetesPod>,
    /// The identity registration proved.
    pub identity: StoredIdentity,
    /// The TPM epoch at registration.
    pub epoch: jek_attest::Epoch,
    /// The highest clock an accepted quote showed.
    pub last_clock: u64,
    /// The last result.
    pub result: StoredResult,
    /// The replica attesting it, if any.
    pub owner: Option<String>,
    /// The status changes, newest first.
    pub history: Vec<HistoryEntry>,
}

/// What credential activation proved at registration, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoredIdentity {
    /// The AK's name.
    pub ak_name: AkName,
    /// The AK's public area.
    pub ak_public: jek_service_client::wire::B64,
    /// The AK's private blob.
    pub ak_private: jek_service_client::wire::B64,
    /// The EK certificate (DER).
    pub ek_cert: jek_service_client::wire::B64,
    /// Its issuers (PEM).
    pub ek_chain_pem: String,
}

impl StoredIdentity {
    /// The SHA-256 of the EK certificate (hex): the TPM's identity in the store.
    pub fn ek_sha256(&self) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&self.ek_cert.0))
    }
}

/// The EK digest of a stored identity's JSON (for rows stored before EKs were indexed).
pub(crate) fn ek_sha256_of(identity_json: &str) -> Option<String> {
    serde_json::from_str::<StoredIdentity>(identity_json)
        .ok()
        .map(|i| i.ek_sha256())
}

/// How many audit records `audit` answers at most.
pub const AUDIT_PAGE: usize = 200;

/// A pod's last result, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoredResult {
    /// `none`, an EAR status, or `unreachable`.
    pub status: PodStatus,
    /// The claims of the last EAR.
    pub claims: BTreeMap<Claim, ClaimState>,
    /// Why the last round failed.
    pub error: Option<String>,
    /// The last signed EAR.
    pub token: Option<String>,
    /// When it was made (Unix seconds).
    pub at: Option<u64>,
}

/// What one round found, to be written in one transaction.
#[derive(Debug, Clone)]
pub struct RoundOutcome {
    /// The result.
    pub result: StoredResult,
    /// The clock of an accepted quote (raises `last_clock`).
    pub clock: Option<u64>,
    /// When the pod is next due (Unix milliseconds).
    pub next_due_ms: u64,
    /// The failing claims, for the webhook.
    pub failing: Vec<jek_service_client::wire::FailingClaim>,
    /// Whether a status change goes to the webhook outbox (a webhook is configured).
    pub notify: bool,
}

/// A webhook delivery waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its sequence number.
    pub seq: i64,
    /// The JSON body.
    pub body: String,
    /// Attempts so far.
    pub attempts: u32,
}

/// A store backend.
pub trait Backend: Send + Sync {
    /// Answers when the database does (health).
    fn ping(&self) -> Result<(), StoreError>;
    /// Adds a registration, owned by `owner` with a lease until `lease_until_ms` and due
    /// now, with its audit record `event` (and, with `notify`, the same record in the
    /// webhook outbox), all in one transaction. Never replaces one: an identifier already
    /// registered is [`StoreError::AlreadyRegistered`], an AK or an EK already registered
    /// under another identifier [`StoreError::AkInUse`] or [`StoreError::EkInUse`].
    fn register(
        &self,
        pod: &PodRow,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
        event: &AuditEvent,
        notify: bool,
    ) -> Result<(), StoreError>;
    /// Forgets a pod and frees its AK and EK: the change to `removed` from its last
    /// status, made `by` a client, or `None` when there was no such pod. The audit record
    /// is written, and with `notify` the change goes to the webhook outbox, in the same
    /// transaction, so a removal is never silent.
    fn remove(
        &self,
        id: &str,
        now_s: u64,
        notify: bool,
        by: &str,
    ) -> Result<Option<StatusChange>, StoreError>;
    /// Records `event` (a policy reload), and with `notify` sends it to the webhook.
    fn audit(&self, event: &AuditEvent, notify: bool) -> Result<(), StoreError>;
    /// The newest audit records, at most `limit`, newest first.
    fn audit_log(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
    /// One pod with its history.
    fn get(&self, id: &str) -> Result<Option<PodRow>, StoreError>;
    /// Every pod with its history.
    fn list(&self) -> Result<Vec<PodRow>, StoreError>;
    /// Records this replica as alive, renews its leases, and claims up to `limit` due pods
    /// whose lease is free or expired. Returns the due pods it owns now.
    fn claim_due(
        &self,
        replica: &str,
        now_ms: u64,
        lease_ms: u64,
        limit: usize,
    ) -> Result<Vec<PodRow>, StoreError>;
    /// Writes a round's outcome if `replica` still owns the pod: the result, the history
    /// row and the webhook delivery on a status change, all or nothing. Returns the change.
    fn record(
        &self,
        id: &str,
        replica: &str,
        outcome: &RoundOutcome,
    ) -> Result<Option<StatusChange>, StoreError>;
    /// Gives up this replica's leases (a clean shutdown: the others take over at once).
    fn release(&self, replica: &str) -> Result<(), StoreError>;
    /// Makes the pods `ids` that `replica` owns due at `next_due_ms` instead (their agent
    /// is backed off), writing nothing else.
    fn defer(&self, replica: &str, ids: &[String], next_due_ms: u64) -> Result<(), StoreError>;
    /// How many pods are registered behind `agent`.
    fn agent_pods(&self, agent: &str) -> Result<usize, StoreError>;
    /// Publishes a result key (its JWK) so every replica's JWKS lists it.
    fn put_key(&self, kid: &str, jwk: &str) -> Result<(), StoreError>;
    /// Every published result key (JWK JSON).
    fn keys(&self) -> Result<Vec<String>, StoreError>;
    /// Webhook deliveries due at `now_ms`, oldest first, claimed until `now_ms + hold_ms`.
    fn due_deliveries(
        &self,
        now_ms: u64,
        hold_ms: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// A delivery succeeded (or was given up): it leaves the outbox.
    fn delivered(&self, seq: i64) -> Result<(), StoreError>;
    /// A delivery failed: try again at `next_ms`.
    fn retry(&self, seq: i64, next_ms: u64) -> Result<(), StoreError>;
}

/// A `pods` row as both backends read it (`COLUMNS`, in order), before its JSON columns
/// are decoded.
pub(crate) struct Columns {
    pub id: String,
    pub pod: String,
    pub agent: String,
    pub bundle: String,
    pub pod_yaml: Option<String>,
    pub identity: String,
    pub reset_count: i64,
    pub restart_count: i64,
    pub clock: i64,
    pub last_clock: i64,
    pub result: String,
    pub owner: Option<String>,
    pub kubernetes: Option<String>,
}

/// The `pods` columns a row is read from, in [`Columns`]' order.
pub(crate) const COLUMNS: &str = "id, pod, agent, bundle, pod_yaml, identity, reset_count, restart_count, clock, last_clock, result, owner, kubernetes";

impl Columns {
    /// The stored pod (its history is read separately).
    pub(crate) fn decode(self) -> Result<PodRow, StoreError> {
        let corrupt = |id: &str, e: serde_json::Error| StoreError::Corrupt {
            id: id.to_string(),
            reason: e.to_string(),
        };
        let identity = serde_json::from_str(&self.identity).map_err(|e| corrupt(&self.id, e))?;
        let result = serde_json::from_str(&self.result).map_err(|e| corrupt(&self.id, e))?;
        let kubernetes = match &self.kubernetes {
            Some(k) => Some(serde_json::from_str(k).map_err(|e| corrupt(&self.id, e))?),
            None => None,
        };
        let count = |v: i64| u32::try_from(v).unwrap_or(0);
        Ok(PodRow {
            epoch: jek_attest::Epoch {
                reset_count: count(self.reset_count),
                restart_count: count(self.restart_count),
                clock: u(self.clock),
            },
            last_clock: u(self.last_clock),
            id: self.id,
            pod: self.pod,
            agent: self.agent,
            bundle: self.bundle,
            pod_yaml: self.pod_yaml,
            kubernetes,
            identity,
            result,
            owner: self.owner,
            history: Vec::new(),
        })
    }
}

/// A stored integer from an unsigned one (SQL integers are signed).
pub(crate) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An unsigned integer from a stored one.
pub(crate) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// JSON of a record made of strings, numbers and maps (cannot fail).
pub(crate) fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A status as stored in a row's `status` column (or the history's), read back: a name
/// this verifier does not know means the row is not one it wrote.
pub(crate) fn stored_status(id: &str, name: &str) -> Result<PodStatus, StoreError> {
    PodStatus::from_name(name).ok_or_else(|| StoreError::Corrupt {
        id: id.to_string(),
        reason: format!("status {name:?}"),
    })
}

/// The change a removal makes: from the pod's last status to `removed`, by `by`.
pub(crate) fn removal(
    id: &str,
    pod: &str,
    before: PodStatus,
    now_s: u64,
    by: &str,
) -> StatusChange {
    StatusChange {
        id: id.to_string(),
        pod: pod.to_string(),
        from: before,
        to: PodStatus::Removed,
        at: now_s,
        failing: Vec::new(),
        token: None,
        by: Some(by.to_string()),
    }
}

/// The audit record of a removal.
pub(crate) fn removal_event(change: &StatusChange) -> AuditEvent {
    AuditEvent {
        at: change.at,
        by: change.by.clone().unwrap_or_default(),
        action: AuditAction::Removed,
        id: Some(change.id.clone()),
        pod: Some(change.pod.clone()),
        detail: Some(format!("last status {}", change.from)),
    }
}

/// An audit row as both backends read it: at, by, action, id, pod, detail.
pub(crate) fn audit_row(
    at: i64,
    by: String,
    action: &str,
    id: Option<String>,
    pod: Option<String>,
    detail: Option<String>,
) -> Result<AuditEvent, StoreError> {
    let action = AuditAction::from_name(action).ok_or_else(|| StoreError::Corrupt {
        id: id.clone().unwrap_or_default(),
        reason: format!("audit action {action:?}"),
    })?;
    Ok(AuditEvent {
        at: u(at),
        by,
        action,
        id,
        pod,
        detail,
    })
}

/// The change a round's outcome makes to `before`, if its status differs.
pub fn change(
    row_id: &str,
    pod: &str,
    before: PodStatus,
    outcome: &RoundOutcome,
) -> Option<StatusChange> {
    (before != outcome.result.status).then(|| StatusChange {
        id: row_id.to_string(),
        pod: pod.to_string(),
        from: before,
        to: outcome.result.status,
        at: outcome.result.at.unwrap_or(outcome.next_due_ms / 1000),
        failing: outcome.failing.clone(),
        token: outcome.result.token.clone(),
        by: None,
    })
}

pub mod postgres;
pub mod sqlite;

/// Opens the store `spec` names: a `postgres://` or `postgresql://` URL, a SQLite file
/// (`sqlite:PATH` or a path), or by default $XDG_DATA_HOME/jek/verifier.db.
pub fn open(spec: Option<&str>) -> Result<std::sync::Arc<dyn Backend>, StoreError> {
    match spec {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(std::sync::Arc::new(postgres::Postgres::open(url)?))
        }
        Some(path) => {
            let path = std::path::Path::new(path.strip_prefix("sqlite:").unwrap_or(path));
            Ok(std::sync::Arc::new(sqlite::Sqlite::open(path)?))
        }
        None => {
            let dir = jek_config::paths::data_dir();
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::Database {
                backend: "sqlite",
                reason: format!("{}: {e}", dir.display()),
            })?;
            Ok(std::sync::Arc::new(sqlite::Sqlite::open(
                &dir.join("verifier.db"),
            )?))
        }
    }
}
