//! The VM a boot starts, and the seam between [`boot`](crate::boot::boot) and the VMMs.
//!
//! A boot takes three values: the VM's shape ([`VmSpec`]: what the guest is fed before
//! its first instruction, its size, the backend that runs it), where the pod's TPM comes
//! from ([`TpmSource`](crate::tpm::TpmSource)) and where the boot reports to
//! ([`BootSink`](crate::sink::BootSink): console lines, timings, clean-up, the running
//! moment). Each backend is handed a [`VmStart`](crate::start::VmStart) and only its own
//! options ([`KvmOptions`], [`QemuOptions`]).
//!
//! Today a guest is fed two ways: the verified payload (kernel, initramfs, command line)
//! before its first instruction, and the pod's container segments appended to the
//! initramfs, measured into PCR 13 before the VM starts. A third feed, containers added
//! while the pod runs, is the pod sandbox's: it starts at the running moment
//! ([`Running`](crate::sink::Running), the hook every backend calls once the VM runs),
//! reaches the pod's TPM through the same sockets the agent uses (the proxy's side
//! sockets under QEMU, which owns the one command connection), and ends before the boot
//! stops or keeps the swtpm.

use std::path::PathBuf;

use jek_pod::spec::PodSpec;
use jek_verifier::format::Role;
use jek_verifier::{Bundle, Verified};

use crate::kvm::KvmOptions;
use crate::pod_user::PodUsers;
use crate::qemu::QemuOptions;
use crate::start::Machine;

/// Which VMM runs the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    /// jek's own KVM VMM.
    Kvm,
    /// QEMU, with jek as its pre-boot hook.
    Qemu,
}

impl Vmm {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Vmm::Kvm => "kvm",
            Vmm::Qemu => "qemu",
        }
    }
}

/// The backend that runs the VM, with its own options.
#[derive(Debug, Clone)]
pub enum Backend {
    /// jek's own KVM VMM.
    Kvm(KvmOptions),
    /// QEMU, with jek as its pre-boot hook.
    Qemu(QemuOptions),
}

impl Backend {
    /// Which VMM it is.
    pub fn vmm(&self) -> Vmm {
        match self {
            Backend::Kvm(_) => Vmm::Kvm,
            Backend::Qemu(_) => Vmm::Qemu,
        }
    }
}

/// The VM's shape: everything about the VM a boot starts, apart from its TPM and where
/// the boot reports to.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The kernel format to boot (default: bzImage if present, else vmlinux).
    pub kernel: Option<Role>,
    /// The pod spec, appended as the pod segment.
    pub pod: Option<PodSpec>,
    /// The segments of the pod's containers with an image, in container order
    /// (`jek_image::prepare`), appended after the pod segment and measured into PCR 13.
    pub containers: Vec<jek_pod::image::ContainerSegment>,
    /// The VM's size.
    pub machine: Machine,
    /// The backend and its options.
    pub backend: Backend,
    /// The run directory.
    pub run_dir: PathBuf,
    /// Where the pod's VMM user comes from when jek runs as root (QEMU, and the KVM
    /// backend's vCPU thread).
    pub users: PodUsers,
}

impl VmSpec {
    /// The pod's name: its pod spec's, else the bundle's.
    pub fn pod_name(&self, bundle: &Verified<Bundle>) -> String {
        self.pod
            .as_ref()
            .map_or_else(|| bundle.manifest().name.clone(), |p| p.name.clone())
    }
}
