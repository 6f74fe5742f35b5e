//! `jek sign`: add a signature to an existing bundle.

use std::path::PathBuf;

use jek_builder::fsio::{write_atomic, Overwrite};

use crate::error::{read, CliError};

/// Arguments of `jek sign`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle to sign.
    bundle: PathBuf,
    /// Signing key (PKCS#8 PEM).
    #[arg(long)]
    key: PathBuf,
    /// Write the signed bundle here instead of replacing BUNDLE (atomically).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print `{"bundle", "keyId", "sha256"}` instead of the key ID.
    #[arg(long)]
    json: bool,
}

/// Runs `jek sign`.
pub fn run(args: Args) -> Result<(), CliError> {
    let bytes = read("bundle", &args.bundle)?;
    let key = super::load_signing_key(&args.key)?;
    let signed =
        jek_builder::pack::add_signature(&bytes, &key).map_err(|source| CliError::Sign {
            path: args.bundle.clone(),
            source,
        })?;
    let out = args.out.unwrap_or(args.bundle);
    write_atomic(&out, &signed, 0o644, Overwrite::Allow)?;
    let id = jek_builder::keys::public_key(&key).id();
    if args.json {
        return super::print_json(&serde_json::json!({
            "bundle": out,
            "keyId": id.to_string(),
            "sha256": jek_verifier::Sha256Digest::of(&signed).to_string(),
        }));
    }
    println!("{id}");
    Ok(())
}
