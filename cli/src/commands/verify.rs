//! `jek verify`: does the policy accept this bundle?

use std::path::PathBuf;

use jek_verifier::{Bundle, KeyId, Sha256Digest, Verified};
use serde::Serialize;

use crate::error::CliError;

/// Arguments of `jek verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle.
    bundle: PathBuf,
    /// Policy file (YAML).
    #[arg(long)]
    policy: PathBuf,
    #[command(flatten)]
    sigstore: SignatureArg,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `--sigstore FILE`, shared by every command that verifies a bundle file.
#[derive(Debug, Clone, clap::Args)]
pub struct SignatureArg {
    /// Detached signature for the policy's `sigstore` rule: a Sigstore bundle (JSON) or a
    /// cosign signature (default: BUNDLE.sigstore.json, then BUNDLE.sig).
    #[arg(long = "sigstore", value_name = "FILE")]
    pub path: Option<PathBuf>,
}

/// The policy's decision on a bundle file: reads the policy, the bundle (once) and the
/// candidate detached signatures, and hands them to the verifier's single entry point.
pub fn verify_file(
    policy: &jek_verifier::Policy,
    bundle: &std::path::Path,
    signature: &SignatureArg,
) -> Result<Verified<Bundle>, CliError> {
    let bytes = crate::error::read("bundle", bundle)?;
    let candidates = jek_config::signatures::candidates(
        bundle,
        signature.path.as_deref(),
        policy.signers().detached().is_some(),
    )?;
    let detached: Vec<_> = candidates.iter().map(|c| c.as_detached()).collect();
    jek_verifier::verify_bundle(bytes, policy, &detached, jek_verifier::UnixTime::now()).map_err(
        |source| CliError::Rejected {
            path: bundle.to_path_buf(),
            source,
        },
    )
}

/// A verified bundle, as `--json` prints it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleJson<'a> {
    name: &'a str,
    version: &'a str,
    security_version: u64,
    kernel_release: &'a str,
    created: &'a str,
    manifest_digest: Sha256Digest,
    signers: &'a [KeyId],
    approved_by: Option<&'a str>,
    components: Vec<ComponentJson>,
}

#[derive(Serialize)]
struct ComponentJson {
    role: &'static str,
    size: u64,
    sha256: Sha256Digest,
}

impl<'a> BundleJson<'a> {
    /// The JSON view of a verified bundle.
    pub fn of(b: &'a Verified<Bundle>) -> Self {
        let m = b.manifest();
        BundleJson {
            name: &m.name,
            version: &m.version,
            security_version: m.security_version,
            kernel_release: &m.kernel_release,
            created: &m.created,
            manifest_digest: b.manifest_digest(),
            signers: b.signers(),
            approved_by: b.approval(),
            components: m
                .components
                .iter()
                .map(|c| ComponentJson {
                    role: c.role.name(),
                    size: c.size,
                    sha256: c.sha256,
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct Accepted<'a> {
    accepted: bool,
    bundle: BundleJson<'a>,
}

#[derive(Serialize)]
struct Refused {
    accepted: bool,
    code: &'static str,
    reason: String,
}

/// Runs `jek verify`.
pub fn run(args: Args) -> Result<(), CliError> {
    let policy = jek_config::policy::load(&args.policy)?;
    match verify_file(&policy.policy, &args.bundle, &args.sigstore) {
        Ok(b) => {
            if args.json {
                super::print_json(&Accepted {
                    accepted: true,
                    bundle: BundleJson::of(&b),
                })?;
            } else {
                let m = b.manifest();
                println!(
                    "ACCEPTED {} {} (security version {}, kernel {})",
                    m.name, m.version, m.security_version, m.kernel_release
                );
                println!("  manifest sha256:{}", b.manifest_digest());
                for s in b.signers() {
                    println!("  signed by {s}");
                }
                if let Some(a) = b.approval() {
                    println!("  approved by {a}");
                }
            }
            Ok(())
        }
        Err(e) => {
            if let (true, CliError::Rejected { source, .. }) = (args.json, &e) {
                super::print_json(&Refused {
                    accepted: false,
                    code: source.code(),
                    reason: crate::error::chain_line(source),
                })?;
            }
            Err(e)
        }
    }
}
