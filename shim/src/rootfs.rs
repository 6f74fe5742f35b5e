//! The container's root file system, as containerd's snapshotter prepared it, read into
//! archive members for the container segment.
//!
//! The walk never follows a symbolic link (links are archived as links), stays on the
//! root's file system, keeps hard links as one member with further names, and stops at
//! `limit` bytes of file data. Device nodes, FIFOs and sockets are left out: the guest's
//! init populates `/dev` itself, and an image's special files are not part of what a pod
//! measures.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use jek_pod::cpio::{Kind, Member};

/// Why the root file system cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A file or directory cannot be read.
    #[error("cannot read {path} in the container's root file system")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The root holds more file data than the runtime allows.
    #[error("the container's root file system holds more than {limit} bytes of file data (raise maxRootfsMiB in the runtime file)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// A name that is not UTF-8 (the archive format carries UTF-8 paths).
    #[error("{0} in the container's root file system has a name that is not UTF-8")]
    Name(PathBuf),
}

/// What the walk left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Device nodes, FIFOs and sockets.
    pub special: Vec<String>,
    /// Mount points of other file systems (their content is not the image's).
    pub mounts: Vec<String>,
}

/// Reads the tree under `root` into members (paths relative to `root`), at most `limit`
/// bytes of file data in all.
pub fn read_tree(root: &Path, limit: u64) -> Result<(Vec<Member>, Skipped), RootfsError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RootfsError::Read { path, source }
    };
    let dev = std::fs::symlink_metadata(root).map_err(err(root))?.dev();
    let mut members: Vec<Member> = Vec::new();
    let mut skipped = Skipped::default();
    let mut by_inode: BTreeMap<u64, usize> = BTreeMap::new();
    let mut total: u64 = 0;
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(err(&dir))?
            .collect::<Result<_, _>>()
            .map_err(err(&dir))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let path = e.path();
            let name = e
                .file_name()
                .into_string()
                .map_err(|_| RootfsError::Name(path.clone()))?;
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::symlink_metadata(&path).map_err(err(&path))?;
            let ft = meta.file_type();
            let (perm, uid, gid) = (meta.mode() & 0o7777, meta.uid(), meta.gid());
            let mtime = u32::try_from(meta.mtime().max(0)).unwrap_or(u32::MAX);
            let kind = if ft.is_dir() {
                if meta.dev() != dev {
                    skipped.mounts.push(rel);
                    continue;
                }
                stack.push((path.clone(), rel.clone()));
                Kind::Dir
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).map_err(err(&path))?;
                let target = target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| RootfsError::Name(path.clone()))?;
                Kind::Symlink(target)
            } else if ft.is_file() {
                if meta.nlink() > 1 {
                    if let Some(&i) = by_inode.get(&meta.ino()) {
                        if let Some(m) = members.get_mut(i) {
                            m.links.push(rel);
                        }
                        continue;
                    }
                    by_inode.insert(meta.ino(), members.len());
                }
                total = total.saturating_add(meta.len());
                if total > limit {
                    return Err(RootfsError::TooLarge { limit });
                }
                Kind::File(std::fs::read(&path).map_err(err(&path))?)
            } else {
                // Device nodes, FIFOs and sockets.
                skipped.special.push(rel);
                continue;
            };
            members.push(Member {
                path: rel,
                perm,
                uid,
                gid,
                mtime,
                kind,
                links: Vec::new(),
            });
        }
    }
    members.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((members, skipped))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_files_links_and_hard_links_without_following_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/busybox"), b"BB").unwrap();
        std::fs::hard_link(r.join("bin/busybox"), r.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", r.join("bin/evil")).unwrap();
        let (m, skipped) = read_tree(r, 1 << 20).unwrap();
        let paths: Vec<_> = m.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, ["bin", "bin/busybox", "bin/evil"]);
        assert_eq!(m[1].links, ["bin/sh"]);
        assert_eq!(m[2].kind, Kind::Symlink("/etc/shadow".into()));
        assert_eq!(skipped, Skipped::default());
    }

    #[test]
    fn stops_at_the_limit() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("big"), vec![0u8; 4096]).unwrap();
        assert!(matches!(
            read_tree(d.path(), 4095),
            Err(RootfsError::TooLarge { limit: 4095 })
        ));
        assert!(read_tree(d.path(), 4096).is_ok());
    }
}
