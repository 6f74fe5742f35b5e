//! Containers from OCI images: the container segment the loader appends for each container
//! with an `image`, and the rules by which the init turns the image config and the pod spec
//! into the process it starts.
//!
//! A container segment is a `newc` archive of two parts:
//!
//! - `etc/jek/containers/NAME.json`: the [`ContainerImage`] record (reference, manifest and
//!   config digests, the image config's process fields), compact JSON;
//! - `run/containers/NAME/...`: the container's root file system, every layer applied, with
//!   the image's modes, owners, times, symbolic and hard links.
//!
//! The rules ([`resolve`]) are Kubernetes': `command` replaces the image's Entrypoint (and
//! drops its Cmd), `args` replaces Cmd, the pod's `env` is added to the image's Env (a pod
//! variable wins over an image variable of the same name), `workingDir` replaces WorkingDir.
//! The user is the image's `User` (`uid`, `name`, `uid:gid`, `name:group`), looked up in
//! the container's own `/etc/passwd` and `/etc/group`. The host applies the same function
//! before booting, so a container the init could not start never boots.

use serde::{Deserialize, Serialize};

use crate::cpio::{self, Member};
use crate::spec::Container;

/// Where the container roots are, in the guest.
pub const CONTAINERS_DIR: &str = "run/containers";
/// Where the container records are, in the guest.
pub const RECORDS_DIR: &str = "etc/jek/containers";
/// `PATH` when the image sets none (as Docker and containerd do).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The root of container `name` in the guest (`/run/containers/NAME`).
pub fn root_path(name: &str) -> String {
    format!("/{CONTAINERS_DIR}/{name}")
}

/// The record of container `name` in the guest (`/etc/jek/containers/NAME.json`).
pub fn record_path(name: &str) -> String {
    format!("/{RECORDS_DIR}/{name}.json")
}

/// The process fields of an OCI image config (`config.Entrypoint`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageConfig {
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value` strings.
    #[serde(default)]
    pub env: Vec<String>,
    /// `WorkingDir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What the guest learns about a container's image: `/etc/jek/containers/NAME.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerImage {
    /// The container's name.
    pub container: String,
    /// The image reference as the pod file wrote it.
    pub reference: String,
    /// The image manifest's digest (`sha256:...`).
    pub manifest: String,
    /// The image config's digest.
    pub config_digest: String,
    /// The image config's process fields.
    pub config: ImageConfig,
}

/// A container's segment with its record: what the loader appends and measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSegment {
    /// The record (inside the segment too).
    pub image: ContainerImage,
    /// The segment's bytes.
    pub bytes: Vec<u8>,
}

/// The process the init starts for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment, in order, names unique.
    pub env: Vec<(String, String)>,
    /// Working directory (absolute, inside the container's root).
    pub cwd: String,
    /// User ID.
    pub uid: u32,
    /// Group ID.
    pub gid: u32,
}

/// Why a container's process cannot be worked out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Neither the pod nor the image names a program.
    #[error(
        "container {0:?} has no command: the pod gives none and the image has no Entrypoint or Cmd"
    )]
    NoCommand(String),
    /// A user name the container's /etc/passwd does not have.
    #[error("container {container:?}: user {user:?} is not in the image's /etc/passwd")]
    User {
        /// The container.
        container: String,
        /// The user.
        user: String,
    },
    /// A group name the container's /etc/group does not have.
    #[error("container {container:?}: group {group:?} is not in the image's /etc/group")]
    Group {
        /// The container.
        container: String,
        /// The group.
        group: String,
    },
    /// An image Env entry without `=`.
    #[error("container {container:?}: image Env entry {entry:?} has no '='")]
    Env {
        /// The container.
        container: String,
        /// The entry.
        entry: String,
    },
    /// A working directory that is not absolute.
    #[error("container {container:?}: working directory {dir:?} is not absolute")]
    WorkingDir {
        /// The container.
        container: String,
        /// The directory.
        dir: String,
    },
}

/// A line of `/etc/passwd` or `/etc/group` whose first field is `name` (or, with
/// `by_id`, whose third field is `name`): its fields.
fn entry<'a>(table: &'a str, name: &str, by_id: bool) -> Option<Vec<&'a str>> {
    table
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && if by_id { f[2] == name } else { f[0] == name })
}

/// Works out the process for container `c` from its image config (`None`: a container
/// without an image, which runs a program of the bundle's own root file system as root).
/// `read` returns a file of the container's root (`/etc/passwd`, `/etc/group`), if any.
pub fn resolve(
    c: &Container,
    image: Option<&ImageConfig>,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<Process, ResolveError> {
    let none = ImageConfig::default();
    let img = image.unwrap_or(&none);
    let argv: Vec<String> = match (c.command.is_empty(), c.args.is_empty()) {
        (false, false) => c.command.iter().chain(&c.args).cloned().collect(),
        (false, true) => c.command.clone(),
        (true, false) => img.entrypoint.iter().chain(&c.args).cloned().collect(),
        (true, true) => img.entrypoint.iter().chain(&img.cmd).cloned().collect(),
    };
    if argv.is_empty() {
        return Err(ResolveError::NoCommand(c.name.clone()));
    }
    let (uid, gid, home) = user(c, img.user.as_deref().unwrap_or(""), read)?;
    let mut env: Vec<(String, String)> =
        vec![("PATH".into(), DEFAULT_PATH.into()), ("HOME".into(), home)];
    let mut set = |name: &str, value: &str| match env.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((name.to_string(), value.to_string())),
    };
    for e in &img.env {
        let (name, value) = e.split_once('=').ok_or_else(|| ResolveError::Env {
            container: c.name.clone(),
            entry: e.clone(),
        })?;
        set(name, value);
    }
    for e in &c.env {
        set(&e.name, &e.value);
    }
    let cwd = c
        .working_dir
        .clone()
        .or_else(|| img.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(ResolveError::WorkingDir {
            container: c.name.clone(),
            dir: cwd,
        });
    }
    Ok(Process {
        argv,
        env,
        cwd,
        uid,
        gid,
    })
}

/// The image's `User`: (uid, gid, home).
fn user(
    c: &Container,
    spec: &str,
    read: &dyn Fn(&str) -> Option<String>,
) -> Result<(u32, u32, String), ResolveError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read("/etc/passwd").unwrap_or_default();
    let (uid, mut gid, home) = if user.is_empty() {
        (0, 0, "/root".to_string())
    } else if let Ok(uid) = user.parse::<u32>() {
        // A number need not be in /etc/passwd; if it is, its group and home apply.
        match entry(&passwd, user, true) {
            Some(f) => (
                uid,
                f[3].parse().unwrap_or(0),
                f.get(5).unwrap_or(&"/").to_string(),
            ),
            None => (uid, 0, "/".to_string()),
        }
    } else {
        let f = entry(&passwd, user, false).ok_or_else(|| ResolveError::User {
            container: c.name.clone(),
            user: user.to_string(),
        })?;
        let uid = f[2].parse().map_err(|_| ResolveError::User {
            container: c.name.clone(),
            user: user.to_string(),
        })?;
        (
            uid,
            f[3].parse().unwrap_or(0),
            f.get(5).unwrap_or(&"/").to_string(),
        )
    };
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = read("/etc/group").unwrap_or_default();
                entry(&groups, g, false)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| ResolveError::Group {
                        container: c.name.clone(),
                        group: g.to_string(),
                    })?
            }
        };
    }
    let home = if home.is_empty() { "/".into() } else { home };
    Ok((uid, gid, home))
}

/// Why a container segment cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ContainerSegmentError {
    /// The archive writer refused the tree.
    #[error("cannot write the segment of container {container:?}")]
    Archive {
        /// The container.
        container: String,
        /// Why.
        #[source]
        source: cpio::CpioError,
    },
}

/// The record bytes of `/etc/jek/containers/NAME.json`.
pub fn record_json(image: &ContainerImage) -> Vec<u8> {
    // A derived Serialize of strings and vectors cannot fail.
    serde_json::to_vec(image).unwrap_or_default()
}

/// The container segment: the record and the root file system `rootfs` (paths relative to
/// the container's root) under `run/containers/NAME/`.
pub fn container_segment(
    image: &ContainerImage,
    rootfs: &[Member],
) -> Result<Vec<u8>, ContainerSegmentError> {
    let prefix = format!("{CONTAINERS_DIR}/{}", image.container);
    let mut members: Vec<Member> = Vec::with_capacity(rootfs.len() + 2);
    members.push(Member {
        path: prefix.clone(),
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        kind: cpio::Kind::Dir,
        links: Vec::new(),
    });
    members.push(Member {
        path: record_path(&image.container)
            .trim_start_matches('/')
            .to_string(),
        perm: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        kind: cpio::Kind::File(record_json(image)),
        links: Vec::new(),
    });
    for m in rootfs {
        let mut m = m.clone();
        m.path = format!("{prefix}/{}", m.path);
        for l in &mut m.links {
            *l = format!("{prefix}/{l}");
        }
        members.push(m);
    }
    cpio::write_tree(&members, 0).map_err(|source| ContainerSegmentError::Archive {
        container: image.container.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::spec::EnvVar;

    fn container(command: &[&str], args: &[&str]) -> Container {
        Container {
            name: "web".into(),
            image: Some("localhost:5000/busybox:1".into()),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![EnvVar {
                name: "B".into(),
                value: "pod".into(),
            }],
            working_dir: None,
        }
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/bin/ep".into()],
            cmd: vec!["c1".into(), "c2".into()],
            env: vec!["PATH=/bin".into(), "A=1".into(), "B=image".into()],
            working_dir: Some("/srv".into()),
            user: Some("app:staff".into()),
        }
    }

    fn files(path: &str) -> Option<String> {
        match path {
            "/etc/passwd" => {
                Some("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n".into())
            }
            "/etc/group" => Some("root:x:0:\nstaff:x:50:app\n".into()),
            _ => None,
        }
    }

    #[test]
    fn kubernetes_override_rules() {
        let img = image();
        let argv = |c: &Container| resolve(c, Some(&img), &files).unwrap().argv;
        assert_eq!(argv(&container(&[], &[])), ["/bin/ep", "c1", "c2"]);
        assert_eq!(argv(&container(&[], &["a"])), ["/bin/ep", "a"]);
        assert_eq!(argv(&container(&["/x"], &[])), ["/x"]);
        assert_eq!(argv(&container(&["/x"], &["a"])), ["/x", "a"]);
        let p = resolve(&container(&[], &[]), Some(&img), &files).unwrap();
        assert_eq!(
            p.env,
            [
                ("PATH".to_string(), "/bin".to_string()),
                ("HOME".into(), "/home/app".into()),
                ("A".into(), "1".into()),
                ("B".into(), "pod".into()),
            ]
        );
        assert_eq!((p.uid, p.gid, p.cwd.as_str()), (1000, 50, "/srv"));
        let mut c = container(&[], &[]);
        c.working_dir = Some("/tmp".into());
        assert_eq!(resolve(&c, Some(&img), &files).unwrap().cwd, "/tmp");
    }

    #[test]
    fn users_by_number_and_name() {
        let mut img = image();
        let uid_gid = |img: &ImageConfig| {
            let p = resolve(&container(&[], &[]), Some(img), &files).unwrap();
            (p.uid, p.gid)
        };
        img.user = Some("1000".into());
        assert_eq!(uid_gid(&img), (1000, 1000));
        img.user = Some("4242:7".into());
        assert_eq!(uid_gid(&img), (4242, 7));
        img.user = None;
        assert_eq!(uid_gid(&img), (0, 0));
        img.user = Some("nobody".into());
        assert!(matches!(
            resolve(&container(&[], &[]), Some(&img), &files),
            Err(ResolveError::User { .. })
        ));
        img.user = Some("app:wheel".into());
        assert!(matches!(
            resolve(&container(&[], &[]), Some(&img), &files),
            Err(ResolveError::Group { .. })
        ));
    }

    #[test]
    fn refusals() {
        let empty = ImageConfig::default();
        assert_eq!(
            resolve(&container(&[], &[]), Some(&empty), &files),
            Err(ResolveError::NoCommand("web".into()))
        );
        let mut img = image();
        img.env.push("NOEQUALS".into());
        assert!(matches!(
            resolve(&container(&[], &[]), Some(&img), &files),
            Err(ResolveError::Env { .. })
        ));
        let mut img = image();
        img.working_dir = Some("rel".into());
        assert!(matches!(
            resolve(&container(&[], &[]), Some(&img), &files),
            Err(ResolveError::WorkingDir { .. })
        ));
    }

    #[test]
    fn segment_places_root_and_record() {
        let rec = ContainerImage {
            container: "web".into(),
            reference: "r".into(),
            manifest: "sha256:m".into(),
            config_digest: "sha256:c".into(),
            config: image(),
        };
        let root = [Member {
            path: "bin/sh".into(),
            perm: 0o755,
            uid: 0,
            gid: 0,
            mtime: 1,
            kind: cpio::Kind::File(b"x".to_vec()),
            links: vec!["bin/ash".into()],
        }];
        let seg = container_segment(&rec, &root).unwrap();
        assert_eq!(seg, container_segment(&rec, &root).unwrap());
        let paths: Vec<String> = cpio::read(&seg)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        for p in [
            "etc/jek/containers/web.json",
            "run/containers/web",
            "run/containers/web/bin/sh",
            "run/containers/web/bin/ash",
        ] {
            assert!(paths.iter().any(|x| x == p), "{p}: {paths:?}");
        }
    }
}
