//! The KVM backend: the verified payload into jek's own VMM (`jek-kvm`), in this process.

use jek_kvm::VmRun;
use jek_verifier::format::Role;

use crate::console::{pump, ConsoleOutcome};
use crate::error::BootError;
use crate::start::VmStart;

/// The KVM backend's options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvmOptions {
    /// Run even on a host without hardware virtualization (test kernels only: KVM then
    /// emulates the guest and Linux does not reach userspace).
    pub emulated: bool,
}

/// Whether the CPU offers VT-x or AMD-V (the `vmx` or `svm` flag in /proc/cpuinfo).
pub fn hardware_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    })
}

/// Refuses a host the backend cannot boot Linux on, before anything is started.
pub(crate) fn check(opts: &KvmOptions) -> Result<(), BootError> {
    if !opts.emulated && !hardware_virtualization() {
        return Err(BootError::NoHardwareVirtualization);
    }
    Ok(())
}

/// Boots the payload in jek's VMM and returns what the console showed, with the VM's
/// figures. The guest gets no TPM device: the swtpm is the agent's alone from the running
/// moment on.
pub(crate) fn run(vm: &VmStart<'_>) -> Result<(ConsoleOutcome, VmRun), BootError> {
    let run = vm.run;
    // The vCPU thread drops to the pod's own user (when jek is root), leased until the VM
    // is gone.
    let user = vm.users.lease(run.root()).map_err(BootError::User)?;
    let format = match vm.payload.kernel_role {
        Role::Vmlinux => jek_kvm::KernelFormat::Elf,
        _ => jek_kvm::KernelFormat::BzImage,
    };
    let config = jek_kvm::VmConfig {
        kernel: vm.payload.kernel,
        format,
        initramfs: &vm.payload.initramfs,
        cmdline: vm.payload.cmdline,
        memory_mib: vm.machine.memory_mib,
        vcpus: vm.machine.vcpus,
        run_as: user.as_ref().map(|u| jek_kvm::confine::RunAs {
            uid: u.uid(),
            gid: u.uid(),
        }),
    };
    let console_path = run.console();
    let log = std::fs::File::create(&console_path).map_err(|source| BootError::RunDir {
        path: console_path.clone(),
        source,
    })?;
    let (reader, writer) = std::io::pipe().map_err(|source| BootError::RunDir {
        path: console_path.clone(),
        source,
    })?;
    let (quiet, sink) = (vm.sink.quiet, vm.sink.console.clone());
    let reader_thread = std::thread::spawn(move || pump(reader, log, quiet, sink));
    (vm.started)(None);
    let result = jek_kvm::run(&config, writer);
    let outcome = reader_thread
        .join()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let vm = result.map_err(BootError::Kvm)?;
    Ok((outcome, vm))
}
