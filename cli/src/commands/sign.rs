//! `jek sign`: add a signature to an existing bundle.

use std::path::PathBuf;

use jek_builder::sign::SignFile;

use crate::error::{read, CliError};

/// Arguments of `jek sign`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle to sign.
    bundle: PathBuf,
    /// Ed25519 signing key (PKCS#8 PEM): adds a signature inside the bundle.
    #[arg(long, required_unless_present = "cosign_key")]
    key: Option<PathBuf>,
    /// Write the signed bundle here instead of replacing BUNDLE (atomically).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cosign private key (password in $COSIGN_PASSWORD): writes a detached cosign blob
    /// signature over the (signed) bundle file, which `cosign verify-blob --key` accepts.
    #[arg(long, value_name = "KEY")]
    cosign_key: Option<PathBuf>,
    /// Where to write the cosign signature (default: the bundle's path + `.sig`).
    #[arg(long, value_name = "FILE", requires = "cosign_key")]
    signature: Option<PathBuf>,
    /// Replace an existing --out or --signature file; when BUNDLE is signed in place,
    /// remove the detached signatures beside it that the change would leave stale.
    #[arg(long)]
    force: bool,
    /// Print `{"bundle", "keyId", "sha256", "cosign"}` instead of the key IDs.
    #[arg(long)]
    json: bool,
}

/// Runs `jek sign`.
pub fn run(args: Args) -> Result<(), CliError> {
    let bytes = read("bundle", &args.bundle)?;
    // Load every key before writing anything: a bad cosign key leaves the bundle as it was.
    let key = args
        .key
        .as_deref()
        .map(jek_build_config::keys::signing_key)
        .transpose()?;
    let cosign = args
        .cosign_key
        .as_deref()
        .map(jek_build_config::keys::cosign_key)
        .transpose()?;
    let signed = jek_builder::sign::sign_file(SignFile {
        bundle: &args.bundle,
        bytes,
        key: key.as_ref(),
        cosign: cosign.as_ref(),
        out: args.out.as_deref(),
        signature: args.signature.as_deref(),
        force: args.force,
    })?;
    if args.json {
        return super::print_json(&signed);
    }
    outln!("{}", signed.text());
    Ok(())
}
