//! A container's root file system, built in memory from the image's layers (the OCI image
//! spec's layer changeset rules), never on the host's file system: nothing in a hostile
//! layer can touch a host path, and the result is a pure function of the layer bytes.
//!
//! Rules, per layer in order:
//!
//! - paths are taken relative to the root (a leading `/` or `./` is dropped); a `..`
//!   component, a name that is not UTF-8 or holds NUL, and an entry beneath a symbolic link
//!   or a non-directory are refused, so no entry can be written outside the root when the
//!   guest unpacks it;
//! - `.wh.NAME` removes `NAME` (and all below it) as the lower layers left it;
//!   `.wh..wh..opq` removes everything the lower layers put in its directory. Entries the
//!   same layer adds stay, wherever the whiteout is in the layer's order;
//! - a directory over a directory keeps what is in it; anything else replaces what was at
//!   its path;
//! - modes (setuid, setgid and sticky included), owners, times and symbolic links are kept;
//!   a hard link names a regular file already in the tree and becomes another name of it;
//! - device nodes and FIFOs are refused (a pod gets its /dev from the guest kernel).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use jek_pod::cpio::{Kind, Member};

/// Why a layer cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The tar stream is malformed.
    #[error("layer {layer}: not a valid tar stream")]
    Tar {
        /// The layer's digest.
        layer: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An entry path that would leave the root, or is not a name.
    #[error("layer {layer}: entry {path:?} {why}")]
    Path {
        /// The layer's digest.
        layer: String,
        /// The entry's path as the layer wrote it.
        path: String,
        /// What is wrong.
        why: &'static str,
    },
    /// An entry beneath a symbolic link or a file.
    #[error("layer {layer}: entry {path:?} lies beneath {parent:?}, which is not a directory (a {kind})")]
    Beneath {
        /// The layer's digest.
        layer: String,
        /// The entry.
        path: String,
        /// The ancestor.
        parent: String,
        /// What the ancestor is.
        kind: &'static str,
    },
    /// A hard link to something that is not a regular file of the tree.
    #[error("layer {layer}: hard link {path:?} names {target:?}, which is not a regular file of the image")]
    Link {
        /// The layer's digest.
        layer: String,
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// A device node, FIFO or other entry type jek does not unpack.
    #[error("layer {layer}: entry {path:?} is a {kind}, which a container image may not hold")]
    Unsupported {
        /// The layer's digest.
        layer: String,
        /// The entry.
        path: String,
        /// Its type.
        kind: String,
    },
    /// An owner or time out of range.
    #[error("layer {layer}: entry {path:?} has an out-of-range {field}")]
    Range {
        /// The layer's digest.
        layer: String,
        /// The entry.
        path: String,
        /// The field.
        field: &'static str,
    },
}

#[derive(Debug, Clone)]
enum NodeKind {
    Dir,
    /// Index into the content list: names with the same index are hard links.
    File(usize),
    Symlink(String),
}

#[derive(Debug, Clone)]
struct Node {
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
    kind: NodeKind,
}

/// A root file system under construction.
#[derive(Debug, Default)]
pub struct RootFs {
    nodes: BTreeMap<String, Node>,
    contents: Vec<Vec<u8>>,
}

/// A relative path of normal components, or why not.
fn normalize(raw: &str) -> Result<String, &'static str> {
    if raw.contains('\0') {
        return Err("holds a NUL byte");
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("has a '..' component, which would leave the root"),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

impl RootFs {
    /// An empty root.
    pub fn new() -> Self {
        RootFs::default()
    }

    /// Removes `path` and everything below it.
    fn remove_tree(&mut self, path: &str) {
        self.nodes.remove(path);
        let prefix = format!("{path}/");
        let below: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.nodes.remove(&k);
        }
    }

    /// Applies one uncompressed layer (a tar stream). `layer` names it in errors.
    pub fn apply(&mut self, layer: &str, tar: impl Read) -> Result<(), TreeError> {
        let tar_err = |source| TreeError::Tar {
            layer: layer.to_string(),
            source,
        };
        let mut archive = tar::Archive::new(tar);
        // Paths added by this layer: its whiteouts apply to the lower layers only.
        let mut added: BTreeSet<String> = BTreeSet::new();
        for entry in archive.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            let raw_bytes = entry.path_bytes().into_owned();
            let raw = String::from_utf8(raw_bytes).map_err(|e| TreeError::Path {
                layer: layer.to_string(),
                path: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                why: "is not UTF-8",
            })?;
            let path_err = |why| TreeError::Path {
                layer: layer.to_string(),
                path: raw.clone(),
                why,
            };
            let path = normalize(&raw).map_err(path_err)?;
            if path.is_empty() {
                continue; // the root itself
            }
            let name = path.rsplit('/').next().unwrap_or(&path);
            let parent = parent_of(&path).to_string();
            if let Some(hidden) = name.strip_prefix(".wh.") {
                self.check_parents(layer, &raw, &parent)?;
                if hidden == ".wh..opq" {
                    let prefix = if parent.is_empty() {
                        String::new()
                    } else {
                        format!("{parent}/")
                    };
                    let lower: Vec<String> = self
                        .nodes
                        .keys()
                        .filter(|k| k.starts_with(&prefix) && !k[prefix.len()..].is_empty())
                        .filter(|k| !added.contains(*k))
                        .cloned()
                        .collect();
                    for k in lower {
                        self.nodes.remove(&k);
                    }
                } else {
                    let target = if parent.is_empty() {
                        hidden.to_string()
                    } else {
                        format!("{parent}/{hidden}")
                    };
                    if normalize(hidden).ok().as_deref() != Some(hidden) || hidden.is_empty() {
                        return Err(path_err("is a whiteout of no plain name"));
                    }
                    if !added.contains(&target) {
                        self.remove_tree(&target);
                    }
                }
                continue;
            }
            self.check_parents(layer, &raw, &parent)?;
            let header = entry.header();
            let range = |field| TreeError::Range {
                layer: layer.to_string(),
                path: raw.clone(),
                field,
            };
            let perm = header.mode().map_err(tar_err)? & 0o7777;
            let uid = u32::try_from(header.uid().map_err(tar_err)?).map_err(|_| range("uid"))?;
            let gid = u32::try_from(header.gid().map_err(tar_err)?).map_err(|_| range("gid"))?;
            let mtime = u32::try_from(header.mtime().map_err(tar_err)?).unwrap_or(u32::MAX);
            let entry_type = header.entry_type();
            let kind = match entry_type {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).map_err(tar_err)?;
                    self.contents.push(data);
                    NodeKind::File(self.contents.len() - 1)
                }
                tar::EntryType::Directory => NodeKind::Dir,
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8(b.into_owned()))
                        .transpose()
                        .map_err(|_| path_err("is a symbolic link whose target is not UTF-8"))?
                        .ok_or_else(|| path_err("is a symbolic link without a target"))?;
                    if target.is_empty() || target.contains('\0') {
                        return Err(path_err("is a symbolic link without a target"));
                    }
                    NodeKind::Symlink(target)
                }
                tar::EntryType::Link => {
                    let target_raw = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let link_err = || TreeError::Link {
                        layer: layer.to_string(),
                        path: raw.clone(),
                        target: target_raw.clone(),
                    };
                    let target = normalize(&target_raw).map_err(|_| link_err())?;
                    match self.nodes.get(&target) {
                        Some(
                            n @ Node {
                                kind: NodeKind::File(_),
                                ..
                            },
                        ) => {
                            let n = n.clone();
                            if target != path {
                                self.remove_tree(&path);
                                self.nodes.insert(path.clone(), n);
                            }
                            added.insert(path);
                            continue;
                        }
                        _ => return Err(link_err()),
                    }
                }
                other => {
                    return Err(TreeError::Unsupported {
                        layer: layer.to_string(),
                        path: raw.clone(),
                        kind: format!("{other:?}").to_lowercase(),
                    })
                }
            };
            let node = Node {
                perm,
                uid,
                gid,
                mtime,
                kind,
            };
            match (self.nodes.get_mut(&path), &node.kind) {
                // A directory over a directory keeps its children.
                (
                    Some(
                        existing @ Node {
                            kind: NodeKind::Dir,
                            ..
                        },
                    ),
                    NodeKind::Dir,
                ) => *existing = node,
                _ => {
                    self.remove_tree(&path);
                    self.nodes.insert(path.clone(), node);
                }
            }
            added.insert(path);
        }
        Ok(())
    }

    /// Makes every ancestor of an entry a directory (adding missing ones as root's 0755),
    /// or refuses the entry if one is something else.
    fn check_parents(&mut self, layer: &str, raw: &str, parent: &str) -> Result<(), TreeError> {
        if parent.is_empty() {
            return Ok(());
        }
        let mut at = 0;
        let bytes = parent.as_bytes();
        loop {
            let end = bytes[at..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(parent.len(), |p| at + p);
            let ancestor = &parent[..end];
            match self.nodes.get(ancestor).map(|n| &n.kind) {
                Some(NodeKind::Dir) => {}
                Some(other) => {
                    return Err(TreeError::Beneath {
                        layer: layer.to_string(),
                        path: raw.to_string(),
                        parent: ancestor.to_string(),
                        kind: match other {
                            NodeKind::Symlink(_) => "symbolic link",
                            _ => "regular file",
                        },
                    })
                }
                None => {
                    self.nodes.insert(
                        ancestor.to_string(),
                        Node {
                            perm: 0o755,
                            uid: 0,
                            gid: 0,
                            mtime: 0,
                            kind: NodeKind::Dir,
                        },
                    );
                }
            }
            if end == parent.len() {
                return Ok(());
            }
            at = end + 1;
        }
    }

    /// The content of a regular file of the tree, following symbolic links inside the root
    /// (at most 8).
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        let mut path = normalize(path).ok()?;
        for _ in 0..8 {
            match &self.nodes.get(&path)?.kind {
                NodeKind::File(i) => return self.contents.get(*i).map(Vec::as_slice),
                NodeKind::Symlink(t) => {
                    path = if t.starts_with('/') {
                        normalize(t).ok()?
                    } else {
                        normalize(&format!("{}/{t}", parent_of(&path))).ok()?
                    };
                }
                NodeKind::Dir => return None,
            }
        }
        None
    }

    /// The tree as archive members (paths relative to the root); the names of a
    /// hard-linked file become one member with links, its first name in path order first.
    pub fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = Vec::with_capacity(self.nodes.len());
        let mut by_content: BTreeMap<usize, usize> = BTreeMap::new();
        for (path, n) in &self.nodes {
            if let NodeKind::File(i) = n.kind {
                if let Some(&m) = by_content.get(&i) {
                    members[m].links.push(path.clone());
                    continue;
                }
                by_content.insert(i, members.len());
            }
            members.push(Member {
                path: path.clone(),
                perm: n.perm,
                uid: n.uid,
                gid: n.gid,
                mtime: n.mtime,
                kind: match &n.kind {
                    NodeKind::Dir => Kind::Dir,
                    NodeKind::File(i) => Kind::File(self.contents[*i].clone()),
                    NodeKind::Symlink(t) => Kind::Symlink(t.clone()),
                },
                links: Vec::new(),
            });
        }
        members
    }

    /// Paths in the tree (for tests and reports).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }
}

/// Fuzzing entry: arbitrary bytes as two layers (the same stream twice, so whiteouts meet
/// a lower layer), then the archive members and a container segment.
pub fn fuzz(data: &[u8]) {
    let mut fs = RootFs::new();
    if fs.apply("fuzz-1", data).is_ok() && fs.apply("fuzz-2", data).is_ok() {
        let members = fs.members();
        let _ = fs.read("etc/passwd");
        let image = jek_pod::image::ContainerImage {
            container: "fuzz".into(),
            reference: "fuzz".into(),
            manifest: String::new(),
            config_digest: String::new(),
            config: jek_pod::image::ImageConfig::default(),
        };
        let seg = jek_pod::image::container_segment(&image, &members);
        // Everything the tree admits must be a writable archive.
        assert!(seg.is_ok(), "{seg:?}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A tar stream of (path, type, data-or-link-target).
    pub(crate) fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(if *ty == tar::EntryType::Directory {
                0o755
            } else {
                0o4755
            });
            h.set_uid(1000);
            h.set_gid(100);
            h.set_mtime(7);
            match ty {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    // Raw path bytes: `append_data` refuses `..`, a hostile layer does not.
                    let name = path.as_bytes();
                    h.as_old_mut().name[..name.len()].copy_from_slice(name);
                    h.set_cksum();
                    b.append(&h, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType::{Directory as D, Link as L, Regular as F, Symlink as S};

    #[test]
    fn layers_whiteouts_and_opaque_directories() {
        let mut fs = RootFs::new();
        fs.apply(
            "l1",
            &tar_of(&[
                ("bin/", D, ""),
                ("bin/busybox", F, "BB"),
                ("bin/sh", L, "bin/busybox"),
                ("etc/motd", F, "hi"),
                ("etc/removed", F, "x"),
                ("var/cache/a", F, "a"),
                ("var/cache/b", F, "b"),
                ("lib", S, "/usr/lib"),
            ])[..],
        )
        .unwrap();
        fs.apply(
            "l2",
            &tar_of(&[
                ("var/cache/.wh..wh..opq", F, ""),
                ("var/cache/c", F, "c"),
                ("./etc/.wh.removed", F, ""),
                ("etc/motd", F, "bye"),
            ])[..],
        )
        .unwrap();
        let paths: Vec<&str> = fs.paths().collect();
        assert_eq!(
            paths,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "etc",
                "etc/motd",
                "lib",
                "var",
                "var/cache",
                "var/cache/c"
            ]
        );
        assert_eq!(fs.read("etc/motd"), Some(&b"bye"[..]));
        let members = fs.members();
        let bb = members.iter().find(|m| m.path == "bin/busybox").unwrap();
        assert_eq!(bb.links, ["bin/sh"]);
        assert_eq!((bb.perm, bb.uid, bb.gid, bb.mtime), (0o4755, 1000, 100, 7));
        assert!(members
            .iter()
            .any(|m| m.path == "lib" && m.kind == Kind::Symlink("/usr/lib".into())));
    }

    #[test]
    fn a_whiteout_in_the_same_layer_spares_what_that_layer_adds() {
        let mut fs = RootFs::new();
        fs.apply("l1", &tar_of(&[("d/old", F, "o")])[..]).unwrap();
        fs.apply(
            "l2",
            &tar_of(&[("d/new", F, "n"), ("d/.wh..wh..opq", F, "")])[..],
        )
        .unwrap();
        assert_eq!(fs.paths().collect::<Vec<_>>(), ["d", "d/new"]);
    }

    #[test]
    fn escapes_are_refused() {
        for (entries, what) in [
            (vec![("../etc/passwd", F, "x")], "'..'"),
            (vec![("a/../../x", F, "x")], "'..'"),
            (
                vec![("etc", S, "/etc"), ("etc/jek/pod.json", F, "{}")],
                "symbolic link",
            ),
            (vec![("f", F, "x"), ("f/g", F, "y")], "regular file"),
            (vec![("h", L, "missing")], "not a regular file"),
            (vec![("h", L, "../../etc/shadow")], "not a regular file"),
        ] {
            let mut fs = RootFs::new();
            let err = fs.apply("sha256:l", &tar_of(&entries)[..]).unwrap_err();
            assert!(err.to_string().contains(what), "{entries:?}: {err}");
            assert!(err.to_string().contains("sha256:l"), "{err}");
        }
        let mut fs = RootFs::new();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Char);
        h.set_size(0);
        h.set_mode(0o600);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, "dev/mem", &[][..]).unwrap();
        let err = fs
            .apply("l", &b.into_inner().unwrap()[..])
            .unwrap_err()
            .to_string();
        assert!(err.contains("dev/mem") && err.contains("char"), "{err}");
    }

    #[test]
    fn a_file_replaces_a_directory_and_its_contents() {
        let mut fs = RootFs::new();
        fs.apply("l1", &tar_of(&[("x/y", F, "1")])[..]).unwrap();
        fs.apply("l2", &tar_of(&[("x", F, "2")])[..]).unwrap();
        assert_eq!(fs.paths().collect::<Vec<_>>(), ["x"]);
        assert_eq!(fs.read("x"), Some(&b"2"[..]));
    }
}
