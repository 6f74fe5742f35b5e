//! # jek-fsio: file I/O at jek's trust boundaries
//!
//! - [`write_atomic`]: the workspace's one way to write a file. A temporary file is created
//!   exclusively (`O_CREAT|O_EXCL`, so a planted symlink is never followed) in the
//!   destination directory with its final mode, written, fsynced, renamed over the
//!   destination, and the directory is fsynced. A failure leaves no half-written file.
//! - [`write_dir_atomic`]: a whole directory of files, renamed into place at once.
//! - [`terminal::escape`]: untrusted text made inert before it reaches a terminal.
//! - [`read_regular`]: reading a file from a directory jek does not own: opened with
//!   `O_NOFOLLOW`, it must be a regular file, and its size is checked (fstat) against a cap
//!   before a byte is read.
//! - [`check_strict`]: a file that decides what jek trusts (a runtime file, a policy, a
//!   key) must be owned by root or by jek's own user, and neither it nor a directory above
//!   it writable by anyone else, as sshd's `StrictModes` asks of `authorized_keys`.
//!
//! ```
//! use jek_fsio::{read_regular, write_atomic, Overwrite};
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("out");
//! write_atomic(&path, b"hello", 0o600, Overwrite::Refuse)?;
//! assert_eq!(read_regular(&path, 1024)?, b"hello");
//! assert!(read_regular(&path, 4).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod terminal;

use jek_errors::Class;

use std::io::{Read as _, Write as _};
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
    #[error("{path} already exists (refusing to overwrite it; --force replaces it)")]
    Exists {
        /// Destination path.
        path: PathBuf,
    },
}

impl WriteError {
    /// The kind of failure.
    pub fn class(&self) -> Class {
        match self {
            WriteError::Exists { .. } => Class::Invalid,
            WriteError::Write { .. } => Class::Environment,
        }
    }
}

/// Whether an existing destination may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it.
    Allow,
    /// Fail with [`WriteError::Exists`].
    Refuse,
}

impl Overwrite {
    /// jek's one overwrite rule: an output file that exists is replaced only with `--force`.
    pub fn from_force(force: bool) -> Overwrite {
        if force {
            Overwrite::Allow
        } else {
            Overwrite::Refuse
        }
    }

    /// Checks every output of a command before any is written, so a refusal leaves all of
    /// them as they were.
    pub fn check<'a>(self, paths: impl IntoIterator<Item = &'a Path>) -> Result<(), WriteError> {
        if self == Overwrite::Allow {
            return Ok(());
        }
        match paths.into_iter().find(|p| p.symlink_metadata().is_ok()) {
            Some(p) => Err(WriteError::Exists {
                path: p.to_path_buf(),
            }),
            None => Ok(()),
        }
    }
}

/// `$VAR/jek` for an XDG base directory variable, else `~/HOME_DEFAULT/jek`, else
/// `./HOME_DEFAULT/jek` without a home.
pub fn xdg_dir(var: &str, home_default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(home_default)))
        .unwrap_or_else(|| PathBuf::from(home_default))
        .join("jek")
}

/// jek's cache root: `$XDG_CACHE_HOME/jek`, else `~/.cache/jek` (kernel builds under
/// `kernel/`, image blobs and segments under `images/`).
pub fn cache_root() -> PathBuf {
    xdg_dir("XDG_CACHE_HOME", ".cache")
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
        Overwrite::Allow => tmp.persist(path).map(drop).map_err(|e| err(e.error))?,
        Overwrite::Refuse => tmp.persist_noclobber(path).map(drop).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                WriteError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                err(e.error)
            }
        })?,
    }
    sync_dir(dir).map_err(err)
}

/// Flushes a directory's entries (a rename into it) to disk.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `files` (name, bytes, mode) as the directory `out`, which must not exist yet or
/// be empty: they go into a temporary sibling directory (mode 0700) that is fsynced and
/// renamed into place, so readers see all of the files or none.
pub fn write_dir_atomic(out: &Path, files: &[(&str, &[u8], u32)]) -> Result<(), WriteError> {
    let err = |source| WriteError::Write {
        path: out.to_path_buf(),
        source,
    };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(err)?;
    let tmp = tempfile::Builder::new()
        .prefix(".jek-tmp-")
        .tempdir_in(parent)
        .map_err(err)?;
    for (name, bytes, mode) in files {
        if name.is_empty() || name.contains('/') || *name == "." || *name == ".." {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name:?} is not a file name"),
            )));
        }
        write_atomic(&tmp.path().join(name), bytes, *mode, Overwrite::Refuse)?;
    }
    if out.is_dir() && !out.is_symlink() {
        // An empty directory may be replaced; anything else is refused by rmdir.
        std::fs::remove_dir(out).map_err(err)?;
    }
    let tmp = tmp.keep();
    std::fs::rename(&tmp, out)
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&tmp);
        })
        .map_err(err)?;
    sync_dir(parent).map_err(err)
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed (a symlink at the path fails with `ELOOP`). Displayed
    /// as the I/O error alone: the caller's error names the file and what it is for.
    #[error("{cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// The path is a directory, device, FIFO or socket.
    #[error("{path} is not a regular file")]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than the caller accepts.
    #[error("{path} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl ReadError {
    /// The kind of failure: a missing, special, linked or oversized file is an invalid
    /// input; any other I/O error is the environment's.
    pub fn class(&self) -> Class {
        match self {
            ReadError::Io { cause, .. } => match cause.kind() {
                std::io::ErrorKind::NotFound
                | std::io::ErrorKind::IsADirectory
                | std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::InvalidFilename => Class::Invalid,
                _ if cause.raw_os_error() == Some(40) => Class::Invalid, // ELOOP: a symlink
                _ => Class::Environment,
            },
            ReadError::NotRegular { .. } | ReadError::TooLarge { .. } => Class::Invalid,
        }
    }

    /// Whether the file was missing (as opposed to unreadable or refused).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads a whole regular file of at most `limit` bytes without following a symlink at
/// `path` (its parent directories are resolved as usual): for files in directories jek
/// does not own (run directories, evidence).
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_capped(path, limit, true)
}

/// Reads a whole regular file of at most `limit` bytes, following symlinks: for files a
/// user names on the command line. The size is checked before a byte is read.
pub fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    read_capped(path, limit, false)
}

fn read_capped(path: &Path, limit: u64, no_follow: bool) -> Result<Vec<u8>, ReadError> {
    use rustix::fs::{Mode, OFlags};
    let io = |cause: std::io::Error| ReadError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if no_follow {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| io(e.into()))?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
        });
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow after fstat: never read more than the limit plus one byte.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(io)?;
    if out.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: out.len() as u64,
            limit,
        });
    }
    Ok(out)
}

/// Why a file that decides trust is refused ([`check_strict`]).
#[derive(Debug, thiserror::Error)]
pub enum StrictError {
    /// The file or a directory above it cannot be examined.
    #[error("{path}: {cause}")]
    Io {
        /// The path examined.
        path: PathBuf,
        /// Cause.
        cause: std::io::Error,
    },
    /// Owned by another user, who could rewrite it.
    #[error("{path} is owned by uid {owner}, not by root or by this process's uid {me}: another user decides what it says")]
    Owner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// Writable by its group or by everyone.
    #[error(
        "{path} has mode {mode:04o}: writable by {who}, who could rewrite {what} (chmod go-w)"
    )]
    Writable {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// `its group` or `every user`.
        who: &'static str,
        /// `it` for the file, `what is in it` for a directory above it.
        what: &'static str,
    },
    /// A secret (a private key, a token) readable by its group or by everyone.
    #[error("{path} has mode {mode:04o}: other users can read the secret in it (chmod 600)")]
    Readable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl StrictError {
    /// The kind of failure: a file others control is an invalid input, as a missing one is;
    /// a failure to examine it is the environment's.
    pub fn class(&self) -> Class {
        match self {
            StrictError::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound => {
                Class::Invalid
            }
            StrictError::Io { .. } => Class::Environment,
            StrictError::Owner { .. }
            | StrictError::Writable { .. }
            | StrictError::Readable { .. } => Class::Invalid,
        }
    }
}

/// [`check_strict`] for a file that holds a secret (a private key, a bearer token): also
/// refused when its group or other users can read it, as ssh refuses a private key.
pub fn check_secret(path: &Path) -> Result<(), StrictError> {
    use std::os::unix::fs::PermissionsExt as _;
    check_strict(path)?;
    let mode = std::fs::metadata(path)
        .map_err(|cause| StrictError::Io {
            path: path.to_path_buf(),
            cause,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(StrictError::Readable {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Refuses `path` unless no user but root and this process's own can change what it says:
/// the file, and every directory above it up to `/`, both as written and with symlinks
/// resolved, must be owned by root or by the effective uid; none may be writable by its
/// group or by everyone, except a directory with the sticky bit (`/tmp`: others may add
/// entries there but not replace ours). A symlink's own mode is not checked (it has none
/// that matters), its owner is. For a runtime file, a policy and the keys it names, read
/// by a process that acts on them for other users (as sshd's `StrictModes`).
pub fn check_strict(path: &Path) -> Result<(), StrictError> {
    use std::os::unix::fs::MetadataExt as _;
    let io = |p: &Path, cause: std::io::Error| StrictError::Io {
        path: p.to_path_buf(),
        cause,
    };
    let me = rustix::process::geteuid().as_raw();
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| io(path, e))?.join(path)
    };
    let resolved = std::fs::canonicalize(&absolute).map_err(|e| io(path, e))?;
    let check = |p: &Path, is_target: bool| -> Result<(), StrictError> {
        let meta = std::fs::symlink_metadata(p).map_err(|e| io(p, e))?;
        let owner = meta.uid();
        if owner != 0 && owner != me {
            return Err(StrictError::Owner {
                path: p.to_path_buf(),
                owner,
                me,
            });
        }
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Ok(());
        }
        let mode = meta.mode() & 0o7777;
        let sticky_dir = kind.is_dir() && mode & 0o1000 != 0 && !is_target;
        if mode & 0o022 != 0 && !sticky_dir {
            return Err(StrictError::Writable {
                path: p.to_path_buf(),
                mode,
                who: if mode & 0o002 != 0 {
                    "every user"
                } else {
                    "its group"
                },
                what: if is_target { "it" } else { "what is in it" },
            });
        }
        Ok(())
    };
    for (i, p) in absolute.ancestors().enumerate() {
        check(p, i == 0)?;
    }
    // Through a symlink (or `..`), the path it leads to as well.
    if resolved != absolute {
        for (i, p) in resolved.ancestors().enumerate() {
            check(p, i == 0)?;
        }
    }
    Ok(())
}

/// [`check_strict`] for a path that may not exist yet (a store or CA made on first use):
/// the path if it exists, else the nearest directory above it that does, where it will be
/// made.
pub fn check_strict_or_nearest(path: &Path) -> Result<(), StrictError> {
    // Absolute first: a relative path's last ancestor is "", which never exists.
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|cause| StrictError::Io {
                path: path.to_path_buf(),
                cause,
            })?
            .join(path)
    };
    let nearest = absolute
        .ancestors()
        .find(|p| std::fs::symlink_metadata(p).is_ok())
        .unwrap_or(&absolute);
    check_strict(nearest)
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
    fn reads_refuse_symlinks_special_files_and_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, b"12345").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_regular(&target, 5).unwrap(), b"12345");
        assert!(matches!(
            read_regular(&link, 5),
            Err(ReadError::Io { ref cause, .. }) if cause.raw_os_error() == Some(40)
        ));
        assert!(matches!(
            read_regular(dir.path(), 5),
            Err(ReadError::NotRegular { .. })
        ));
        assert_eq!(
            read_regular(&target, 4).unwrap_err().to_string(),
            format!("{} is 5 bytes, more than the limit of 4", target.display())
        );
        assert!(read_regular(&dir.path().join("missing"), 4)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn a_planted_symlink_at_the_destination_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let out = dir.path().join("out");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        write_atomic(&out, b"new", 0o644, Overwrite::Allow).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!out.is_symlink());
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
    }

    #[test]
    fn directories_appear_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ev");
        write_dir_atomic(&out, &[("a", b"1", 0o600), ("b", b"2", 0o644)]).unwrap();
        assert_eq!(std::fs::read(out.join("b")).unwrap(), b"2");
        assert!(write_dir_atomic(&out, &[("c", b"3", 0o600)]).is_err());
        assert!(write_dir_atomic(&dir.path().join("x"), &[("../c", b"3", 0o600)]).is_err());
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

    #[test]
    fn strict_mode_refuses_files_and_directories_others_can_change() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("etc");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("runtime.yaml");
        std::fs::write(&file, "x").unwrap();
        let chmod = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        chmod(dir.path(), 0o700);
        chmod(&sub, 0o755);
        chmod(&file, 0o644);
        check_strict(&file).unwrap();
        // The file writable by everyone, then by its group: refused, naming it and the mode.
        chmod(&file, 0o666);
        let err = check_strict(&file).unwrap_err();
        assert!(
            matches!(&err, StrictError::Writable { path, mode: 0o666, who: "every user", .. } if path == &file),
            "{err}"
        );
        assert!(err.to_string().contains("0666"), "{err}");
        chmod(&file, 0o664);
        assert!(matches!(
            check_strict(&file).unwrap_err(),
            StrictError::Writable {
                who: "its group",
                ..
            }
        ));
        chmod(&file, 0o644);
        // A directory above it writable by others: refused (its entries can be swapped);
        // with the sticky bit, as /tmp, allowed.
        chmod(&sub, 0o777);
        let err = check_strict(&file).unwrap_err();
        assert!(
            matches!(&err, StrictError::Writable { path, what: "what is in it", .. } if path == &sub),
            "{err}"
        );
        chmod(&sub, 0o1777);
        check_strict(&file).unwrap();
        chmod(&sub, 0o755);
        // A symlink in a directory others can write is refused even though its target is
        // fine; the target of a good symlink is checked too.
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let link = open.join("link.yaml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(
            check_strict(&link).unwrap_err(),
            StrictError::Writable { path, .. } if path == open
        ));
        let good = sub.join("good.yaml");
        std::os::unix::fs::symlink(&file, &good).unwrap();
        check_strict(&good).unwrap();
        chmod(&file, 0o646);
        assert!(check_strict(&good).is_err());
        chmod(&file, 0o644);
        // Owned by another user (nobody): only root can arrange that, so this test runs as
        // root, as CI does.
        assert!(
            rustix::process::geteuid().is_root(),
            "this test gives a file to nobody: run it as root, as ci/test.sh does"
        );
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let err = check_strict(&file).unwrap_err();
        assert!(
            matches!(
                &err,
                StrictError::Owner {
                    owner: 65534,
                    me: 0,
                    ..
                }
            ),
            "{err}"
        );
        std::os::unix::fs::chown(&file, Some(0), None).unwrap();
        // Missing: an invalid input, named; to be made, its directory is checked.
        let err = check_strict(&sub.join("missing.yaml")).unwrap_err();
        assert_eq!(err.class(), Class::Invalid);
        check_strict_or_nearest(&sub.join("store/missing")).unwrap();
        chmod(&sub, 0o757);
        assert!(check_strict_or_nearest(&sub.join("store/missing")).is_err());
        chmod(&sub, 0o755);
    }
}
