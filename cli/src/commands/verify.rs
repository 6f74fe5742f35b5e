//! `jek verify`: does the policy accept this bundle?

use std::path::PathBuf;

use jek_verifier::{Bundle, Verified};
use serde_json::json;

use crate::error::{read, CliError};

/// Arguments of `jek verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle.
    bundle: PathBuf,
    /// Policy file (YAML).
    #[arg(long)]
    policy: PathBuf,
    #[command(flatten)]
    sigstore: crate::policy_file::SignatureArg,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A verified bundle as JSON.
fn bundle_json(b: &Verified<Bundle>) -> serde_json::Value {
    let m = b.manifest();
    json!({
        "name": m.name,
        "version": m.version,
        "securityVersion": m.security_version,
        "kernelRelease": m.kernel_release,
        "created": m.created,
        "manifestDigest": b.manifest_digest().to_string(),
        "signers": b.signers().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "approvedBy": b.approval(),
        "components": m.components.iter().map(|c| json!({
            "role": c.role.name(), "size": c.size, "sha256": c.sha256.to_string(),
        })).collect::<Vec<_>>(),
    })
}

/// Runs `jek verify`.
pub fn run(args: Args) -> Result<(), CliError> {
    let policy = crate::policy_file::load(&args.policy)?;
    let bytes = read("bundle", &args.bundle)?;
    match policy.verify(&args.bundle, bytes, args.sigstore.path.as_deref()) {
        Ok(b) => {
            if args.json {
                super::print_json(&json!({ "accepted": true, "bundle": bundle_json(&b) }))?;
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
            let verdict = match &e {
                CliError::Rejected { source, .. } => {
                    Some((source.code().to_string(), crate::error::chain_line(source)))
                }
                CliError::Sigstore { source, .. } => Some((
                    format!("sigstore_{}", source.step.name().replace('-', "_")),
                    crate::error::chain_line(source),
                )),
                _ => None,
            };
            if let (true, Some((code, reason))) = (args.json, verdict) {
                super::print_json(&json!({ "accepted": false, "code": code, "reason": reason }))?;
            }
            Err(e)
        }
    }
}
