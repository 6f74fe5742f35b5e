//! `jek sign` on a bundle file: add an Ed25519 signature inside the bundle, a detached
//! cosign signature beside it, or both, under jek's overwrite rule.
//!
//! The rule: a new output file (`--out`, `--signature`, the signature beside `--out`) that
//! exists is replaced only with `force`. A bundle signed in place is replaced, and so is
//! the cosign signature beside it when cosign signs again. A new signature changes the
//! bundle's bytes, so a detached signature beside it that is not signed again would go
//! stale: that is refused, and with `force` the stale file is removed.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use jek_fsio::{write_atomic, Overwrite, WriteError};
use jek_verifier::{KeyId, Sha256Digest};

use crate::cosign::{CosignError, CosignKey};
use crate::pack::SignError;

/// A signing of one bundle file.
pub struct SignFile<'a> {
    /// The bundle file.
    pub bundle: &'a Path,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// A key to sign inside the bundle.
    pub key: Option<&'a SigningKey>,
    /// A cosign key to sign the (signed) file with.
    pub cosign: Option<&'a CosignKey>,
    /// Write the bundle here instead of replacing `bundle`.
    pub out: Option<&'a Path>,
    /// Write the cosign signature here instead of beside the output.
    pub signature: Option<&'a Path>,
    /// Replace existing outputs; remove stale signatures.
    pub force: bool,
}

/// What a signing wrote (`jek sign --json`).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signed {
    /// The bundle file written (or left as it was).
    pub bundle: PathBuf,
    /// The key that signed inside the bundle.
    pub key_id: Option<KeyId>,
    /// SHA-256 of the bundle file.
    pub sha256: Sha256Digest,
    /// The cosign signature written.
    pub cosign: Option<CosignSigned>,
    /// Stale detached signatures removed (`force`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<PathBuf>,
}

/// A cosign signature written.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CosignSigned {
    /// Where.
    pub signature: PathBuf,
    /// The cosign key's ID.
    pub key_id: String,
}

impl Signed {
    /// What `jek sign` prints: the key ID, then the cosign key ID and signature path.
    pub fn text(&self) -> String {
        let mut lines = Vec::new();
        if let Some(id) = &self.key_id {
            lines.push(id.to_string());
        }
        if let Some(c) = &self.cosign {
            lines.push(format!("{} {}", c.key_id, c.signature.display()));
        }
        lines.join("\n")
    }
}

/// Why a signing failed. Nothing is written when it fails before the writes.
#[derive(Debug, thiserror::Error)]
pub enum SignFileError {
    /// An output exists and `force` was not given, or a write failed.
    #[error("cannot write output")]
    Write(#[from] WriteError),
    /// A detached signature beside the bundle would be left stale.
    #[error("{signature} is a detached signature over {bundle} as it is now; adding a signature changes the bundle and would leave it stale (sign with --key and --cosign-key together, or pass --force to remove it)")]
    Stale {
        /// The signature file.
        signature: PathBuf,
        /// The bundle.
        bundle: PathBuf,
    },
    /// The bundle cannot take the signature.
    #[error("cannot sign {path}")]
    Sign {
        /// The bundle.
        path: PathBuf,
        /// Cause.
        #[source]
        source: SignError,
    },
    /// cosign signing failed.
    #[error("cosign signing failed")]
    Cosign(#[source] CosignError),
    /// A stale signature cannot be removed.
    #[error("cannot remove the stale signature {path}")]
    Remove {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl SignFileError {
    /// The kind of failure: a bundle that is not intact is rejected, as `verify` rejects
    /// it; a refused overwrite or stale signature is a usage error.
    pub fn class(&self) -> jek_errors::Class {
        use jek_errors::Class;
        match self {
            SignFileError::Write(e) => e.class(),
            SignFileError::Sign {
                source: SignError::NotIntact(_),
                ..
            } => Class::Rejected,
            SignFileError::Stale { .. } | SignFileError::Sign { .. } => Class::Invalid,
            SignFileError::Cosign(_) | SignFileError::Remove { .. } => Class::Environment,
        }
    }

    /// The verifier's code when the bundle is not intact.
    pub fn rejection_code(&self) -> Option<&'static str> {
        match self {
            SignFileError::Sign {
                source: SignError::NotIntact(e),
                ..
            } => Some(e.code()),
            _ => None,
        }
    }
}

/// Signs as `req` says (see the module docs for the overwrite rule).
pub fn sign_file(req: SignFile<'_>) -> Result<Signed, SignFileError> {
    let out = req.out.unwrap_or(req.bundle).to_path_buf();
    let [sigstore_beside, cosign_beside] = jek_verifier::detached_signature_paths(&out);
    let cosign_resigns = req.cosign.is_some() && req.signature.is_none();
    let new_sig = (req.out.is_some() && cosign_resigns).then_some(cosign_beside.as_path());
    let outputs = req.out.into_iter().chain(req.signature).chain(new_sig);
    Overwrite::from_force(req.force).check(outputs)?;
    let stale: Vec<PathBuf> = match (req.key, req.out) {
        (Some(_), None) => [
            Some(sigstore_beside),
            (!cosign_resigns).then(|| cosign_beside.clone()),
        ]
        .into_iter()
        .flatten()
        .filter(|p| p.symlink_metadata().is_ok())
        .collect(),
        _ => Vec::new(),
    };
    if let (Some(p), false) = (stale.first(), req.force) {
        return Err(SignFileError::Stale {
            signature: p.clone(),
            bundle: out,
        });
    }
    let (signed, key_id) = match req.key {
        Some(key) => {
            let signed = crate::pack::add_signature(&req.bytes, key).map_err(|source| {
                SignFileError::Sign {
                    path: req.bundle.to_path_buf(),
                    source,
                }
            })?;
            (signed, Some(crate::keys::public_key(key).id()))
        }
        None => (req.bytes, None),
    };
    let cosign = match req.cosign {
        Some(k) => {
            let sig = k.sign_blob(&signed).map_err(SignFileError::Cosign)?;
            let public = k.public_key_pem().map_err(SignFileError::Cosign)?;
            let path = req.signature.map_or(cosign_beside, Path::to_path_buf);
            let key_id = crate::cosign::key_id(&public).unwrap_or_default();
            Some((
                CosignSigned {
                    signature: path,
                    key_id,
                },
                sig,
            ))
        }
        None => None,
    };
    if key_id.is_some() || req.out.is_some() {
        write_atomic(&out, &signed, 0o644, Overwrite::Allow)?;
    }
    for p in &stale {
        std::fs::remove_file(p).map_err(|source| SignFileError::Remove {
            path: p.clone(),
            source,
        })?;
        tracing::warn!("removed {}: it no longer matches the bundle", p.display());
    }
    if let Some((c, sig)) = &cosign {
        write_atomic(&c.signature, sig.as_bytes(), 0o644, Overwrite::Allow)?;
    }
    Ok(Signed {
        bundle: out,
        key_id,
        sha256: Sha256Digest::of(&signed),
        cosign: cosign.map(|(c, _)| c),
        removed: stale,
    })
}
