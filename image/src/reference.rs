//! Image references as a pod file writes them: a registry reference by tag or digest
//! (`localhost:5000/jek/busybox:1.35`, `busybox@sha256:...`), or a local OCI image layout
//! as skopeo writes it (`oci:DIR` or `oci:DIR:TAG`).
//!
//! Registry references follow the distribution reference grammar
//! (`distribution/reference/regexp.go`) and Docker's normalisation, hand-written here:
//! oci-spec's parser compiles a large regular expression on first use, 40 ms of every
//! `jek` run that reads a pod or policy file naming an image (measured on these machines;
//! a whole verify takes under 1 ms). The registry client still parses the reference its
//! own way before it fetches anything, and the two must agree (tested below).

use std::path::{Path, PathBuf};

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A registry reference, normalised (`busybox` is `docker.io/library/busybox:latest`).
    Registry(RegistryRef),
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
    #[error("image {reference:?} is not a valid registry reference: {why}")]
    Registry {
        /// The text.
        reference: String,
        /// What is wrong.
        why: &'static str,
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
        RegistryRef::parse(text)
            .map(ImageRef::Registry)
            .map_err(|why| ReferenceError::Registry {
                reference: text.to_string(),
                why,
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

/// A registry reference: registry, repository, tag, digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// A path component: lowercase alphanumerics separated by `.`, `_`, `__` or runs of `-`.
fn path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// A domain: dot-separated labels of alphanumerics and inner `-`, then an optional port.
fn domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    };
    host.split('.').all(label)
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|x| x.is_ascii_digit()))
}

impl RegistryRef {
    /// Parses `name[:tag][@sha256:hex]` with Docker's normalisation.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                if !jek_oci::artifact::is_sha256_digest(d) {
                    return Err("the digest is not sha256: and 64 lowercase hex digits");
                }
                (r, Some(d.to_string()))
            }
            None => (text, None),
        };
        // A tag follows the last ':' after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            let b = t.as_bytes();
            let ok = !b.is_empty()
                && b.len() <= 128
                && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
                && b.iter()
                    .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
            if !ok {
                return Err("the tag is not 1-128 of letters, digits, '_', '.' and '-' (not starting with '.' or '-')");
            }
        }
        if name.is_empty() || name.len() > 255 {
            return Err("the name is empty or longer than 255 characters");
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !domain(first) {
                    return Err("the registry is not a host name with an optional port");
                }
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        if !path.split('/').all(path_component) {
            return Err("a repository path component is not lowercase letters and digits separated by '.', '_', '__' or '-'");
        }
        let registry = if registry == "index.docker.io" {
            "docker.io".to_string()
        } else {
            registry
        };
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        Ok(RegistryRef {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The registry host (and port).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if given.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The whole normalised reference (`registry/repository[:tag][@digest]`, `latest` when
    /// neither is given).
    pub fn whole(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        match (&self.tag, &self.digest) {
            (None, None) => s.push_str(":latest"),
            (Some(t), _) => {
                s.push(':');
                s.push_str(t);
            }
            (None, Some(_)) => {}
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
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
    fn the_registry_client_reads_every_reference_the_same_way() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        for ok in [
            "busybox".to_string(),
            "busybox:1.35".into(),
            "library/busybox".into(),
            "index.docker.io/library/busybox:1".into(),
            "localhost/x".into(),
            "localhost:5000/jek/busybox:jek-test".into(),
            "127.0.0.1:40431/bench/busybox:jek-test".into(),
            "registry.example/a/b/c:v1.2_3-x".into(),
            "a.b-c/d__e/f-g.h_i---j:T".into(),
            format!("quay.io/x/y@{digest}"),
            format!("quay.io/x/y:t@{digest}"),
        ] {
            let ours = RegistryRef::parse(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            let theirs: oci_spec::distribution::Reference = ok.parse().unwrap();
            assert_eq!(ours.registry(), theirs.registry(), "{ok}");
            assert_eq!(ours.repository(), theirs.repository(), "{ok}");
            assert_eq!(
                ours.tag(),
                theirs.tag().filter(|_| ours.tag().is_some()),
                "{ok}"
            );
            assert_eq!(ours.digest(), theirs.digest(), "{ok}");
            let again: oci_spec::distribution::Reference = ours.whole().parse().unwrap();
            assert_eq!(again.whole(), theirs.whole(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "Upper/x",
            "x/-y",
            "x/y-",
            "x/y:",
            "x/y:-t",
            "x@sha256:abc",
            "x@md5:0123",
            "host:port/x",
            "a..b/c",
            "x/y/",
            "/x",
        ] {
            assert!(RegistryRef::parse(bad).is_err(), "{bad:?} must be refused");
        }
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
