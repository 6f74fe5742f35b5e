//! Atomic file output: write to a temporary file in the destination directory, flush it to
//! disk, then rename it over the destination. A failure leaves no half-written file behind.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Creating, writing or syncing the temporary file failed.
    #[error("cannot write {path}")]
    Write {
        /// Destination path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The destination already exists and overwriting was not allowed.
    #[error("{path} already exists (refusing to overwrite it)")]
    Exists {
        /// Destination path.
        path: PathBuf,
    },
}

/// Whether an existing destination may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it.
    Allow,
    /// Fail with [`WriteError::Exists`].
    Refuse,
}

/// Writes `data` to `path` atomically with Unix permission bits `mode`.
pub fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    overwrite: Overwrite,
) -> Result<(), WriteError> {
    use std::os::unix::fs::PermissionsExt as _;
    let err = |source| WriteError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".jek-tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(data).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    match overwrite {
        Overwrite::Allow => tmp.persist(path).map(drop).map_err(|e| err(e.error)),
        Overwrite::Refuse => tmp.persist_noclobber(path).map(drop).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                WriteError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                err(e.error)
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_with_mode_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_atomic(&p, b"secret", 0o600, Overwrite::Refuse).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            write_atomic(&p, b"other", 0o600, Overwrite::Refuse),
            Err(WriteError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        write_atomic(&p, b"other", 0o644, Overwrite::Allow).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"other");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_path() {
        let err = write_atomic(
            Path::new("/nonexistent-dir/x"),
            b"",
            0o644,
            Overwrite::Allow,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x"));
    }
}
