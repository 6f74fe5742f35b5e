//! `jek attest`: ask each pod's TPM for a fresh quote and appraise it against the signed
//! bundle (`jek_attest::attest` drives the exchange), or appraise exported evidence alone.
//! Pods are attested concurrently; one failing pod never hides another's result.

use std::path::PathBuf;

use jek_attest::Verifier;
use jek_host_attest::driver::{find_run_dirs, Attestor, PodResult};
use jek_verifier::UnixTime;

use crate::error::CliError;

/// Arguments of `jek attest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directories of pods booted with `--keep-tpm`, or directories holding them; with
    /// `--verifier`, the pods' identifiers there.
    #[arg(required_unless_present = "evidence")]
    run_dirs: Vec<PathBuf>,
    /// Ask this running attestation verifier for each pod's last signed result, checked
    /// against its JWKS, instead of quoting here.
    #[arg(long, value_name = "URL", conflicts_with_all = ["evidence", "export"])]
    verifier: Option<String>,
    /// The bundle the pods must have booted.
    #[arg(long, required_unless_present = "verifier")]
    bundle: Option<PathBuf>,
    /// Policy file: trusted signers for the bundle, and `attestation.ek_ca`.
    #[arg(long, required_unless_present = "verifier")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    sigstore: super::verify::SignatureArg,
    /// The pod files the pods were meant to get, matched by `metadata.name` (repeat). A pod
    /// without one is expected to have had no pod configuration. Their images are judged
    /// by the policy's `images:` now.
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
    #[arg(long, requires = "evidence", value_parser = hex_arg)]
    nonce: Option<Hex>,
    /// Evidence mode: the AK name a credential activation proved earlier (hex; `jek attest`
    /// reports it as `jek.ak-name`). Without it the TPM identity is unproven.
    #[arg(long, requires = "evidence", value_parser = hex_arg)]
    ak_name: Option<Hex>,
    /// The verifier's registration store (`jek boot --keep-tpm --registry`); default
    /// $XDG_DATA_HOME/jek/registry, else ~/.local/share/jek/registry.
    #[arg(long, value_name = "DIR")]
    registry: Option<PathBuf>,
    /// With `--verifier`: the credential to present to it.
    #[command(flatten)]
    credentials: super::result::Credentials,
    /// How to reach image registries when resolving the pod files' images.
    #[command(flatten)]
    images: super::oci::RegistryArgs,
    /// Machine-readable results (docs/cli.md).
    #[arg(long)]
    json: bool,
}

/// A hex command-line value (a newtype: clap reads `Vec<u8>` as many values).
#[derive(Debug, Clone)]
struct Hex(Vec<u8>);

fn hex_arg(v: &str) -> Result<Hex, String> {
    hex::decode(v.trim())
        .map(Hex)
        .map_err(|e| format!("not hex: {e}"))
}

/// Runs `jek attest`.
pub fn run(args: Args, quiet: bool) -> Result<(), CliError> {
    if let Some(url) = &args.verifier {
        let credentials = args.credentials.load(args.images.ca_file.as_deref())?;
        let mut ears = Vec::new();
        for id in &args.run_dirs {
            let id = id.to_string_lossy();
            let (_, ear) = jek_service_client::client::fetch_result(url, &id, credentials.reach())?;
            ears.push((PathBuf::from(format!("{url}/v1/pods/{id}")), ear));
        }
        return super::result::report_ears(&ears, args.json);
    }
    let (bundle, policy) = (
        args.bundle.unwrap_or_default(),
        args.policy.unwrap_or_default(),
    );
    let policy = jek_config::policy::load(&policy)?;
    let appraisal = policy.appraisal()?;
    // The bundle's verdict is part of every pod's appraisal, not a reason to stop.
    let verified = match super::verify::verify_file(&policy.policy, &bundle, &args.sigstore) {
        Ok(b) => Ok(b),
        Err(CliError::Rejected { source, .. }) => Err(source),
        Err(e) => return Err(e),
    };
    let attestor = Attestor::new(
        Verifier {
            bundle: verified.as_ref(),
            ca: &appraisal.ek_ca,
            policy_id: &appraisal.policy_id,
            now: UnixTime::now().0,
        },
        &args.pod,
        &args.images.options()?,
        policy.images.clone(),
        &args
            .registry
            .clone()
            .unwrap_or_else(jek_config::paths::default_registry),
    )?;

    let results: Vec<PodResult> = if let Some(dir) = &args.evidence {
        let nonce = args.nonce.map(|h| h.0).unwrap_or_default();
        vec![attestor
            .appraise_exported(dir, &nonce, args.ak_name.map(|h| h.0))
            .map_err(|source| CliError::EvidenceDir {
                path: dir.clone(),
                source,
            })?]
    } else {
        let dirs = find_run_dirs(&args.run_dirs).map_err(|a| {
            CliError::Usage(format!(
                "{} is not a run directory (no pod.json) and holds none",
                a.display()
            ))
        })?;
        attestor.attest_all(&dirs, args.export.as_deref())
    };
    super::result::report(&results, args.json, quiet)
}
