//! Detached signatures beside a bundle file: which files are candidates for a policy's
//! Sigstore rule. The verifier decides which (if any) it accepts.
//!
//! With `--sigstore FILE`, that file is the only candidate. Otherwise the candidates are
//! `BUNDLE.sigstore.json` (a Sigstore bundle) and then `BUNDLE.sig` (a cosign signature),
//! those that exist, in that order.

use std::path::{Path, PathBuf};

use crate::{ConfigError, MAX_REFERENCED_SIZE};

/// A candidate signature file and its bytes.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The file.
    pub path: PathBuf,
    /// Its path as text, for errors.
    pub origin: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Candidate {
    /// The candidate as the verifier takes it.
    pub fn as_detached(&self) -> jek_verifier::DetachedSignature<'_> {
        jek_verifier::DetachedSignature {
            origin: &self.origin,
            bytes: &self.bytes,
        }
    }
}

/// Reads the candidates for `bundle`: `explicit` alone, or the default paths that exist.
/// Nothing is read when the policy has no Sigstore rule (`needed` is false).
pub fn candidates(
    bundle: &Path,
    explicit: Option<&Path>,
    needed: bool,
) -> Result<Vec<Candidate>, ConfigError> {
    if !needed {
        return Ok(Vec::new());
    }
    let paths: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => jek_verifier::detached_signature_paths(bundle)
            .into_iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .collect(),
    };
    paths
        .into_iter()
        .map(|path| {
            let bytes = crate::read("Sigstore signature", &path, MAX_REFERENCED_SIZE)?;
            Ok(Candidate {
                origin: path.display().to_string(),
                path,
                bytes,
            })
        })
        .collect()
}

/// Why a bundle file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyFileError {
    /// The bundle or a signature file cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The policy rejects the bundle.
    #[error("bundle {path} rejected")]
    Rejected {
        /// The bundle.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_verifier::VerifyError,
    },
}

/// The policy's decision on a bundle file: reads the bundle once (at most the format's
/// limit, checked by size first) and the candidate detached signatures, and hands them to
/// the verifier's single entry point.
pub fn verify_file(
    policy: &jek_verifier::Policy,
    bundle: &Path,
    explicit: Option<&Path>,
    now: jek_verifier::UnixTime,
) -> Result<jek_verifier::Verified<jek_verifier::Bundle>, VerifyFileError> {
    let bytes = crate::read("bundle", bundle, jek_verifier::format::MAX_BUNDLE_SIZE)?;
    let candidates = candidates(bundle, explicit, policy.signers().detached().is_some())?;
    let detached: Vec<_> = candidates.iter().map(Candidate::as_detached).collect();
    tracing::info!(bundle = %bundle.display(), detached = detached.len(), "verifying");
    let v = jek_verifier::verify_bundle(bytes, policy, &detached, now).map_err(|source| {
        VerifyFileError::Rejected {
            path: bundle.to_path_buf(),
            source,
        }
    })?;
    let m = v.manifest();
    tracing::info!(
        signers = v.signers().len(),
        approved_by = v.approval().unwrap_or("-"),
        security_version = m.security_version,
        "accepted {} {}",
        m.name,
        m.version
    );
    Ok(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn explicit_wins_and_defaults_are_found_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("b.jek");
        assert!(candidates(&b, None, true).unwrap().is_empty());
        std::fs::write(dir.path().join("b.jek.sig"), b"sig").unwrap();
        std::fs::write(dir.path().join("b.jek.sigstore.json"), b"{}").unwrap();
        let c = candidates(&b, None, true).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c[0].origin.ends_with("b.jek.sigstore.json"));
        assert!(candidates(&b, None, false).unwrap().is_empty());
        let other = dir.path().join("x");
        let err = candidates(&b, Some(&other), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read Sigstore signature {}", other.display())
        );
    }
}
