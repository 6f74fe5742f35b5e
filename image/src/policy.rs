//! The image policy (`images:` in policy.yaml): which repositories a pod's images may come
//! from, the digests a repository is pinned to, and the largest root file system unpacked.
//! A pod that names an image under a policy without `images:` is refused: images are
//! allowed by name, never by default.

use crate::reference::{ImageRef, ReferenceError};

/// The default cap on a container's unpacked root file system: 256 MiB.
pub const DEFAULT_MAX_ROOTFS_BYTES: u64 = 256 << 20;

/// One allowed repository.
#[derive(Debug, Clone)]
pub struct AllowRule {
    /// `registry/repository` or `oci:DIR` (see [`ImageRef::repository`]).
    pub repository: String,
    /// The manifest digests allowed; empty: any.
    pub digests: Vec<String>,
    /// A cosign signature under this key required on the image (checked when the image is
    /// prepared, before any layer is fetched).
    pub cosign_key: Option<std::sync::Arc<jek_verifier::sigstore::SigstorePolicy>>,
}

/// The image policy.
#[derive(Debug, Clone)]
pub struct ImagePolicy {
    /// Allowed repositories.
    pub allow: Vec<AllowRule>,
    /// The largest unpacked root file system, in bytes (file contents and link targets).
    pub max_rootfs_bytes: u64,
}

/// Why the policy refuses an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The policy has no `images:` section.
    #[error("the policy allows no images (it has no images: section)")]
    NoImagePolicy,
    /// No rule names the repository.
    #[error("repository {0} is not in the policy's images.allow")]
    Repository(String),
    /// The repository is pinned and this digest is not one of its pins.
    #[error("{repository}@{digest} is not one of the digests the policy pins for it ({})", .pinned.join(", "))]
    Digest {
        /// The repository.
        repository: String,
        /// The image's manifest digest.
        digest: String,
        /// What the policy allows.
        pinned: Vec<String>,
    },
}

/// Normalises a repository as [`ImageRef::repository`] writes it, so that a policy entry
/// and a pod reference for the same image compare equal (`busybox` is
/// `docker.io/library/busybox`; `oci:./x/../y` keeps its components but drops `.`).
pub fn normalize_repository(text: &str, base: &std::path::Path) -> Result<String, String> {
    match ImageRef::parse(text, base) {
        Ok(r @ ImageRef::Layout { tag: None, .. }) => Ok(r.repository()),
        Ok(ImageRef::Registry(r)) if r.tag().is_none_or(|t| t == "latest") && r.digest().is_none() => {
            Ok(format!("{}/{}", r.registry(), r.repository()))
        }
        Ok(_) => Err(format!(
            "{text:?} names a tag or digest; a repository entry names the repository only (pin digests under digests:)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

impl ImagePolicy {
    /// The rule for `repository`.
    pub fn rule(&self, repository: &str) -> Option<&AllowRule> {
        self.allow.iter().find(|r| r.repository == repository)
    }

    /// Checks an image of `repository` whose manifest has `digest`.
    pub fn check(&self, repository: &str, digest: &str) -> Result<(), Refusal> {
        let rule = self
            .allow
            .iter()
            .find(|r| r.repository == repository)
            .ok_or_else(|| Refusal::Repository(repository.to_string()))?;
        if rule.digests.is_empty() || rule.digests.iter().any(|d| d == digest) {
            Ok(())
        } else {
            Err(Refusal::Digest {
                repository: repository.to_string(),
                digest: digest.to_string(),
                pinned: rule.digests.clone(),
            })
        }
    }
}

/// Checks an image under an optional policy (`None`: the policy has no `images:`).
pub fn check(policy: Option<&ImagePolicy>, repository: &str, digest: &str) -> Result<(), Refusal> {
    policy
        .ok_or(Refusal::NoImagePolicy)?
        .check(repository, digest)
}

/// Why the policy refuses the image a reference names.
#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    /// The reference does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The policy refuses its repository or digest.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// The policy's verdict on the image `reference` (a relative `oci:` directory taken from
/// `base_dir`) whose manifest has `digest`: how every appraisal of a container event asks.
pub fn verdict(
    policy: Option<&ImagePolicy>,
    reference: &str,
    base_dir: &std::path::Path,
    digest: &str,
) -> Result<(), VerdictError> {
    let image = ImageRef::parse(reference, base_dir)?;
    Ok(check(policy, &image.repository(), digest)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    #[test]
    fn repositories_and_pins() {
        let p = ImagePolicy {
            allow: vec![
                AllowRule {
                    repository: "localhost:5000/busybox".into(),
                    digests: vec!["sha256:aa".into()],
                    cosign_key: None,
                },
                AllowRule {
                    repository: "docker.io/library/alpine".into(),
                    digests: vec![],
                    cosign_key: None,
                },
            ],
            max_rootfs_bytes: DEFAULT_MAX_ROOTFS_BYTES,
        };
        assert_eq!(p.check("localhost:5000/busybox", "sha256:aa"), Ok(()));
        assert!(matches!(
            p.check("localhost:5000/busybox", "sha256:bb"),
            Err(Refusal::Digest { .. })
        ));
        assert_eq!(p.check("docker.io/library/alpine", "sha256:cc"), Ok(()));
        assert_eq!(
            p.check("localhost:5000/other", "sha256:aa"),
            Err(Refusal::Repository("localhost:5000/other".into()))
        );
        assert_eq!(check(None, "x", "y"), Err(Refusal::NoImagePolicy));
    }

    #[test]
    fn normalisation() {
        let base = Path::new("/etc/jek");
        assert_eq!(
            normalize_repository("alpine", base).unwrap(),
            "docker.io/library/alpine"
        );
        assert_eq!(
            normalize_repository("oci:./img", base).unwrap(),
            "oci:/etc/jek/img"
        );
        assert!(normalize_repository("alpine:3", base).is_err());
        assert!(normalize_repository("oci:img:tag", base).is_err());
    }
}
