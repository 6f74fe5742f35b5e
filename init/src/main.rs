//! # jek-init: PID 1 of a pod
//!
//! The guest side of jek. Built as a static binary and placed at `/init` in the bundle's
//! initramfs. It mounts the pseudo file systems, brings up the loopback interface, sets the
//! host name to the pod's name, prints one machine-readable ready line, runs the pod's
//! containers at once (an image's in its own root, see [`container`]) with each output
//! line prefixed by the container's name, reaps every zombie, prints each exit status and
//! powers the VM off. It never hangs silently: every failure is printed and followed by
//! power-off. A pod sandbox's init (`agent` in the pod spec) stays up instead and serves
//! the host's agent channel ([`agent`]) until the host shuts the pod down.
//!
//! What it reads (the pod spec) and what it prints (the console protocol) are defined in
//! `jek-pod`, which the host side uses too.
#![forbid(unsafe_code)]

mod agent;
mod container;
mod netlink;
mod unpack;

use std::io::{Read as _, Write as _};

use jek_pod::console::{ConsoleLine, ContainerExit, InitError, PowerOff, Ready};
use jek_pod::spec::{PodSpec, APP_SPEC_PATH, POD_SPEC_PATH};
use nix::mount::{mount, MsFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// A failed start-up step.
struct Failure {
    stage: String,
    error: String,
}

fn fail(stage: impl Into<String>, error: impl std::fmt::Display) -> Failure {
    Failure {
        stage: stage.into(),
        error: error.to_string(),
    }
}

/// Writes one console line in a single write, so kernel messages cannot split it.
fn line(l: ConsoleLine) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(l.encode().as_bytes());
    let _ = out.flush();
}

fn exit_line(container: &str, status: i32) {
    line(ConsoleLine::Exit(ContainerExit {
        container: container.to_string(),
        status,
    }));
}

fn error_line(stage: String, error: String) {
    line(ConsoleLine::Error(InitError { stage, error }));
}

fn mount_fs(fstype: &str, target: &str, flags: MsFlags, data: Option<&str>) -> Result<(), Failure> {
    let stage = format!("mount {fstype} on {target}");
    std::fs::create_dir_all(target).map_err(|e| fail(&stage, e))?;
    match mount(Some(fstype), target, Some(fstype), flags, data) {
        Ok(()) => Ok(()),
        // Already mounted (CONFIG_DEVTMPFS_MOUNT, or a VMM that pre-mounts): fine.
        Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(fail(stage, e)),
    }
}

fn loopback() -> Result<(), Failure> {
    netlink::set_link_up(1).map_err(|e| fail("loopback up", e))?;
    // Prove 127.0.0.1 is reachable: connect to our own listener and echo one byte.
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| fail("loopback listen", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| fail("loopback listen", e))?;
    let mut client = std::net::TcpStream::connect(addr).map_err(|e| fail("loopback connect", e))?;
    let (mut server, _) = listener.accept().map_err(|e| fail("loopback accept", e))?;
    client
        .write_all(b"j")
        .map_err(|e| fail("loopback write", e))?;
    let mut b = [0u8; 1];
    server
        .read_exact(&mut b)
        .map_err(|e| fail("loopback read", e))?;
    Ok(())
}

fn read_spec() -> Result<PodSpec, Failure> {
    let (path, bytes) = match std::fs::read(POD_SPEC_PATH) {
        Ok(b) => (POD_SPEC_PATH, b),
        Err(_) => (
            APP_SPEC_PATH,
            std::fs::read(APP_SPEC_PATH).map_err(|e| fail(format!("read {APP_SPEC_PATH}"), e))?,
        ),
    };
    PodSpec::from_json(&bytes).map_err(|e| fail(format!("parse {path}"), e))
}

fn status_code(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn run() -> Result<i32, Failure> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount_fs("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755"))?;
    mount_fs("proc", "/proc", nosuid | MsFlags::MS_NODEV, None)?;
    mount_fs("sysfs", "/sys", nosuid | MsFlags::MS_NODEV, None)?;
    // /run stays the initramfs's own: the container roots were unpacked into it.
    std::fs::create_dir_all("/run").map_err(|e| fail("create /run", e))?;
    mount_fs(
        "tmpfs",
        "/tmp",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    loopback()?;
    let spec = read_spec()?;
    nix::unistd::sethostname(spec.hostname()).map_err(|e| fail("sethostname", e))?;
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| fail("uname", e))?;
    line(ConsoleLine::Ready(Ready {
        pod: spec.name.clone(),
        kernel: kernel.clone(),
        loopback: "ok".into(),
        containers: spec.containers.len(),
    }));

    if spec.agent {
        // A pod sandbox: up until the host shuts it down, whatever its containers do.
        return agent::serve(&spec, &kernel);
    }
    let mut running: Vec<container::Running> = Vec::new();
    let mut overall = 0;
    for c in &spec.containers {
        match container::start(c, &container::OutputSink::Console) {
            Ok(r) => running.push(r),
            Err(e) => {
                error_line(format!("start container {}", c.name), e);
                exit_line(&c.name, 127);
                overall = if overall == 0 { 127 } else { overall };
            }
        }
    }
    // Reap every child (orphans re-parented to PID 1 included) until the containers are done.
    while !running.is_empty() {
        let ws = match waitpid(Pid::from_raw(-1), None) {
            Ok(ws) => ws,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(fail("waitpid", e)),
        };
        let (Some(pid), Some(code)) = (ws.pid(), status_code(ws)) else {
            continue;
        };
        if let Some(i) = running
            .iter()
            .position(|r| r.child.id() == pid.as_raw().unsigned_abs())
        {
            let r = running.swap_remove(i);
            // Its output first (both pipes at end of file), unless a process it left
            // behind keeps them open.
            for _ in 0..2 {
                if r.done
                    .recv_timeout(std::time::Duration::from_secs(2))
                    .is_err()
                {
                    break;
                }
            }
            exit_line(&r.name, code);
            if overall == 0 {
                overall = code;
            }
        }
    }
    Ok(overall)
}

/// Where the kernel shows the VMM's ACPI tables: their FADT is what ACPI power-off uses.
const ACPI_FADT: &str = "/sys/firmware/acpi/tables/FACP";

fn power_off() -> ! {
    nix::unistd::sync();
    // A VMM that describes the machine in ACPI (QEMU -M pc and -M microvm, Cloud
    // Hypervisor) is powered off through it (S5), which every such VMM treats as the end of
    // the VM. Without ACPI (jek's KVM loader, Firecracker), `reboot=k` resets through the
    // i8042 controller (port 0x64, 0xFE), which those VMMs treat as the end instead.
    // The reset is not used where ACPI is there: -M microvm has no i8042, so the kernel's
    // fallback, a jump back into the firmware, booted the pod a second time behind QEMU's
    // -no-reboot (docs/benchmarks.md, "Boot reliability").
    let how = if std::path::Path::new(ACPI_FADT).exists() {
        nix::sys::reboot::RebootMode::RB_POWER_OFF
    } else {
        nix::sys::reboot::RebootMode::RB_AUTOBOOT
    };
    let _ = nix::sys::reboot::reboot(how);
    // Not PID 1 or not permitted: there is nothing else to do.
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(container::EXEC_ARG) {
        container::exec_helper(&args[2..]);
    }
    let status = match std::panic::catch_unwind(run) {
        Ok(Ok(code)) => code,
        Ok(Err(f)) => {
            error_line(f.stage, f.error);
            255
        }
        Err(_) => {
            error_line("init".into(), "panic".into());
            254
        }
    };
    line(ConsoleLine::PowerOff(PowerOff { status }));
    if std::process::id() == 1 {
        power_off();
    }
    std::process::exit(status.clamp(0, 255));
}
