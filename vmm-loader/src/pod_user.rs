//! A host user of its own for every pod's VMM.
//!
//! When jek runs as root, each pod's QEMU (and the KVM backend's vCPU thread) runs under a
//! uid leased from a range set aside for pods ([`UidRange`], by default
//! 1879048192-1879113727: above systemd's container range, below 2^31). So no other user of
//! the host and no other pod can signal a pod's VMM, ptrace it or read its memory: the
//! kernel checks the uid for all three. Before this, every QEMU ran as the shared user
//! `nobody`, and anything running as nobody could stop every pod.
//!
//! A lease is an exclusive `flock` on `DIR/<uid>.lock` (`DIR` is `/run/jek/pod-uids`, a
//! directory only root can list or change), held for as long as the process that booted the pod lives: a
//! crashed loader releases its leases without any clean-up. A uid some process still runs
//! as (a VM left behind by a process that died) is never leased again until that process
//! is gone. The lock file names the pod's run directory, so a clean-up that knows only the
//! run directory (`containerd-shim-jek-v2 delete` after its shim died) finds the uid and
//! stops what still runs under it ([`PodUsers::stop_left_by`]), but only when no live
//! loader holds the lease.
//!
//! Without root there is nothing to switch to: the VMM runs as the invoking user, whose
//! other processes can signal it (docs/design.md).

use std::fs::File;
use std::hash::BuildHasher as _;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// A range of host uids set aside for pods (`FIRST-LAST`, both included). Each pod's VMM
/// gets one uid, with the group of the same number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    first: u32,
    last: u32,
}

/// The default range: 65,536 uids from 0x70000000, above systemd's container range
/// (524288-1879048191, systemd's docs/UIDS-GIDS.md) and below 2^31.
pub const DEFAULT_UIDS: UidRange = UidRange {
    first: 0x7000_0000,
    last: 0x7000_ffff,
};

impl Default for UidRange {
    fn default() -> Self {
        DEFAULT_UIDS
    }
}

impl UidRange {
    /// The range `first..=last`.
    pub fn new(first: u32, last: u32) -> Result<Self, PodUserError> {
        let text = format!("{first}-{last}");
        if first > last {
            return Err(PodUserError::Range {
                text,
                why: "the first uid is above the last",
            });
        }
        // Uids an account of a normal system holds: root, system users, people, nobody.
        if first <= 65_535 {
            return Err(PodUserError::Range {
                text,
                why:
                    "uids up to 65535 belong to the system's own users (root, nobody and people); \
                      choose a range above them",
            });
        }
        if last == u32::MAX {
            return Err(PodUserError::Range {
                text,
                why: "uid 4294967295 is (uid_t)-1, which means \"no change\" to the kernel",
            });
        }
        Ok(UidRange { first, last })
    }

    /// The first uid.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// The last uid.
    pub fn last(&self) -> u32 {
        self.last
    }

    fn len(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }
}

impl std::fmt::Display for UidRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for UidRange {
    type Err = PodUserError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| PodUserError::Range {
            text: s.to_string(),
            why,
        };
        let (a, b) = s.split_once('-').ok_or(bad("expected FIRST-LAST"))?;
        let parse = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| bad("FIRST and LAST must be uids (0-4294967294)"))
        };
        UidRange::new(parse(a)?, parse(b)?)
    }
}

impl serde::Serialize for UidRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for UidRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where pods' uids come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUsers {
    /// The uids set aside for pods.
    pub range: UidRange,
    /// The lease directory (root's alone).
    pub dir: PathBuf,
}

/// The lease directory of a host.
pub const DEFAULT_LEASE_DIR: &str = "/run/jek/pod-uids";

impl Default for PodUsers {
    fn default() -> Self {
        PodUsers {
            range: DEFAULT_UIDS,
            dir: PathBuf::from(DEFAULT_LEASE_DIR),
        }
    }
}

/// A leased uid: the pod's VMM runs as `uid:uid` while this value lives.
#[derive(Debug)]
pub struct PodUser {
    uid: u32,
    // Held for the flock; closed (and so released) on drop or process exit.
    _lock: File,
    dir: PathBuf,
}

impl PodUser {
    /// The uid (and gid) the VMM runs as.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// A directory only this uid (and root) can enter, for the sockets the VMM connects to
    /// after it has dropped to the uid. Created on first use.
    pub fn private_dir(&self) -> Result<PathBuf, PodUserError> {
        let d = self.dir.join(format!("{}.d", self.uid));
        let err = |source| PodUserError::Io {
            what: "cannot create the pod user's directory",
            path: d.clone(),
            source,
        };
        match std::fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&d)
            .map_err(err)?;
        std::os::unix::fs::chown(&d, Some(self.uid), Some(self.uid)).map_err(err)?;
        Ok(d)
    }
}

impl Drop for PodUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.dir.join(format!("{}.d", self.uid)));
    }
}

/// Why no uid could be leased or a left-behind VMM not stopped.
#[derive(Debug, thiserror::Error)]
pub enum PodUserError {
    /// A uid range that cannot be used.
    #[error("pod uid range {text:?}: {why}")]
    Range {
        /// The range as given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Every uid of the range is leased or still has processes.
    #[error("no free pod uid in {range}: all {count} are leased by running pods or still run processes (widen the range)")]
    Exhausted {
        /// The range.
        range: UidRange,
        /// Its size.
        count: u64,
    },
    /// The lease directory is not root's alone.
    #[error("pod uid lease directory {path}: {why}")]
    UnsafeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl PodUserError {
    /// A range that cannot be used is invalid input; the rest is the host's.
    pub fn class(&self) -> jek_errors::Class {
        match self {
            PodUserError::Range { .. } => jek_errors::Class::Invalid,
            _ => jek_errors::Class::Environment,
        }
    }
}

impl PodUsers {
    /// Leases a uid for the pod whose run directory is `owner`, when this process runs as
    /// root; `None` otherwise (the VMM then runs as the invoking user).
    pub fn lease(&self, owner: &Path) -> Result<Option<PodUser>, PodUserError> {
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        self.lease_as_root(owner).map(Some)
    }

    fn lease_as_root(&self, owner: &Path) -> Result<PodUser, PodUserError> {
        self.lease_dir()?;
        let owner = std::path::absolute(owner).unwrap_or_else(|_| owner.to_path_buf());
        let count = self.range.len();
        // A random starting point (std's hasher keys are random per process): a uid just
        // released is unlikely to be handed out again at once.
        let start = std::collections::hash_map::RandomState::new().hash_one(&owner) % count;
        let running = processes_by_uid();
        for i in 0..count {
            let uid = self.range.first + u32::try_from((start + i) % count).unwrap_or(0);
            if running.iter().any(|(_, u)| *u == uid) {
                continue;
            }
            let Some(mut lock) = self.try_lock(uid)? else {
                continue;
            };
            let path = self.lock_path(uid);
            let write = |lock: &mut File| -> std::io::Result<()> {
                lock.set_len(0)?;
                lock.rewind()?;
                lock.write_all(owner.as_os_str().as_encoded_bytes())
            };
            write(&mut lock).map_err(|source| PodUserError::Io {
                what: "cannot write the pod uid lease",
                path,
                source,
            })?;
            return Ok(PodUser {
                uid,
                _lock: lock,
                dir: self.dir.clone(),
            });
        }
        Err(PodUserError::Exhausted {
            range: self.range,
            count,
        })
    }

    /// Stops (SIGKILL) every process still running as the uid last leased for the pod whose
    /// run directory is `owner`, if no live process holds that lease any more: the VMM of
    /// a loader that died. Returns how many processes were stopped (0 when no lease names
    /// `owner`, or its holder is alive).
    pub fn stop_left_by(&self, owner: &Path) -> Result<usize, PodUserError> {
        if !rustix::process::geteuid().is_root() {
            return Ok(0);
        }
        let owner = std::path::absolute(owner).unwrap_or_else(|_| owner.to_path_buf());
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(PodUserError::Io {
                    what: "cannot list the pod uid leases in",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        self.lease_dir()?;
        let mut stopped = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(uid) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".lock"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // Held: a live loader owns the uid now, perhaps for another pod.
            let Some(mut lock) = self.try_lock(uid)? else {
                continue;
            };
            let mut named = Vec::new();
            let _ = lock.read_to_end(&mut named);
            if named != owner.as_os_str().as_encoded_bytes() {
                continue;
            }
            for (pid, u) in processes_by_uid() {
                if u != uid {
                    continue;
                }
                // Through a pidfd: a pid reused since the scan is not signalled.
                let Some(p) = rustix::process::Pid::from_raw(pid) else {
                    continue;
                };
                let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                else {
                    continue;
                };
                if uid_of(pid) == Some(uid)
                    && rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL)
                        .is_ok()
                {
                    stopped += 1;
                }
            }
            drop(lock);
            let _ = std::fs::remove_dir_all(self.dir.join(format!("{uid}.d")));
        }
        Ok(stopped)
    }

    fn lock_path(&self, uid: u32) -> PathBuf {
        self.dir.join(format!("{uid}.lock"))
    }

    /// The lease file of `uid`, locked; `None` if another process holds it.
    fn try_lock(&self, uid: u32) -> Result<Option<File>, PodUserError> {
        let path = self.lock_path(uid);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // A lease file that is a symbolic link is refused, not followed.
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
            .open(&path)
            .map_err(|source| PodUserError::Io {
                what: "cannot open the pod uid lease",
                path: path.clone(),
                source,
            })?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(PodUserError::Io {
                what: "cannot lock the pod uid lease",
                path,
                source: e.into(),
            }),
        }
    }

    /// Creates the lease directory (mode 0711: the pod users pass through it to their own
    /// directories, nobody else lists it) or checks that it is a directory only root can
    /// change: a lease directory others could write would let them take or release leases.
    fn lease_dir(&self) -> Result<(), PodUserError> {
        let d = &self.dir;
        let io = |source| PodUserError::Io {
            what: "cannot create the pod uid lease directory",
            path: d.clone(),
            source,
        };
        if let Some(parent) = d.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        match std::fs::DirBuilder::new().mode(0o711).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let meta = std::fs::symlink_metadata(d).map_err(io)?;
        let unsafe_dir = |why: String| PodUserError::UnsafeDir {
            path: d.clone(),
            why,
        };
        if !meta.file_type().is_dir() {
            return Err(unsafe_dir("not a directory (a symbolic link?)".into()));
        }
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(unsafe_dir(format!(
                "owned by uid {}, not by root",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(unsafe_dir(format!(
                "mode {:o}: others can write to it",
                meta.mode() & 0o7777
            )));
        }
        if meta.mode() & 0o011 != 0o011 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).map_err(io)?;
        }
        Ok(())
    }
}

/// Every process of the host with its real uid, from `/proc` (processes that exit during
/// the scan are skipped).
fn processes_by_uid() -> Vec<(i32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, uid_of(pid)?)))
        .collect()
}

/// The real uid of process `pid` (the first of `Uid:` in `/proc/PID/status`).
fn uid_of(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn ranges_parse_and_refuse_the_system_users() {
        let r: UidRange = "100000-100009".parse().unwrap();
        assert_eq!((r.first(), r.last(), r.len()), (100_000, 100_009, 10));
        assert_eq!(r.to_string(), "100000-100009");
        for (bad, why) in [
            ("100009-100000", "above the last"),
            ("0-100000", "system's own users"),
            ("65534-70000", "system's own users"),
            ("100000", "FIRST-LAST"),
            ("100000-x", "must be uids"),
            ("100000-4294967295", "no change"),
        ] {
            let e = bad.parse::<UidRange>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(UidRange::default(), DEFAULT_UIDS);
    }

    #[test]
    fn uid_of_reads_this_process() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(uid_of(me), Some(rustix::process::getuid().as_raw()));
        assert!(processes_by_uid().iter().any(|(p, _)| *p == me));
    }
}
