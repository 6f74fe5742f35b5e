//! containerd's rootfs mounts (an overlay of the snapshot's layers, or a bind mount of
//! the native snapshotter's directory), mounted read-only for as long as the shim reads
//! the tree.
//!
//! Written here rather than taken from containerd-shim's `mount_rootfs`, which forks the
//! multi-threaded shim and waits for the child through its SIGCHLD reaper, which jek
//! turns off (jek waits for its own children: swtpm_setup, swtpm, QEMU).

use std::ffi::CString;
use std::path::Path;

use rustix::mount::MountFlags;

/// Why a mount cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// An option holds a NUL byte.
    #[error("mount option {0:?} holds a NUL byte")]
    Nul(String),
    /// The kernel refused it.
    #[error("mount -t {fs_type} {from} (options {options}): {err}")]
    Mount {
        /// The file system type.
        fs_type: String,
        /// The source.
        from: String,
        /// The options as containerd gave them.
        options: String,
        /// Why.
        err: std::io::Error,
    },
}

/// A mount option: a flag, a flag cleared, or file-system data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt<'a> {
    Set(MountFlags),
    Clear(MountFlags),
    Data(&'a str),
}

fn option(o: &str) -> Opt<'_> {
    match o {
        "ro" => Opt::Set(MountFlags::RDONLY),
        "rw" => Opt::Clear(MountFlags::RDONLY),
        "bind" => Opt::Set(MountFlags::BIND),
        "rbind" => Opt::Set(MountFlags::BIND.union(MountFlags::REC)),
        "nosuid" => Opt::Set(MountFlags::NOSUID),
        "suid" => Opt::Clear(MountFlags::NOSUID),
        "nodev" => Opt::Set(MountFlags::NODEV),
        "dev" => Opt::Clear(MountFlags::NODEV),
        "noexec" => Opt::Set(MountFlags::NOEXEC),
        "exec" => Opt::Clear(MountFlags::NOEXEC),
        "noatime" => Opt::Set(MountFlags::NOATIME),
        "relatime" => Opt::Set(MountFlags::RELATIME),
        "defaults" => Opt::Set(MountFlags::empty()),
        data => Opt::Data(data),
    }
}

/// The flags and the data string of containerd's `options`, always read-only, no
/// devices, no set-uid and no execution: the host only reads the tree.
fn flags_and_data(options: &[String]) -> (MountFlags, String) {
    let mut flags = MountFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match option(o) {
            Opt::Set(f) => flags |= f,
            Opt::Clear(f) => flags &= !f,
            Opt::Data(d) => data.push(d),
        }
    }
    flags |= MountFlags::RDONLY | MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC;
    (flags, data.join(","))
}

/// Mounts one of containerd's rootfs mounts at `target`.
pub fn mount(
    fs_type: &str,
    source: &str,
    options: &[String],
    target: &Path,
) -> Result<(), MountError> {
    let (flags, data) = flags_and_data(options);
    let err = |err: std::io::Error| MountError::Mount {
        fs_type: fs_type.to_string(),
        from: source.to_string(),
        options: options.join(","),
        err,
    };
    if flags.contains(MountFlags::BIND) {
        let bind = if flags.contains(MountFlags::REC) {
            rustix::mount::mount_bind_recursive(source, target)
        } else {
            rustix::mount::mount_bind(source, target)
        };
        bind.map_err(|e| err(e.into()))?;
        // A bind mount takes its flags only when remounted.
        return rustix::mount::mount_remount(target, flags, "").map_err(|e| err(e.into()));
    }
    let data = CString::new(data)
        .map_err(|e| MountError::Nul(String::from_utf8_lossy(&e.into_vec()).into_owned()))?;
    rustix::mount::mount(source, target, fs_type, flags, Some(data.as_c_str()))
        .map_err(|e| err(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_read_only_flags_and_data() {
        let opts: Vec<String> = [
            "index=off",
            "rw",
            "lowerdir=/a:/b",
            "upperdir=/u",
            "workdir=/w",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (flags, data) = flags_and_data(&opts);
        assert!(flags.contains(MountFlags::RDONLY), "rw is overridden");
        assert!(flags.contains(MountFlags::NOEXEC | MountFlags::NODEV | MountFlags::NOSUID));
        assert_eq!(data, "index=off,lowerdir=/a:/b,upperdir=/u,workdir=/w");
        let (flags, data) = flags_and_data(&["rbind".to_string(), "rw".to_string()]);
        assert!(flags.contains(MountFlags::BIND | MountFlags::REC));
        assert_eq!(data, "");
    }
}
