//! `jek verify`: does the policy accept this bundle?

use std::path::PathBuf;

use jek_verifier::{verify, Bundle, UnixTime, Verified};
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
        "components": m.components.iter().map(|c| json!({
            "role": c.role.name(), "size": c.size, "sha256": c.sha256.to_string(),
        })).collect::<Vec<_>>(),
    })
}

/// Runs `jek verify`.
pub fn run(args: Args) -> Result<(), CliError> {
    let policy = crate::policy_file::load(&args.policy)?;
    let bytes = read("bundle", &args.bundle)?;
    match verify(bytes, &policy, UnixTime::now()) {
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
            }
            Ok(())
        }
        Err(source) => {
            if args.json {
                super::print_json(&json!({
                    "accepted": false,
                    "code": source.code(),
                    "reason": crate::error::chain_line(&source),
                }))?;
            }
            Err(CliError::Rejected {
                path: args.bundle,
                source,
            })
        }
    }
}
