//! The host's identity for a pod's TPM: manufactured with an EK certificate from the
//! host's local CA, given an attestation key under its EK, and registered (AK name, EK
//! certificate digest, the TPM's epoch) in the host's registration store, which the agent
//! and `jek attest` read. The loader calls it at the two moments of a boot
//! ([`jek_loader::tpm::TpmIdentity`]); it knows nothing of CAs or stores itself.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use jek_attest::registration::{AkName, Epoch, Registration};
use jek_errors::Class;
use jek_fsio::{write_atomic, Overwrite, WriteError};
use jek_loader::tpm::{MeasuredPod, SpawnTpm, TpmIdentity, TpmIdentityError, TpmSource};
use jek_tpm::identity::{IdentityError, LocalCa};
use jek_tpm::Tpm;

use crate::registrations::{
    HostRegistration, RegistrationStore, RegistrationStoreError, TpmLocation,
};

/// Why a pod's TPM could not be made attestable.
#[derive(Debug, thiserror::Error)]
pub enum AttestableError {
    /// The pod's TPM could not be given an identity (EK certificate, attestation key).
    #[error("cannot give the pod's TPM an identity for attestation")]
    Identity(#[source] IdentityError),
    /// The pod could not be registered with the registration store.
    #[error("cannot register the pod for attestation")]
    Register(#[source] RegistrationStoreError),
    /// The TPM's first quote (its epoch) does not parse.
    #[error("the TPM's registration quote does not parse")]
    Epoch(#[source] jek_attest::tpm2::Tpm2Error),
    /// The local CA's issuer certificate (copied into the run directory as the EK chain)
    /// cannot be read.
    #[error("cannot read the local CA's issuer certificate {path}")]
    Issuer {
        /// The certificate.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The AK or the EK chain cannot be written into the run directory.
    #[error("cannot write into the run directory")]
    Write(#[source] WriteError),
}

impl AttestableError {
    /// The kind of failure: an unreadable CA file is invalid input, as an unusable run
    /// directory is; the TPM and the store are the environment's.
    pub fn class(&self) -> Class {
        match self {
            AttestableError::Issuer { .. } => Class::Invalid,
            AttestableError::Write(e) => e.class(),
            AttestableError::Identity(_)
            | AttestableError::Register(_)
            | AttestableError::Epoch(_) => Class::Environment,
        }
    }
}

impl From<AttestableError> for TpmIdentityError {
    fn from(e: AttestableError) -> Self {
        TpmIdentityError::new(e.class(), e)
    }
}

/// A host's identity for its pods' TPMs: a local CA and a registration store.
#[derive(Debug)]
pub struct HostIdentity {
    ca: LocalCa,
    registry_dir: PathBuf,
    registry: OnceLock<RegistrationStore>,
}

impl HostIdentity {
    /// Pod TPMs certified by the CA in `ca_dir` (made with `setup_program`, swtpm_setup),
    /// registered in the store in `registry_dir`. Nothing is opened until a boot asks.
    pub fn new(ca_dir: &Path, setup_program: &Path, registry_dir: &Path) -> Self {
        HostIdentity {
            ca: LocalCa::with_setup_program(ca_dir, setup_program),
            registry_dir: registry_dir.to_path_buf(),
            registry: OnceLock::new(),
        }
    }

    fn registry(&self) -> Result<&RegistrationStore, AttestableError> {
        if let Some(r) = self.registry.get() {
            return Ok(r);
        }
        let store =
            RegistrationStore::open(&self.registry_dir).map_err(AttestableError::Register)?;
        Ok(self.registry.get_or_init(|| store))
    }

    /// Creates the pod's attestation key and stores it, with the EK certificate's issuers,
    /// in the run directory; then registers the pod: its AK's name, its EK certificate's
    /// digest and the TPM's epoch (read from a first quote) go into the store. Returns the
    /// registration's identifier.
    fn make_attestable(
        &self,
        tpm: &mut Tpm,
        pod: &MeasuredPod<'_>,
    ) -> Result<String, AttestableError> {
        let registry = self.registry()?;
        let run = pod.run;
        let ak = tpm.create_ak().map_err(AttestableError::Identity)?;
        let issuer_path = self.ca.issuer_cert();
        let issuer = std::fs::read(&issuer_path).map_err(|source| AttestableError::Issuer {
            path: issuer_path.clone(),
            source,
        })?;
        for (path, bytes) in [
            (run.ak_public(), &ak.public),
            (run.ak_private(), &ak.private),
            (run.ek_chain(), &issuer),
        ] {
            write_atomic(&path, bytes, 0o600, Overwrite::Refuse).map_err(AttestableError::Write)?;
        }
        let ek_cert = tpm.ek_certificate().map_err(AttestableError::Identity)?;
        let handle = tpm.load_ak(&ak).map_err(AttestableError::Identity)?;
        let mut nonce = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let (attest, _) = tpm
            .quote(handle, &nonce, &jek_measure::plan::PCRS)
            .map_err(AttestableError::Identity)?;
        let quote = jek_attest::tpm2::Quote::parse(&attest).map_err(AttestableError::Epoch)?;
        let name = jek_attest::tpm2::Public::parse(&ak.public)
            .map_err(AttestableError::Epoch)?
            .name();
        let epoch = Epoch::of(&quote);
        let reg = HostRegistration {
            registration: Registration {
                id: crate::registrations::new_id(),
                pod: pod.name.to_string(),
                ak_name: AkName(name),
                ek_cert_sha256: jek_verifier::Sha256Digest::of(&ek_cert),
                epoch,
                last_clock: epoch.clock,
            },
            tpm: TpmLocation {
                pid: pod.swtpm.pid(),
                socket_dir: pod.swtpm.sockets().dir.clone(),
                run_dir: std::path::absolute(run.root()).ok(),
            },
        };
        registry.put(&reg).map_err(AttestableError::Register)?;
        tracing::info!(id = reg.id(), pod = pod.name, "registered the pod's TPM");
        Ok(reg.registration.id)
    }
}

impl TpmIdentity for HostIdentity {
    fn manufacture(&self, state_dir: &Path) -> Result<(), TpmIdentityError> {
        // The store first: a pod that cannot be registered is not manufactured.
        self.registry()?;
        self.ca
            .manufacture(state_dir)
            .map_err(AttestableError::Identity)?;
        tracing::info!(
            "the pod's TPM has an EK certificate under {}",
            self.ca.root_cert().display()
        );
        Ok(())
    }

    fn register(&self, tpm: &mut Tpm, pod: &MeasuredPod<'_>) -> Result<String, TpmIdentityError> {
        Ok(self.make_attestable(tpm, pod)?)
    }
}

/// The TPM of a pod booted on this host, as `jek boot` and the containerd shim both ask
/// for it: a fresh swtpm (`swtpm`); with `attest` (the local CA directory, the
/// registration store), kept after the pod and given the host's identity, manufactured
/// with `swtpm_setup`.
pub fn pod_tpm(swtpm: PathBuf, swtpm_setup: &Path, attest: Option<(&Path, &Path)>) -> TpmSource {
    TpmSource::Spawn(SpawnTpm {
        program: swtpm,
        keep: attest.is_some(),
        identity: attest.map(|(ca_dir, registry_dir)| {
            Arc::new(HostIdentity::new(ca_dir, swtpm_setup, registry_dir)) as Arc<dyn TpmIdentity>
        }),
    })
}
