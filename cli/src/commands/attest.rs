//! `jek attest`: ask each pod's TPM for a fresh quote and appraise it against the signed
//! bundle (`jek_attest::attest` drives the exchange), or appraise exported evidence alone.
//! Pods are attested concurrently; one failing pod never hides another's result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jek_attest::ekcert::Cert;
use jek_attest::evidence::{from_files, to_files};
use jek_attest::{AkBlobs, Ear, Identity, PodMaterial, Status, Verifier};
use jek_loader::run_dir::RunDir;
use jek_loader::RunRecord;
use jek_tpm::Tpm;
use jek_verifier::UnixTime;
use serde::Serialize;

use crate::error::CliError;

/// The largest AK blob, EK chain or evidence file read from a run directory.
const MAX_TPM_FILE: u64 = 1 << 20;

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
    sigstore: super::verify::SignatureArg,
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

/// What every pod is appraised against, beyond the verifier's view.
struct Shared<'a> {
    verifier: Verifier<'a>,
    pods: BTreeMap<String, Vec<u8>>,
}

impl Shared<'_> {
    fn segment(&self, pod: &str) -> &[u8] {
        self.pods.get(pod).map_or(&[][..], Vec::as_slice)
    }
}

/// One pod's outcome, as `--json` prints it.
#[derive(Serialize)]
#[serde(untagged)]
enum PodResult {
    #[serde(rename_all = "camelCase")]
    Appraised {
        run_dir: PathBuf,
        pod: String,
        result: Box<Ear>,
    },
    #[serde(rename_all = "camelCase")]
    Failed { run_dir: PathBuf, error: String },
}

impl PodResult {
    fn status(&self) -> Option<Status> {
        match self {
            PodResult::Appraised { pod, result, .. } => result.submod(pod).map(|s| s.status),
            PodResult::Failed { .. } => None,
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    results: &'a [PodResult],
    summary: Summary,
}

#[derive(Serialize)]
struct Summary {
    pods: usize,
    affirming: usize,
    contraindicated: usize,
    errors: usize,
}

/// Run directories: those given that hold a run record, and the ones directly under those
/// that do not.
fn run_dirs(args: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let has_record = |d: &Path| RunDir::new(d).record().is_file();
    let mut out = Vec::new();
    for a in args {
        if has_record(a) {
            out.push(a.clone());
            continue;
        }
        let entries = std::fs::read_dir(a).map_err(|e| {
            CliError::Usage(format!("cannot read run directory {}: {e}", a.display()))
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| has_record(p))
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

fn read_in(path: &Path) -> Result<Vec<u8>, String> {
    jek_fsio::read_regular(path, MAX_TPM_FILE)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Attests the pod of one run directory through its kept TPM.
fn attest_run_dir(
    dir: &Path,
    shared: &Shared<'_>,
    export: Option<&Path>,
) -> Result<(String, Ear), String> {
    let record = RunRecord::read(dir).map_err(|e| crate::error::chain_line(&e))?;
    let run = RunDir::new(dir);
    let pod = record
        .pod
        .clone()
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let kept = record
        .tpm
        .kept
        .as_ref()
        .ok_or("the pod's TPM was not kept: boot it with --keep-tpm")?;
    let ak = AkBlobs {
        public: read_in(&run.ak_public())?,
        private: read_in(&run.ak_private())?,
    };
    let chain = String::from_utf8(read_in(&run.ek_chain())?)
        .map_err(|_| format!("{} is not PEM text", run.ek_chain().display()))?;
    let event_log = read_in(&run.event_log())?;
    let mut tpm = Tpm::connect(&jek_tpm::swtpm::tcti_for(kept.port))
        .map_err(|e| crate::error::chain_line(&e))?;
    let material = PodMaterial {
        name: &pod,
        ak: &ak,
        ek_chain_pem: &chain,
        event_log: &event_log,
        pod_segment: shared.segment(&pod),
    };
    let attested = jek_attest::attest(&mut tpm, &material, &shared.verifier, &mut rand_core::OsRng)
        .map_err(|e| crate::error::chain_line(&e))?;
    if let Some(out) = export {
        let files = to_files(&attested.evidence, &attested.ek, &pod, &attested.nonce)
            .map_err(|e| e.to_string())?;
        let files: Vec<(&str, &[u8], u32)> = files
            .iter()
            .map(|(name, bytes)| (*name, bytes.as_slice(), 0o644))
            .collect();
        jek_fsio::write_dir_atomic(out, &files).map_err(|e| crate::error::chain_line(&e))?;
    }
    Ok((pod, attested.ear))
}

/// Evidence mode: appraise an exported directory against a nonce and a pinned AK name.
fn appraise_evidence(dir: &Path, args: &Args, shared: &Shared<'_>) -> Result<PodResult, CliError> {
    let nonce_hex = args.nonce.clone().unwrap_or_default();
    let nonce = hex::decode(nonce_hex.trim())
        .map_err(|e| CliError::Usage(format!("--nonce {nonce_hex:?} is not hex: {e}")))?;
    let (evidence, ek, meta) =
        from_files(|name| jek_fsio::read_regular(&dir.join(name), MAX_TPM_FILE).ok()).map_err(
            |source| CliError::EvidenceDir {
                path: dir.to_path_buf(),
                source,
            },
        )?;
    let identity = match &args.ak_name {
        None => Identity::unproven(
            "evidence mode without --ak-name: no credential activation proved this AK",
        ),
        Some(h) => {
            let ak_name = hex::decode(h.trim())
                .map_err(|e| CliError::Usage(format!("--ak-name is not hex: {e}")))?;
            jek_attest::protocol::pin_identity(
                ak_name,
                &ek,
                shared.verifier.ca,
                shared.verifier.now,
            )
        }
    };
    let (_, ear) = jek_attest::protocol::judge(
        &evidence,
        &meta.pod,
        shared.segment(&meta.pod),
        &nonce,
        &identity,
        &shared.verifier,
    );
    Ok(PodResult::Appraised {
        run_dir: dir.to_path_buf(),
        pod: meta.pod,
        result: Box::new(ear),
    })
}

/// Runs `jek attest`.
pub fn run(args: Args, quiet: bool) -> Result<(), CliError> {
    let policy = jek_config::policy::load(&args.policy)?;
    let att = policy.attestation()?;
    let ca_text = crate::error::read_text("attestation.ek_ca", &att.ek_ca)?;
    let ca =
        Cert::from_pem_chain(&ca_text, "attestation.ek_ca").map_err(|source| CliError::EkCa {
            path: att.ek_ca.clone(),
            source,
        })?;
    let mut pods = BTreeMap::new();
    for p in &args.pod {
        let spec = jek_config::pod::load(p)?;
        let seg = jek_pod::segment(&spec)
            .map_err(|e| CliError::Usage(format!("pod file {}: {e}", p.display())))?;
        pods.insert(spec.name.clone(), seg);
    }
    // The bundle's verdict is part of every pod's appraisal, not a reason to stop.
    let verified = match super::verify::verify_file(&policy.policy, &args.bundle, &args.sigstore) {
        Ok(b) => Ok(b),
        Err(CliError::Rejected { source, .. }) => Err(source),
        Err(e) => return Err(e),
    };
    let policy_id = format!("jek:policy:sha256:{}", policy.digest);
    let shared = Shared {
        verifier: Verifier {
            bundle: verified.as_ref(),
            ca: &ca,
            policy_id: &policy_id,
            now: UnixTime::now().0,
        },
        pods,
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
                    s.spawn(move || attest_run_dir(dir, shared, export.as_deref()))
                })
                .collect();
            handles
                .into_iter()
                .zip(&dirs)
                .map(|(h, dir)| {
                    let run_dir = dir.clone();
                    match h.join() {
                        Ok(Ok((pod, ear))) => PodResult::Appraised {
                            run_dir,
                            pod,
                            result: Box::new(ear),
                        },
                        Ok(Err(error)) => PodResult::Failed { run_dir, error },
                        Err(_) => PodResult::Failed {
                            run_dir,
                            error: "attestation thread panicked".into(),
                        },
                    }
                })
                .collect()
        })
    };
    report(&results, args.json, quiet)
}

fn report(results: &[PodResult], json_out: bool, quiet: bool) -> Result<(), CliError> {
    let count = |want: Option<Status>| results.iter().filter(|r| r.status() == want).count();
    let affirming = count(Some(Status::Affirming));
    let errors = count(None);
    let contraindicated = results.len() - affirming - errors;
    if json_out {
        super::print_json(&Report {
            results,
            summary: Summary {
                pods: results.len(),
                affirming,
                contraindicated,
                errors,
            },
        })?;
    } else if !quiet {
        for r in results {
            match r {
                PodResult::Appraised {
                    run_dir,
                    pod,
                    result,
                } => {
                    let Some(sub) = result.submod(pod) else {
                        continue;
                    };
                    println!("{pod}: {} ({})", sub.status.name(), run_dir.display());
                    for (claim, c) in sub.failing() {
                        println!(
                            "  {claim}: {}: {}",
                            c.status.name(),
                            c.reason.as_deref().unwrap_or("")
                        );
                        if let (Some(e), Some(a)) = (&c.expected, &c.actual) {
                            println!("    expected {e}\n    actual   {a}");
                        }
                    }
                }
                PodResult::Failed { run_dir, error } => {
                    println!("{}: error: {error}", run_dir.display());
                }
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
