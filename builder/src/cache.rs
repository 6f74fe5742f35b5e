//! `jek cache list|prune`: what the cache under `~/.cache/jek` holds, and removing it.
//!
//! The layout (docs/design.md, "Caches"):
//! - `kernel/<key>/`: a finished kernel build (`complete` marks it; its mtime is the last
//!   use), `kernel/<key>.lock` held by a build in progress, `kernel/.<key>.tmp/` an entry
//!   being written;
//! - `work/<key>/`: a build's source and object tree, removed when the build ends;
//! - `logs/<key>.log` (and `.config`): the make log of the last build of a key;
//! - `images/blobs/sha256/<hex>` and `images/segments/<key>.{cpio,json}`: the image
//!   cache of `jek_image::cache`.
//!
//! Nothing that a build in progress holds is listed as removable: its key's lock file is
//! locked, and the prune skips it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What kind of thing an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A finished kernel build.
    Kernel,
    /// A work directory (of a build in progress, or one that was killed).
    Work,
    /// A kernel entry that was never finished.
    Incomplete,
    /// A build log.
    Log,
    /// A cached image blob.
    ImageBlob,
    /// A cached container segment.
    ImageSegment,
}

impl Kind {
    /// Whether `jek cache prune` removes it without `--all` or `--older-than`: leftovers
    /// of builds that did not finish, and logs of entries that are gone.
    fn leftover(self) -> bool {
        matches!(self, Kind::Work | Kind::Incomplete)
    }
}

/// One entry of the cache.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its kind.
    pub kind: Kind,
    /// The cache key (hex) or digest it is named by.
    pub key: String,
    /// Where it is.
    pub path: PathBuf,
    /// Bytes on disk (files, recursively).
    pub bytes: u64,
    /// Seconds since it was last used (kernel entries) or written.
    pub age_seconds: u64,
    /// A build in progress holds it.
    pub in_use: bool,
}

impl Entry {
    /// One line of `jek cache list`: kind, size, age, key, path.
    pub fn line(&self) -> String {
        let kind = match self.kind {
            Kind::Kernel => "kernel",
            Kind::Work => "work",
            Kind::Incomplete => "incomplete",
            Kind::Log => "log",
            Kind::ImageBlob => "image-blob",
            Kind::ImageSegment => "image-segment",
        };
        let mib = self.bytes as f64 / f64::from(1 << 20);
        let age = match self.age_seconds {
            s if s < 3600 => format!("{}m", s / 60),
            s if s < 86_400 => format!("{}h", s / 3600),
            s => format!("{}d", s / 86_400),
        };
        let key: String = self.key.chars().take(19).collect();
        let busy = if self.in_use { "  (in use)" } else { "" };
        format!(
            "{kind:<13} {mib:>9.1} MiB {age:>5}  {key:<19}  {}{busy}",
            self.path.display()
        )
    }
}

/// Why the cache cannot be listed or pruned.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A cache directory cannot be read.
    #[error("cannot read cache directory {path}")]
    Read {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry cannot be removed.
    #[error("cannot remove {path}")]
    Remove {
        /// The entry.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl CacheError {
    /// Always the environment's: the cache is jek's own directory.
    pub fn class(&self) -> jek_errors::Class {
        jek_errors::Class::Environment
    }
}

/// What `jek cache prune` removes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prune {
    /// Everything not in use.
    pub all: bool,
    /// Also finished entries unused for longer than this.
    pub older_than: Option<Duration>,
}

/// Bytes on disk under `path` (a file or a directory, symlinks not followed).
fn disk_bytes(path: &Path) -> u64 {
    let Ok(meta) = path.symlink_metadata() else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| disk_bytes(&e.path())).sum())
        .unwrap_or(0)
}

fn age(path: &Path, now: SystemTime) -> u64 {
    path.symlink_metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .map_or(0, |d| d.as_secs())
}

/// Whether a build in progress holds `key` (its lock file is locked).
fn locked(root: &Path, key: &str) -> bool {
    let Ok(f) = std::fs::File::open(root.join("kernel").join(format!("{key}.lock"))) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

fn names(dir: &Path) -> Result<Vec<String>, CacheError> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            v.sort();
            Ok(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CacheError::Read {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Every entry under the cache root `root`, kernel entries first.
pub fn list(root: &Path) -> Result<Vec<Entry>, CacheError> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    // A kernel entry's age is its `complete` marker's (touched at every use).
    let mut push = |kind, key: &str, path: PathBuf, in_use| {
        let marker = path.join("complete");
        let aged = if kind == Kind::Kernel { &marker } else { &path };
        out.push(Entry {
            kind,
            key: key.to_string(),
            bytes: disk_bytes(&path),
            age_seconds: age(aged, now),
            path,
            in_use,
        });
    };
    let kdir = root.join("kernel");
    let mut kernels = Vec::new();
    for name in names(&kdir)? {
        let path = kdir.join(&name);
        if name.ends_with(".lock") {
            continue;
        }
        if let Some(key) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) {
            push(Kind::Incomplete, key, path, locked(root, key));
        } else if path.join("complete").is_file() {
            kernels.push(name.clone());
            push(Kind::Kernel, &name, path, locked(root, &name));
        } else {
            push(Kind::Incomplete, &name, path, locked(root, &name));
        }
    }
    let wdir = root.join("work");
    for name in names(&wdir)? {
        push(Kind::Work, &name, wdir.join(&name), locked(root, &name));
    }
    let ldir = root.join("logs");
    // `<config sha256>.files`: the file count a progress bar expects; a few bytes, kept.
    for name in names(&ldir)?.into_iter().filter(|n| !n.ends_with(".files")) {
        let key = name.split('.').next().unwrap_or(&name).to_string();
        push(Kind::Log, &key, ldir.join(&name), locked(root, &key));
    }
    let bdir = root.join("images/blobs/sha256");
    for name in names(&bdir)? {
        push(
            Kind::ImageBlob,
            &format!("sha256:{name}"),
            bdir.join(&name),
            false,
        );
    }
    let sdir = root.join("images/segments");
    for name in names(&sdir)? {
        push(Kind::ImageSegment, &name, sdir.join(&name), false);
    }
    // A log whose kernel entry is gone is a leftover too.
    for e in &mut out {
        if e.kind == Kind::Log && !kernels.contains(&e.key) {
            e.kind = Kind::Incomplete;
        }
    }
    Ok(out)
}

/// Removes what `rule` selects and is not in use; returns what was removed.
pub fn prune(root: &Path, rule: Prune) -> Result<Vec<Entry>, CacheError> {
    let mut removed = Vec::new();
    for e in list(root)? {
        let old = rule
            .older_than
            .is_some_and(|d| e.age_seconds >= d.as_secs());
        if e.in_use || !(rule.all || old || e.kind.leftover()) {
            continue;
        }
        let r = if e.path.is_dir() {
            std::fs::remove_dir_all(&e.path)
        } else {
            std::fs::remove_file(&e.path)
        };
        match r {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CacheError::Remove {
                    path: e.path.clone(),
                    source,
                })
            }
        }
        if e.kind == Kind::Kernel {
            let _ = std::fs::remove_file(root.join("kernel").join(format!("{}.lock", e.key)));
        }
        removed.push(e);
    }
    Ok(removed)
}

/// Marks a kernel entry as used now (its age in `jek cache list` restarts).
pub fn touch(entry: &Path) {
    if let Ok(f) = std::fs::File::options()
        .write(true)
        .open(entry.join("complete"))
    {
        let _ = f.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn put(root: &Path, rel: &str, bytes: usize) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![0u8; bytes]).unwrap();
    }

    fn layout() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        put(r, "kernel/aaaa/complete", 0);
        put(r, "kernel/aaaa/bzImage", 1000);
        put(r, "kernel/aaaa.lock", 0);
        put(r, "kernel/bbbb/bzImage", 10);
        put(r, "kernel/.cccc.tmp/vmlinux", 20);
        put(r, "work/dddd/obj/x.o", 3000);
        put(r, "logs/aaaa.log", 5);
        put(r, "logs/dddd.log", 7);
        put(r, "images/blobs/sha256/eeee", 40);
        put(r, "images/segments/ffff.cpio", 50);
        d
    }

    #[test]
    fn entries_are_classified_and_sized() {
        let d = layout();
        let got: Vec<(Kind, String, u64)> = list(d.path())
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.key, e.bytes))
            .collect();
        let want = [
            (Kind::Incomplete, "cccc", 20),
            (Kind::Kernel, "aaaa", 1000),
            (Kind::Incomplete, "bbbb", 10),
            (Kind::Work, "dddd", 3000),
            (Kind::Log, "aaaa", 5),
            (Kind::Incomplete, "dddd", 7),
            (Kind::ImageBlob, "sha256:eeee", 40),
            (Kind::ImageSegment, "ffff.cpio", 50),
        ];
        let want: Vec<(Kind, String, u64)> = want
            .iter()
            .map(|(k, s, b)| (*k, s.to_string(), *b))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn prune_removes_leftovers_and_spares_what_a_build_holds() {
        let d = layout();
        let r = d.path();
        put(r, "kernel/dddd.lock", 0);
        let held = std::fs::File::open(r.join("kernel/dddd.lock")).unwrap();
        held.lock().unwrap();
        let removed: Vec<String> = prune(r, Prune::default())
            .unwrap()
            .into_iter()
            .map(|e| e.path.strip_prefix(r).unwrap().display().to_string())
            .collect();
        assert_eq!(removed, ["kernel/.cccc.tmp", "kernel/bbbb"]);
        assert!(
            r.join("work/dddd").exists(),
            "a locked build's work is kept"
        );
        drop(held);
        let removed = prune(r, Prune::default()).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}"); // work/dddd and its log
        assert!(r.join("kernel/aaaa/bzImage").exists());
        // --older-than: nothing is a day old yet; --all removes the rest.
        let day = Some(Duration::from_secs(86_400));
        let rule = Prune {
            all: false,
            older_than: day,
        };
        assert!(prune(r, rule).unwrap().is_empty());
        assert_eq!(
            prune(
                r,
                Prune {
                    all: true,
                    older_than: None
                }
            )
            .unwrap()
            .len(),
            4
        );
        assert!(list(r).unwrap().is_empty());
        assert!(!r.join("kernel/aaaa.lock").exists());
    }
}
