//! Attesting pods on this host through their kept TPMs (`jek boot --keep-tpm`): the run
//! directory says which TPM and which AK, `jek_attest::attest` drives the exchange. Also
//! the result shapes `jek attest --json` prints.

use std::path::{Path, PathBuf};

use jek_attest::appraise::PodReference;
use jek_attest::evidence::to_files;
use jek_attest::{AkBlobs, Attested, Ear, PodMaterial, Status, Verifier};
use jek_fsio::{ReadError, WriteError};
use jek_measure::plan::ContainerEvent;
use jek_tpm::Tpm;
use serde::Serialize;

use crate::registrations::{RegistrationStore, RegistrationStoreError};
use jek_loader::record::{RecordError, RunRecord};
use jek_loader::run_dir::RunDir;

/// The largest AK blob, EK chain or event log read from a run directory.
pub const MAX_TPM_FILE: u64 = 1 << 20;

/// Why a pod could not be attested (as opposed to attesting as contraindicated).
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The run record is missing or unusable.
    #[error("run directory {dir}")]
    Record {
        /// The run directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: RecordError,
    },
    /// The pod was booted without `--keep-tpm`, so it was never registered.
    #[error("the pod of {dir} is not registered for attestation: boot it with --keep-tpm")]
    NotKept {
        /// The run directory.
        dir: PathBuf,
    },
    /// The registration the run record names is not in the verifier's store.
    #[error("the pod of {dir} names registration {id}, which this verifier's store does not hold")]
    NotRegistered {
        /// The run directory.
        dir: PathBuf,
        /// The registration it names.
        id: String,
    },
    /// The store cannot be read or updated.
    #[error("registration store")]
    RegistrationStore(#[source] crate::registrations::RegistrationStoreError),
    /// An AK or TPM file in the run directory cannot be read.
    #[error("cannot read the pod's {what}")]
    Read {
        /// What it is.
        what: &'static str,
        /// Why.
        #[source]
        source: ReadError,
    },
    /// The measurement lock in the run directory cannot be taken.
    #[error("cannot lock the pod's measurements ({path})")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The EK chain file is not text.
    #[error("{path} is not PEM text")]
    NotPem {
        /// The file.
        path: PathBuf,
    },
    /// The pod's TPM cannot be reached.
    #[error("the pod's TPM (swtpm pid {pid}, sockets in {sockets}) cannot be reached; is it still running?")]
    Connect {
        /// The swtpm's pid.
        pid: u32,
        /// Its socket directory.
        sockets: PathBuf,
        /// Why.
        #[source]
        source: jek_tpm::TpmError,
    },
    /// The exchange with the TPM failed.
    #[error("the pod's TPM (swtpm pid {pid}, sockets in {sockets}) failed")]
    Protocol {
        /// The swtpm's pid.
        pid: u32,
        /// Its socket directory.
        sockets: PathBuf,
        /// Why.
        #[source]
        source: jek_attest::ProtocolError<jek_tpm::identity::IdentityError>,
    },
    /// The evidence cannot be exported.
    #[error("cannot export the evidence")]
    Evidence(#[source] jek_attest::evidence::EvidenceError),
    /// The evidence directory cannot be written.
    #[error("cannot write the evidence directory")]
    Export(#[source] WriteError),
}

/// Run directories: those given that hold a run record, and the ones directly under those
/// that do not. `Err` names an argument that is neither.
pub fn find_run_dirs(args: &[PathBuf]) -> Result<Vec<PathBuf>, PathBuf> {
    let has_record = |d: &Path| RunDir::new(d).record().is_file();
    let mut out = Vec::new();
    for a in args {
        if has_record(a) {
            out.push(a.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(a)
            .map_err(|_| a.clone())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| has_record(p))
            .collect();
        if found.is_empty() {
            return Err(a.clone());
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Attests the pod of one run directory through its kept TPM; `reference` gives what a
/// pod of that name was meant to get (its pod segment and images). With `export`, the
/// evidence is also written there, whole or not at all.
///
/// The run directory is the pod host's and is not trusted for the binding: which TPM to
/// ask, which AK and EK it must prove, the TPM's epoch and the pod's name all come from the
/// registration in the verifier's `registry`. The run directory only supplies the AK blobs
/// and the event log, both checked cryptographically. After an appraisal, the highest
/// clock seen is recorded, so a TPM whose clock goes back later is caught.
pub fn attest_run_dir(
    dir: &Path,
    verifier: &Verifier<'_>,
    registry: &RegistrationStore,
    reference: &dyn Fn(&str) -> PodReference,
    images: Option<&jek_image::ImagePolicy>,
    export: Option<&Path>,
) -> Result<(String, Attested), AttestError> {
    let record = RunRecord::read(dir).map_err(|source| AttestError::Record {
        dir: dir.to_path_buf(),
        source,
    })?;
    let run = RunDir::new(dir);
    let id = record
        .tpm
        .registration
        .clone()
        .ok_or_else(|| AttestError::NotKept {
            dir: dir.to_path_buf(),
        })?;
    let mut reg = registry
        .get(&id)
        .map_err(AttestError::RegistrationStore)?
        .ok_or_else(|| AttestError::NotRegistered {
            dir: dir.to_path_buf(),
            id: id.clone(),
        })?;
    let pod = reg.registration.pod.clone();
    let read = |what, path: PathBuf| {
        jek_fsio::read_regular(&path, MAX_TPM_FILE)
            .map_err(|source| AttestError::Read { what, source })
    };
    let ak = AkBlobs {
        public: read("AK public area", run.ak_public())?,
        private: read("AK private blob", run.ak_private())?,
    };
    let chain = String::from_utf8(read("EK certificate chain", run.ek_chain())?).map_err(|_| {
        AttestError::NotPem {
            path: run.ek_chain(),
        }
    })?;
    // The log and the quote of one moment (a container joining a running pod sandbox
    // extends and appends under the exclusive lock).
    let _still = run
        .lock_measurements(false)
        .map_err(|source| AttestError::Lock {
            path: run.measure_lock(),
            source,
        })?;
    let event_log = read("event log", run.event_log())?;
    let (pid, sockets) = (reg.tpm.pid, reg.tpm.socket_dir.clone());
    let mut tpm = Tpm::connect_swtpm(&jek_tpm::swtpm::Sockets {
        dir: sockets.clone(),
    })
    .map_err(|source| AttestError::Connect {
        pid,
        sockets: sockets.clone(),
        source,
    })?;
    let meant = reference(&pod);
    let verdict = |e: &ContainerEvent| image_verdict(images, &meant.base_dir, e);
    let material = PodMaterial {
        name: &pod,
        ak: &ak,
        ek_chain_pem: &chain,
        event_log: &event_log,
        pod_segment: &meant.segment,
        images: meant.image_rules(&verdict),
        registration: Some(&reg.registration),
    };
    let attested = jek_attest::attest(&mut tpm, &material, verifier, &mut rand_core::OsRng)
        .map_err(|source| AttestError::Protocol {
            pid,
            sockets,
            source,
        })?;
    if attested.appraisal.status(jek_attest::Claim::BootEpoch) == Status::Affirming {
        if let Ok(q) = jek_attest::tpm2::Quote::parse(&attested.evidence.attest) {
            reg.registration.last_clock = reg.registration.last_clock.max(q.clock);
            registry.put(&reg).map_err(AttestError::RegistrationStore)?;
        }
    }
    if let Some(out) = export {
        let files = to_files(&attested.evidence, &attested.ek, &pod, &attested.nonce)
            .map_err(AttestError::Evidence)?;
        let files: Vec<(&str, &[u8], u32)> = files
            .iter()
            .map(|(name, bytes)| (*name, bytes.as_slice(), 0o644))
            .collect();
        jek_fsio::write_dir_atomic(out, &files).map_err(AttestError::Export)?;
    }
    Ok((pod, attested))
}

/// The shortest nonce an exported quote is appraised with: a quote made without one, or
/// with a guessable one, could be replayed.
pub const MIN_NONCE: usize = 16;

/// What each pod is appraised against: the verifier's view, what each pod was meant to
/// get (by pod name), the image policy and the registration store.
pub struct Attestor<'a> {
    /// Bundle verdict, trusted CAs, policy id, time.
    pub verifier: Verifier<'a>,
    /// What each pod (by name) was meant to get.
    pub pods: std::collections::BTreeMap<String, PodReference>,
    /// The image policy (`None`: the policy allows no image).
    pub images: Option<jek_image::ImagePolicy>,
    /// The verifier's registrations.
    pub registry: RegistrationStore,
}

/// Why an [`Attestor`] cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum AttestorError {
    /// A pod file cannot be read or is not a pod.
    #[error(transparent)]
    Config(#[from] jek_config::ConfigError),
    /// A pod file describes a pod with no valid pod segment.
    #[error("pod file {path}")]
    PodSegment {
        /// The pod file.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_pod::SegmentError,
    },
    /// The registration store cannot be opened.
    #[error(transparent)]
    RegistrationStore(#[from] RegistrationStoreError),
}

impl AttestorError {
    /// The kind of failure.
    pub fn class(&self) -> jek_errors::Class {
        match self {
            AttestorError::Config(e) => e.class(),
            AttestorError::PodSegment { .. } => jek_errors::Class::Invalid,
            AttestorError::RegistrationStore(e) => e.class(),
        }
    }
}

impl<'a> Attestor<'a> {
    /// `jek attest`'s attestor: `verifier`'s view; the pods of `pod_files` as their files
    /// describe them, each image reference asked of its registry or OCI layout now
    /// (through `client`; a failure is kept, to contraindicate the claim); the image
    /// policy `images`; and the registration store in `registry`.
    pub fn new(
        verifier: Verifier<'a>,
        pod_files: &[PathBuf],
        client: &jek_oci::ClientOptions,
        images: Option<jek_image::ImagePolicy>,
        registry: &Path,
    ) -> Result<Self, AttestorError> {
        let mut pods = std::collections::BTreeMap::new();
        for path in pod_files {
            let spec = jek_config::pod::load(path)?;
            let opts = jek_image::Options::new(jek_config::base_dir(path), client.clone());
            let meant = PodReference::new(&spec, opts.base_dir.clone(), |r| {
                jek_image::current_manifest(r, &opts).map_err(|e| jek_errors::chain_line(&e))
            })
            .map_err(|source| AttestorError::PodSegment {
                path: path.clone(),
                source,
            })?;
            pods.insert(spec.name.clone(), meant);
        }
        Ok(Attestor {
            verifier,
            pods,
            images,
            registry: RegistrationStore::open(registry)?,
        })
    }
}

/// The image policy's verdict on a container event, with references resolved from
/// `base_dir`.
fn image_verdict(
    policy: Option<&jek_image::ImagePolicy>,
    base_dir: &Path,
    event: &ContainerEvent,
) -> Result<(), String> {
    jek_image::policy::verdict(policy, &event.reference, base_dir, &event.manifest)
        .map_err(|e| e.to_string())
}

impl Attestor<'_> {
    fn pod(&self, pod: &str) -> PodReference {
        self.pods.get(pod).cloned().unwrap_or_default()
    }

    /// Attests every run directory concurrently, one thread and one TPM connection each;
    /// with `export`, each pod's evidence goes to `export` (or `export/<run dir name>` when
    /// there are several). One pod's failure never hides another's result.
    pub fn attest_all(&self, dirs: &[PathBuf], export: Option<&Path>) -> Vec<PodResult> {
        let several = dirs.len() > 1;
        std::thread::scope(|s| {
            let handles: Vec<_> = dirs
                .iter()
                .map(|dir| {
                    let export = export.map(|e| {
                        if several {
                            e.join(dir.file_name().unwrap_or_default())
                        } else {
                            e.to_path_buf()
                        }
                    });
                    s.spawn(move || self.attest_one(dir, export.as_deref()))
                })
                .collect();
            handles
                .into_iter()
                .zip(dirs)
                .map(|(h, dir)| {
                    h.join().unwrap_or_else(|_| PodResult::Failed {
                        run_dir: dir.clone(),
                        error: "attestation thread panicked".into(),
                    })
                })
                .collect()
        })
    }

    fn attest_one(&self, dir: &Path, export: Option<&Path>) -> PodResult {
        let lookup = |pod: &str| self.pod(pod);
        let policy = self.images.as_ref();
        tracing::info!(run_dir = %dir.display(), "quoting the pod's TPM");
        let result = attest_run_dir(dir, &self.verifier, &self.registry, &lookup, policy, export);
        match result {
            Ok((pod, attested)) => PodResult::Appraised {
                run_dir: dir.to_path_buf(),
                pod,
                result: Box::new(attested.ear),
            },
            Err(e) => PodResult::Failed {
                run_dir: dir.to_path_buf(),
                error: jek_errors::chain_line(&e),
            },
        }
    }

    /// Evidence mode: appraises an exported directory against the `nonce` the verifier
    /// sent and the AK name an earlier activation proved (`None`: the identity is
    /// unproven). The registration is found by that AK name.
    pub fn appraise_exported(
        &self,
        dir: &Path,
        nonce: &[u8],
        ak_name: Option<Vec<u8>>,
    ) -> Result<PodResult, ExportedError> {
        if nonce.len() < MIN_NONCE {
            return Err(ExportedError::ShortNonce { len: nonce.len() });
        }
        let (evidence, ek, meta) = jek_attest::evidence::from_files(|name| {
            jek_fsio::read_regular(&dir.join(name), MAX_TPM_FILE).ok()
        })
        .map_err(ExportedError::Evidence)?;
        let registration = match &ak_name {
            Some(n) => self
                .registry
                .find_by_ak(&jek_attest::AkName(n.clone()))
                .map_err(ExportedError::RegistrationStore)?,
            None => None,
        };
        let identity = match ak_name {
            None => jek_attest::Identity::unproven(
                "evidence mode without --ak-name: no credential activation proved this AK",
            ),
            Some(n) => {
                jek_attest::protocol::pin_identity(n, &ek, self.verifier.ca, self.verifier.now)
            }
        };
        let pod = self.pod(&meta.pod);
        let policy = self.images.as_ref();
        let verdict = |e: &ContainerEvent| image_verdict(policy, &pod.base_dir, e);
        let reference = jek_attest::appraise::Reference {
            bundle: self.verifier.bundle,
            pod_segment: &pod.segment,
            images: pod.image_rules(&verdict),
            registration: registration.as_ref().map(|r| &r.registration),
        };
        let (_, ear) = jek_attest::protocol::judge(
            &evidence,
            &meta.pod,
            &reference,
            nonce,
            &identity,
            &self.verifier,
        );
        Ok(PodResult::Appraised {
            run_dir: dir.to_path_buf(),
            pod: meta.pod,
            result: Box::new(ear),
        })
    }
}

/// Why an exported evidence directory cannot be appraised.
#[derive(Debug, thiserror::Error)]
pub enum ExportedError {
    /// A nonce too short to make a quote unguessable.
    #[error("the nonce is {len} bytes; at least {MIN_NONCE} are required")]
    ShortNonce {
        /// Its length.
        len: usize,
    },
    /// The directory's files are missing, malformed or disagree.
    #[error(transparent)]
    Evidence(jek_attest::evidence::EvidenceError),
    /// The registration store cannot be read.
    #[error("registration store")]
    RegistrationStore(#[source] crate::registrations::RegistrationStoreError),
}

/// One pod's outcome, as `jek attest --json` prints it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum PodResult {
    /// Appraised (affirming or not).
    #[serde(rename_all = "camelCase")]
    Appraised {
        /// Where the pod's evidence came from.
        run_dir: PathBuf,
        /// The pod.
        pod: String,
        /// The result.
        result: Box<Ear>,
    },
    /// Not attested at all.
    #[serde(rename_all = "camelCase")]
    Failed {
        /// The run directory.
        run_dir: PathBuf,
        /// Why.
        error: String,
    },
}

impl PodResult {
    /// One result per pod an EAR appraised (a signed result from a verifier, checked
    /// already), named by where it came from.
    pub fn of_ear(from: &Path, ear: &Ear) -> Vec<PodResult> {
        ear.submods
            .keys()
            .map(|pod| PodResult::Appraised {
                run_dir: from.to_path_buf(),
                pod: pod.clone(),
                result: Box::new(ear.clone()),
            })
            .collect()
    }

    /// The pod's overall status; `None` when it could not be attested.
    pub fn status(&self) -> Option<Status> {
        match self {
            PodResult::Appraised { pod, result, .. } => result.submod(pod).map(|s| s.status),
            PodResult::Failed { .. } => None,
        }
    }
}

/// Every pod's outcome and the counts.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Per pod.
    pub results: &'a [PodResult],
    /// Counts.
    pub summary: Summary,
}

/// How many pods ended how.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    /// All pods.
    pub pods: usize,
    /// Affirming.
    pub affirming: usize,
    /// Appraised, not affirming.
    pub contraindicated: usize,
    /// Not attested.
    pub errors: usize,
}

impl<'a> Report<'a> {
    /// The report of `results`.
    pub fn new(results: &'a [PodResult]) -> Self {
        let count = |want: Option<Status>| results.iter().filter(|r| r.status() == want).count();
        let affirming = count(Some(Status::Affirming));
        let errors = count(None);
        Report {
            results,
            summary: Summary {
                pods: results.len(),
                affirming,
                contraindicated: results.len() - affirming - errors,
                errors,
            },
        }
    }

    /// The lines `jek attest` prints: each pod's status and its failing claims, then the
    /// counts (untrusted text in them is escaped by the printer).
    pub fn text(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in self.results {
            match r {
                PodResult::Appraised {
                    run_dir,
                    pod,
                    result,
                } => {
                    let Some(sub) = result.submod(pod) else {
                        continue;
                    };
                    out.push(format!(
                        "{pod}: {} ({})",
                        sub.status.name(),
                        run_dir.display()
                    ));
                    for (claim, c) in sub.failing() {
                        let reason = c.reason.as_deref().unwrap_or("");
                        out.push(format!("  {claim}: {}: {reason}", c.status.name()));
                        if let (Some(e), Some(a)) = (&c.expected, &c.actual) {
                            out.push(format!("    expected {e}"));
                            out.push(format!("    actual   {a}"));
                        }
                    }
                }
                PodResult::Failed { run_dir, error } => {
                    out.push(format!("{}: error: {error}", run_dir.display()));
                }
            }
        }
        let s = self.summary;
        out.push(format!(
            "{} pods: {} affirming, {} contraindicated, {} errors",
            s.pods, s.affirming, s.contraindicated, s.errors
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_attestor_names_the_pod_file_it_cannot_use() {
        let dir = tempfile::tempdir().unwrap();
        let rejected = jek_verifier::VerifyError::NoSignatures;
        let verifier = || Verifier {
            bundle: Err(&rejected),
            ca: &[],
            policy_id: "jek:policy:sha256:00",
            now: 0,
        };
        let client = jek_oci::ClientOptions::default();
        let registry = dir.path().join("registry");
        let missing = dir.path().join("missing.yaml");
        let err = Attestor::new(
            verifier(),
            std::slice::from_ref(&missing),
            &client,
            None,
            &registry,
        )
        .err()
        .unwrap();
        assert!(
            jek_errors::chain_line(&err).contains("missing.yaml"),
            "{err}"
        );
        assert_eq!(err.class(), jek_errors::Class::Invalid);
        let not_a_pod = dir.path().join("pod.yaml");
        std::fs::write(&not_a_pod, "kind: Deployment\n").unwrap();
        let err = Attestor::new(
            verifier(),
            std::slice::from_ref(&not_a_pod),
            &client,
            None,
            &registry,
        )
        .err()
        .unwrap();
        assert!(jek_errors::chain_line(&err).contains("pod.yaml"), "{err}");
        assert_eq!(err.class(), jek_errors::Class::Invalid);
        // No pod files: an attestor with the store opened (and made private).
        let a = Attestor::new(verifier(), &[], &client, None, &registry).unwrap();
        assert!(a.pods.is_empty());
        assert!(registry.is_dir());
    }
}
