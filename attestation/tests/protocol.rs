//! The attestation exchange against an in-memory TPM: quotes are synthesized and signed
//! inside the test, credential activation is answered with a real RSA EK (fixtures made by
//! `tests/fixtures/recipe.sh`), and each claim is driven to affirming and to
//! contraindicated. No swtpm, QEMU or kernel build.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use jek_attest::appraise::{claim_of, Claim, Status};
use jek_attest::credential::kdfa;
use jek_attest::ekcert::Cert;
use jek_attest::tpm2::{attr, EcdsaSignature, PcrSelection, Public, PublicKey, Quote};
use jek_attest::tpm2::{ALG_ECDSA, ALG_SHA256, ECC_NIST_P256};
use jek_attest::{attest, AkBlobs, AttestationTpm, Attested, PodMaterial, Verifier};
use jek_attest::{Epoch, Registration};
use jek_measure::eventlog::EventLog;
use jek_measure::{PcrValues, PlannedEvent};
use jek_verifier::format::Role;
use jek_verifier::{Bundle, Policy, PublicKey as SignerKey, Sha256Digest, TrustedKey};
use jek_verifier::{UnixTime, Verified, VerifyError};
use rsa::pkcs8::DecodePrivateKey;
use sha2::{Digest, Sha256};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const AK_PRIVATE: &[u8] = b"fake TPM2B_PRIVATE, wrapped by this TPM's EK";

#[derive(Debug, thiserror::Error)]
enum FakeError {
    #[error("TPM_RC_INTEGRITY (the TPM refused)")]
    Refused,
    #[error("connection reset by the TPM's transport")]
    Transport,
}

/// A TPM in memory: an RSA EK with a certificate, one ECC AK, a SHA-256 PCR bank, and
/// switches for the ways a TPM or a host can misbehave.
struct FakeTpm {
    ek_cert: Vec<u8>,
    ek: rsa::RsaPrivateKey,
    ak: p256::ecdsa::SigningKey,
    ak_public: Vec<u8>,
    pcrs: BTreeMap<u32, [u8; 32]>,
    /// Quote with this nonce instead of the verifier's (a replayed quote).
    stale_nonce: Option<Vec<u8>>,
    /// Report this PCR value instead of the one quoted.
    lie_about: Option<u32>,
    /// Every command fails in transport.
    unreachable: bool,
    /// Report another key as the EK's public area.
    other_ek: bool,
    /// `clockInfo` of the quotes.
    reset_count: u32,
    restart_count: u32,
    clock: u64,
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

impl FakeTpm {
    fn new() -> Self {
        let ek =
            rsa::RsaPrivateKey::from_pkcs8_pem(&String::from_utf8(read("ek-key.pem")).unwrap())
                .unwrap();
        let ak = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
        let point = ak.verifying_key().to_encoded_point(false);
        let ak_public = Public::encode(
            attr::AK_REQUIRED,
            &PublicKey::Ecc {
                curve: ECC_NIST_P256,
                scheme: ALG_ECDSA,
                x: point.x().unwrap().to_vec(),
                y: point.y().unwrap().to_vec(),
            },
        );
        FakeTpm {
            ek_cert: read("ek-cert.der"),
            ek,
            ak,
            ak_public,
            pcrs: jek_measure::plan::PCRS
                .iter()
                .map(|p| (*p, [0; 32]))
                .collect(),
            stale_nonce: None,
            lie_about: None,
            unreachable: false,
            other_ek: false,
            reset_count: 2,
            restart_count: 0,
            clock: 1000,
        }
    }

    fn blobs(&self) -> AkBlobs {
        AkBlobs {
            public: self.ak_public.clone(),
            private: AK_PRIVATE.to_vec(),
        }
    }

    fn extend(&mut self, pcr: u32, digest: &Sha256Digest) {
        let v = self.pcrs.entry(pcr).or_insert([0; 32]);
        let mut h = Sha256::new();
        h.update(*v);
        h.update(digest.as_bytes());
        *v = h.finalize().into();
    }

    fn name(&self) -> Vec<u8> {
        Public::parse(&self.ak_public).unwrap().name()
    }

    /// What the verifier recorded when this TPM's pod registered.
    fn registration(&self) -> Registration {
        Registration {
            id: "reg-web".into(),
            pod: "web".into(),
            ak_name: jek_attest::AkName(self.name()),
            ek_cert_sha256: Sha256Digest::of(&self.ek_cert),
            epoch: Epoch {
                reset_count: self.reset_count,
                restart_count: self.restart_count,
                clock: self.clock,
            },
            last_clock: self.clock,
        }
    }

    fn up(&self) -> Result<(), FakeError> {
        if self.unreachable {
            Err(FakeError::Transport)
        } else {
            Ok(())
        }
    }
}

impl AttestationTpm for FakeTpm {
    type Key = ();
    type Error = FakeError;

    fn ek_certificate(&mut self) -> Result<Vec<u8>, FakeError> {
        self.up()?;
        Ok(self.ek_cert.clone())
    }

    fn ek_public(&mut self) -> Result<Vec<u8>, FakeError> {
        use rsa::traits::PublicKeyParts;
        self.up()?;
        let mut modulus = self.ek.n().to_bytes_be();
        if self.other_ek {
            modulus[0] ^= 1;
        }
        Ok(Public::encode(
            0,
            &PublicKey::Rsa {
                bits: 2048,
                exponent: 0,
                modulus,
            },
        ))
    }

    fn load_ak(&mut self, ak: &AkBlobs) -> Result<(), FakeError> {
        self.up()?;
        // A blob wrapped by another TPM's EK does not load here.
        if ak.public == self.ak_public && ak.private == AK_PRIVATE {
            Ok(())
        } else {
            Err(FakeError::Refused)
        }
    }

    fn activate_credential(
        &mut self,
        _ak: &(),
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, FakeError> {
        self.up()?;
        // TPM2_ActivateCredential: unwrap the seed with the EK, check the integrity HMAC
        // over the encrypted identity and the loaded object's name, then decrypt.
        let seed = self
            .ek
            .decrypt(
                rsa::Oaep::new_with_label::<Sha256, _>("IDENTITY\0"),
                encrypted_secret,
            )
            .map_err(|_| FakeError::Refused)?;
        let name = self.name();
        if id_object.len() < 34 || id_object[..2] != [0, 32] {
            return Err(FakeError::Refused);
        }
        let (outer, enc_identity) = (&id_object[2..34], &id_object[34..]);
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&kdfa(&seed, "INTEGRITY", &[], &[], 256)).unwrap();
        mac.update(enc_identity);
        mac.update(&name);
        mac.verify_slice(outer).map_err(|_| FakeError::Refused)?;
        let key = kdfa(&seed, "STORAGE", &name, &[], 128);
        let mut plain = enc_identity.to_vec();
        cfb_mode::Decryptor::<aes::Aes128>::new_from_slices(&key, &[0u8; 16])
            .unwrap()
            .decrypt(&mut plain);
        let len = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
        Ok(plain[2..2 + len].to_vec())
    }

    fn quote(
        &mut self,
        _ak: &(),
        nonce: &[u8],
        pcrs: &[u32],
    ) -> Result<(Vec<u8>, Vec<u8>), FakeError> {
        self.up()?;
        let mut h = Sha256::new();
        for p in pcrs {
            h.update(self.pcrs[p]);
        }
        let q = Quote {
            qualified_signer: self.name(),
            extra_data: self.stale_nonce.clone().unwrap_or_else(|| nonce.to_vec()),
            clock: self.clock,
            reset_count: self.reset_count,
            restart_count: self.restart_count,
            safe: true,
            firmware_version: 1,
            selection: vec![PcrSelection {
                hash: ALG_SHA256,
                pcrs: pcrs.to_vec(),
            }],
            pcr_digest: h.finalize().to_vec(),
        };
        let attest = q.to_bytes();
        let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(&self.ak, &attest);
        let signature = EcdsaSignature {
            hash: ALG_SHA256,
            r: sig.r().to_bytes().to_vec(),
            s: sig.s().to_bytes().to_vec(),
        };
        Ok((attest, signature.to_bytes()))
    }

    fn read_pcrs(&mut self, pcrs: &[u32]) -> Result<PcrValues, FakeError> {
        self.up()?;
        Ok(pcrs
            .iter()
            .map(|p| {
                let mut v = self.pcrs[p];
                if self.lie_about == Some(*p) {
                    v[0] ^= 1;
                }
                (*p, Sha256Digest(v))
            })
            .collect())
    }

    fn refused(error: &FakeError) -> bool {
        matches!(error, FakeError::Refused)
    }
}

/// A signed, verified bundle, the pod segment, and the events of its boot.
struct Reference {
    bundle: Verified<Bundle>,
    segment: Vec<u8>,
    events: Vec<PlannedEvent>,
}

fn pod_segment(name: &str) -> Vec<u8> {
    jek_pod::segment(&jek_pod::PodSpec {
        agent: false,
        name: name.into(),
        hostname: None,
        containers: vec![jek_pod::Container {
            name: "app".into(),
            image: None,
            command: vec!["/bin/app".into()],
            args: vec![],
            env: vec![],
            working_dir: None,
        }],
    })
    .unwrap()
}

fn reference() -> Reference {
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let kernel = jek_builder::kernel_image::synthetic_bzimage("6.1.192-jek");
    let bytes = jek_builder::pack::pack(
        &jek_builder::pack::PackRequest {
            kernel: &kernel,
            vmlinux: None,
            initramfs: Some(b"070701 initramfs"),
            cmdline: "console=ttyS0",
            config: None,
            name: "demo".into(),
            version: "1.0.0".into(),
            security_version: 3,
            kernel_release: None,
            created: UnixTime(0),
        },
        std::slice::from_ref(&key),
    )
    .unwrap();
    let policy = Policy::new(
        vec![TrustedKey::new(SignerKey::from_verifying_key(
            key.verifying_key(),
        ))],
        None,
        1,
        Default::default(),
    )
    .unwrap();
    let bundle = jek_verifier::verify(bytes, &policy, UnixTime::now()).unwrap();
    let segment = pod_segment("web");
    let events = jek_measure::plan(&bundle, Role::BzImage, &segment, &[]).unwrap();
    Reference {
        bundle,
        segment,
        events,
    }
}

/// Boots `events` into a fresh fake TPM and returns it with the event log.
fn booted(events: &[PlannedEvent]) -> (FakeTpm, Vec<u8>) {
    let mut tpm = FakeTpm::new();
    for e in events {
        tpm.extend(e.event.pcr, &e.event.digest);
    }
    let log = EventLog {
        events: events.iter().map(|e| e.event.clone()).collect(),
    };
    (tpm, log.to_bytes())
}

fn ca(name: &str) -> Vec<Cert> {
    Cert::from_pem_chain(&String::from_utf8(read(name)).unwrap(), name).unwrap()
}

struct Run<'a> {
    bundle: Result<&'a Verified<Bundle>, &'a VerifyError>,
    ca: &'a [Cert],
    segment: &'a [u8],
}

/// Runs the exchange with the registration the fake TPM had at its creation.
fn run(
    tpm: &mut FakeTpm,
    log: &[u8],
    blobs: &AkBlobs,
    r: &Run<'_>,
) -> Result<Attested, jek_attest::ProtocolError<FakeError>> {
    let reg = FakeTpm::new().registration();
    run_registered(tpm, log, blobs, r, Some(&reg))
}

fn run_registered(
    tpm: &mut FakeTpm,
    log: &[u8],
    blobs: &AkBlobs,
    r: &Run<'_>,
    registration: Option<&Registration>,
) -> Result<Attested, jek_attest::ProtocolError<FakeError>> {
    let verifier = Verifier {
        bundle: r.bundle,
        ca: r.ca,
        policy_id: "jek:policy:sha256:test",
        now: UnixTime::now().0,
    };
    let chain = String::from_utf8(read("ca.pem")).unwrap();
    let pod = PodMaterial {
        name: "web",
        ak: blobs,
        ek_chain_pem: &chain,
        event_log: log,
        pod_segment: r.segment,
        images: Default::default(),
        registration,
    };
    attest(tpm, &pod, &verifier, &mut rand_core::OsRng)
}

/// The claims that are contraindicated (a claim that could not be appraised because
/// another failed first is `none`, not counted here).
fn failing(a: &Attested) -> BTreeSet<Claim> {
    Claim::ALL
        .into_iter()
        .filter(|c| a.appraisal.status(*c) == Status::Contraindicated)
        .collect()
}

#[test]
fn a_clean_boot_is_affirming_on_every_claim_with_an_activated_identity() {
    let r = reference();
    let trusted = ca("ca.pem");
    let (mut tpm, log) = booted(&r.events);
    let blobs = tpm.blobs();
    let run_args = Run {
        bundle: Ok(&r.bundle),
        ca: &trusted,
        segment: &r.segment,
    };
    let a = run(&mut tpm, &log, &blobs, &run_args).unwrap();
    for c in Claim::ALL {
        assert_eq!(
            a.appraisal.status(c),
            Status::Affirming,
            "{c}: {:?}",
            a.appraisal.claims
        );
    }
    assert_eq!(a.identity.ak_name(), Some(tpm.name().as_slice()));
    assert!(a.identity.ek_subject().unwrap().contains("jek test EK"));
    let sub = a.ear.submod("web").unwrap();
    assert_eq!(sub.status, Status::Affirming);
    assert_eq!(sub.bundle.as_ref().unwrap().security_version, 3);
    assert_eq!(a.ear.eat_profile, jek_attest::ear::EAR_PROFILE);
    // The result is a serde type: it reads back as what was written (timings aside, as
    // floats do not round-trip through JSON text exactly).
    let mut ear = a.ear.clone();
    if let Some(s) = ear.submods.get_mut("web") {
        s.timings_ms = None;
    }
    let text = serde_json::to_string(&ear).unwrap();
    assert_eq!(serde_json::from_str::<jek_attest::Ear>(&text).unwrap(), ear);
    assert!(
        text.contains("\"tpm-identity\":{\"status\":\"affirming\"}"),
        "{text}"
    );
}

#[test]
fn each_measured_event_changed_in_the_boot_contraindicates_exactly_its_claim() {
    let r = reference();
    let trusted = ca("ca.pem");
    let run_args = Run {
        bundle: Ok(&r.bundle),
        ca: &trusted,
        segment: &r.segment,
    };
    for (i, planned) in r.events.iter().enumerate() {
        // The host booted something else here and logged it honestly: the log replays to
        // the TPM, but the event is not the bundle's.
        let mut events = r.events.clone();
        events[i].event.digest = Sha256Digest::of(b"something else");
        let (mut tpm, log) = booted(&events);
        let blobs = tpm.blobs();
        let a = run(&mut tpm, &log, &blobs, &run_args).unwrap();
        let claim = claim_of(&planned.what);
        assert_eq!(
            failing(&a),
            BTreeSet::from([claim]),
            "event {i} ({})",
            planned.what
        );
        assert_eq!(a.appraisal.status(claim), Status::Contraindicated);
    }
}

#[test]
fn a_replayed_quote_fails_freshness_and_a_lying_host_fails_evidence() {
    let r = reference();
    let trusted = ca("ca.pem");
    let run_args = Run {
        bundle: Ok(&r.bundle),
        ca: &trusted,
        segment: &r.segment,
    };
    let (mut tpm, log) = booted(&r.events);
    tpm.stale_nonce = Some(vec![7; 32]);
    let blobs = tpm.blobs();
    let a = run(&mut tpm, &log, &blobs, &run_args).unwrap();
    assert_eq!(failing(&a), BTreeSet::from([Claim::Freshness]));

    let (mut tpm, log) = booted(&r.events);
    tpm.lie_about = Some(4);
    let a = run(&mut tpm, &log, &blobs, &run_args).unwrap();
    assert_eq!(failing(&a), BTreeSet::from([Claim::Evidence]));

    let a = run(
        &mut booted(&r.events).0,
        b"not an event log",
        &blobs,
        &run_args,
    )
    .unwrap();
    assert!(failing(&a).contains(&Claim::Evidence));
}

#[test]
fn an_unproven_tpm_fails_identity_and_a_dead_one_is_an_error_not_a_verdict() {
    let r = reference();
    let trusted = ca("ca.pem");
    let run_args = Run {
        bundle: Ok(&r.bundle),
        ca: &trusted,
        segment: &r.segment,
    };
    // Another TPM's AK files: the blob does not load under this EK.
    let (mut tpm, log) = booted(&r.events);
    let mut foreign = tpm.blobs();
    foreign.private = b"wrapped by another EK".to_vec();
    let a = run(&mut tpm, &log, &foreign, &run_args).unwrap();
    assert_eq!(failing(&a), BTreeSet::from([Claim::TpmIdentity]));
    assert!(a
        .identity
        .unproven_reason()
        .unwrap()
        .contains("not created in this TPM"));

    // An EK certificate from a CA the policy does not trust.
    let other = ca("other-ca.pem");
    let untrusted = Run {
        bundle: Ok(&r.bundle),
        ca: &other,
        segment: &r.segment,
    };
    let blobs = tpm.blobs();
    let a = run(&mut tpm, &log, &blobs, &untrusted).unwrap();
    assert_eq!(failing(&a), BTreeSet::from([Claim::TpmIdentity]));
    assert!(a.identity.ak_name().is_none());

    // A certificate for another key than this TPM's EK.
    let (mut tpm2, log2) = booted(&r.events);
    tpm2.other_ek = true;
    let a = run(&mut tpm2, &log2, &blobs, &run_args).unwrap();
    assert_eq!(failing(&a), BTreeSet::from([Claim::TpmIdentity]));
    assert!(a
        .identity
        .unproven_reason()
        .unwrap()
        .contains("another key than this TPM's EK"));

    // A TPM whose transport fails is an error naming the step.
    tpm.unreachable = true;
    let err = run(&mut tpm, &log, &blobs, &run_args).unwrap_err();
    assert_eq!(err.step, "reading the EK certificate");
    assert!(matches!(err.source, FakeError::Transport));
}

#[test]
fn a_rejected_bundle_fails_signer_or_security_version_and_another_pod_config_fails_pod_config() {
    let r = reference();
    let trusted = ca("ca.pem");
    let (mut tpm, log) = booted(&r.events);
    let blobs = tpm.blobs();
    let unknown = VerifyError::UnknownSigner {
        key_ids: vec!["(none)".into()],
    };
    let rejected = Run {
        bundle: Err(&unknown),
        ca: &trusted,
        segment: &r.segment,
    };
    let a = run(&mut tpm, &log, &blobs, &rejected).unwrap();
    assert_eq!(a.appraisal.status(Claim::Signer), Status::Contraindicated);
    assert_eq!(a.appraisal.status(Claim::Kernel), Status::None);
    assert_eq!(a.appraisal.overall(), Status::Contraindicated);
    let rollback = VerifyError::Rollback {
        security_version: 3,
        minimum: 4,
    };
    let rolled_back = Run {
        bundle: Err(&rollback),
        ca: &trusted,
        segment: &r.segment,
    };
    let a = run(&mut tpm, &log, &blobs, &rolled_back).unwrap();
    assert_eq!(
        a.appraisal.status(Claim::SecurityVersion),
        Status::Contraindicated
    );

    let other_pod = pod_segment("not-web");
    let other = Run {
        bundle: Ok(&r.bundle),
        ca: &trusted,
        segment: &other_pod,
    };
    let a = run(&mut booted(&r.events).0, &log, &blobs, &other).unwrap();
    assert_eq!(failing(&a), BTreeSet::from([Claim::PodConfig]));
}

#[test]
fn a_reset_or_restarted_tpm_replaying_the_boot_fails_the_epoch_and_so_does_an_unknown_pod() {
    let r = reference();
    let trusted = ca("ca.pem");
    let run_args = Run {
        bundle: Ok(&r.bundle),
        ca: &trusted,
        segment: &r.segment,
    };
    // The attack: power-cycle the TPM, start it up, extend exactly the values `jek predict`
    // gives and quote with the verifier's nonce under the pod's own AK. Every PCR and the
    // log are right; only the epoch gives it away.
    for (reset, restart, clock) in [(3, 0, 5000), (2, 1, 5000), (2, 0, 10)] {
        let (mut tpm, log) = booted(&r.events);
        tpm.reset_count = reset;
        tpm.restart_count = restart;
        tpm.clock = clock;
        let blobs = tpm.blobs();
        let a = run(&mut tpm, &log, &blobs, &run_args).unwrap();
        assert_eq!(
            failing(&a),
            BTreeSet::from([Claim::BootEpoch]),
            "reset {reset} restart {restart} clock {clock}"
        );
    }
    let (mut tpm, log) = booted(&r.events);
    let blobs = tpm.blobs();
    let a = run_registered(&mut tpm, &log, &blobs, &run_args, None).unwrap();
    assert_eq!(failing(&a), BTreeSet::from([Claim::BootEpoch]));
    assert!(a.appraisal.claims[&Claim::BootEpoch][0]
        .reason
        .contains("not registered"));

    // A registration for another AK, or another EK: the pod is bound to its own TPM.
    let mut other_ak = tpm.registration();
    other_ak.ak_name = jek_attest::AkName(vec![0, 0x0b, 0]);
    let a = run_registered(&mut tpm, &log, &blobs, &run_args, Some(&other_ak)).unwrap();
    assert_eq!(failing(&a), BTreeSet::from([Claim::TpmIdentity]));
    let mut other_ek = tpm.registration();
    other_ek.ek_cert_sha256 = Sha256Digest::of(b"another TPM's EK certificate");
    let a = run_registered(&mut tpm, &log, &blobs, &run_args, Some(&other_ek)).unwrap();
    assert_eq!(failing(&a), BTreeSet::from([Claim::TpmIdentity]));
    assert!(a
        .identity
        .unproven_reason()
        .unwrap()
        .contains("not the one registered"));
}

/// The verifier's chain cache: a chain that verified is pinned again without verifying
/// until the first expiry among its certificates and the CA's, and verified afresh after
/// it (where it fails); a chain to another CA is never pinned, cached or not; a chain
/// that failed is not remembered.
#[test]
fn the_chain_cache_pins_a_verified_chain_until_its_first_expiry_only() {
    use jek_attest::evidence::EkMaterial;
    use jek_attest::protocol::ChainCache;
    let ek = EkMaterial {
        cert: read("ek-cert.der"),
        chain: String::from_utf8(read("ca.pem")).unwrap(),
    };
    let ek_cert = Cert::from_der(&ek.cert, "ek").unwrap();
    let trusted = ca("ca.pem");
    let until = trusted
        .iter()
        .chain(&trusted)
        .map(Cert::not_after)
        .chain([ek_cert.not_after()])
        .min()
        .unwrap();
    let now = UnixTime::now().0;
    assert!(
        now < until,
        "the fixtures have expired: re-run their recipe"
    );
    let cache = ChainCache::new(trusted);
    for at in [now, now + 1, until] {
        let id = cache.pin_identity(vec![0, 11, 1], &ek, at);
        assert_eq!(id.unproven_reason(), None, "at {at}");
        assert_eq!(id.ak_name(), Some(&[0u8, 11, 1][..]));
    }
    // Past the first expiry the chain is verified again, and fails.
    let late = cache.pin_identity(vec![0, 11, 1], &ek, until + 1);
    assert!(
        late.unproven_reason()
            .is_some_and(|r| r.contains("not valid")),
        "{late:?}"
    );
    // The same EK under another CA: refused however often it is asked.
    let other = ChainCache::new(ca("other-ca.pem"));
    for _ in 0..2 {
        assert!(other
            .pin_identity(vec![0, 11, 1], &ek, now)
            .unproven_reason()
            .is_some());
    }
}

/// Issue 33: a pod sandbox's containers join it while it runs, each measured by the host
/// (PCR 13, its own event) before its segment reaches the guest. The appraisal takes the
/// boot's events from the bundle and the pod file, then every added container's event as
/// the host makes it, and asks the image policy about each; a pod that is no sandbox has
/// nothing to add, so the same event is an extra measurement there; a container added to
/// the TPM but left out of the log is caught by the replay.
#[test]
fn containers_added_to_a_running_sandbox_are_appraised_by_their_events_and_the_policy() {
    use jek_attest::appraise::{ExpectedImage, ImageRules};
    use jek_measure::plan::{added_container_event, ContainerEvent};
    let r = reference();
    let trusted = ca("ca.pem");
    let sandbox = jek_pod::PodSpec {
        agent: true,
        name: "web".into(),
        hostname: None,
        containers: Vec::new(),
    };
    let segment = jek_pod::segment(&sandbox).unwrap();
    let boot = jek_measure::plan(&r.bundle, Role::BzImage, &segment, &[]).unwrap();
    let joined = |name: &str, repo: &str| {
        let manifest = format!("sha256:{}", "a".repeat(64));
        let c = ContainerEvent {
            container: name.into(),
            manifest: manifest.clone(),
            config: format!("sha256:{}", "c".repeat(64)),
            reference: format!("{repo}@{manifest}"),
        };
        added_container_event(&c, Sha256Digest([7; 32]))
    };
    let appraise = |events: &[PlannedEvent], logged: &[PlannedEvent], is_sandbox: bool| {
        let (mut tpm, _) = booted(events);
        let log = EventLog {
            events: logged.iter().map(|e| e.event.clone()).collect(),
        }
        .to_bytes();
        let blobs = tpm.blobs();
        let allow = |e: &ContainerEvent| {
            if e.reference.starts_with("registry.example/shop/") {
                Ok(())
            } else {
                Err(format!("{} is not an allowed repository", e.reference))
            }
        };
        let expected: [ExpectedImage; 0] = [];
        let verifier = Verifier {
            bundle: Ok(&r.bundle),
            ca: &trusted,
            policy_id: "jek:policy:sha256:test",
            now: UnixTime::now().0,
        };
        let chain = String::from_utf8(read("ca.pem")).unwrap();
        let reg = FakeTpm::new().registration();
        let pod = PodMaterial {
            name: "web",
            ak: &blobs,
            ek_chain_pem: &chain,
            event_log: &log,
            pod_segment: &segment,
            images: ImageRules {
                expected: &expected,
                allow: Some(&allow),
                sandbox: is_sandbox,
            },
            registration: Some(&reg),
        };
        attest(&mut tpm, &pod, &verifier, &mut rand_core::OsRng).unwrap()
    };
    let mut two = boot.clone();
    two.push(joined("app", "registry.example/shop/app"));
    two.push(joined("sidecar", "registry.example/shop/proxy"));

    let a = appraise(&two, &two, true);
    assert!(failing(&a).is_empty(), "{:?}", a.appraisal.claims);
    let names: Vec<&str> = a
        .appraisal
        .images
        .iter()
        .map(|(c, _)| c.container.as_str())
        .collect();
    assert_eq!(names, ["app", "sidecar"]);

    // An image the policy refuses: the images claim, and only it.
    let mut refused = boot.clone();
    refused.push(joined("miner", "evil.example/miner"));
    let a = appraise(&refused, &refused, true);
    assert_eq!(
        failing(&a),
        BTreeSet::from([Claim::Images]),
        "{:?}",
        a.appraisal.claims
    );
    let reasons = format!("{:?}", a.appraisal.claims[&Claim::Images]);
    assert!(
        reasons.contains("miner") && reasons.contains("not an allowed repository"),
        "{reasons}"
    );

    // The same log for a pod that is no sandbox: an extra measurement.
    let a = appraise(&two, &two, false);
    assert!(
        failing(&a).contains(&Claim::Images),
        "{:?}",
        a.appraisal.claims
    );
    let reasons = format!("{:?}", a.appraisal.claims[&Claim::Images]);
    assert!(reasons.contains("extra measurement"), "{reasons}");

    // A container the TPM measured but the log hides: the replay does not match.
    let a = appraise(&two, &two[..two.len() - 1], true);
    assert!(!failing(&a).is_empty(), "{:?}", a.appraisal.claims);
    assert_ne!(a.appraisal.overall(), Status::Affirming);
}
