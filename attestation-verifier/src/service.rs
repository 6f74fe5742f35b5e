//! `jek-verifier`: registers pods through their hosts' agents, attests every registered
//! pod continuously, signs each result as an EAR JWT, and serves results, the JWKS, the
//! fleet page and the policy reload.
//!
//! What it judges against is a [`Judge`]: the policy file (signers, floor, revocations,
//! EK CAs, images) and the bundles the verifier was started with, each with the policy's
//! verdict. A reload (`SIGHUP` or `POST /v1/policy/reload`) builds a new judge from the
//! same files; every round after it uses the new one, so a revoked signer or a raised
//! security version turns the affected pods contraindicated at their next round.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jek_attest::appraise::PodReference;
use jek_attest::ekcert::Cert;
use jek_attest::signed::ResultKey;
use jek_attest::{AkName, Claim};
use jek_verifier::{Bundle, Sha256Digest, Verified, VerifyError};

use crate::remote::{check_agent_url, valid_pod_id, RemoteTpm};
use crate::store::{Backend, PodRow, StoreError, StoredIdentity, StoredResult};
use jek_service_client::wire::{BundleState, ClaimState, PodState, RegisterRequest, B64};

/// The verifier's configuration.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The policy file (with its `attestation:` section).
    pub policy: PathBuf,
    /// The bundle files registrations may name (by SHA-256).
    pub bundles: Vec<PathBuf>,
    /// How often each pod is quoted.
    pub interval: Duration,
    /// How long an agent may take to answer.
    pub agent_timeout: Duration,
    /// How long a signed result stays valid (its `exp` is this long after `iat`).
    pub result_ttl: Duration,
    /// At most this many pods are attested at once.
    pub concurrency: usize,
    /// At most this many rounds run at once for the pods behind one agent.
    pub agent_concurrency: usize,
    /// At most this many pods are registered behind one agent.
    pub max_pods_per_agent: usize,
    /// This replica's name (unique among replicas sharing a database).
    pub replica: String,
    /// The webhook called on every status change (JSON POST).
    pub webhook: Option<String>,
    /// Extra trust roots (PEM) for agents and the webhook over HTTPS.
    pub ca_file: Option<PathBuf>,
    /// The client certificate chain and key (PEM files) presented to agents over HTTPS
    /// (`O=jek:verifier`).
    pub agent_identity: Option<(PathBuf, PathBuf)>,
    /// How image references in pod files are resolved.
    pub images: jek_oci::ClientOptions,
}

/// One bundle the verifier holds.
pub struct LoadedBundle {
    /// Its file.
    pub path: PathBuf,
    /// The policy's verdict.
    pub verdict: Result<Verified<Bundle>, VerifyError>,
}

/// Everything a round judges against; rebuilt whole at every reload.
pub struct Judge {
    /// `jek:policy:sha256:<policy file digest>`.
    pub policy_id: String,
    /// The EK CAs.
    pub ca: Vec<Cert>,
    /// EK chains that verified under these CAs, each until its first expiry: a round
    /// verifies a pod's chain (two RSA signatures) once per policy load, not every round.
    pub chains: jek_attest::protocol::ChainCache,
    /// The image policy.
    pub images: Option<jek_image::ImagePolicy>,
    /// The bundles by `sha256:<hex>` of their file.
    pub bundles: BTreeMap<String, LoadedBundle>,
}

/// Why a judge cannot be built from the files.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// The policy file or a file it names is unusable.
    #[error(transparent)]
    Config(Box<jek_config::ConfigError>),
    /// A bundle file cannot be read.
    #[error("bundle {path}")]
    Bundle {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<jek_config::ConfigError>,
    },
}

impl From<jek_config::ConfigError> for JudgeError {
    fn from(e: jek_config::ConfigError) -> Self {
        JudgeError::Config(Box::new(e))
    }
}

impl Judge {
    /// Reads the policy and every bundle and judges the bundles under the policy now.
    pub fn load(config: &VerifierConfig) -> Result<Judge, JudgeError> {
        let policy = jek_config::policy::load(&config.policy)?;
        let appraisal = policy.appraisal()?;
        let now = jek_verifier::UnixTime::now();
        let mut bundles = BTreeMap::new();
        for path in &config.bundles {
            let bytes = jek_fsio::read_regular(path, jek_verifier::format::MAX_BUNDLE_SIZE)
                .map_err(|e| JudgeError::Bundle {
                    path: path.clone(),
                    source: Box::new(jek_config::ConfigError::Read {
                        what: "bundle",
                        path: path.clone(),
                        source: e,
                    }),
                })?;
            let digest = format!("sha256:{}", Sha256Digest::of(&bytes));
            drop(bytes);
            let verdict = match jek_config::signatures::verify_file(&policy.policy, path, None, now)
            {
                Ok(v) => Ok(v),
                Err(jek_config::signatures::VerifyFileError::Rejected { source, .. }) => {
                    Err(source)
                }
                Err(jek_config::signatures::VerifyFileError::Config(source)) => {
                    return Err(JudgeError::Bundle {
                        path: path.clone(),
                        source: Box::new(source),
                    })
                }
            };
            bundles.insert(
                digest,
                LoadedBundle {
                    path: path.clone(),
                    verdict,
                },
            );
        }
        Ok(Judge {
            policy_id: appraisal.policy_id,
            chains: jek_attest::protocol::ChainCache::new(appraisal.ek_ca.clone()),
            ca: appraisal.ek_ca,
            images: policy.images.clone(),
            bundles,
        })
    }

    /// The bundles and their verdicts, for people.
    pub fn bundle_states(&self) -> Vec<BundleState> {
        self.bundles
            .iter()
            .map(|(digest, b)| BundleState {
                digest: digest.clone(),
                path: b.path.display().to_string(),
                verdict: match &b.verdict {
                    Ok(_) => "accepted".into(),
                    Err(e) => format!("rejected: {}", jek_errors::chain_line(e)),
                },
            })
            .collect()
    }
}

/// The running verifier: its store, key, judge and clients.
pub struct Service {
    /// The configuration.
    pub config: VerifierConfig,
    /// The store.
    pub store: Arc<dyn Backend>,
    /// The result-signing key.
    pub key: ResultKey,
    judge: RwLock<Arc<Judge>>,
    /// The webhook is reached with this client.
    pub http: reqwest::Client,
    /// Agents are reached with these.
    pub agents: crate::remote::Agents,
    references: Mutex<HashMap<String, Arc<PodReference>>>,
    /// The last store failure, cleared by the next success.
    pub store_error: Mutex<Option<String>>,
    /// Rounds whose result was stored since this replica started.
    pub rounds: std::sync::atomic::AtomicU64,
}

pub use jek_service_client::now_s;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The request is malformed.
    #[error("{0}")]
    Bad(String),
    /// The bundle digest names no bundle this verifier holds.
    #[error("bundle {0} is not one this verifier was started with (GET /v1/bundles)")]
    UnknownBundle(String),
    /// The agent could not be asked.
    #[error(transparent)]
    Agent(#[from] crate::remote::RemoteError),
    /// The TPM identity was not proven.
    #[error("the pod's TPM identity is not proven: {0}")]
    Unproven(String),
    /// The agent has as many pods registered as one agent may.
    #[error("agent {agent} has {pods} pods registered, the most one agent may have (--max-pods-per-agent); remove one first")]
    AgentFull {
        /// The agent.
        agent: String,
        /// Its pods.
        pods: usize,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Service {
    /// A verifier over `store`, signing with `key`, judging with `judge`.
    pub fn new(
        config: VerifierConfig,
        store: Arc<dyn Backend>,
        key: ResultKey,
        judge: Judge,
    ) -> Result<Arc<Self>, String> {
        let ca = match &config.ca_file {
            Some(p) => {
                Some(std::fs::read(p).map_err(|e| format!("--ca-file {}: {e}", p.display()))?)
            }
            None => None,
        };
        let http = jek_service_server::http::client(ca.as_deref(), config.agent_timeout)?;
        let identity = match &config.agent_identity {
            Some((cert, key)) => Some(
                jek_service_server::http::identity_pem(cert, key)
                    .map_err(|e| jek_errors::chain_line(&e))?,
            ),
            None => None,
        };
        let agents =
            crate::remote::Agents::new(ca.as_deref(), identity.as_deref(), config.agent_timeout)?;
        Ok(Arc::new(Service {
            agents,
            config,
            store,
            key,
            judge: RwLock::new(Arc::new(judge)),
            http,
            references: Mutex::new(HashMap::new()),
            store_error: Mutex::new(None),
            rounds: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The judge now.
    pub fn judge(&self) -> Arc<Judge> {
        self.judge
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Rebuilds the judge from the files; the old one stays if they are unusable.
    pub fn reload(&self) -> Result<Arc<Judge>, JudgeError> {
        let judge = Arc::new(Judge::load(&self.config)?);
        *self
            .judge
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = judge.clone();
        self.references
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        tracing::info!(policy_id = %judge.policy_id, "policy reloaded");
        Ok(judge)
    }

    /// Runs a store call on the blocking pool, keeping the health state.
    pub async fn db<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&dyn Backend) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let svc = self.clone();
        let result = tokio::task::spawn_blocking(move || f(svc.store.as_ref()))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Database {
                    backend: "store",
                    reason: format!("the store task failed: {e}"),
                })
            });
        let mut err = self
            .store_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &result {
            Ok(_) => *err = None,
            Err(e) => {
                if err.is_none() {
                    tracing::warn!(error = %e, "the store failed");
                }
                *err = Some(e.to_string());
            }
        }
        result
    }

    /// What pod `row` was meant to get: its pod segment and images (resolved once per
    /// judge, on a blocking thread).
    pub async fn reference(self: &Arc<Self>, row: &PodRow) -> Result<Arc<PodReference>, String> {
        if let Some(r) = self
            .references
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&row.id)
        {
            return Ok(r.clone());
        }
        let yaml = row.pod_yaml.clone();
        let opts = self.config.images.clone();
        let made = tokio::task::spawn_blocking(move || reference_of(yaml.as_deref(), opts))
            .await
            .map_err(|e| e.to_string())??;
        let made = Arc::new(made);
        self.references
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(row.id.clone(), made.clone());
        Ok(made)
    }

    /// Registers a pod: asks its agent for the identity, checks the EK chain and proves the
    /// AK by credential activation (with a first quote, which gives the TPM's epoch), then
    /// stores the identity, owned by this replica and due at once.
    /// Registers the pod `req` names, on behalf of the client `by` (`name (via)`), who is
    /// written in the audit record (and, with a webhook, sent to it).
    pub async fn register(
        self: &Arc<Self>,
        req: RegisterRequest,
        by: &str,
    ) -> Result<PodState, RegisterError> {
        let agent_url = check_agent_url(&req.agent).map_err(RegisterError::Bad)?;
        if !valid_pod_id(&req.pod_id) {
            return Err(RegisterError::Bad(format!(
                "podId {:?} is not a pod identifier (32 lowercase hex digits)",
                req.pod_id
            )));
        }
        if let Some(yaml) = &req.pod_yaml {
            jek_config::pod::parse(yaml).map_err(|e| {
                RegisterError::Bad(format!("podYaml: {}", jek_errors::chain_line(&e)))
            })?;
        }
        if let Some(k) = &req.kubernetes {
            k.check().map_err(RegisterError::Bad)?;
        }
        let judge = self.judge();
        if !judge.bundles.contains_key(&req.bundle) {
            return Err(RegisterError::UnknownBundle(req.bundle));
        }
        let agent_key = agent_url.clone();
        let behind = self.db(move |s| s.agent_pods(&agent_key)).await?;
        if behind >= self.config.max_pods_per_agent {
            return Err(RegisterError::AgentFull {
                agent: agent_url,
                pods: behind,
            });
        }
        let agent = self.agents.agent(&agent_url)?;
        let identity = agent.identity(&req.pod_id).await?;
        if let Some(spec) = req
            .pod_yaml
            .as_deref()
            .and_then(|y| jek_config::pod::parse(y).ok())
        {
            if spec.name != identity.pod {
                return Err(RegisterError::Bad(format!(
                    "podYaml names pod {:?}, but the agent's pod {} is {:?}",
                    spec.name, req.pod_id, identity.pod
                )));
            }
        }
        let timeout = self.config.agent_timeout;
        let (pod_id, judge2) = (req.pod_id.clone(), judge.clone());
        let attested = tokio::task::spawn_blocking(move || {
            let bundle = judge2.bundles.get(&req.bundle).map(|b| b.verdict.as_ref());
            let Some(bundle) = bundle else {
                return Err(RegisterError::UnknownBundle(req.bundle.clone()));
            };
            let ak = jek_attest::AkBlobs {
                public: identity.ak_public.0.clone(),
                private: identity.ak_private.0.clone(),
            };
            let material = jek_attest::PodMaterial {
                name: &identity.pod,
                ak: &ak,
                ek_chain_pem: &identity.ek_chain_pem,
                event_log: &identity.event_log.0,
                pod_segment: &[],
                images: Default::default(),
                registration: None,
            };
            let verifier = jek_attest::Verifier {
                bundle,
                ca: &judge2.ca,
                policy_id: &judge2.policy_id,
                now: now_s(),
            };
            let mut tpm = RemoteTpm::new(agent, &pod_id, identity.clone(), timeout);
            let attested =
                jek_attest::attest(&mut tpm, &material, &verifier, &mut rand_core::OsRng)
                    .map_err(|e| RegisterError::Agent(e.source))?;
            Ok((attested, identity, req))
        })
        .await
        .map_err(|e| RegisterError::Bad(format!("registration task failed: {e}")))??;
        let (attested, identity, req) = attested;
        if let Some(reason) = attested.identity.unproven_reason() {
            return Err(RegisterError::Unproven(reason.to_string()));
        }
        let Some(ak_name) = attested.identity.ak_name().map(|n| AkName(n.to_vec())) else {
            return Err(RegisterError::Unproven("no AK name was proven".into()));
        };
        let quote = jek_attest::tpm2::Quote::parse(&attested.evidence.attest)
            .map_err(|e| RegisterError::Unproven(format!("the first quote does not parse: {e}")))?;
        let epoch = jek_attest::Epoch::of(&quote);
        let row = PodRow {
            id: req.pod_id.clone(),
            pod: identity.pod.clone(),
            agent: agent_url,
            bundle: req.bundle.clone(),
            pod_yaml: req.pod_yaml.clone(),
            kubernetes: req.kubernetes.clone(),
            identity: StoredIdentity {
                ak_name,
                ak_public: identity.ak_public.clone(),
                ak_private: identity.ak_private.clone(),
                ek_cert: B64(attested.ek.cert.clone()),
                ek_chain_pem: attested.ek.chain.clone(),
            },
            epoch,
            last_clock: epoch.clock,
            result: StoredResult::default(),
            owner: Some(self.config.replica.clone()),
            history: Vec::new(),
        };
        let (stored, replica) = (row.clone(), self.config.replica.clone());
        let lease = u64::try_from(self.config.interval.as_millis()).unwrap_or(u64::MAX);
        let event = jek_service_client::wire::AuditEvent {
            at: now_s(),
            by: by.to_string(),
            action: jek_service_client::wire::AuditAction::Registered,
            id: Some(row.id.clone()),
            pod: Some(row.pod.clone()),
            detail: Some(format!(
                "bundle {}, AK {}",
                row.bundle, row.identity.ak_name
            )),
        };
        let notify = self.config.webhook.is_some();
        self.db(move |s| {
            let now = now_ms();
            s.register(
                &stored,
                &replica,
                now,
                now.saturating_add(lease),
                &event,
                notify,
            )
        })
        .await?;
        // A pod removed and registered again may come with another pod file.
        self.references
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&row.id);
        tracing::info!(id = %row.id, pod = %row.pod, "registered");
        Ok(state_of(&row))
    }
}

/// A pod's reference from its pod file text (none: an empty segment, no images).
fn reference_of(
    yaml: Option<&str>,
    client: jek_oci::ClientOptions,
) -> Result<PodReference, String> {
    let Some(yaml) = yaml else {
        return Ok(PodReference::default());
    };
    let spec = jek_config::pod::parse(yaml).map_err(|e| jek_errors::chain_line(&e))?;
    let opts = jek_image::Options::new(std::path::Path::new("/"), client);
    PodReference::new(&spec, opts.base_dir.clone(), |r| {
        jek_image::current_manifest(r, &opts).map_err(|e| jek_errors::chain_line(&e))
    })
    .map_err(|e| e.to_string())
}

/// What the API reports of a stored pod.
pub fn state_of(row: &PodRow) -> PodState {
    PodState {
        id: row.id.clone(),
        pod: row.pod.clone(),
        agent: row.agent.clone(),
        bundle: row.bundle.clone(),
        ak_name: row.identity.ak_name.clone(),
        kubernetes: row.kubernetes.clone(),
        status: row.result.status,
        claims: row.result.claims.clone(),
        last_result_at: row.result.at,
        error: row.result.error.clone(),
        owner: row.owner.clone(),
        history: row.history.clone(),
    }
}

/// The claims of an EAR's pod, for people.
pub fn claims_of(sub: &jek_attest::ear::Submod) -> BTreeMap<Claim, ClaimState> {
    sub.claims
        .iter()
        .map(|(claim, r)| {
            (
                *claim,
                ClaimState {
                    status: r.status,
                    reason: r.reason.clone(),
                },
            )
        })
        .collect()
}

/// The result-signing key from `path` (PKCS#8 PEM), created there (mode 0600) if the file
/// does not exist; without a path, a new key.
pub fn load_result_key(path: Option<&std::path::Path>) -> Result<ResultKey, String> {
    let Some(path) = path else {
        return Ok(ResultKey::generate());
    };
    match jek_fsio::read_regular(path, 64 << 10) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("--result-key {}: not PEM text", path.display()))?;
            ResultKey::from_pkcs8_pem(&text)
                .map_err(|e| format!("--result-key {}: {e}", path.display()))
        }
        Err(e) if e.is_not_found() => {
            let key = ResultKey::generate();
            let pem = key.to_pkcs8_pem().map_err(|e| e.to_string())?;
            jek_fsio::write_atomic(path, pem.as_bytes(), 0o600, jek_fsio::Overwrite::Refuse)
                .map_err(|e| {
                    format!(
                        "--result-key {}: {}",
                        path.display(),
                        jek_errors::chain_line(&e)
                    )
                })?;
            Ok(key)
        }
        Err(e) => Err(format!(
            "--result-key {}: {}",
            path.display(),
            jek_errors::chain_line(&e)
        )),
    }
}

impl Service {
    /// Publishes this replica's result key in the store, so every replica's JWKS lists it.
    pub async fn publish_key(self: &Arc<Self>) -> Result<(), String> {
        let (kid, jwk) = (
            self.key.kid().to_string(),
            serde_json::to_string(&self.key.jwk()).map_err(|e| e.to_string())?,
        );
        self.db(move |s| s.put_key(&kid, &jwk))
            .await
            .map_err(|e| e.to_string())
    }
}
