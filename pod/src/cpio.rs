//! Deterministic initramfs archives in the `newc` cpio format the kernel unpacks
//! (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! The same entries always give the same bytes: entries are sorted by path, missing parent
//! directories are added, owner is root, every mtime is the one given (SOURCE_DATE_EPOCH),
//! inode numbers count up from 1 in path order, and nothing from the host file system
//! (owner, times, inode, device) leaks in.

use std::collections::BTreeMap;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with its content.
    File(Vec<u8>),
    /// A character device node.
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A symbolic link to this target.
    Symlink(String),
}

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path without a leading `/`, components separated by `/`.
    pub path: String,
    /// Permission bits (`0o755`); the file type bits come from `kind`.
    pub perm: u32,
    /// What it is.
    pub kind: Kind,
}

/// Why an archive cannot be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpioError {
    /// A path that is empty, absolute, or has `.`/`..`/empty components.
    #[error("invalid archive path {0:?}")]
    BadPath(String),
    /// The same path twice.
    #[error("archive path {0:?} given twice")]
    Duplicate(String),
    /// A path used both as a directory and as something else.
    #[error("archive path {0:?} is needed as a directory but is not one")]
    NotADirectory(String),
    /// A member too large for the format's 32-bit size field.
    #[error("archive member {0:?} is larger than 4 GiB")]
    TooLarge(String),
    /// Malformed archive bytes (reader).
    #[error("malformed cpio archive at offset {offset}: {what}")]
    Malformed {
        /// Offset of the problem.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFLNK: u32 = 0o120_000;
const TRAILER: &str = "TRAILER!!!";

/// A relative path of normal components. No NUL (names are NUL-terminated on disk), and
/// never the end-of-archive name itself as the top component: the entry for it (the path,
/// or its implicit parent directory) would end the archive early for every reader.
fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\0')
        && p.split('/').next() != Some(TRAILER)
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[allow(clippy::too_many_arguments)]
fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) {
    out.extend_from_slice(b"070701");
    let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
    for v in [
        ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev.0, rdev.1, namesize, 0,
    ] {
        out.extend_from_slice(format!("{v:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// Writes the archive.
pub fn write(entries: &[Entry], mtime: u32) -> Result<Vec<u8>, CpioError> {
    let mut all: BTreeMap<String, &Entry> = BTreeMap::new();
    for e in entries {
        if !valid_path(&e.path) {
            return Err(CpioError::BadPath(e.path.clone()));
        }
        if all.insert(e.path.clone(), e).is_some() {
            return Err(CpioError::Duplicate(e.path.clone()));
        }
    }
    let implicit_dir = Entry {
        path: String::new(),
        perm: 0o755,
        kind: Kind::Dir,
    };
    let mut parents = Vec::new();
    for path in all.keys() {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            parents.push(parent.to_string());
            p = parent;
        }
    }
    for parent in parents {
        match all.get(&parent) {
            Some(e) if e.kind != Kind::Dir => return Err(CpioError::NotADirectory(parent)),
            Some(_) => {}
            None => {
                all.insert(parent, &implicit_dir);
            }
        }
    }
    let mut out = Vec::new();
    for (ino, (path, e)) in (1u32..).zip(all.iter()) {
        let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &e.kind {
            Kind::Dir => (S_IFDIR, 2, &[], (0, 0)),
            Kind::File(d) => (S_IFREG, 1, d.as_slice(), (0, 0)),
            Kind::CharDev { major, minor } => (S_IFCHR, 1, &[], (*major, *minor)),
            Kind::Symlink(t) => (S_IFLNK, 1, t.as_bytes(), (0, 0)),
        };
        let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge(path.clone()))?;
        header(
            &mut out,
            ino,
            mode | (e.perm & 0o7777),
            nlink,
            mtime,
            size,
            rdev,
            path,
        );
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, 1, 0, 0, (0, 0), TRAILER);
    Ok(out)
}

fn hex_field(b: &[u8], at: usize) -> Result<u32, CpioError> {
    let bad = CpioError::Malformed {
        offset: at,
        what: "bad hex field",
    };
    let s = b.get(at..at + 8).ok_or(CpioError::Malformed {
        offset: at,
        what: "truncated header",
    })?;
    let s = std::str::from_utf8(s).map_err(|_| bad.clone())?;
    u32::from_str_radix(s, 16).map_err(|_| bad)
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Reads an uncompressed newc archive (up to and including its trailer). The inverse of
/// [`write`] for the entries' paths, permissions and kinds.
pub fn read(bytes: &[u8]) -> Result<Vec<Entry>, CpioError> {
    let mut pos = 0;
    let mut entries = Vec::new();
    loop {
        if bytes.get(pos..pos + 6) != Some(b"070701") {
            return Err(CpioError::Malformed {
                offset: pos,
                what: "bad magic",
            });
        }
        let f = |i: usize| hex_field(bytes, pos + 6 + i * 8);
        let (mode, size, rmaj, rmin, namesize) = (f(1)?, f(6)?, f(9)?, f(10)?, f(11)?);
        let name_start = pos + 110;
        let name_len = usize::try_from(namesize).unwrap_or(usize::MAX);
        let name_bytes = name_len
            .checked_sub(1)
            .and_then(|l| bytes.get(name_start..name_start.checked_add(l)?))
            .ok_or(CpioError::Malformed {
                offset: name_start,
                what: "truncated name",
            })?;
        // Like the kernel: the name is NUL-terminated, and holds no other NUL.
        if bytes.get(name_start + name_bytes.len()) != Some(&0) || name_bytes.contains(&0) {
            return Err(CpioError::Malformed {
                offset: name_start,
                what: "name is not a single NUL-terminated string",
            });
        }
        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| CpioError::Malformed {
                offset: name_start,
                what: "name is not UTF-8",
            })?
            .to_string();
        let data_start = align4(name_start + name_len);
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let data = bytes
            .get(data_start..data_start.saturating_add(size))
            .ok_or(CpioError::Malformed {
                offset: data_start,
                what: "truncated data",
            })?;
        pos = align4(data_start + size);
        if name == TRAILER {
            return Ok(entries);
        }
        let kind = match mode & 0o170_000 {
            S_IFDIR => Kind::Dir,
            S_IFREG => Kind::File(data.to_vec()),
            S_IFCHR => Kind::CharDev {
                major: rmaj,
                minor: rmin,
            },
            S_IFLNK => Kind::Symlink(String::from_utf8(data.to_vec()).map_err(|_| {
                CpioError::Malformed {
                    offset: data_start,
                    what: "link target is not UTF-8",
                }
            })?),
            _ => {
                return Err(CpioError::Malformed {
                    offset: pos,
                    what: "unsupported file type",
                })
            }
        };
        entries.push(Entry {
            path: name,
            perm: mode & 0o7777,
            kind,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn file(path: &str, data: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            perm: 0o755,
            kind: Kind::File(data.to_vec()),
        }
    }

    #[test]
    fn adds_parents_sorts_and_is_deterministic() {
        let a = write(
            &[
                file("init", b"x"),
                Entry {
                    path: "dev/console".into(),
                    perm: 0o600,
                    kind: Kind::CharDev { major: 5, minor: 1 },
                },
            ],
            7,
        )
        .unwrap();
        let b = write(
            &[
                Entry {
                    path: "dev/console".into(),
                    perm: 0o600,
                    kind: Kind::CharDev { major: 5, minor: 1 },
                },
                file("init", b"x"),
            ],
            7,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len() % 4, 0);
        let back = read(&a).unwrap();
        let paths: Vec<&str> = back.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["dev", "dev/console", "init"]);
        assert_eq!(back[1].kind, Kind::CharDev { major: 5, minor: 1 });
        // The header of the first entry: ino 1, a directory, mtime 7.
        assert_eq!(&a[..22], b"07070100000001000041ED");
    }

    #[test]
    fn rejects_bad_paths_duplicates_and_file_parents() {
        assert_eq!(
            write(&[file("/abs", b"")], 0),
            Err(CpioError::BadPath("/abs".into()))
        );
        assert_eq!(
            write(&[file("a/../b", b"")], 0),
            Err(CpioError::BadPath("a/../b".into()))
        );
        // Found by the fuzzer: its implicit parent directory would end the archive.
        assert_eq!(
            write(&[file("TRAILER!!!/x", b"")], 0),
            Err(CpioError::BadPath("TRAILER!!!/x".into()))
        );
        assert_eq!(
            write(&[file("a\0b", b"")], 0),
            Err(CpioError::BadPath("a\0b".into()))
        );
        assert_eq!(
            write(&[file("a", b""), file("a", b"")], 0),
            Err(CpioError::Duplicate("a".into()))
        );
        assert_eq!(
            write(&[file("a", b""), file("a/b", b"")], 0),
            Err(CpioError::NotADirectory("a".into()))
        );
    }

    #[test]
    fn names_must_be_one_nul_terminated_string() {
        let a = write(&[file("ab", b"x")], 0).unwrap();
        // First entry "ab": name at 110, namesize 3, its NUL at 112.
        assert_eq!(&a[110..113], b"ab\0");
        let mut unterminated = a.clone();
        unterminated[112] = b'v';
        let mut inner_nul = a;
        inner_nul[111] = 0;
        for bad in [unterminated, inner_nul] {
            assert!(matches!(
                read(&bad),
                Err(CpioError::Malformed { offset: 110, .. })
            ));
        }
    }

    proptest! {
        #[test]
        fn read_of_write_round_trips(files in prop::collection::btree_map("[a-z]{1,8}(/[a-z]{1,8}){0,2}", prop::collection::vec(any::<u8>(), 0..40), 1..6)) {
            // Paths that are prefixes of other paths must be directories; skip those cases.
            let keys: Vec<&String> = files.keys().collect();
            prop_assume!(!keys.iter().any(|a| keys.iter().any(|b| b.starts_with(&format!("{a}/")))));
            let entries: Vec<Entry> = files.iter().map(|(p, d)| file(p, d)).collect();
            let bytes = write(&entries, 0).unwrap();
            let back = read(&bytes).unwrap();
            for e in &entries {
                prop_assert!(back.contains(e));
            }
        }

        #[test]
        fn read_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = read(&bytes);
        }
    }
}
