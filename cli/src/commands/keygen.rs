//! `jek keygen`: a new Ed25519 key pair.

use std::path::{Path, PathBuf};

use jek_builder::keys;
use jek_fsio::{write_atomic, Overwrite};

use crate::error::CliError;

/// Arguments of `jek keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output prefix: writes PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SPKI PEM).
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
    /// Make a cosign key pair instead (ECDSA P-256; PREFIX.key encrypted under
    /// $COSIGN_PASSWORD in cosign's format, as `cosign generate-key-pair` writes).
    #[arg(long)]
    cosign: bool,
    /// Replace existing key files.
    #[arg(long)]
    force: bool,
    /// Print the key ID as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `jek keygen`.
pub fn run(args: Args) -> Result<(), CliError> {
    let (key_path, pub_path) =
        keys::pair_paths(&args.out).map_err(|e| CliError::Usage(e.to_string()))?;
    let (private, public, id) = if args.cosign {
        let password = jek_build_config::keys::cosign_password()?;
        let (private, public) =
            jek_builder::cosign::generate(&password).map_err(CliError::CosignKeygen)?;
        let id = jek_builder::cosign::key_id(&public).unwrap_or_default();
        (private, public, id)
    } else {
        let key = keys::generate();
        let private = keys::private_key_pem(&key).map_err(CliError::Keygen)?;
        let public = keys::public_key_pem(&key).map_err(CliError::Keygen)?;
        let id = keys::public_key(&key).id().to_string();
        (private, public, id)
    };
    let overwrite = Overwrite::from_force(args.force);
    overwrite.check([key_path.as_path(), pub_path.as_path()])?;
    write_atomic(&key_path, private.as_bytes(), 0o600, overwrite)?;
    write_atomic(&pub_path, public.as_bytes(), 0o644, overwrite)?;
    tracing::info!(key_id = %id, "wrote {} and {}", key_path.display(), pub_path.display());
    if args.json {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Keys<'a> {
            key_id: &'a str,
            private_key: &'a Path,
            public_key: &'a Path,
        }
        super::print_json(&Keys {
            key_id: &id,
            private_key: &key_path,
            public_key: &pub_path,
        })
    } else {
        outln!("{id}");
        Ok(())
    }
}
