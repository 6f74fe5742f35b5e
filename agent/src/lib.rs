//! # jek-agent: one per host, the only process that talks to the host's pod TPMs
//!
//! It serves the pods the loader registered in the host's store (`jek boot --keep-tpm
//! --registry DIR`): their identity (EK certificate and public area, the AK blobs and the
//! EK's issuers from the run directory), credential activation and quotes. While a pod's
//! QEMU runs, its TPM is reached through the loader's proxy (`side/` in the swtpm's socket
//! directory), which interleaves these commands with the guest's; otherwise directly.
//!
//! Nothing the agent says is trusted for a verdict: the verifier checks the EK chain,
//! proves the AK by credential activation and checks every quote's signature and nonce.
//! The agent's job is to be the one TPM client per pod (one command connection at a time),
//! to bound what it reads, and to answer within a timeout.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use jek_attest::AkBlobs;
use jek_host_attest::registrations::HostRegistration;
use jek_host_attest::registrations::RegistrationStore;
use jek_loader::run_dir::RunDir;
use jek_service_server::http::ApiError;
use jek_tpm::identity::IdentityError;
use jek_tpm::swtpm::Sockets;
use jek_tpm::Tpm;

use jek_service_client::wire::{
    ActivateRequest, ActivateResponse, AgentIdentity, AgentPod, AgentPods, AkRef, QuoteRequest,
    QuoteResponse, B64,
};

/// The largest AK blob, EK chain or event log read from a run directory.
const MAX_FILE: u64 = jek_host_attest::driver::MAX_TPM_FILE;

/// The agent's configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The host's registration store (`jek boot --keep-tpm --registry`).
    pub registry: PathBuf,
    /// How long one pod's TPM work may take before the request fails.
    pub timeout: Duration,
}

struct AgentState {
    config: AgentConfig,
    /// One TPM client per pod at a time, kept between requests.
    sessions: Mutex<HashMap<String, Arc<Mutex<Option<Session>>>>>,
}

/// A pod's TPM connection, kept between requests with the AK loaded: a round is then a
/// quote and a PCR read, not a connection, an EK policy session and a load. Any failure
/// drops it, and the next request connects again.
struct Session {
    tpm: Tpm,
    /// Reached through the loader's side sockets (the pod's VM runs).
    side: bool,
    /// The AK loaded, by its public area.
    ak: Option<(Vec<u8>, jek_tpm::identity::KeyHandle)>,
}

impl Session {
    /// The handle of `ak`, loading it (and flushing another) if it is not the one loaded.
    fn ak(&mut self, ak: &AkRef) -> Result<jek_tpm::identity::KeyHandle, ApiError> {
        if let Some((public, handle)) = &self.ak {
            if *public == ak.public.0 {
                return Ok(*handle);
            }
        }
        if let Some((_, old)) = self.ak.take() {
            let _ = self.tpm.flush_key(old);
        }
        let handle = self.tpm.load_ak(&blobs(ak)).map_err(|e| tpm_error(&e))?;
        self.ak = Some((ak.public.0.clone(), handle));
        Ok(handle)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((_, handle)) = self.ak.take() {
            let _ = self.tpm.flush_key(handle);
        }
    }
}

/// The agent's routes, each open to the clients `clients` accepts with the role
/// [`jek_service_server::auth::agent_access`] gives it (the verifier's, but for the health check).
pub fn router(config: AgentConfig, clients: jek_service_server::auth::Clients) -> Router {
    let state = Arc::new(AgentState {
        config,
        sessions: Mutex::new(HashMap::new()),
    });
    let gate = jek_service_server::http::Gate {
        clients,
        access: jek_service_server::auth::agent_access,
        realm: "jek-agent",
    };
    gate.guard(
        Router::new()
            .route(
                "/v1/health",
                get(|| async {
                    Json(jek_service_client::wire::AgentHealth {
                        status: jek_service_client::wire::HealthStatus::Ok,
                    })
                }),
            )
            .route("/v1/pods", get(list))
            .route("/v1/pods/{id}/identity", get(identity))
            .route("/v1/pods/{id}/activate", post(activate))
            .route("/v1/pods/{id}/quote", post(quote)),
    )
    .with_state(state)
}

fn store(state: &AgentState) -> Result<RegistrationStore, ApiError> {
    RegistrationStore::open(&state.config.registry)
        .map_err(|e| ApiError::internal(jek_errors::chain_line(&e)))
}

/// The TPM sockets to use for a registered pod: the proxy's side sockets while its VM
/// runs, the swtpm's own otherwise.
fn sockets_of(reg: &HostRegistration) -> (Sockets, bool) {
    let swtpm = Sockets {
        dir: reg.tpm.socket_dir.clone(),
    };
    let side = jek_loader::tpm_proxy::side_sockets(&swtpm);
    if std::os::unix::net::UnixStream::connect(side.data()).is_ok() {
        (side, true)
    } else {
        (swtpm, false)
    }
}

async fn list(State(state): State<Arc<AgentState>>) -> Result<Json<AgentPods>, ApiError> {
    let pods = tokio::task::spawn_blocking(move || {
        let regs = store(&state)?
            .list()
            .map_err(|e| ApiError::internal(jek_errors::chain_line(&e)))?;
        Ok::<_, ApiError>(
            regs.into_iter()
                .map(|r| AgentPod {
                    running: sockets_of(&r).1,
                    id: r.registration.id,
                    pod: r.registration.pod,
                })
                .collect(),
        )
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(AgentPods { pods }))
}

/// The registration `id`, or 404.
fn registration(state: &AgentState, id: &str) -> Result<HostRegistration, ApiError> {
    match store(state)?.get(id) {
        Ok(Some(r)) => Ok(r),
        Ok(None) | Err(jek_host_attest::registrations::RegistrationStoreError::BadId(_)) => {
            Err(ApiError::not_found(format!("no pod {id:?} on this host")))
        }
        Err(e) => Err(ApiError::internal(jek_errors::chain_line(&e))),
    }
}

fn run_file(
    reg: &HostRegistration,
    file: fn(&RunDir) -> PathBuf,
    what: &str,
) -> Result<Vec<u8>, ApiError> {
    let dir = reg.tpm.run_dir.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_run_dir",
            format!(
                "pod {:?} was registered without its run directory",
                reg.id()
            ),
        )
    })?;
    jek_fsio::read_regular(&file(&RunDir::new(dir)), MAX_FILE).map_err(|e| {
        ApiError::internal(format!("the pod's {what}: {}", jek_errors::chain_line(&e)))
    })
}

/// The pod's measurements, held still (shared) while the lock lives.
fn measurements_held(
    reg: &HostRegistration,
) -> Result<Option<jek_loader::run_dir::MeasurementLock>, ApiError> {
    let Some(dir) = reg.tpm.run_dir.as_deref() else {
        return Ok(None);
    };
    let run = RunDir::new(dir);
    run.lock_measurements(false).map_err(|e| {
        ApiError::internal(format!(
            "locking the pod's measurements ({}): {e}",
            run.measure_lock().display()
        ))
    })
}

fn tpm_error(e: &IdentityError) -> ApiError {
    if e.is_refusal() {
        ApiError::new(
            StatusCode::CONFLICT,
            "tpm_refused",
            jek_errors::chain_line(e),
        )
    } else {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "tpm_unreachable",
            jek_errors::chain_line(e),
        )
    }
}

/// Runs `f` with the pod's TPM session on a blocking thread, one client per pod, within
/// the timeout. A session whose route changed (the VM started or ended) or whose request
/// failed is made again.
async fn with_tpm<T: Send + 'static>(
    state: Arc<AgentState>,
    id: String,
    f: impl FnOnce(&mut Session, &HostRegistration) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let timeout = state.config.timeout;
    let work = tokio::task::spawn_blocking(move || {
        let reg = registration(&state, &id)?;
        let slot = {
            let mut sessions = state
                .sessions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            sessions.entry(id.clone()).or_default().clone()
        };
        let mut held = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (sockets, side) = sockets_of(&reg);
        if held.as_ref().is_some_and(|s| s.side != side) {
            *held = None;
        }
        if held.is_none() {
            let tpm = Tpm::connect_swtpm(&sockets).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "tpm_unreachable",
                    format!(
                        "the TPM of pod {id:?} (swtpm pid {}) cannot be reached: {}",
                        reg.tpm.pid,
                        jek_errors::chain_line(&e)
                    ),
                )
            })?;
            *held = Some(Session {
                tpm,
                side,
                ak: None,
            });
        }
        let Some(session) = held.as_mut() else {
            return Err(ApiError::internal("no TPM session"));
        };
        let result = f(session, &reg);
        if result.is_err() {
            *held = None;
        }
        result
    });
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(ApiError::internal(format!("the TPM task failed: {e}"))),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "tpm_timeout",
            format!(
                "the pod's TPM did not answer within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

async fn identity(
    State(state): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<AgentIdentity>, ApiError> {
    with_tpm(state, id, |session, reg| {
        use jek_attest::AttestationTpm as _;
        let tpm = &mut session.tpm;
        let ek_cert = tpm.ek_certificate().map_err(|e| tpm_error(&e))?;
        let ek_public = tpm.ek_public().map_err(|e| tpm_error(&e))?;
        let chain = run_file(reg, RunDir::ek_chain, "EK certificate chain")?;
        let ek_chain_pem = String::from_utf8(chain)
            .map_err(|_| ApiError::internal("the pod's EK chain is not PEM text"))?;
        Ok(AgentIdentity {
            pod: reg.registration.pod.clone(),
            ek_cert: B64(ek_cert),
            ek_public: B64(ek_public),
            ek_chain_pem,
            ak_public: B64(run_file(reg, RunDir::ak_public, "AK public area")?),
            ak_private: B64(run_file(reg, RunDir::ak_private, "AK private blob")?),
            event_log: B64(run_file(reg, RunDir::event_log, "event log")?),
        })
    })
    .await
    .map(Json)
}

fn blobs(ak: &AkRef) -> AkBlobs {
    AkBlobs {
        public: ak.public.0.clone(),
        private: ak.private.0.clone(),
    }
}

async fn activate(
    State(state): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<ActivateRequest>,
) -> Result<Json<ActivateResponse>, ApiError> {
    with_tpm(state, id, move |session, _| {
        let key = session.ak(&req.ak)?;
        let secret = session
            .tpm
            .activate_credential(key, &req.id_object.0, &req.encrypted_secret.0)
            .map_err(|e| tpm_error(&e))?;
        Ok(ActivateResponse {
            secret: B64(secret),
        })
    })
    .await
    .map(Json)
}

async fn quote(
    State(state): State<Arc<AgentState>>,
    UrlPath(id): UrlPath<String>,
    Json(req): Json<QuoteRequest>,
) -> Result<Json<QuoteResponse>, ApiError> {
    if !(16..=64).contains(&req.nonce.0.len()) {
        return Err(ApiError::bad_request(format!(
            "nonce: {} bytes; a quote needs 16 to 64",
            req.nonce.0.len()
        )));
    }
    if req.pcrs.is_empty() || req.pcrs.len() > 24 || req.pcrs.iter().any(|p| *p > 23) {
        return Err(ApiError::bad_request(
            "pcrs: 1 to 24 PCR numbers from 0 to 23",
        ));
    }
    with_tpm(state, id, move |session, reg| {
        // The log and the quote of one moment: a container joining the pod extends its
        // TPM and appends to its log under the exclusive lock.
        let _still = measurements_held(reg)?;
        let event_log = run_file(reg, RunDir::event_log, "event log")?;
        let key = session.ak(&req.ak)?;
        let tpm = &mut session.tpm;
        let (attest, signature) = tpm
            .quote(key, &req.nonce.0, &req.pcrs)
            .map_err(|e| tpm_error(&e))?;
        let pcrs = tpm.read_pcrs(&req.pcrs).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "tpm_unreachable",
                jek_errors::chain_line(&e),
            )
        })?;
        Ok(QuoteResponse {
            attest: B64(attest),
            signature: B64(signature),
            pcrs,
            event_log: B64(event_log),
        })
    })
    .await
    .map(Json)
}
