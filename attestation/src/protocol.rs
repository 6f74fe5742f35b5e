//! The attestation exchange, driven from the verifier's side to an appraisal.
//!
//! For one pod: read the EK certificate from the TPM and check that it chains to a trusted
//! CA; load the pod's AK under the EK; bind a fresh secret to the AK's name with
//! MakeCredential and have the TPM release it (ActivateCredential: only the TPM holding
//! that EK, with an object of that name loaded, can); quote jek's PCRs with a fresh nonce;
//! read the PCR values; appraise the quote and the event log against the signed bundle.
//!
//! What the exchange needs from a TPM is the [`AttestationTpm`] trait: `jek-tpm`
//! implements it over tss-esapi, tests implement it in memory. The proven identity is an
//! [`Identity`] that only [`attest`] can make activated.

use std::time::Instant;

use jek_measure::plan::PCRS;
use jek_measure::PcrValues;
use jek_verifier::{Bundle, Verified, VerifyError};
use rand_core::RngCore;

use crate::appraise::{appraise, Appraisal, Evidence, Identity, Reference};
use crate::credential::make_credential;
use crate::ear::{Ear, Submod, Timings};
use crate::ekcert::{verify_chain_to_any, Cert};
use crate::evidence::EkMaterial;
use crate::registration::Registration;
use crate::tpm2::Public;

/// An attestation key as the pod's host stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkBlobs {
    /// TPMT_PUBLIC bytes.
    pub public: Vec<u8>,
    /// The TPM2B_PRIVATE buffer (wrapped by the EK; useless outside that TPM).
    pub private: Vec<u8>,
}

/// What attestation needs from a pod's TPM.
pub trait AttestationTpm {
    /// A loaded AK.
    type Key;
    /// Why a command failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The EK certificate (DER) from the TPM's NV index.
    fn ek_certificate(&mut self) -> Result<Vec<u8>, Self::Error>;
    /// The EK's public area (TPMT_PUBLIC) as the TPM reports it.
    fn ek_public(&mut self) -> Result<Vec<u8>, Self::Error>;
    /// Loads the AK under the EK.
    fn load_ak(&mut self, ak: &AkBlobs) -> Result<Self::Key, Self::Error>;
    /// TPM2_ActivateCredential with the EK and `ak`: the released secret.
    fn activate_credential(
        &mut self,
        ak: &Self::Key,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, Self::Error>;
    /// TPM2_Quote of the SHA-256 bank of `pcrs` with `nonce`: TPMS_ATTEST and
    /// TPMT_SIGNATURE bytes.
    fn quote(
        &mut self,
        ak: &Self::Key,
        nonce: &[u8],
        pcrs: &[u32],
    ) -> Result<(Vec<u8>, Vec<u8>), Self::Error>;
    /// The SHA-256 values of `pcrs`.
    fn read_pcrs(&mut self, pcrs: &[u32]) -> Result<PcrValues, Self::Error>;
    /// Whether `error` is the TPM refusing a command (a response code of the TPM itself),
    /// as opposed to a transport or resource failure. A refused AK load or activation is
    /// evidence against the pod; a transport failure is an error, never a verdict.
    fn refused(error: &Self::Error) -> bool;
    /// Unloads `ak` once the exchange is done (a TPM without a resource manager keeps a
    /// loaded key until it is reset). Failing to is not an attestation failure.
    fn release(&mut self, ak: Self::Key) {
        let _ = ak;
    }
}

/// What every pod is appraised against.
#[derive(Clone, Copy)]
pub struct Verifier<'a> {
    /// The bundle as the policy judged it.
    pub bundle: Result<&'a Verified<Bundle>, &'a VerifyError>,
    /// The CAs EK certificates must chain to.
    pub ca: &'a [Cert],
    /// The EAR's appraisal-policy-id.
    pub policy_id: &'a str,
    /// The appraisal time (Unix seconds): certificate validity and `iat`.
    pub now: u64,
}

/// A pod as its host knows it.
#[derive(Debug, Clone, Copy)]
pub struct PodMaterial<'a> {
    /// The pod's name.
    pub name: &'a str,
    /// Its AK.
    pub ak: &'a AkBlobs,
    /// The certificates that issued its EK certificate (PEM).
    pub ek_chain_pem: &'a str,
    /// The event log its boot wrote.
    pub event_log: &'a [u8],
    /// The pod segment it was meant to get (empty for none).
    pub pod_segment: &'a [u8],
    /// What its containers with images must have run.
    pub images: crate::appraise::ImageRules<'a>,
    /// What the verifier recorded when the pod registered.
    pub registration: Option<&'a Registration>,
}

/// One pod's attestation.
#[derive(Debug, Clone)]
pub struct Attested {
    /// What the exchange proved about the AK.
    pub identity: Identity,
    /// The evidence collected.
    pub evidence: Evidence,
    /// The EK certificate and chain.
    pub ek: EkMaterial,
    /// The nonce the quote had to carry.
    pub nonce: [u8; 32],
    /// The appraisal.
    pub appraisal: Appraisal,
    /// The result.
    pub ear: Ear,
}

/// A step of the exchange the TPM could not perform.
#[derive(Debug, thiserror::Error)]
#[error("the pod's TPM failed at {step}")]
pub struct ProtocolError<E: std::error::Error + 'static> {
    /// The step.
    pub step: &'static str,
    /// The TPM's error.
    #[source]
    pub source: E,
}

fn step<E: std::error::Error + 'static>(step: &'static str) -> impl FnOnce(E) -> ProtocolError<E> {
    move |source| ProtocolError { step, source }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the exchange with one pod's TPM and appraises the result. Evidence that shows the
/// pod did not boot clean is a contraindicated result, not an error; an error means the
/// TPM could not be asked.
pub fn attest<T: AttestationTpm>(
    tpm: &mut T,
    pod: &PodMaterial<'_>,
    verifier: &Verifier<'_>,
    rng: &mut impl RngCore,
) -> Result<Attested, ProtocolError<T::Error>> {
    let t0 = Instant::now();
    let ek_cert = tpm
        .ek_certificate()
        .map_err(step("reading the EK certificate"))?;
    let (identity, key) = establish_identity(tpm, pod, verifier, &ek_cert, rng)?;
    let t_identity = t0.elapsed();

    let t1 = Instant::now();
    let mut nonce = [0u8; 32];
    rng.fill_bytes(&mut nonce);
    // Without a loadable AK there is no quote: the appraisal says why (tpm-identity).
    let quoted = match &key {
        Some(k) => tpm.quote(k, &nonce, &PCRS).map_err(step("TPM2_Quote")),
        None => Ok((Vec::new(), Vec::new())),
    };
    let pcrs = tpm.read_pcrs(&PCRS).map_err(step("reading the PCRs"));
    if let Some(k) = key {
        tpm.release(k);
    }
    let ((attest, signature), pcrs) = (quoted?, pcrs?);
    let evidence = Evidence {
        attest,
        signature,
        ak_public: pod.ak.public.clone(),
        pcrs,
        event_log: pod.event_log.to_vec(),
    };
    let t2 = Instant::now();
    let (appraisal, mut ear) = judge(
        &evidence,
        pod.name,
        &Reference {
            bundle: verifier.bundle,
            pod_segment: pod.pod_segment,
            images: pod.images,
            registration: pod.registration,
        },
        &nonce,
        &identity,
        verifier,
    );
    let appraise_time = t2.elapsed();
    if let Some(sub) = ear.submods.get_mut(pod.name) {
        sub.timings_ms = Some(Timings {
            identity: ms(t_identity),
            nonce_to_verdict: ms(t1.elapsed()),
            appraise: ms(appraise_time),
            total: ms(t0.elapsed()),
        });
    }
    Ok(Attested {
        identity,
        evidence,
        ek: EkMaterial {
            cert: ek_cert,
            chain: pod.ek_chain_pem.to_string(),
        },
        nonce,
        appraisal,
        ear,
    })
}

/// The identity established, with the AK when it loaded.
type IdentityResult<T> = Result<
    (Identity, Option<<T as AttestationTpm>::Key>),
    ProtocolError<<T as AttestationTpm>::Error>,
>;

/// EK chain, AK load and credential activation.
fn establish_identity<T: AttestationTpm>(
    tpm: &mut T,
    pod: &PodMaterial<'_>,
    verifier: &Verifier<'_>,
    ek_cert: &[u8],
    rng: &mut impl RngCore,
) -> IdentityResult<T> {
    let key = match tpm.load_ak(pod.ak) {
        Ok(k) => k,
        Err(e) if T::refused(&e) => {
            let reason = format!(
                "the AK cannot be loaded under this TPM's EK, so it was not created in this TPM: {}",
                jek_errors::chain_line(&e)
            );
            return Ok((Identity::unproven(reason), None));
        }
        Err(e) => return Err(step("loading the AK")(e)),
    };
    let name = match Public::parse(&pod.ak.public) {
        Ok(p) => p.name(),
        Err(e) => {
            let reason = format!("the AK public area does not parse: {e}");
            return Ok((Identity::unproven(reason), Some(key)));
        }
    };
    let checked = (|| {
        let ek = Cert::from_der(ek_cert, "the EK certificate").map_err(|e| e.to_string())?;
        let chain = Cert::from_pem_chain(pod.ek_chain_pem, "tpm/ek-chain.pem")
            .map_err(|e| e.to_string())?;
        let ek_key = verify_chain_to_any(&ek, &chain, verifier.ca, verifier.now)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((ek, ek_key))
    })();
    let (ek, ek_key) = match checked {
        Ok(v) => v,
        Err(reason) => return Ok((Identity::unproven(reason), Some(key))),
    };
    // The certificate must certify this TPM's EK, not just any key the CA signed.
    let ek_public = tpm
        .ek_public()
        .map_err(step("reading the EK's public area"))?;
    if let Err(e) = crate::ekcert::check_ek_public(&ek_key, &ek_public) {
        return Ok((Identity::unproven(e.to_string()), Some(key)));
    }
    if let Some(reg) = pod.registration {
        let actual = jek_verifier::Sha256Digest::of(ek_cert);
        if actual != reg.ek_cert_sha256 {
            let reason = format!(
                "this TPM's EK certificate (sha256:{actual}) is not the one registered for the pod (sha256:{})",
                reg.ek_cert_sha256
            );
            return Ok((Identity::unproven(reason), Some(key)));
        }
    }
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let challenge = match make_credential(&ek_key, &name, &secret) {
        Ok(c) => c,
        Err(e) => return Ok((Identity::unproven(e.to_string()), Some(key))),
    };
    let identity =
        match tpm.activate_credential(&key, &challenge.id_object, &challenge.encrypted_secret) {
            Ok(released) if released == secret => Identity::activated(name, ek.subject()),
            Ok(_) => Identity::unproven("the TPM released a different credential"),
            Err(e) if T::refused(&e) => Identity::unproven(format!(
                "the TPM did not release the credential for this AK: {}",
                jek_errors::chain_line(&e)
            )),
            Err(e) => return Err(step("TPM2_ActivateCredential")(e)),
        };
    Ok((identity, Some(key)))
}

/// Evidence mode: the AK name a credential activation proved earlier, pinned by the
/// verifier. The EK chain is still checked: the pinned AK must come with a certified EK.
pub fn pin_identity(ak_name: Vec<u8>, ek: &EkMaterial, ca: &[Cert], now: u64) -> Identity {
    let chain_ok = Cert::from_der(&ek.cert, "ek-cert.der").and_then(|c| {
        let chain = Cert::from_pem_chain(&ek.chain, "ek-chain.pem")?;
        verify_chain_to_any(&c, &chain, ca, now)
    });
    match chain_ok {
        Ok(_) => Identity::pinned(ak_name),
        Err(e) => Identity::unproven(e.to_string()),
    }
}

/// EK chains that verified, for a verifier that pins many AKs under one set of CAs round
/// after round: each is remembered, by the SHA-256 of the EK certificate and its chain,
/// until the first expiry among those certificates and the CAs (a chain valid now stays
/// valid until then: nothing else in it changes). A chain that fails is not remembered. A
/// new set of CAs (a policy reload) is a new cache.
#[derive(Debug)]
pub struct ChainCache {
    ca: Vec<Cert>,
    /// The CAs' earliest expiry.
    ca_until: u64,
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], u64>>,
}

/// The most chains a [`ChainCache`] holds before it starts again (one per registered pod).
const MAX_CACHED_CHAINS: usize = 1 << 16;

impl ChainCache {
    /// An empty cache for chains to `ca`.
    pub fn new(ca: Vec<Cert>) -> Self {
        let ca_until = ca.iter().map(Cert::not_after).min().unwrap_or(0);
        ChainCache {
            ca,
            ca_until,
            verified: std::sync::Mutex::default(),
        }
    }

    /// The CAs.
    pub fn ca(&self) -> &[Cert] {
        &self.ca
    }

    /// [`pin_identity`] under this cache's CAs, verifying the chain only when it is not
    /// remembered as valid at `now`.
    pub fn pin_identity(&self, ak_name: Vec<u8>, ek: &EkMaterial, now: u64) -> Identity {
        use sha2::Digest as _;
        let key: [u8; 32] = sha2::Sha256::new()
            .chain_update((ek.cert.len() as u64).to_be_bytes())
            .chain_update(&ek.cert)
            .chain_update(ek.chain.as_bytes())
            .finalize()
            .into();
        let mut verified = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if verified.get(&key).is_some_and(|until| now <= *until) {
            return Identity::pinned(ak_name);
        }
        drop(verified);
        let checked = Cert::from_der(&ek.cert, "ek-cert.der").and_then(|c| {
            let chain = Cert::from_pem_chain(&ek.chain, "ek-chain.pem")?;
            verify_chain_to_any(&c, &chain, &self.ca, now)?;
            let until = chain
                .iter()
                .map(Cert::not_after)
                .chain([c.not_after(), self.ca_until])
                .min()
                .unwrap_or(0);
            Ok(until)
        });
        match checked {
            Ok(until) => {
                verified = self
                    .verified
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if verified.len() >= MAX_CACHED_CHAINS {
                    verified.clear();
                }
                verified.insert(key, until);
                Identity::pinned(ak_name)
            }
            Err(e) => Identity::unproven(e.to_string()),
        }
    }
}

/// Appraises one pod's evidence against `reference` and makes its result.
pub fn judge(
    evidence: &Evidence,
    pod: &str,
    reference: &Reference<'_>,
    nonce: &[u8],
    identity: &Identity,
    verifier: &Verifier<'_>,
) -> (Appraisal, Ear) {
    let appraisal = appraise(evidence, reference, nonce, identity);
    let mut submod = Submod::new(
        &appraisal,
        identity,
        verifier.bundle.ok(),
        verifier.policy_id,
    );
    submod.registration = reference.registration.map(|r| r.id.clone());
    let ear = Ear::new(pod, submod, nonce, verifier.now);
    (appraisal, ear)
}
