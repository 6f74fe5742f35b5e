//! jek as QEMU's pre-boot hook: QEMU gets the verified bytes as sealed memfds and the
//! pod's measured swtpm as its TPM.
//!
//! The memfds are written once, then sealed (`F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK |
//! F_SEAL_SEAL`): nobody, not even jek, can change them afterwards, and QEMU opens them as
//! `/proc/self/fd/N` (inherited across exec, closed in jek right after the spawn). No path
//! on disk is ever read by the VMM, so swapping files after verification changes nothing.
//!
//! The machine is `-M pc` with qboot (`bios-microvm.bin`) as firmware: no SeaBIOS, so
//! nothing measures into or resets the TPM behind jek's back, and QEMU's ACPI tables still
//! describe the TPM (`MSFT0101`, TPM2 table) for the guest's `tpm_tis` driver.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};

use crate::console::{pump, ConsoleOutcome};
use crate::run_dir::RunDir;
use crate::tpm_proxy::CtrlProxy;
use jek_measure::payload::Payload;

/// How to run QEMU.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// The `qemu-system-x86_64` binary.
    pub program: PathBuf,
    /// Firmware: qboot, which does not touch the TPM.
    pub firmware: PathBuf,
    /// `-accel`: `tcg` works everywhere; `kvm` on hosts with hardware virtualization.
    pub accel: String,
}

impl Default for QemuOptions {
    fn default() -> Self {
        QemuOptions {
            program: PathBuf::from("qemu-system-x86_64"),
            firmware: PathBuf::from("/usr/share/qemu/bios-microvm.bin"),
            accel: "tcg".into(),
        }
    }
}

/// Why the QEMU backend failed.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// A memfd could not be created, written or sealed.
    #[error("cannot hand the {what} to QEMU as a sealed memfd")]
    Memfd {
        /// Which component.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The firmware file is missing.
    #[error(
        "QEMU firmware {0} not found: install qemu-system-x86 (it ships qboot as bios-microvm.bin)"
    )]
    Firmware(PathBuf),
    /// The TPM control proxy could not start or failed.
    #[error("TPM control proxy on {socket}")]
    Proxy {
        /// Its socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU could not be started.
    #[error("cannot run {program}: install qemu-system-x86")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Console or log I/O failed.
    #[error("console of the pod ({path})")]
    Console {
        /// The console log.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU failed (not the guest: QEMU itself).
    #[error("QEMU exited with {status}: {stderr}")]
    Failed {
        /// Exit status.
        status: std::process::ExitStatus,
        /// The end of its error output.
        stderr: String,
    },
}

/// A memfd holding `bytes`, sealed against any change.
pub fn sealed_memfd(name: &str, bytes: &[u8]) -> std::io::Result<OwnedFd> {
    // No MFD_CLOEXEC: the VMM inherits it. jek closes its copy right after the spawn.
    let fd = memfd_create(name, MemfdFlags::ALLOW_SEALING)?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, bytes)?;
    let fd = OwnedFd::from(file);
    fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    Ok(fd)
}

fn proc_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// QEMU's own confinement: its seccomp sandbox (no obsolete system calls, no spawning, no
/// scheduler or resource changes; and, unless it must drop to another user, no set*id),
/// and, when jek runs as root, `-runas nobody` (QEMU drops after opening the kernel
/// memfds and connecting the TPM socket). Debian 12's QEMU 7.2 has `-runas`, not yet
/// `-run-with user=`.
pub fn confinement_args(root: bool) -> &'static [&'static str] {
    if root {
        &[
            "-sandbox",
            "on,obsolete=deny,spawn=deny,resourcecontrol=deny",
            "-runas",
            "nobody",
        ]
    } else {
        &[
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ]
    }
}

/// The QEMU command line for a payload (without spawning it).
pub fn command(
    opts: &QemuOptions,
    kernel: &str,
    initrd: &str,
    cmdline: &str,
    memory_mib: u32,
    vcpus: u8,
    tpm_socket: Option<&Path>,
) -> Command {
    let mut cmd = Command::new(&opts.program);
    cmd.args(["-M", "pc", "-accel", &opts.accel, "-bios"])
        .arg(&opts.firmware)
        .args(["-m", &memory_mib.to_string(), "-smp", &vcpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio", "-kernel", kernel, "-initrd", initrd])
        .args(["-append", cmdline])
        .args(confinement_args(rustix::process::geteuid().is_root()));
    if let Some(sock) = tpm_socket {
        cmd.arg("-chardev")
            .arg(format!("socket,id=jektpm,path={}", sock.display()))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=jektpm"])
            .args(["-device", "tpm-tis,tpmdev=tpm0"]);
    }
    cmd
}

/// Boots `payload` under QEMU and returns what the console showed. `tpm` is the pod's
/// swtpm (measured already), attached as the guest's TPM through the proxy.
pub fn run(
    payload: &Payload<'_>,
    run: &RunDir,
    boot: &crate::boot::BootOptions,
    tpm: Option<&jek_tpm::swtpm::Sockets>,
) -> Result<ConsoleOutcome, QemuError> {
    let (opts, memory_mib, vcpus, quiet) = (&boot.qemu, boot.memory_mib, boot.vcpus, boot.quiet);
    let cleanup = &boot.cleanup;
    if !opts.firmware.is_file() {
        return Err(QemuError::Firmware(opts.firmware.clone()));
    }
    let memfd = |what, bytes: &[u8]| {
        sealed_memfd(&format!("jek-{what}"), bytes)
            .map_err(|source| QemuError::Memfd { what, source })
    };
    let kernel = memfd("kernel", payload.kernel)?;
    let initrd = memfd("initramfs", &payload.initramfs)?;
    let proxy = match tpm {
        Some(sockets) => {
            let socket = run.tpm_ctrl_socket();
            Some(
                CtrlProxy::start(&socket, sockets)
                    .map_err(|source| QemuError::Proxy { socket, source })?,
            )
        }
        None => None,
    };
    let stderr_path = run.root().join("qemu.log");
    let console_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| QemuError::Console { path, source }
    };
    let stderr = std::fs::File::create(&stderr_path).map_err(console_err(&stderr_path))?;
    let mut cmd = command(
        opts,
        &proc_path(&kernel),
        &proc_path(&initrd),
        payload.cmdline,
        memory_mib,
        vcpus,
        proxy.as_ref().map(CtrlProxy::socket),
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr));
    tracing::debug!(?cmd, "starting QEMU");
    let mut child = cmd.spawn().map_err(|source| QemuError::Spawn {
        program: opts.program.clone(),
        source,
    })?;
    let token = cleanup.track(child.id(), None);
    drop((kernel, initrd));
    let console_path = run.console();
    let log = std::fs::File::create(&console_path).map_err(console_err(&console_path))?;
    let outcome = match child.stdout.take() {
        Some(out) => {
            pump(out, log, quiet, boot.console.clone()).map_err(console_err(&console_path))?
        }
        None => ConsoleOutcome::default(),
    };
    let status = child.wait().map_err(console_err(&console_path));
    cleanup.forget(token);
    let status = status?;
    if let Some(p) = proxy {
        let socket = p.socket().to_path_buf();
        p.finish()
            .map_err(|source| QemuError::Proxy { socket, source })?;
    }
    if !status.success() {
        let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        return Err(QemuError::Failed {
            status,
            stderr: text.lines().last().unwrap_or("(no output)").to_string(),
        });
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_is_sandboxed_and_drops_root() {
        let user = confinement_args(false);
        assert_eq!(user[0], "-sandbox");
        assert!(user[1].starts_with("on,") && user[1].contains("elevateprivileges=deny"));
        assert!(!user.contains(&"-runas"));
        let root = confinement_args(true);
        assert!(root[1].starts_with("on,") && root[1].contains("spawn=deny"));
        assert_eq!(&root[2..], ["-runas", "nobody"]);
        let cmd = command(
            &QemuOptions::default(),
            "/proc/self/fd/3",
            "/proc/self/fd/4",
            "console=ttyS0",
            256,
            1,
            None,
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            args.windows(2)
                .any(|w| w[0] == "-sandbox" && w[1].starts_with("on,")),
            "{args:?}"
        );
    }
}
