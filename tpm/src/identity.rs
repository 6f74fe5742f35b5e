//! The pod TPM's identity and attestation commands: manufacturing its state with an EK
//! certificate from a local CA (swtpm_setup + swtpm_localca), the attestation key (ECC
//! P-256, restricted signing, created under the EK), credential activation and quotes.
//!
//! The EK is the RSA-2048 EK that swtpm_setup makes persistent at 0x81010001 (TCG EK
//! Credential Profile, template L-1: AES-128-CFB, SHA-256), with its certificate at NV
//! index 0x01c00002.

use std::path::{Path, PathBuf};
use std::process::Command;

use tss_esapi::abstraction::{ak, AsymmetricAlgorithmSelection};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
pub use tss_esapi::handles::KeyHandle;
use tss_esapi::handles::{
    AuthHandle, NvIndexHandle, NvIndexTpmHandle, PersistentTpmHandle, SessionHandle, TpmHandle,
};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, EncryptedSecret, IdObject, PcrSelectionListBuilder, PcrSlot, Private, Public,
    SignatureScheme, SymmetricDefinition,
};
use tss_esapi::traits::{Marshall, UnMarshall};

use crate::client::{pcr_slot, Tpm};

/// The persistent handle of the RSA EK swtpm_setup creates.
pub const EK_HANDLE: u32 = 0x8101_0001;
/// The NV index of the RSA-2048 EK certificate (TCG EK Credential Profile).
pub const EK_CERT_NV_INDEX: u32 = 0x01c0_0002;

/// Why a TPM identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// swtpm_setup could not be run.
    #[error("cannot run {program} (install swtpm-tools: apt-get install swtpm-tools)")]
    SetupSpawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// swtpm_setup failed.
    #[error("swtpm_setup failed for {state_dir} (exit {status:?}): {output}")]
    Setup {
        /// The TPM state directory.
        state_dir: PathBuf,
        /// Exit status.
        status: Option<i32>,
        /// Its output, last lines.
        output: String,
    },
    /// The CA directory cannot be prepared.
    #[error("TPM CA directory {path}")]
    CaDir {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A CA configuration file could not be written.
    #[error("cannot write the TPM CA configuration")]
    Write(#[source] jek_fsio::WriteError),
    /// Reading the PCRs for a quote failed.
    #[error("reading the PCRs failed")]
    Pcrs(#[source] crate::TpmError),
    /// A TPM command failed.
    #[error("{op} failed")]
    Tpm {
        /// The command.
        op: &'static str,
        /// Why.
        #[source]
        source: tss_esapi::Error,
    },
}

impl IdentityError {
    /// Whether the TPM itself refused a command (an error response code from the TPM
    /// layer): a bad blob, a wrong name, a failed policy. Transport and resource failures
    /// (the TCTI, a TPM warning such as out of memory or retry) are not refusals.
    pub fn is_refusal(&self) -> bool {
        match self {
            IdentityError::Tpm { source, .. }
            | IdentityError::Pcrs(crate::TpmError::Read { source, .. }) => is_tpm_refusal(source),
            _ => false,
        }
    }
}

/// Whether a tss-esapi error is an error response of the TPM layer (not a warning).
pub(crate) fn is_tpm_refusal(e: &tss_esapi::Error) -> bool {
    use tss_esapi::constants::response_code::Tss2ResponseCode;
    let tss_esapi::Error::Tss2Error(rc) = e else {
        return false;
    };
    // The raw TSS2_RC is only reachable through Display ("Response code value: 0x...").
    let raw = |text: String| {
        text.rsplit("0x")
            .next()
            .and_then(|h| u32::from_str_radix(h.trim(), 16).ok())
    };
    let code = match rc {
        Tss2ResponseCode::Success => return false,
        Tss2ResponseCode::FormatZero(z) => raw(z.to_string()),
        Tss2ResponseCode::FormatOne(o) => raw(o.to_string()),
    };
    let Some(c) = code else { return false };
    // Bits 16..24 are the TSS layer (0: the TPM itself). Bit 7 selects format one (always
    // an error); in format zero, bit 11 marks a warning (retry, memory, yielded...).
    let tpm_layer = (c >> 16) & 0xff == 0;
    let warning = c & 0x80 == 0 && c & 0x800 != 0;
    tpm_layer && !warning
}

impl jek_attest::AttestationTpm for Tpm {
    type Key = KeyHandle;
    type Error = IdentityError;

    fn ek_certificate(&mut self) -> Result<Vec<u8>, IdentityError> {
        Tpm::ek_certificate(self)
    }

    fn ek_public(&mut self) -> Result<Vec<u8>, IdentityError> {
        let ek = ek_handle(self)?;
        let ctx = self.context();
        ctx.clear_sessions();
        let (public, _, _) = ctx
            .read_public(ek)
            .map_err(tpm_err("TPM2_ReadPublic of the EK"))?;
        public
            .marshall()
            .map_err(tpm_err("marshalling the EK public area"))
    }

    fn load_ak(&mut self, ak: &AkBlobs) -> Result<KeyHandle, IdentityError> {
        Tpm::load_ak(self, ak)
    }

    fn activate_credential(
        &mut self,
        ak: &KeyHandle,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, IdentityError> {
        Tpm::activate_credential(self, *ak, id_object, encrypted_secret)
    }

    fn quote(
        &mut self,
        ak: &KeyHandle,
        nonce: &[u8],
        pcrs: &[u32],
    ) -> Result<(Vec<u8>, Vec<u8>), IdentityError> {
        Tpm::quote(self, *ak, nonce, pcrs)
    }

    fn read_pcrs(&mut self, pcrs: &[u32]) -> Result<jek_measure::PcrValues, IdentityError> {
        Tpm::read_pcrs(self, pcrs).map_err(IdentityError::Pcrs)
    }

    fn refused(error: &IdentityError) -> bool {
        error.is_refusal()
    }

    fn release(&mut self, ak: KeyHandle) {
        if let Err(e) = self.flush_key(ak) {
            tracing::warn!(error = %e, "flushing the AK");
        }
    }
}

fn tpm_err(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> IdentityError {
    move |source| IdentityError::Tpm { op, source }
}

/// A local CA directory for swtpm_localca: its root certificate is what the attestation
/// policy trusts.
#[derive(Debug, Clone)]
pub struct LocalCa {
    dir: PathBuf,
    setup_program: PathBuf,
}

impl LocalCa {
    /// The CA in `dir` (created with its keys on first use); TPMs are manufactured with
    /// `swtpm_setup` from `PATH`.
    pub fn new(dir: &Path) -> Self {
        Self::with_setup_program(dir, Path::new("swtpm_setup"))
    }

    /// [`LocalCa::new`] with an explicit `swtpm_setup` program.
    pub fn with_setup_program(dir: &Path, setup_program: &Path) -> Self {
        LocalCa {
            dir: dir.to_path_buf(),
            setup_program: setup_program.to_path_buf(),
        }
    }

    /// The root CA certificate (PEM): name it in the attestation policy.
    pub fn root_cert(&self) -> PathBuf {
        self.dir.join("swtpm-localca-rootca-cert.pem")
    }

    /// The intermediate that signs EK certificates (PEM).
    pub fn issuer_cert(&self) -> PathBuf {
        self.dir.join("issuercert.pem")
    }

    fn prepare(&self) -> Result<(PathBuf, Option<std::fs::File>), IdentityError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::CaDir { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(err(&self.dir))?;
        let dir = std::fs::canonicalize(&self.dir).map_err(err(&self.dir))?;
        let localca = dir.join("swtpm-localca.conf");
        let setup = dir.join("swtpm_setup.conf");
        let options = dir.join("swtpm-localca.options");
        let files = [
            (
                &localca,
                format!(
                    "statedir = {d}\nsigningkey = {d}/signkey.pem\nissuercert = {d}/issuercert.pem\ncertserial = {d}/certserial\n",
                    d = dir.display()
                ),
            ),
            (
                &setup,
                format!(
                    "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = {}\n",
                    localca.display(),
                    options.display()
                ),
            ),
            (
                &options,
                "--platform-manufacturer jek\n--platform-version 1\n--platform-model jek-pod\n".to_string(),
            ),
        ];
        for (path, text) in files {
            if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                jek_fsio::write_atomic(path, text.as_bytes(), 0o600, jek_fsio::Overwrite::Allow)
                    .map_err(IdentityError::Write)?;
            }
        }
        // swtpm_localca locks its state directory while it issues a certificate; the first
        // use, which creates the CA itself, is serialized here as well.
        if self.root_cert().exists() {
            return Ok((setup, None));
        }
        let lock_path = dir.join(".jek-lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(err(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            IdentityError::CaDir {
                path: lock_path.clone(),
                source: e.into(),
            }
        })?;
        Ok((setup, Some(lock)))
    }

    /// Manufactures a TPM state in `state_dir`: EKs, the EK certificate from this CA in NV,
    /// a platform certificate. Run before the pod's swtpm starts on that state.
    pub fn manufacture(&self, state_dir: &Path) -> Result<(), IdentityError> {
        let (setup_conf, _lock) = self.prepare()?;
        std::fs::create_dir_all(state_dir).map_err(|source| IdentityError::CaDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let program = &self.setup_program;
        let out = Command::new(program)
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(state_dir)
            .args(["--create-ek-cert", "--create-platform-cert", "--overwrite"])
            .arg("--config")
            .arg(&setup_conf)
            .output()
            .map_err(|source| IdentityError::SetupSpawn {
                program: program.clone(),
                source,
            })?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            return Err(IdentityError::Setup {
                state_dir: state_dir.to_path_buf(),
                status: out.status.code(),
                output: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            });
        }
        Ok(())
    }
}

pub use jek_attest::AkBlobs;

fn ek_handle(tpm: &mut Tpm) -> Result<KeyHandle, IdentityError> {
    let handle = PersistentTpmHandle::new(EK_HANDLE).map_err(tpm_err("EK handle"))?;
    let obj = tpm
        .context()
        .tr_from_tpm_public(TpmHandle::Persistent(handle))
        .map_err(tpm_err("reading the EK at 0x81010001"))?;
    Ok(KeyHandle::from(obj))
}

impl Tpm {
    /// Creates the attestation key under the EK: ECC NIST P-256, ECDSA with SHA-256,
    /// restricted, fixedTPM, fixedParent.
    pub fn create_ak(&mut self) -> Result<AkBlobs, IdentityError> {
        let ek = ek_handle(self)?;
        let ctx = self.context();
        ctx.clear_sessions();
        let created = ak::create_ak_2(
            ctx,
            ek,
            HashingAlgorithm::Sha256,
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            SignatureSchemeAlgorithm::EcDsa,
            None,
            None,
        )
        .map_err(tpm_err("TPM2_Create of the AK"))?;
        Ok(AkBlobs {
            public: created
                .out_public
                .marshall()
                .map_err(tpm_err("marshalling the AK"))?,
            private: created.out_private.value().to_vec(),
        })
    }

    /// The EK certificate (DER) from NV index 0x01c00002, read under the owner's (empty)
    /// password in chunks of 1024 bytes.
    pub fn ek_certificate(&mut self) -> Result<Vec<u8>, IdentityError> {
        const OP: &str = "reading the EK certificate (NV 0x01c00002)";
        let ctx = self.context();
        ctx.clear_sessions();
        let index = NvIndexTpmHandle::new(EK_CERT_NV_INDEX).map_err(tpm_err(OP))?;
        let obj = ctx
            .tr_from_tpm_public(TpmHandle::NvIndex(index))
            .map_err(tpm_err(OP))?;
        let nv = NvIndexHandle::from(obj);
        let (public, _) = ctx.nv_read_public(nv).map_err(tpm_err(OP))?;
        let size = public.data_size();
        let mut cert = Vec::with_capacity(size);
        while cert.len() < size {
            let n = u16::try_from((size - cert.len()).min(1024)).unwrap_or(1024);
            let offset = u16::try_from(cert.len()).map_err(|_| IdentityError::Tpm {
                op: OP,
                source: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::InvalidParam),
            })?;
            let chunk = ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.nv_read(NvAuth::Owner, nv, n, offset)
                })
                .map_err(tpm_err(OP))?;
            if chunk.value().is_empty() {
                break;
            }
            cert.extend_from_slice(chunk.value());
        }
        Ok(cert)
    }

    /// Runs `f` with a policy session that satisfies the EK's policy
    /// (PolicySecret(TPM_RH_ENDORSEMENT), authorised with the hierarchy's empty password),
    /// then flushes the session: nothing is left in the TPM's session slots.
    fn with_ek_policy<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut tss_esapi::Context, AuthSession) -> tss_esapi::Result<T>,
    ) -> Result<T, IdentityError> {
        let ctx = self.context();
        ctx.clear_sessions();
        let session = ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(tpm_err("TPM2_StartAuthSession"))?
            .ok_or(IdentityError::Tpm {
                op: "TPM2_StartAuthSession",
                source: tss_esapi::Error::WrapperError(
                    tss_esapi::WrapperErrorKind::WrongValueFromTpm,
                ),
            })?;
        let result = (|| {
            let (attrs, mask) = SessionAttributesBuilder::new().build();
            ctx.tr_sess_set_attributes(session, attrs, mask)?;
            let policy = PolicySession::try_from(session)?;
            ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })?;
            f(ctx, session)
        })();
        ctx.clear_sessions();
        // A policy session used without continueSession is already gone; ignore that.
        let _ = ctx.flush_context(SessionHandle::from(session).into());
        result.map_err(tpm_err(op))
    }

    /// Loads the AK under the EK; the handle is valid until this connection closes.
    pub fn load_ak(&mut self, blobs: &AkBlobs) -> Result<KeyHandle, IdentityError> {
        let ek = ek_handle(self)?;
        let public =
            Public::unmarshall(&blobs.public).map_err(tpm_err("reading the AK public area"))?;
        let private = Private::try_from(blobs.private.clone())
            .map_err(tpm_err("reading the AK private blob"))?;
        self.with_ek_policy("TPM2_Load of the AK", |ctx, policy| {
            ctx.execute_with_sessions((Some(policy), None, None), |ctx| {
                ctx.load(ek, private, public)
            })
        })
    }

    /// TPM2_ActivateCredential: the EK unwraps the credential only if `ak` has the name it
    /// was made for. The AK is authorised by its empty password, the EK by its policy.
    pub fn activate_credential(
        &mut self,
        ak: KeyHandle,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, IdentityError> {
        let ek = ek_handle(self)?;
        let blob = IdObject::try_from(id_object.to_vec()).map_err(tpm_err("credential blob"))?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec())
            .map_err(tpm_err("encrypted secret"))?;
        self.with_ek_policy("TPM2_ActivateCredential", |ctx, policy| {
            ctx.execute_with_sessions((Some(AuthSession::Password), Some(policy), None), |ctx| {
                ctx.activate_credential(ak, ek, blob, secret)
            })
        })
        .map(|d: Digest| d.value().to_vec())
    }

    /// Flushes a loaded key from the TPM's transient slots. swtpm has no resource manager:
    /// a key left loaded stays until the TPM is reset, and three fill it.
    pub fn flush_key(&mut self, key: KeyHandle) -> Result<(), IdentityError> {
        let ctx = self.context();
        ctx.clear_sessions();
        ctx.flush_context(key.into())
            .map_err(tpm_err("TPM2_FlushContext of the AK"))
    }

    /// TPM2_Quote of the SHA-256 bank of `pcrs` with `nonce`, signed by `ak` (ECDSA,
    /// SHA-256). Returns the TPMS_ATTEST and TPMT_SIGNATURE bytes.
    pub fn quote(
        &mut self,
        ak: KeyHandle,
        nonce: &[u8],
        pcrs: &[u32],
    ) -> Result<(Vec<u8>, Vec<u8>), IdentityError> {
        let slots = pcrs
            .iter()
            .map(|p| pcr_slot(*p))
            .collect::<Result<Vec<PcrSlot>, _>>()
            .map_err(|_| IdentityError::Tpm {
                op: "PCR selection",
                source: tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::InvalidParam),
            })?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build()
            .map_err(tpm_err("PCR selection"))?;
        let data = Data::try_from(nonce.to_vec()).map_err(tpm_err("nonce"))?;
        let ctx = self.context();
        // The AK has userWithAuth and an empty password: the password session authorises the
        // quote in this one command.
        ctx.clear_sessions();
        let (attest, signature) = ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.quote(
                    ak,
                    data,
                    SignatureScheme::EcDsa {
                        hash_scheme: tss_esapi::structures::HashScheme::new(
                            HashingAlgorithm::Sha256,
                        ),
                    },
                    selection,
                )
            })
            .map_err(tpm_err("TPM2_Quote"))?;
        Ok((
            attest
                .marshall()
                .map_err(tpm_err("marshalling the quote"))?,
            signature
                .marshall()
                .map_err(tpm_err("marshalling the signature"))?,
        ))
    }
}
