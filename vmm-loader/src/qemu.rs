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
use crate::start::VmStart;
use crate::tpm_proxy::CtrlProxy;

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
    /// No user of its own for the pod's QEMU.
    #[error("no user for the pod's QEMU")]
    User(#[source] crate::pod_user::PodUserError),
    /// QEMU could not be started.
    #[error("cannot run {program} through setpriv: install qemu-system-x86 and util-linux")]
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
    /// The agent channel of a pod sandbox could not be set up, or QEMU never connected.
    #[error("the pod's agent channel on {socket}")]
    Agent {
        /// Its socket.
        socket: PathBuf,
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

/// QEMU's own confinement: its seccomp sandbox (no obsolete system calls, no set*id, no
/// spawning, no scheduler or resource changes). QEMU never changes users itself: when jek
/// runs as root, `setpriv` starts it as the pod's own user ([`launcher`]).
pub const SANDBOX_ARGS: [&str; 2] = [
    "-sandbox",
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
];

/// util-linux's `setpriv`, which starts QEMU: as the pod's user `uid:uid` with no
/// supplementary groups (but `/dev/kvm`'s group when `kvm_group` is given), with no new
/// privileges, and with SIGKILL as its parent-death signal, so the VMM dies with the
/// thread that started it (the shim or `jek boot`), even on SIGKILL. setpriv sets the
/// parent-death signal after it changes users (a change of user clears it, which is why
/// QEMU's own `-runas` could not be used) and then runs QEMU in its place.
pub fn launcher(user: Option<u32>, kvm_group: Option<u32>) -> Command {
    let mut cmd = Command::new("setpriv");
    if let Some(uid) = user {
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"));
        match kvm_group {
            Some(gid) => cmd.arg(format!("--groups={gid}")),
            None => cmd.arg("--clear-groups"),
        };
    }
    cmd.args(["--no-new-privs", "--pdeathsig=KILL", "--"]);
    cmd
}

/// The group of `/dev/kvm`, which QEMU needs as a supplementary group to open it once it
/// runs as a pod's user (`-accel kvm`).
fn kvm_group(accel: &str) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    (accel == "kvm")
        .then(|| std::fs::metadata("/dev/kvm").ok())
        .flatten()
        .map(|m| m.gid())
}

/// A value inside a QEMU option list: QEMU's syntax doubles a comma inside a value.
fn option_value(v: &str) -> String {
    v.replace(',', ",,")
}

/// What one QEMU process is given.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// The kernel (`/proc/self/fd/N` of a sealed memfd).
    pub kernel: &'a str,
    /// The initramfs, likewise.
    pub initrd: &'a str,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u8,
    /// The TPM control socket QEMU connects to.
    pub tpm_socket: Option<&'a Path>,
    /// The agent channel's socket QEMU connects to (a pod sandbox).
    pub agent_socket: Option<&'a Path>,
    /// The pod's own uid, when jek runs as root.
    pub user: Option<u32>,
    /// The pod's run directory: QEMU's `-name`, so `ps` tells which pod a QEMU is.
    pub run_dir: &'a Path,
}

/// The QEMU command line for a payload (without spawning it), behind [`launcher`].
pub fn command(opts: &QemuOptions, l: &Launch<'_>) -> Command {
    let mut cmd = launcher(l.user, l.user.and_then(|_| kvm_group(&opts.accel)));
    let name = format!(
        "guest=jek:{}",
        option_value(&l.run_dir.display().to_string())
    );
    cmd.arg(&opts.program)
        .args(["-name", &name])
        .args(["-M", "pc", "-accel", &opts.accel, "-bios"])
        .arg(&opts.firmware)
        .args([
            "-m",
            &l.memory_mib.to_string(),
            "-smp",
            &l.vcpus.to_string(),
        ])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio", "-kernel", l.kernel, "-initrd", l.initrd])
        .args(["-append", l.cmdline])
        .args(SANDBOX_ARGS);
    if let Some(sock) = l.tpm_socket {
        cmd.arg("-chardev")
            .arg(format!(
                "socket,id=jektpm,path={}",
                option_value(&sock.display().to_string())
            ))
            .args(["-tpmdev", "emulator,id=tpm0,chardev=jektpm"])
            .args(["-device", "tpm-tis,tpmdev=tpm0"]);
    }
    if let Some(sock) = l.agent_socket {
        cmd.args(["-device", "virtio-serial-pci,id=jekserial"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=jekagent,path={}",
                option_value(&sock.display().to_string())
            ))
            .arg("-device")
            .arg(format!(
                "virtserialport,bus=jekserial.0,chardev=jekagent,name={}",
                jek_pod::agent::PORT_NAME
            ));
    }
    cmd
}

/// Where the host listens for QEMU's end of a pod sandbox's agent channel: a directory
/// only the pod's VMM user (and root) can enter, like the TPM's control socket.
struct AgentListener {
    listener: std::os::unix::net::UnixListener,
    socket: PathBuf,
    // Without a pod user: a private directory of the invoking user's, removed with this.
    _dir: Option<tempfile::TempDir>,
}

impl AgentListener {
    fn bind(private: Option<&Path>, uid: Option<u32>) -> Result<Self, QemuError> {
        let dir = match private {
            Some(_) => None,
            None => Some(
                tempfile::Builder::new()
                    .prefix("jek-agent-")
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                    .tempdir()
                    .map_err(|source| QemuError::Agent {
                        socket: std::env::temp_dir(),
                        source,
                    })?,
            ),
        };
        let socket = private
            .or(dir.as_ref().map(tempfile::TempDir::path))
            .unwrap_or(Path::new("."))
            .join("agent.sock");
        let err = |source| QemuError::Agent {
            socket: socket.clone(),
            source,
        };
        let listener = std::os::unix::net::UnixListener::bind(&socket).map_err(err)?;
        if let Some(uid) = uid {
            std::os::unix::fs::chown(&socket, Some(uid), Some(uid)).map_err(err)?;
        }
        listener.set_nonblocking(true).map_err(err)?;
        Ok(AgentListener {
            listener,
            socket,
            _dir: dir,
        })
    }

    /// QEMU's connection: it connects while it starts, before the guest runs. Gives up
    /// when QEMU has exited, or after [`AGENT_CONNECT_TIMEOUT`].
    fn accept(
        &self,
        qemu: &mut std::process::Child,
    ) -> Result<std::os::unix::net::UnixStream, QemuError> {
        let err = |source| QemuError::Agent {
            socket: self.socket.clone(),
            source,
        };
        let deadline = std::time::Instant::now() + AGENT_CONNECT_TIMEOUT;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).map_err(err)?;
                    let _ = std::fs::remove_file(&self.socket);
                    return Ok(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(err(e)),
            }
            if let Ok(Some(status)) = qemu.try_wait() {
                return Err(err(std::io::Error::other(format!(
                    "QEMU exited ({status}) before it connected"
                ))));
            }
            if std::time::Instant::now() > deadline {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "QEMU did not connect within {} s",
                        AGENT_CONNECT_TIMEOUT.as_secs()
                    ),
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for AgentListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// How long QEMU may take to connect to the agent channel's socket.
pub const AGENT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Boots `vm.payload` under QEMU and returns what the console showed. `vm.tpm` is the
/// pod's swtpm (measured already), attached as the guest's TPM through the proxy;
/// `vm.started` is called once QEMU runs and the proxy serves the TPM's side sockets.
pub fn run(vm: &VmStart<'_>, opts: &QemuOptions) -> Result<ConsoleOutcome, QemuError> {
    let (payload, run, tpm) = (vm.payload, vm.run, vm.tpm);
    let cleanup = &vm.sink.cleanup;
    if !opts.firmware.is_file() {
        return Err(QemuError::Firmware(opts.firmware.clone()));
    }
    let memfd = |what, bytes: &[u8]| {
        sealed_memfd(&format!("jek-{what}"), bytes)
            .map_err(|source| QemuError::Memfd { what, source })
    };
    let kernel = memfd("kernel", payload.kernel)?;
    let initrd = memfd("initramfs", &payload.initramfs)?;
    // The pod's own user while QEMU runs (when jek is root): leased before QEMU starts,
    // released when this function returns, after QEMU is gone.
    let user = vm.users.lease(run.root()).map_err(QemuError::User)?;
    let uid = user.as_ref().map(crate::pod_user::PodUser::uid);
    // QEMU connects to its sockets after it became the pod's user: they live in a
    // directory only that user (and root) can enter, and belong to it.
    let private = match &user {
        Some(u) => Some(u.private_dir().map_err(QemuError::User)?),
        None => None,
    };
    let proxy = match tpm {
        Some(sockets) => {
            // Without a pod user, beside the swtpm's own sockets (a short mkdtemp
            // directory, mode 0700): never under the run directory, whose path may exceed
            // SUN_LEN.
            let socket = match &private {
                Some(dir) => dir.join("tpm-ctrl.sock"),
                None => crate::tpm_proxy::vmm_socket(sockets),
            };
            let proxy = CtrlProxy::start(&socket, sockets).map_err(|source| QemuError::Proxy {
                socket: socket.clone(),
                source,
            })?;
            if let Some(uid) = uid {
                std::os::unix::fs::chown(&socket, Some(uid), Some(uid))
                    .map_err(|source| QemuError::Proxy { socket, source })?;
            }
            Some(proxy)
        }
        None => None,
    };
    let agent = if vm.agent {
        Some(AgentListener::bind(private.as_deref(), uid)?)
    } else {
        None
    };
    let stderr_path = run.root().join("qemu.log");
    let console_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| QemuError::Console { path, source }
    };
    let stderr = std::fs::File::create(&stderr_path).map_err(console_err(&stderr_path))?;
    let run_dir = std::path::absolute(run.root()).unwrap_or_else(|_| run.root().to_path_buf());
    let mut cmd = command(
        opts,
        &Launch {
            kernel: &proc_path(&kernel),
            initrd: &proc_path(&initrd),
            cmdline: payload.cmdline,
            memory_mib: vm.machine.memory_mib,
            vcpus: vm.machine.vcpus,
            tpm_socket: proxy.as_ref().map(CtrlProxy::socket),
            agent_socket: agent.as_ref().map(|a| a.socket.as_path()),
            user: uid,
            run_dir: &run_dir,
        },
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr));
    tracing::debug!(?cmd, "starting QEMU");
    let mut child = cmd.spawn().map_err(|source| QemuError::Spawn {
        program: opts.program.clone(),
        source,
    })?;
    tracing::info!(pid = child.id(), uid, "QEMU started");
    let token = cleanup.track(child.id(), None);
    drop((kernel, initrd));
    let channel = match agent.as_ref().map(|a| a.accept(&mut child)) {
        Some(Ok(stream)) => Some(stream),
        Some(Err(e)) => {
            let _ = child.kill();
            let _ = child.wait();
            cleanup.forget(token);
            return Err(e);
        }
        None => None,
    };
    drop(agent);
    (vm.started)(channel);
    let console_path = run.console();
    let log = std::fs::File::create(&console_path).map_err(console_err(&console_path))?;
    let outcome = match child.stdout.take() {
        Some(out) => pump(out, log, vm.sink.quiet, vm.sink.console.clone())
            .map_err(console_err(&console_path))?,
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
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn qemu_is_sandboxed_and_started_as_the_pods_user() {
        let args = |user| -> Vec<String> {
            command(
                &QemuOptions::default(),
                &Launch {
                    kernel: "/proc/self/fd/3",
                    initrd: "/proc/self/fd/4",
                    cmdline: "console=ttyS0",
                    memory_mib: 256,
                    vcpus: 1,
                    tpm_socket: None,
                    agent_socket: None,
                    user,
                    run_dir: Path::new("/run/jek/shim/a,b"),
                },
            )
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
        };
        let pod = args(Some(1_879_048_200));
        let qemu = pod.iter().position(|a| a == "qemu-system-x86_64").unwrap();
        assert_eq!(
            &pod[..qemu],
            [
                "--reuid=1879048200",
                "--regid=1879048200",
                "--clear-groups",
                "--no-new-privs",
                "--pdeathsig=KILL",
                "--"
            ]
        );
        assert!(
            pod.windows(2).any(|w| w[0] == "-sandbox"
                && w[1].starts_with("on,")
                && w[1].contains("elevateprivileges=deny")),
            "{pod:?}"
        );
        assert!(!pod.iter().any(|a| a == "-runas"));
        assert!(
            pod.windows(2)
                .any(|w| w[0] == "-name" && w[1] == "guest=jek:/run/jek/shim/a,,b"),
            "{pod:?}"
        );
        // Not root: no user to change to, the parent-death signal all the same.
        let mine = args(None);
        assert_eq!(mine[..3], ["--no-new-privs", "--pdeathsig=KILL", "--"]);
        assert_eq!(mine[3], "qemu-system-x86_64");
        assert!(!mine.iter().any(|a| a.contains("virtserialport")));
    }

    #[test]
    fn a_sandbox_gets_the_agent_port_on_its_socket() {
        let args: Vec<String> = command(
            &QemuOptions::default(),
            &Launch {
                kernel: "k",
                initrd: "i",
                cmdline: "c",
                memory_mib: 256,
                vcpus: 1,
                tpm_socket: None,
                agent_socket: Some(Path::new("/run/jek/pod-uids/7.d/agent,x.sock")),
                user: None,
                run_dir: Path::new("/r"),
            },
        )
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("-device virtio-serial-pci,id=jekserial -chardev socket,id=jekagent,path=/run/jek/pod-uids/7.d/agent,,x.sock -device virtserialport,bus=jekserial.0,chardev=jekagent,name=jek.agent"),
            "{joined}"
        );
    }
}
