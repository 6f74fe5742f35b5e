//! The verifier's side of the agent API: an HTTP client per agent call, and
//! [`RemoteTpm`], which lets `jek_attest::attest` drive registration (EK chain, credential
//! activation, a first quote) through an agent exactly as it drives a local TPM.

use std::collections::HashMap;
use std::time::Duration;

use jek_attest::AkBlobs;
use jek_measure::PcrValues;

use jek_service_client::wire::{
    ActivateRequest, ActivateResponse, AgentIdentity, AkRef, ErrorBody, QuoteRequest,
    QuoteResponse, B64,
};

/// The largest answer read from an agent (an identity with its event log).
pub const MAX_ANSWER: usize = 4 << 20;

/// Why an agent call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// The agent cannot be reached, or did not answer in time.
    #[error("agent {agent}: {reason}")]
    Unreachable {
        /// The agent.
        agent: String,
        /// Why.
        reason: String,
    },
    /// The pod's TPM refused the command (evidence against the pod, not a transport
    /// failure).
    #[error("agent {agent}: the pod's TPM refused: {reason}")]
    Refused {
        /// The agent.
        agent: String,
        /// The TPM's answer.
        reason: String,
    },
    /// The agent answered with an error.
    #[error("agent {agent} answered {status} {code}: {reason}")]
    Answer {
        /// The agent.
        agent: String,
        /// The HTTP status.
        status: u16,
        /// Its error code.
        code: String,
        /// Its error.
        reason: String,
    },
    /// The answer is not what the API says.
    #[error("agent {agent}: malformed answer: {reason}")]
    Malformed {
        /// The agent.
        agent: String,
        /// Why.
        reason: String,
    },
}

/// Checks an agent URL: `https://`, `http://` to a loopback host (an agent behind a local
/// TLS terminator; `jek-agent` itself serves TCP only with mutual TLS), or `unix:` and the
/// absolute path of the agent's socket on this host; no path, query or credentials.
/// Returns it without a trailing slash.
pub fn check_agent_url(url: &str) -> Result<String, String> {
    if let Some(path) = url.strip_prefix("unix:") {
        let p = std::path::Path::new(path);
        if !p.is_absolute() || p.file_name().is_none() || path.contains(['?', '#', '\0']) {
            return Err(format!(
                "agent {url:?}: a local agent is `unix:` and the absolute path of its socket"
            ));
        }
        return Ok(url.to_string());
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("agent {url:?}: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "agent {url:?}: plain http is only allowed on loopback; use https"
            ))
        }
        s => return Err(format!("agent {url:?}: scheme {s:?} is not http or https")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "agent {url:?}: credentials in the URL are not accepted"
        ));
    }
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "agent {url:?}: give the agent's base URL, with no path or query"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

pub use jek_service_client::valid_pod_id;

/// How the verifier reaches agents: over HTTPS, presenting its client certificate (the
/// `jek:verifier` role) when it has one, or over an agent's Unix socket on this host, where
/// the agent knows it by its uid.
#[derive(Debug)]
pub struct Agents {
    tcp: reqwest::Client,
    timeout: Duration,
    /// One client per socket, so that each keeps its connections.
    unix: std::sync::Mutex<HashMap<String, reqwest::Client>>,
}

impl Agents {
    /// Agents over TCP trust the system's roots and `ca_pem`; `identity_pem` (a
    /// certificate chain and its key) is presented to them. Each call has `timeout`.
    pub fn new(
        ca_pem: Option<&[u8]>,
        identity_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, String> {
        Ok(Agents {
            tcp: jek_service_server::http::client_with_identity(ca_pem, identity_pem, timeout)?,
            timeout,
            unix: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The agent at `url` (checked with [`check_agent_url`]).
    pub fn agent(&self, url: &str) -> Result<Agent, RemoteError> {
        let base = url.trim_end_matches('/').to_string();
        let Some(path) = base.strip_prefix("unix:") else {
            return Ok(Agent {
                http: self.tcp.clone(),
                prefix: base.clone(),
                base,
            });
        };
        let mut unix = self
            .unix
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let http = match unix.get(path) {
            Some(c) => c.clone(),
            None => {
                let c = reqwest::Client::builder()
                    .unix_socket(std::path::Path::new(path))
                    .timeout(self.timeout)
                    .connect_timeout(self.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| RemoteError::Unreachable {
                        agent: base.clone(),
                        reason: jek_errors::chain_line(&e),
                    })?;
                unix.insert(path.to_string(), c.clone());
                c
            }
        };
        Ok(Agent {
            http,
            prefix: "http://localhost".into(),
            base,
        })
    }
}

/// A client for one agent.
#[derive(Debug, Clone)]
pub struct Agent {
    http: reqwest::Client,
    /// Its URL, as registered (and named in errors).
    base: String,
    /// What request paths are appended to (`http://localhost` over a Unix socket).
    prefix: String,
}

impl Agent {
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, RemoteError> {
        let agent = self.base.clone();
        let resp = req.send().await.map_err(|e| RemoteError::Unreachable {
            agent: agent.clone(),
            reason: jek_errors::chain_line(&e),
        })?;
        let status = resp.status();
        let body = jek_service_server::http::read_body(resp, MAX_ANSWER)
            .await
            .map_err(|reason| RemoteError::Unreachable {
                agent: agent.clone(),
                reason,
            })?;
        if !status.is_success() {
            let err: ErrorBody = serde_json::from_slice(&body).unwrap_or(ErrorBody {
                code: "unknown".into(),
                error: String::from_utf8_lossy(body.get(..200).unwrap_or(&body)).into_owned(),
            });
            return Err(match err.code.as_str() {
                "tpm_refused" => RemoteError::Refused {
                    agent,
                    reason: err.error,
                },
                "tpm_timeout" | "tpm_unreachable" => RemoteError::Unreachable {
                    agent,
                    reason: err.error,
                },
                _ => RemoteError::Answer {
                    agent,
                    status: status.as_u16(),
                    code: err.code,
                    reason: err.error,
                },
            });
        }
        serde_json::from_slice(&body).map_err(|e| RemoteError::Malformed {
            agent,
            reason: e.to_string(),
        })
    }

    fn url(&self, pod: &str, what: &str) -> String {
        format!("{}/v1/pods/{pod}/{what}", self.prefix)
    }

    /// The pod's identity.
    pub async fn identity(&self, pod: &str) -> Result<AgentIdentity, RemoteError> {
        self.call(self.http.get(self.url(pod, "identity"))).await
    }

    /// Credential activation.
    pub async fn activate(
        &self,
        pod: &str,
        req: &ActivateRequest,
    ) -> Result<ActivateResponse, RemoteError> {
        self.call(self.http.post(self.url(pod, "activate")).json(req))
            .await
    }

    /// A quote.
    pub async fn quote(&self, pod: &str, req: &QuoteRequest) -> Result<QuoteResponse, RemoteError> {
        self.call(self.http.post(self.url(pod, "quote")).json(req))
            .await
    }
}

/// A pod's TPM through its agent, for `jek_attest::attest` (run on a blocking thread: each
/// call waits for its HTTP exchange on the runtime's handle).
pub struct RemoteTpm {
    agent: Agent,
    pod: String,
    identity: AgentIdentity,
    runtime: tokio::runtime::Handle,
    last_pcrs: Option<PcrValues>,
    timeout: Duration,
}

impl RemoteTpm {
    /// The pod `pod` at `agent`, whose identity was fetched already.
    pub fn new(agent: Agent, pod: &str, identity: AgentIdentity, timeout: Duration) -> Self {
        RemoteTpm {
            agent,
            pod: pod.to_string(),
            identity,
            runtime: tokio::runtime::Handle::current(),
            last_pcrs: None,
            timeout,
        }
    }

    fn wait<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        self.runtime.block_on(async {
            tokio::time::timeout(self.timeout, f)
                .await
                .unwrap_or_else(|_| {
                    Err(RemoteError::Unreachable {
                        agent: self.agent.base.clone(),
                        reason: format!("no answer within {} ms", self.timeout.as_millis()),
                    })
                })
        })
    }
}

fn ak_ref(ak: &AkBlobs) -> AkRef {
    AkRef {
        public: B64(ak.public.clone()),
        private: B64(ak.private.clone()),
    }
}

impl jek_attest::AttestationTpm for RemoteTpm {
    type Key = AkBlobs;
    type Error = RemoteError;

    fn ek_certificate(&mut self) -> Result<Vec<u8>, RemoteError> {
        Ok(self.identity.ek_cert.0.clone())
    }

    fn ek_public(&mut self) -> Result<Vec<u8>, RemoteError> {
        Ok(self.identity.ek_public.0.clone())
    }

    fn load_ak(&mut self, ak: &AkBlobs) -> Result<AkBlobs, RemoteError> {
        // The agent loads the AK for each command; a refused load comes back as a refusal.
        Ok(ak.clone())
    }

    fn activate_credential(
        &mut self,
        ak: &AkBlobs,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, RemoteError> {
        let req = ActivateRequest {
            ak: ak_ref(ak),
            id_object: B64(id_object.to_vec()),
            encrypted_secret: B64(encrypted_secret.to_vec()),
        };
        self.wait(self.agent.activate(&self.pod, &req))
            .map(|r| r.secret.0)
    }

    fn quote(
        &mut self,
        ak: &AkBlobs,
        nonce: &[u8],
        pcrs: &[u32],
    ) -> Result<(Vec<u8>, Vec<u8>), RemoteError> {
        let req = QuoteRequest {
            ak: ak_ref(ak),
            nonce: B64(nonce.to_vec()),
            pcrs: pcrs.to_vec(),
        };
        let resp = self.wait(self.agent.quote(&self.pod, &req))?;
        self.last_pcrs = Some(resp.pcrs);
        Ok((resp.attest.0, resp.signature.0))
    }

    fn read_pcrs(&mut self, _pcrs: &[u32]) -> Result<PcrValues, RemoteError> {
        // The agent reads the PCRs right after each quote and sends them with it.
        self.last_pcrs.take().ok_or_else(|| RemoteError::Malformed {
            agent: self.agent.base.clone(),
            reason: "no quote was made, so no PCR values came back".into(),
        })
    }

    fn refused(error: &RemoteError) -> bool {
        matches!(error, RemoteError::Refused { .. })
    }
}
