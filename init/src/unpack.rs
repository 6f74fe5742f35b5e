//! Unpacking a container segment that arrived over the agent channel: what the kernel does
//! with the segments appended at boot, done by the init for a container added while the
//! pod runs, after its SHA-256 matched the digest the host measured.
//!
//! Only the container's own paths are written (`run/containers/NAME/...` and its record
//! `etc/jek/containers/NAME.json`); its root must not exist yet. Nothing is followed: a
//! path beneath a symbolic link the segment made is refused, files are created with
//! `O_EXCL` (which never follows a link), owners are set without following links, and
//! a device node is refused. On any error, what was written is removed.

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use jek_pod::cpio::{Kind, Member};
use jek_pod::image::{record_path, root_path};

/// Why a segment cannot be unpacked.
pub type UnpackError = String;

/// The parent directories every container segment carries, made at boot already.
const SHARED: [&str; 5] = [
    "etc",
    "etc/jek",
    "etc/jek/containers",
    "run",
    "run/containers",
];

/// Unpacks container `name`'s members under `/` (`base` in tests).
pub fn unpack(base: &Path, name: &str, members: &[Member]) -> Result<(), UnpackError> {
    let root = root_path(name).trim_start_matches('/').to_string();
    let record = record_path(name).trim_start_matches('/').to_string();
    let root_abs = base.join(&root);
    if std::fs::symlink_metadata(&root_abs).is_ok() {
        return Err(format!("/{root} exists: container {name} was added before"));
    }
    let mut written = Unpacked {
        root: root_abs,
        record: None,
        done: false,
    };
    let mut links: HashSet<String> = HashSet::new();
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    let beneath = |p: &str| p.strip_prefix(&root).is_some_and(|r| r.starts_with('/'));
    for m in members {
        let ours = m.path == root || m.path == record || beneath(&m.path);
        if SHARED.contains(&m.path.as_str()) {
            if m.kind != Kind::Dir {
                return Err(format!("/{} in the segment is not a directory", m.path));
            }
            let dir = base.join(&m.path);
            std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            continue;
        }
        if !ours {
            return Err(format!(
                "/{} is outside container {name}'s root and record",
                m.path
            ));
        }
        // The root is a directory, the record a file; a hard link's every name is in the
        // root.
        if (m.path == root && m.kind != Kind::Dir)
            || (m.path == record && !matches!(m.kind, Kind::File(_)))
        {
            return Err(format!("/{} in the segment is not what it must be", m.path));
        }
        if let Some(l) = m.links.iter().find(|l| !beneath(l)) {
            return Err(format!(
                "/{l} (a hard link to /{}) is outside container {name}'s root",
                m.path
            ));
        }
        for p in std::iter::once(&m.path).chain(&m.links) {
            let mut prefix = p.as_str();
            while let Some((parent, _)) = prefix.rsplit_once('/') {
                if links.contains(parent) {
                    return Err(format!("/{p} is beneath the symbolic link /{parent}"));
                }
                prefix = parent;
            }
        }
        let path = base.join(&m.path);
        if m.path == record {
            written.record = Some(path.clone());
        }
        let err = |what: &str, e: std::io::Error| format!("{what} /{}: {e}", m.path);
        match &m.kind {
            Kind::Dir => {
                std::fs::create_dir(&path).map_err(|e| err("create directory", e))?;
                dirs.push((path.clone(), m.mtime));
            }
            Kind::File(data) => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| err("create", e))?;
                f.write_all(data).map_err(|e| err("write", e))?;
                set_times(&path, m.mtime).map_err(|e| err("set the time of", e))?;
            }
            Kind::Symlink(target) => {
                std::os::unix::fs::symlink(target, &path).map_err(|e| err("create link", e))?;
                links.insert(m.path.clone());
            }
            Kind::CharDev { .. } => {
                return Err(format!("/{}: a device node in a container segment", m.path));
            }
        }
        std::os::unix::fs::lchown(&path, Some(m.uid), Some(m.gid))
            .map_err(|e| err("set the owner of", e))?;
        // After the owner: a change of owner clears setuid and setgid.
        if !matches!(m.kind, Kind::Symlink(_)) {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m.perm))
                .map_err(|e| err("set the mode of", e))?;
        }
        for l in &m.links {
            std::fs::hard_link(&path, base.join(l))
                .map_err(|e| format!("link /{l} to /{}: {e}", m.path))?;
        }
    }
    if std::fs::symlink_metadata(&written.root).is_err() {
        return Err(format!("the segment has no /{root}"));
    }
    if written.record.is_none() {
        return Err(format!("the segment has no /{record}"));
    }
    // Directories last and deepest first: writing into one changes its time.
    for (dir, mtime) in dirs.iter().rev() {
        set_times(dir, *mtime).map_err(|e| format!("set the time of {}: {e}", dir.display()))?;
    }
    written.done = true;
    Ok(())
}

fn set_times(path: &Path, mtime: u32) -> std::io::Result<()> {
    let t = nix::sys::time::TimeSpec::new(i64::from(mtime), 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
}

/// What an unpack wrote, removed unless it finished.
struct Unpacked {
    root: PathBuf,
    record: Option<PathBuf>,
    done: bool,
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.root);
            if let Some(r) = &self.record {
                let _ = std::fs::remove_file(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn member(path: &str, kind: Kind) -> Member {
        Member {
            path: path.into(),
            perm: 0o755,
            uid: 0,
            gid: 0,
            mtime: 1_000,
            kind,
            links: Vec::new(),
        }
    }

    fn segment(name: &str, rootfs: &[Member]) -> Vec<Member> {
        let image = jek_pod::image::ContainerImage {
            container: name.into(),
            reference: "r".into(),
            manifest: "m".into(),
            config_digest: "c".into(),
            config: jek_pod::image::ImageConfig::default(),
        };
        let bytes = jek_pod::image::container_segment(&image, rootfs).unwrap();
        jek_pod::cpio::read_tree(&bytes).unwrap()
    }

    #[test]
    fn unpacks_the_tree_with_modes_owners_times_and_links() {
        let base = tempfile::tempdir().unwrap();
        let mut sh = member("bin/busybox", Kind::File(b"elf".to_vec()));
        sh.perm = 0o4755;
        sh.links = vec!["bin/sh".into()];
        let members = segment(
            "app",
            &[
                sh,
                member("lib", Kind::Symlink("/usr/lib".into())),
                Member {
                    uid: 1000,
                    gid: 100,
                    perm: 0o700,
                    ..member("home", Kind::Dir)
                },
            ],
        );
        unpack(base.path(), "app", &members).unwrap();
        let root = base.path().join("run/containers/app");
        let busybox = std::fs::metadata(root.join("bin/busybox")).unwrap();
        assert_eq!(busybox.mode() & 0o7777, 0o4755);
        assert_eq!(busybox.mtime(), 1_000);
        assert_eq!(busybox.nlink(), 2);
        assert_eq!(std::fs::read(root.join("bin/sh")).unwrap(), b"elf");
        assert_eq!(
            std::fs::read_link(root.join("lib")).unwrap(),
            Path::new("/usr/lib")
        );
        let home = std::fs::metadata(root.join("home")).unwrap();
        assert_eq!(
            (home.uid(), home.gid(), home.mode() & 0o777),
            (1000, 100, 0o700)
        );
        assert!(base.path().join("etc/jek/containers/app.json").is_file());
        // Added twice: refused, and the first stays.
        let e = unpack(base.path(), "app", &members).unwrap_err();
        assert!(e.contains("added before"), "{e}");
        assert!(root.join("bin/sh").is_file());
    }

    #[test]
    fn nothing_is_written_through_a_link_or_outside_the_container() {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(base.path().join("etc")).unwrap();
        // A link in the root, then an entry beneath it: the tree writer refuses such a
        // tree, so the members are made by hand, as a hostile host could send them.
        let mut members = segment("app", &[member("x", Kind::Symlink("/etc".into()))]);
        members.push(member(
            "run/containers/app/x/passwd",
            Kind::File(b"root::0".to_vec()),
        ));
        let e = unpack(base.path(), "app", &members).unwrap_err();
        assert!(e.contains("beneath the symbolic link"), "{e}");
        assert!(!base.path().join("etc/passwd").exists());
        // Removed whole: the root and the record.
        assert!(!base.path().join("run/containers/app").exists());
        assert!(!base.path().join("etc/jek/containers/app.json").exists());

        let mut members = segment("app", &[]);
        members.push(member("run/containers/other/bin", Kind::Dir));
        let e = unpack(base.path(), "app", &members).unwrap_err();
        assert!(e.contains("outside container app"), "{e}");

        let mut members = segment("app", &[]);
        members.push(member(
            "run/containers/app/dev",
            Kind::CharDev { major: 1, minor: 3 },
        ));
        let e = unpack(base.path(), "app", &members).unwrap_err();
        assert!(e.contains("device node"), "{e}");
        assert!(!base.path().join("run/containers/app").exists());

        // A hard link's other name outside the root, and a root that is a link.
        let mut members = segment("app", &[member("bin/x", Kind::File(b"x".to_vec()))]);
        for m in &mut members {
            if m.path.ends_with("bin/x") {
                m.links.push("etc/ld.so.preload".into());
            }
        }
        let e = unpack(base.path(), "app", &members).unwrap_err();
        assert!(
            e.contains("/etc/ld.so.preload") && e.contains("outside"),
            "{e}"
        );
        assert!(!base.path().join("etc/ld.so.preload").exists());
        let mut members = segment("app", &[]);
        for m in &mut members {
            if m.path == "run/containers/app" {
                m.kind = Kind::Symlink("/".into());
            }
        }
        let e = unpack(base.path(), "app", &members).unwrap_err();
        assert!(e.contains("not what it must be"), "{e}");
        assert!(std::fs::symlink_metadata(base.path().join("run/containers/app")).is_err());
    }
}
