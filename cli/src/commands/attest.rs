//! `jek attest`: ask each pod's TPM for a fresh quote and appraise it against the signed
//! bundle, or appraise exported evidence alone.
//!
//! Per pod (online): read the run record and the AK files, check the EK certificate (from
//! the TPM's NV) chains to the policy's CA, prove the AK lives in that TPM (MakeCredential
//! here, ActivateCredential there), quote the PCRs with a fresh nonce, read the PCRs, then
//! appraise in pure Rust (jek-attest). Pods are attested concurrently; one failing pod
//! never hides another's result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use jek_attest::appraise::{appraise, ear, Evidence, Identity, Reference, Status};
use jek_attest::credential::make_credential;
use jek_attest::ekcert::{verify_chain_to_any, Cert};
use jek_attest::evidence::{from_files, to_files, EkMaterial};
use jek_attest::tpm2::Public;
use jek_measure::plan::PCRS;
use jek_tpm::identity::{AkBlobs, KeyHandle};
use jek_tpm::Tpm;
use jek_verifier::{Bundle, UnixTime, Verified, VerifyError};
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};

use crate::error::{read, CliError};

/// Arguments of `jek attest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directories of pods booted with `--keep-tpm`, or directories holding them.
    #[arg(required_unless_present = "evidence")]
    run_dirs: Vec<PathBuf>,
    /// The bundle the pods must have booted.
    #[arg(long)]
    bundle: PathBuf,
    /// Policy file: trusted signers for the bundle, and `attestation.ek_ca`.
    #[arg(long)]
    policy: PathBuf,
    #[command(flatten)]
    sigstore: crate::policy_file::SignatureArg,
    /// The pod files the pods were meant to get, matched by `metadata.name` (repeat). A pod
    /// without one is expected to have had no pod configuration.
    #[arg(long)]
    pod: Vec<PathBuf>,
    /// Also write each pod's evidence here (`DIR/<pod>` when there are several), in formats
    /// `tpm2_checkquote` reads.
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
    /// Appraise exported evidence instead of asking a TPM (needs `--nonce`).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["run_dirs", "export"], requires = "nonce")]
    evidence: Option<PathBuf>,
    /// The nonce the verifier sent for the exported quote (hex).
    #[arg(long, requires = "evidence")]
    nonce: Option<String>,
    /// Evidence mode: the AK name a credential activation proved earlier (hex; `jek attest`
    /// reports it as `jek.ak-name`). Without it the TPM identity is unproven.
    #[arg(long, requires = "evidence")]
    ak_name: Option<String>,
    /// Machine-readable results (docs/cli.md).
    #[arg(long)]
    json: bool,
}

/// What every pod is appraised against.
struct Shared<'a> {
    bundle: Result<&'a Verified<Bundle>, &'a VerifyError>,
    pods: BTreeMap<String, Vec<u8>>,
    ca: Vec<Cert>,
    policy_id: String,
    now: u64,
}

/// One pod's outcome.
struct PodResult {
    dir: PathBuf,
    pod: String,
    outcome: Result<(Status, Value), String>,
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b
}

fn read_in(dir: &Path, name: &str) -> Result<Vec<u8>, String> {
    let p = dir.join(name);
    std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// Run directories: those given that hold a run record, and the ones directly under those
/// that do not.
fn run_dirs(args: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for a in args {
        if a.join("pod.json").is_file() {
            out.push(a.clone());
            continue;
        }
        let entries = std::fs::read_dir(a).map_err(|source| CliError::Read {
            what: "run directory",
            path: a.clone(),
            source,
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("pod.json").is_file())
            .collect();
        if found.is_empty() {
            return Err(CliError::Usage(format!(
                "{} is not a run directory (no pod.json) and holds none",
                a.display()
            )));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

/// Proves the AK lives in the TPM whose EK certificate chains to the CA.
fn establish_identity(
    tpm: &mut Tpm,
    ak: &AkBlobs,
    chain_pem: &[u8],
    shared: &Shared<'_>,
) -> Result<(Identity, Option<KeyHandle>, Vec<u8>), String> {
    let ek_der = tpm.ek_certificate().map_err(|e| crate::error::chain(&e))?;
    let loaded = match tpm.load_ak(ak) {
        Ok(h) => h,
        Err(e) => {
            let reason = format!(
                "the AK cannot be loaded under this TPM's EK, so it was not created in this TPM: {}",
                crate::error::chain_line(&e)
            );
            return Ok((Identity::Unproven { reason }, None, ek_der));
        }
    };
    let name = Public::parse(&ak.public)
        .map_err(|e| format!("the AK public area does not parse: {e}"))?
        .name();
    let identity = (|| {
        let ek = Cert::from_der(&ek_der, "the EK certificate").map_err(|e| e.to_string())?;
        let chain = Cert::from_pem_chain(&String::from_utf8_lossy(chain_pem), "tpm/ek-chain.pem")
            .map_err(|e| e.to_string())?;
        let ek_key =
            verify_chain_to_any(&ek, &chain, &shared.ca, shared.now).map_err(|e| e.to_string())?;
        let secret = random32();
        let challenge = make_credential(&ek_key, &name, &secret).map_err(|e| e.to_string())?;
        let released = tpm
            .activate_credential(loaded, &challenge.id_object, &challenge.encrypted_secret)
            .map_err(|e| {
                format!(
                    "the TPM did not release the credential for this AK: {}",
                    crate::error::chain(&e)
                )
            })?;
        if released != secret {
            return Err("the TPM released a different credential".to_string());
        }
        Ok(Identity::Activated {
            ak_name: name.clone(),
            ek: ek.subject(),
        })
    })()
    .unwrap_or_else(|reason| Identity::Unproven { reason });
    Ok((identity, Some(loaded), ek_der))
}

fn attest_run_dir(
    dir: &Path,
    shared: &Shared<'_>,
    export: Option<&Path>,
) -> Result<(String, Status, Value), String> {
    let record: Value = serde_json::from_slice(&read_in(dir, "pod.json")?)
        .map_err(|e| format!("{}/pod.json is not a run record: {e}", dir.display()))?;
    let pod = record["pod"]
        .as_str()
        .map(str::to_string)
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().to_string()))
        .unwrap_or_default();
    let port = record["tpm"]["kept"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or("the pod's TPM was not kept: boot it with --keep-tpm")?;
    let ak = AkBlobs {
        public: read_in(dir, "tpm/ak.tpmt")?,
        private: read_in(dir, "tpm/ak.priv")?,
    };
    let chain = read_in(dir, "tpm/ek-chain.pem")?;
    let event_log = read_in(dir, "binary_bios_measurements")?;
    let t0 = Instant::now();
    let mut tpm =
        Tpm::connect(&jek_tpm::swtpm::tcti_for(port)).map_err(|e| crate::error::chain(&e))?;
    let (identity, handle, ek_der) = establish_identity(&mut tpm, &ak, &chain, shared)?;
    let t_identity = t0.elapsed();
    let t1 = Instant::now();
    let nonce = random32();
    // Without a loadable AK there is no quote: the appraisal says why (tpm-identity).
    let (attest, signature) = match handle {
        Some(h) => tpm
            .quote(h, &nonce, &PCRS)
            .map_err(|e| crate::error::chain(&e))?,
        None => (Vec::new(), Vec::new()),
    };
    let pcrs = tpm.read_pcrs(&PCRS).map_err(|e| crate::error::chain(&e))?;
    let evidence = Evidence {
        attest,
        signature,
        ak_public: ak.public,
        pcrs,
        event_log,
    };
    if let Some(out) = export {
        let ek = EkMaterial {
            cert: ek_der,
            chain: String::from_utf8_lossy(&chain).to_string(),
        };
        let files = to_files(&evidence, &ek, &pod, &nonce).map_err(|e| e.to_string())?;
        crate::evidence_dir::write(out, &files).map_err(|e| crate::error::chain(&e))?;
    }
    let t2 = Instant::now();
    let (status, mut value) = judge(&evidence, &pod, &nonce, &identity, shared);
    let appraise = t2.elapsed();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    value["submods"][pod.as_str()]["jek.timingsMs"] = json!({
        "identity": ms(t_identity),
        "nonceToVerdict": ms(t1.elapsed()),
        "appraise": ms(appraise),
        "total": ms(t0.elapsed()),
    });
    Ok((pod, status, value))
}

fn judge(
    evidence: &Evidence,
    pod: &str,
    nonce: &[u8],
    identity: &Identity,
    shared: &Shared<'_>,
) -> (Status, Value) {
    let segment = shared.pods.get(pod).map_or(&[][..], Vec::as_slice);
    let reference = Reference {
        bundle: shared.bundle,
        pod_segment: segment,
    };
    let appraisal = appraise(evidence, &reference, nonce, identity);
    let mut extra = json!({});
    if let Identity::Activated { ek, .. } = identity {
        extra["jek.ek-subject"] = json!(ek);
    }
    if let Ok(b) = shared.bundle {
        extra["jek.bundle"] = json!({
            "name": b.manifest().name,
            "securityVersion": b.manifest().security_version,
            "manifestDigest": b.manifest_digest().to_string(),
        });
    }
    let value = ear(
        &appraisal,
        pod,
        nonce,
        shared.now,
        &format!("jek:policy:sha256:{}", shared.policy_id),
        extra,
    );
    (appraisal.overall(), value)
}

/// Runs `jek attest`.
pub fn run(args: Args, quiet: bool) -> Result<(), CliError> {
    let (policy, att) = crate::policy_file::load_for_attestation(&args.policy)?;
    let ca_text = crate::error::read_text("attestation.ek_ca", &att.ek_ca)?;
    let ca = Cert::from_pem_chain(&ca_text, "attestation.ek_ca")
        .map_err(|e| CliError::Usage(format!("attestation.ek_ca {}: {e}", att.ek_ca.display())))?;
    let mut pods = BTreeMap::new();
    for p in &args.pod {
        let spec = crate::pod_file::load(p)?;
        let seg = jek_init::pod::segment(&spec)
            .map_err(|e| CliError::Usage(format!("pod file {}: {e}", p.display())))?;
        pods.insert(spec.name.clone(), seg);
    }
    let bytes = read("bundle", &args.bundle)?;
    let now = UnixTime::now();
    let approval = policy.approve(&args.bundle, &bytes, args.sigstore.path.as_deref())?;
    let verified = jek_verifier::verify_approved(bytes, &policy.policy, now, approval);
    let shared = Shared {
        bundle: verified.as_ref(),
        pods,
        ca,
        policy_id: att.digest,
        now: now.0,
    };

    let results: Vec<PodResult> = if let Some(dir) = &args.evidence {
        vec![appraise_evidence(dir, &args, &shared)?]
    } else {
        let dirs = run_dirs(&args.run_dirs)?;
        let several = dirs.len() > 1;
        std::thread::scope(|s| {
            let handles: Vec<_> = dirs
                .iter()
                .map(|dir| {
                    let shared = &shared;
                    let export = args.export.as_ref().map(|e| {
                        if several {
                            e.join(dir.file_name().unwrap_or_default())
                        } else {
                            e.clone()
                        }
                    });
                    s.spawn(move || {
                        let r = attest_run_dir(dir, shared, export.as_deref());
                        match r {
                            Ok((pod, status, value)) => PodResult {
                                dir: dir.clone(),
                                pod,
                                outcome: Ok((status, value)),
                            },
                            Err(e) => PodResult {
                                dir: dir.clone(),
                                pod: String::new(),
                                outcome: Err(e),
                            },
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .zip(&dirs)
                .map(|(h, dir)| {
                    h.join().unwrap_or_else(|_| PodResult {
                        dir: dir.clone(),
                        pod: String::new(),
                        outcome: Err("attestation thread panicked".into()),
                    })
                })
                .collect()
        })
    };
    report(&results, args.json, quiet)
}

fn appraise_evidence(dir: &Path, args: &Args, shared: &Shared<'_>) -> Result<PodResult, CliError> {
    let nonce_hex = args.nonce.clone().unwrap_or_default();
    let nonce = hex::decode(nonce_hex.trim())
        .map_err(|e| CliError::Usage(format!("--nonce {nonce_hex:?} is not hex: {e}")))?;
    let (evidence, ek, meta) = from_files(|name| std::fs::read(dir.join(name)).ok())
        .map_err(|e| CliError::Usage(format!("evidence directory {}: {e}", dir.display())))?;
    let pod = meta["pod"].as_str().unwrap_or_default().to_string();
    let identity = match &args.ak_name {
        None => Identity::Unproven {
            reason: "evidence mode without --ak-name: no credential activation proved this AK"
                .into(),
        },
        Some(h) => {
            let ak_name = hex::decode(h.trim())
                .map_err(|e| CliError::Usage(format!("--ak-name is not hex: {e}")))?;
            // The EK chain is still checked: the pinned AK must come with a certified EK.
            let chain_ok = Cert::from_der(&ek.cert, "ek-cert.der").and_then(|c| {
                let chain = Cert::from_pem_chain(&ek.chain, "ek-chain.pem")?;
                verify_chain_to_any(&c, &chain, &shared.ca, shared.now)
            });
            match chain_ok {
                Ok(_) => Identity::Pinned { ak_name },
                Err(e) => Identity::Unproven {
                    reason: e.to_string(),
                },
            }
        }
    };
    let (status, value) = judge(&evidence, &pod, &nonce, &identity, shared);
    Ok(PodResult {
        dir: dir.to_path_buf(),
        pod,
        outcome: Ok((status, value)),
    })
}

fn report(results: &[PodResult], json_out: bool, quiet: bool) -> Result<(), CliError> {
    let affirming = results
        .iter()
        .filter(|r| matches!(r.outcome, Ok((Status::Affirming, _))))
        .count();
    let errors = results.iter().filter(|r| r.outcome.is_err()).count();
    let contraindicated = results.len() - affirming - errors;
    if json_out {
        let items: Vec<Value> = results
            .iter()
            .map(|r| match &r.outcome {
                Ok((_, v)) => json!({ "runDir": r.dir, "pod": r.pod, "result": v }),
                Err(e) => json!({ "runDir": r.dir, "error": e }),
            })
            .collect();
        super::print_json(&json!({
            "results": items,
            "summary": {
                "pods": results.len(), "affirming": affirming,
                "contraindicated": contraindicated, "errors": errors,
            },
        }))?;
    } else if !quiet {
        for r in results {
            match &r.outcome {
                Ok((status, v)) => {
                    println!("{}: {} ({})", r.pod, status.name(), r.dir.display());
                    let claims = &v["submods"][&r.pod]["jek.claims"];
                    if let Some(obj) = claims.as_object() {
                        for (name, c) in obj {
                            if c["status"] != "affirming" {
                                println!(
                                    "  {name}: {}: {}",
                                    c["status"].as_str().unwrap_or(""),
                                    c["reason"].as_str().unwrap_or("")
                                );
                                if let (Some(e), Some(a)) =
                                    (c["expected"].as_str(), c["actual"].as_str())
                                {
                                    println!("    expected {e}\n    actual   {a}");
                                }
                            }
                        }
                    }
                }
                Err(e) => println!("{}: error: {e}", r.dir.display()),
            }
        }
        println!(
            "{} pods: {affirming} affirming, {contraindicated} contraindicated, {errors} errors",
            results.len()
        );
    }
    if errors > 0 {
        return Err(CliError::AttestErrors { count: errors });
    }
    if contraindicated > 0 {
        return Err(CliError::Contraindicated {
            count: contraindicated,
        });
    }
    Ok(())
}
