//! What a backend is handed to run a VM: the one contract the KVM and QEMU backends
//! share (their own options come beside it).

use jek_measure::payload::Payload;

use crate::pod_user::PodUsers;
use crate::run_dir::RunDir;
use crate::sink::BootSink;

/// The VM's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u8,
}

/// What a backend is handed to run the VM.
pub struct VmStart<'a> {
    /// The verified, measured payload.
    pub payload: &'a Payload<'a>,
    /// The run directory (created).
    pub run: &'a RunDir,
    /// The VM's size.
    pub machine: Machine,
    /// Where the pod's VMM user comes from.
    pub users: &'a PodUsers,
    /// The pod's swtpm, measured already: QEMU attaches it as the guest's TPM through the
    /// proxy; the KVM VMM gives the guest no TPM.
    pub tpm: Option<&'a jek_tpm::swtpm::Sockets>,
    /// A pod sandbox: the VM gets the agent channel's virtio-serial port (QEMU only).
    pub agent: bool,
    /// Where console lines go and what an interruption must stop.
    pub sink: &'a BootSink,
    /// Called once the VM runs (the running moment), with the host's end of the agent
    /// channel when the VM has one.
    pub started: &'a dyn Fn(Option<std::os::unix::net::UnixStream>),
}
