//! `jek sign`: add a signature to an existing bundle.

use std::path::{Path, PathBuf};

use jek_fsio::{write_atomic, Overwrite};

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
        .map(super::load_signing_key)
        .transpose()?;
    let cosign_error = |path: &PathBuf| {
        let path = path.clone();
        move |source| CliError::CosignKey { path, source }
    };
    let cosign = match &args.cosign_key {
        Some(path) => {
            let password = super::cosign_password()?;
            let pem = zeroize::Zeroizing::new(read("cosign key", path)?);
            let k = jek_builder::cosign::CosignKey::from_encrypted_pem(&pem, &password)
                .map_err(cosign_error(path))?;
            Some((path, k))
        }
        None => None,
    };
    let out = args.out.clone().unwrap_or_else(|| args.bundle.clone());
    let (signed, id) = match &key {
        Some(key) => {
            let signed =
                jek_builder::pack::add_signature(&bytes, key).map_err(|source| CliError::Sign {
                    path: args.bundle.clone(),
                    source,
                })?;
            (signed, Some(jek_builder::keys::public_key(key).id()))
        }
        None => (bytes, None),
    };
    let cosign_out = match &cosign {
        Some((path, k)) => {
            let sig = k.sign_blob(&signed).map_err(cosign_error(path))?;
            let sig_path = args
                .signature
                .clone()
                .unwrap_or_else(|| jek_config::signatures::default_paths(&out)[1].clone());
            let public = k.public_key_pem().map_err(cosign_error(path))?;
            Some((
                sig_path,
                sig,
                jek_builder::cosign::key_id(&public).unwrap_or_default(),
            ))
        }
        None => None,
    };
    if id.is_some() || out != args.bundle {
        write_atomic(&out, &signed, 0o644, Overwrite::Allow)?;
    }
    if let Some((sig_path, sig, _)) = &cosign_out {
        write_atomic(sig_path, sig.as_bytes(), 0o644, Overwrite::Allow)?;
    }
    if args.json {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Signed<'a> {
            bundle: &'a Path,
            key_id: Option<jek_verifier::KeyId>,
            sha256: jek_verifier::Sha256Digest,
            cosign: Option<Cosign<'a>>,
        }
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Cosign<'a> {
            signature: &'a Path,
            key_id: &'a str,
        }
        return super::print_json(&Signed {
            bundle: &out,
            key_id: id,
            sha256: jek_verifier::Sha256Digest::of(&signed),
            cosign: cosign_out.as_ref().map(|(p, _, k)| Cosign {
                signature: p,
                key_id: k,
            }),
        });
    }
    if let Some(id) = id {
        outln!("{id}");
    }
    if let Some((p, _, k)) = &cosign_out {
        outln!("{k} {}", p.display());
    }
    Ok(())
}
