//! Image references as a pod file writes them: a registry reference by tag or digest
//! (`localhost:5000/jek/busybox:1.35`, `busybox@sha256:...`), or a local OCI image layout
//! as skopeo writes it (`oci:DIR` or `oci:DIR:TAG`).

use std::path::{Path, PathBuf};

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A registry reference, normalised (`busybox` is `docker.io/library/busybox:latest`).
    Registry(oci_spec::distribution::Reference),
    /// A local OCI image layout.
    Layout {
        /// The layout directory, made absolute (relative paths are taken from the pod
        /// file's directory, then the working directory).
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` to select (default: the index's only
        /// manifest).
        tag: Option<String>,
    },
}

/// Why a reference does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// Not a registry reference.
    #[error("image {reference:?} is not a valid registry reference")]
    Registry {
        /// The text.
        reference: String,
        /// Why.
        #[source]
        source: oci_spec::distribution::ParseError,
    },
    /// `oci:` without a directory.
    #[error("image {0:?} names no layout directory (use oci:DIR or oci:DIR:TAG)")]
    EmptyLayout(String),
}

impl ImageRef {
    /// Parses `text`; a relative layout directory is taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ReferenceError> {
        if let Some(rest) = text.strip_prefix("oci:") {
            // The tag is after the last ':' that follows the last '/'.
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') && !d.is_empty() => (d, Some(t.to_string())),
                _ => (rest, None),
            };
            if dir.is_empty() {
                return Err(ReferenceError::EmptyLayout(text.to_string()));
            }
            // Absolute, `.` components dropped: equal paths compare equal in the policy.
            let joined = base.join(dir);
            let absolute = std::path::absolute(&joined).unwrap_or(joined);
            return Ok(ImageRef::Layout {
                dir: absolute.components().collect(),
                tag: tag.filter(|t| !t.is_empty()),
            });
        }
        text.parse()
            .map(ImageRef::Registry)
            .map_err(|source| ReferenceError::Registry {
                reference: text.to_string(),
                source,
            })
    }

    /// The repository the image policy names: `registry/repository` for a registry
    /// reference, `oci:DIR` for a layout.
    pub fn repository(&self) -> String {
        match self {
            ImageRef::Registry(r) => format!("{}/{}", r.registry(), r.repository()),
            ImageRef::Layout { dir, .. } => format!("oci:{}", dir.display()),
        }
    }

    /// The digest the reference pins, if any.
    pub fn digest(&self) -> Option<&str> {
        match self {
            ImageRef::Registry(r) => r.digest(),
            ImageRef::Layout { .. } => None,
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Registry(r) => f.write_str(&r.whole()),
            ImageRef::Layout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            ImageRef::Layout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn registry_references_are_normalised() {
        let r = ImageRef::parse("busybox", Path::new("/")).unwrap();
        assert_eq!(r.repository(), "docker.io/library/busybox");
        let r = ImageRef::parse("localhost:5000/jek/busybox:1", Path::new("/")).unwrap();
        assert_eq!(r.repository(), "localhost:5000/jek/busybox");
        assert_eq!(r.digest(), None);
        let d = format!("localhost:5000/b@sha256:{}", "a".repeat(64));
        assert!(ImageRef::parse(&d, Path::new("/"))
            .unwrap()
            .digest()
            .is_some());
        assert!(ImageRef::parse("a b", Path::new("/")).is_err());
    }

    #[test]
    fn layouts() {
        let r = ImageRef::parse("oci:img:v1", Path::new("/pods")).unwrap();
        assert_eq!(
            r,
            ImageRef::Layout {
                dir: "/pods/img".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(r.repository(), "oci:/pods/img");
        let r = ImageRef::parse("oci:/abs/img", Path::new("/pods")).unwrap();
        assert_eq!(
            r,
            ImageRef::Layout {
                dir: "/abs/img".into(),
                tag: None
            }
        );
        assert!(ImageRef::parse("oci:", Path::new("/")).is_err());
    }
}
