//! `jek verify`: does the policy accept this bundle?

use std::path::PathBuf;

use jek_verifier::report::BundleSummary;
use jek_verifier::{Bundle, Verified};
use serde::Serialize;

use crate::error::CliError;

/// Arguments of `jek verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle.
    bundle: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    sigstore: SignatureArg,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Whom to trust: a policy file, or one key (like `cosign verify-blob --key`).
#[derive(Debug, Clone, clap::Args)]
pub struct TrustArgs {
    /// Policy file (YAML).
    #[arg(long, required_unless_present = "key")]
    policy: Option<PathBuf>,
    /// Instead of a policy: accept what this key (Ed25519, SPKI PEM) signed.
    #[arg(long, conflicts_with = "policy")]
    key: Option<PathBuf>,
}

impl TrustArgs {
    /// The policy these flags name.
    pub fn load(&self) -> Result<jek_verifier::Policy, CliError> {
        Ok(match (&self.policy, &self.key) {
            (Some(p), _) => jek_config::policy::load(p)?.policy,
            (None, k) => jek_config::policy::for_key(k.as_deref().unwrap_or(".".as_ref()))?,
        })
    }
}

/// `--sigstore FILE`, shared by every command that verifies a bundle file.
#[derive(Debug, Clone, clap::Args)]
pub struct SignatureArg {
    /// Detached signature for the policy's `sigstore` rule: a Sigstore bundle (JSON) or a
    /// cosign signature (default: BUNDLE.sigstore.json, then BUNDLE.sig).
    #[arg(long = "sigstore", value_name = "FILE")]
    pub path: Option<PathBuf>,
}

/// The policy's decision on a bundle file (`jek_config::signatures::verify_file`).
pub fn verify_file(
    policy: &jek_verifier::Policy,
    bundle: &std::path::Path,
    signature: &SignatureArg,
) -> Result<Verified<Bundle>, CliError> {
    use jek_config::signatures::{verify_file, VerifyFileError};
    let now = jek_verifier::UnixTime::now();
    verify_file(policy, bundle, signature.path.as_deref(), now).map_err(|e| match e {
        VerifyFileError::Config(c) => c.into(),
        VerifyFileError::Rejected { path, source } => CliError::Rejected { path, source },
    })
}

#[derive(Serialize)]
struct Accepted<'a> {
    accepted: bool,
    bundle: BundleSummary<'a>,
}

/// Runs `jek verify`. A rejection is an error; with --json, main prints it as
/// `{"accepted": false, "code", "reason"}`.
pub fn run(args: Args) -> Result<(), CliError> {
    let policy = args.trust.load()?;
    let b = verify_file(&policy, &args.bundle, &args.sigstore)?;
    if args.json {
        let bundle = BundleSummary::of(&b);
        return super::print_json(&Accepted {
            accepted: true,
            bundle,
        });
    }
    let m = b.manifest();
    let (name, version, sv) = (&m.name, &m.version, m.security_version);
    outln!(
        "ACCEPTED {name} {version} (security version {sv}, kernel {})",
        m.kernel_release
    );
    outln!("  manifest sha256:{}", b.manifest_digest());
    for s in b.signers() {
        outln!("  signed by {s}");
    }
    if let Some(a) = b.approval() {
        outln!("  approved by {a}");
    }
    Ok(())
}
