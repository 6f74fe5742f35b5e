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
    /// Hard links given for a member that is not a regular file.
    #[error("archive path {0:?} has hard links but is not a regular file")]
    LinkToNonFile(String),
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

/// The numeric fields of a `newc` header that jek sets.
#[derive(Default)]
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
}

fn header(out: &mut Vec<u8>, h: &Header, name: &str) {
    out.extend_from_slice(b"070701");
    let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
    for v in [
        h.ino, h.mode, h.uid, h.gid, h.nlink, h.mtime, h.size, 0, 0, h.rdev.0, h.rdev.1, namesize,
        0,
    ] {
        out.extend_from_slice(format!("{v:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

/// Writes the archive.
pub fn write(entries: &[Entry], mtime: u32) -> Result<Vec<u8>, CpioError> {
    let members: Vec<Member> = entries
        .iter()
        .map(|e| Member {
            path: e.path.clone(),
            perm: e.perm,
            uid: 0,
            gid: 0,
            mtime,
            kind: e.kind.clone(),
            links: Vec::new(),
        })
        .collect();
    write_tree(&members, mtime)
}

/// One member of a file tree with owners, times and hard links: a container's root file
/// system as its image describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Path without a leading `/`.
    pub path: String,
    /// Permission bits, setuid, setgid and sticky included (`0o4755`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u32,
    /// What it is.
    pub kind: Kind,
    /// Further names of this regular file (hard links).
    pub links: Vec<String>,
}

/// Writes the archive of a file tree. Members are written in path order (so every
/// directory comes before what it holds); parent directories that are not members are
/// added (mode 0755, root, `implicit_mtime`). The names of a hard-linked file share one
/// inode number and carry its `nlink`; the data is written once, with the first name, which
/// is how the kernel's initramfs unpacker links the later names to it.
pub fn write_tree(members: &[Member], implicit_mtime: u32) -> Result<Vec<u8>, CpioError> {
    // Every name, with the member it belongs to.
    let mut names: BTreeMap<&str, Option<usize>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        if !m.links.is_empty() && !matches!(m.kind, Kind::File(_)) {
            return Err(CpioError::LinkToNonFile(m.path.clone()));
        }
        for p in std::iter::once(&m.path).chain(&m.links) {
            if !valid_path(p) {
                return Err(CpioError::BadPath(p.clone()));
            }
            if names.insert(p, Some(i)).is_some() {
                return Err(CpioError::Duplicate(p.clone()));
            }
        }
    }
    let mut parents = Vec::new();
    for path in names.keys() {
        let mut p = *path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            parents.push(parent);
            p = parent;
        }
    }
    for parent in parents {
        match names.get(parent) {
            Some(Some(i)) if members[*i].kind != Kind::Dir => {
                return Err(CpioError::NotADirectory(parent.to_string()))
            }
            Some(_) => {}
            None => {
                names.insert(parent, None);
            }
        }
    }
    let implicit_dir = Member {
        path: String::new(),
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: implicit_mtime,
        kind: Kind::Dir,
        links: Vec::new(),
    };
    let mut out = Vec::new();
    // Inode numbers count up in path order; a hard-linked file keeps its first one.
    let mut inodes: BTreeMap<usize, u32> = BTreeMap::new();
    let mut next_ino = 1u32;
    for (path, index) in &names {
        let m = index.map_or(&implicit_dir, |i| &members[i]);
        let (ino, first) = match index {
            Some(i) => match inodes.get(i) {
                Some(ino) => (*ino, false),
                None => {
                    inodes.insert(*i, next_ino);
                    (next_ino, true)
                }
            },
            None => (next_ino, true),
        };
        if first {
            next_ino = next_ino.saturating_add(1);
        }
        let links = u32::try_from(m.links.len()).unwrap_or(u32::MAX);
        let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &m.kind {
            Kind::Dir => (S_IFDIR, 2, &[], (0, 0)),
            Kind::File(d) => (S_IFREG, links.saturating_add(1), d.as_slice(), (0, 0)),
            Kind::CharDev { major, minor } => (S_IFCHR, 1, &[], (*major, *minor)),
            Kind::Symlink(t) => (S_IFLNK, 1, t.as_bytes(), (0, 0)),
        };
        let data = if first { data } else { &[] };
        let size = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge(path.to_string()))?;
        header(
            &mut out,
            &Header {
                ino,
                mode: mode | (m.perm & 0o7777),
                uid: m.uid,
                gid: m.gid,
                nlink,
                mtime: m.mtime,
                size,
                rdev,
            },
            path,
        );
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(
        &mut out,
        &Header {
            nlink: 1,
            ..Header::default()
        },
        TRAILER,
    );
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

/// One archive member as its header says, its data borrowed from the archive.
struct Raw<'a> {
    offset: usize,
    path: String,
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
    rdev: (u32, u32),
    data: &'a [u8],
    data_start: usize,
}

/// The members of an uncompressed newc archive, up to (not including) its trailer.
fn raw_entries(bytes: &[u8]) -> Result<Vec<Raw<'_>>, CpioError> {
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
        let (ino, mode, uid, gid, mtime, size) = (f(0)?, f(1)?, f(2)?, f(3)?, f(5)?, f(6)?);
        let (rmaj, rmin, namesize) = (f(9)?, f(10)?, f(11)?);
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
        let offset = pos;
        pos = align4(data_start + size);
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(Raw {
            offset,
            path: name,
            ino,
            mode,
            uid,
            gid,
            mtime,
            rdev: (rmaj, rmin),
            data,
            data_start,
        });
    }
}

fn kind_of(r: &Raw<'_>) -> Result<Kind, CpioError> {
    Ok(match r.mode & 0o170_000 {
        S_IFDIR => Kind::Dir,
        S_IFREG => Kind::File(r.data.to_vec()),
        S_IFCHR => Kind::CharDev {
            major: r.rdev.0,
            minor: r.rdev.1,
        },
        S_IFLNK => {
            Kind::Symlink(
                String::from_utf8(r.data.to_vec()).map_err(|_| CpioError::Malformed {
                    offset: r.data_start,
                    what: "link target is not UTF-8",
                })?,
            )
        }
        _ => {
            return Err(CpioError::Malformed {
                offset: r.offset,
                what: "unsupported file type",
            })
        }
    })
}

/// Reads an uncompressed newc archive (up to and including its trailer). The inverse of
/// [`write`] for the entries' paths, permissions and kinds.
pub fn read(bytes: &[u8]) -> Result<Vec<Entry>, CpioError> {
    raw_entries(bytes)?
        .iter()
        .map(|r| {
            Ok(Entry {
                path: r.path.clone(),
                perm: r.mode & 0o7777,
                kind: kind_of(r)?,
            })
        })
        .collect()
}

/// Reads an archive [`write_tree`] wrote back into its members: owners, times, the
/// setuid/setgid/sticky bits and hard links (the later names of a regular file's inode,
/// which carry no data, become its `links`). Stricter than [`read`], for unpacking: every
/// path must be relative with normal components, no path may appear twice, and a later
/// name of an inode must be a regular file without data of its own.
pub fn read_tree(bytes: &[u8]) -> Result<Vec<Member>, CpioError> {
    let mut members: Vec<Member> = Vec::new();
    let mut seen: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    // A regular file's inode number, and which member has it.
    let mut inodes: BTreeMap<u32, usize> = BTreeMap::new();
    for r in raw_entries(bytes)? {
        if !valid_path(&r.path) {
            return Err(CpioError::BadPath(r.path));
        }
        if !seen.insert(r.path.clone()) {
            return Err(CpioError::Duplicate(r.path));
        }
        let kind = kind_of(&r)?;
        if let Kind::File(data) = &kind {
            if let Some(&first) = inodes.get(&r.ino) {
                if !data.is_empty() {
                    return Err(CpioError::Malformed {
                        offset: r.offset,
                        what: "a later name of a hard-linked file carries data",
                    });
                }
                members[first].links.push(r.path);
                continue;
            }
            inodes.insert(r.ino, members.len());
        }
        members.push(Member {
            path: r.path,
            perm: r.mode & 0o7777,
            uid: r.uid,
            gid: r.gid,
            mtime: r.mtime,
            kind,
            links: Vec::new(),
        });
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn read_tree_is_the_inverse_of_write_tree() {
        let members = vec![
            Member {
                path: "bin/busybox".into(),
                perm: 0o4755,
                uid: 0,
                gid: 0,
                mtime: 1_700_000_000,
                kind: Kind::File(b"elf".to_vec()),
                links: vec!["bin/sh".into(), "usr/bin/env".into()],
            },
            Member {
                path: "home/user".into(),
                perm: 0o700,
                uid: 1000,
                gid: 100,
                mtime: 5,
                kind: Kind::Dir,
                links: Vec::new(),
            },
            Member {
                path: "lib".into(),
                perm: 0o777,
                uid: 0,
                gid: 0,
                mtime: 6,
                kind: Kind::Symlink("usr/lib".into()),
                links: Vec::new(),
            },
        ];
        let bytes = write_tree(&members, 3).unwrap();
        let back = read_tree(&bytes).unwrap();
        // The implicit parents come back as members of their own.
        let paths: Vec<&str> = back.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin",
                "bin/busybox",
                "home",
                "home/user",
                "lib",
                "usr",
                "usr/bin"
            ]
        );
        let busybox = back.iter().find(|m| m.path == "bin/busybox").unwrap();
        assert_eq!(busybox, &members[0]);
        assert_eq!(
            back.iter().find(|m| m.path == "home/user").unwrap(),
            &members[1]
        );
        assert_eq!(back.iter().find(|m| m.path == "lib").unwrap(), &members[2]);
        assert_eq!(write_tree(&back, 3).unwrap(), bytes);
    }

    #[test]
    fn read_tree_refuses_what_an_unpacker_must_not_meet() {
        let entry = |path: &str| Entry {
            path: path.into(),
            perm: 0o644,
            kind: Kind::File(b"x".to_vec()),
        };
        // Same-length names, so the header's name size still fits.
        let good = write(&[entry("a/bb")], 0).unwrap();
        for to in ["a/..", "a/./", "/a/b", "a//b", "../b"] {
            let bad = String::from_utf8(good.clone()).unwrap().replace("a/bb", to);
            assert!(
                matches!(read_tree(bad.as_bytes()), Err(CpioError::BadPath(_))),
                "{to}"
            );
        }
        // The same name twice (a second entry would overwrite the first when unpacked).
        let mut twice = write(&[entry("a")], 0).unwrap();
        let trailer_at = twice.len() - 124;
        let one = twice[..trailer_at].to_vec();
        let first = one[one.windows(6).rposition(|w| w == b"070701").unwrap()..].to_vec();
        twice.splice(trailer_at..trailer_at, first);
        assert!(matches!(read_tree(&twice), Err(CpioError::Duplicate(p)) if p == "a"));
    }

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

    #[test]
    fn trees_keep_owners_times_and_hard_links() {
        let member = |path: &str, kind: Kind, links: &[&str]| Member {
            path: path.into(),
            perm: 0o4755,
            uid: 1000,
            gid: 100,
            mtime: 42,
            kind,
            links: links.iter().map(|l| l.to_string()).collect(),
        };
        let a = write_tree(
            &[
                member("usr/bin/busybox", Kind::File(b"BB".to_vec()), &["bin/sh"]),
                member("bin", Kind::Dir, &[]),
            ],
            0,
        )
        .unwrap();
        // Fields of the header at `at`: 0 ino, 1 mode, 2 uid, 3 gid, 4 nlink, 5 mtime, 6 size.
        let field = |at: usize, i: usize| hex_field(&a, at + 6 + i * 8).unwrap();
        let mut at = 0;
        let mut seen = Vec::new();
        loop {
            let namesize = usize::try_from(field(at, 11)).unwrap();
            let name = std::str::from_utf8(&a[at + 110..at + 110 + namesize - 1]).unwrap();
            if name == TRAILER {
                break;
            }
            let size = usize::try_from(field(at, 6)).unwrap();
            seen.push((
                name.to_string(),
                field(at, 0),
                field(at, 2),
                field(at, 4),
                size,
            ));
            at = align4(align4(at + 110 + namesize) + size);
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/sh", "usr", "usr/bin", "usr/bin/busybox"]
        );
        let sh = &seen[1];
        let busybox = &seen[4];
        // One inode, nlink 2, the data once (with the first name), the owner kept.
        assert_eq!((sh.1, sh.3, sh.4), (busybox.1, 2, 2));
        assert_eq!((busybox.2, busybox.4), (1000, 0));
        // Implicit parents belong to root.
        assert_eq!(seen[2].2, 0);
        assert!(matches!(
            write_tree(&[member("d", Kind::Dir, &["e"])], 0),
            Err(CpioError::LinkToNonFile(_))
        ));
        assert!(matches!(
            write_tree(&[member("f", Kind::File(vec![]), &["f"])], 0),
            Err(CpioError::Duplicate(_))
        ));
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
