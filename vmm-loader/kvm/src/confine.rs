//! Confinement of the vCPU thread: the thread that runs guest code and emulates its
//! devices (the 16550 and the i8042 live in the same loop) is the one a guest exploit
//! would land in. Before it enters `KVM_RUN` for the first time, after every file it needs
//! is open (`/dev/kvm`, the VM and vCPU fds, the console pipe, the irqfd) and guest memory
//! is mapped:
//!
//! 1. if the process runs as root, the thread drops to an unprivileged user (by default
//!    `nobody`, 65534:65534) with no supplementary groups: per-thread credentials, set with
//!    the raw `setresuid`/`setresgid` system calls, so the loader's other threads keep
//!    theirs;
//! 2. it installs a seccomp filter ([`vcpu_filter`], built with rust-vmm's seccompiler):
//!    only the system calls the vCPU loop makes are allowed, `ioctl` only with KVM's
//!    request type (`0xAE`), and anything else kills the whole process (`SIGSYS`).
//!
//! The allow-list, and how it compares with Firecracker's jailer, is in `docs/design.md`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// The user and group an unprivileged vCPU thread runs as when jek was started as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// User ID.
    pub uid: u32,
    /// Group ID.
    pub gid: u32,
}

/// `nobody:nogroup` on Debian.
pub const NOBODY: RunAs = RunAs {
    uid: 65534,
    gid: 65534,
};

/// Whom the vCPU thread should run as: [`NOBODY`] when the process is root, else nobody
/// to drop to (`None`).
pub fn default_run_as() -> Option<RunAs> {
    rustix::process::geteuid().is_root().then_some(NOBODY)
}

/// Why the vCPU thread could not be confined (the VM does not start unconfined).
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// Building the filter failed (a bug: the rules are constants).
    #[error("cannot build the vCPU seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    /// Compiling the filter to BPF failed.
    #[error("cannot compile the vCPU seccomp filter")]
    Compile(#[source] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("cannot install the vCPU seccomp filter")]
    Apply(#[source] seccompiler::Error),
    /// Dropping to the unprivileged user failed.
    #[error("cannot drop the vCPU thread to uid {uid} gid {gid}")]
    Drop {
        /// Target user.
        uid: u32,
        /// Target group.
        gid: u32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The Linux ioctl request type of KVM (`KVMIO`), in bits 8..16 of every KVM request.
const KVMIO: u64 = 0xAE;

/// The system calls the vCPU loop makes, by name, with why each is needed.
pub const ALLOWED: &[(&str, i64, &str)] = &[
    (
        "ioctl",
        libc::SYS_ioctl,
        "KVM_RUN and the KVM_GET_* of an exit report (request type 0xAE only)",
    ),
    (
        "write",
        libc::SYS_write,
        "console bytes to the pipe, the serial irqfd, log lines to stderr",
    ),
    ("writev", libc::SYS_writev, "log lines to stderr"),
    ("read", libc::SYS_read, "the irqfd's counter"),
    (
        "futex",
        libc::SYS_futex,
        "locks (stderr, allocator) and the thread's join",
    ),
    ("mmap", libc::SYS_mmap, "the allocator"),
    (
        "munmap",
        libc::SYS_munmap,
        "the allocator, the thread's stack at exit",
    ),
    ("mremap", libc::SYS_mremap, "the allocator"),
    (
        "madvise",
        libc::SYS_madvise,
        "the allocator, the thread's stack at exit",
    ),
    ("brk", libc::SYS_brk, "the allocator"),
    (
        "rt_sigprocmask",
        libc::SYS_rt_sigprocmask,
        "signal masks around thread exit",
    ),
    (
        "rt_sigreturn",
        libc::SYS_rt_sigreturn,
        "return from the handler of a signal that interrupts KVM_RUN",
    ),
    (
        "sigaltstack",
        libc::SYS_sigaltstack,
        "the thread's alternate signal stack at exit",
    ),
    ("sched_yield", libc::SYS_sched_yield, "spinning locks"),
    (
        "clock_gettime",
        libc::SYS_clock_gettime,
        "timestamps when the vDSO is unavailable",
    ),
    (
        "close",
        libc::SYS_close,
        "fds dropped by the loop (none today; harmless)",
    ),
    ("exit", libc::SYS_exit, "the thread's end"),
    ("exit_group", libc::SYS_exit_group, "a panic's abort"),
];

/// The vCPU thread's seccomp filter: [`ALLOWED`], `ioctl` restricted to KVM requests,
/// everything else kills the process.
pub fn vcpu_filter() -> Result<BpfProgram, ConfineError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &(_, nr, _) in ALLOWED {
        let rule = if nr == libc::SYS_ioctl {
            let kvm_request = SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(0xff00),
                KVMIO << 8,
            )
            .map_err(ConfineError::Build)?;
            vec![SeccompRule::new(vec![kvm_request]).map_err(ConfineError::Build)?]
        } else {
            Vec::new()
        };
        rules.insert(nr, rule);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        std::env::consts::ARCH
            .try_into()
            .map_err(ConfineError::Build)?,
    )
    .map_err(ConfineError::Build)?;
    filter.try_into().map_err(ConfineError::Compile)
}

/// Confines the calling thread: drops to `run_as` (if given) and installs the vCPU
/// filter. Irreversible for this thread.
pub fn confine_this_thread(run_as: Option<RunAs>) -> Result<(), ConfineError> {
    let filter = vcpu_filter()?;
    if let Some(RunAs { uid, gid }) = run_as {
        let err = |source: rustix::io::Errno| ConfineError::Drop {
            uid,
            gid,
            source: source.into(),
        };
        // Groups first, then the group, then the user: after setresuid nothing else can
        // be changed.
        let (g, u) = (
            rustix::process::Gid::from_raw(gid),
            rustix::process::Uid::from_raw(uid),
        );
        rustix::thread::set_thread_groups(&[]).map_err(err)?;
        rustix::thread::set_thread_res_gid(g, g, g).map_err(err)?;
        rustix::thread::set_thread_res_uid(u, u, u).map_err(err)?;
    }
    seccompiler::apply_filter(&filter).map_err(ConfineError::Apply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_and_lists_each_call_once() {
        let mut names: Vec<&str> = ALLOWED.iter().map(|(n, _, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALLOWED.len());
        assert!(!vcpu_filter().unwrap_or_default().is_empty());
        assert!(!names.contains(&"openat") && !names.contains(&"execve"));
    }
}
