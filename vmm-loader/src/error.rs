//! Why a boot failed: one variant per failed step, each classed for the exit code.

use std::path::PathBuf;

use jek_fsio::WriteError;
use jek_measure::payload::PayloadError;
use jek_tpm::{MeasureError, SwtpmError, TpmError};

use crate::console::ConsoleOutcome;
use crate::qemu::QemuError;
use crate::tpm::TpmIdentityError;

/// Why a boot failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The payload cannot be assembled.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// No user of its own for the pod's VMM.
    #[error("no user for the pod's VMM")]
    User(#[source] crate::pod_user::PodUserError),
    /// The run directory cannot be used.
    #[error("run directory {path}")]
    RunDir {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file in the run directory could not be written.
    #[error("cannot write into the run directory")]
    Write(#[source] WriteError),
    /// The host could not give the pod's TPM an identity for attestation (EK certificate,
    /// attestation key, registration).
    #[error(transparent)]
    Attestable(TpmIdentityError),
    /// The pod's swtpm could not be started.
    #[error("cannot start the pod's TPM")]
    Swtpm(#[source] SwtpmError),
    /// The TPM cannot be reached.
    #[error("cannot reach the pod's TPM")]
    Tpm(#[source] TpmError),
    /// Measurement failed: the pod does not boot.
    #[error("measured boot failed; the pod was not started")]
    Measure(#[source] MeasureError),
    /// The QEMU backend failed.
    #[error("QEMU backend")]
    Qemu(#[source] QemuError),
    /// The KVM backend failed.
    #[error("KVM backend")]
    Kvm(#[source] jek_kvm::VmError),
    /// `--vmm kvm` on a host without VT-x/AMD-V.
    #[error("this host has no hardware virtualization (no vmx or svm flag in /proc/cpuinfo): KVM here runs the guest emulated and Linux does not reach userspace; use --vmm qemu, or --emulated-kvm for test kernels")]
    NoHardwareVirtualization,
    /// A pod sandbox (`jek.dev/agent`) on jek's KVM VMM, which has no virtio devices yet.
    #[error("pod {0} is a sandbox (annotation jek.dev/agent): its agent channel is a virtio-serial port, and jek's KVM VMM has no virtio devices yet; use --vmm qemu")]
    SandboxNeedsQemu(String),
    /// The guest ended without the init reporting a status.
    #[error("the pod ended without reporting an exit status{}", describe_end(.0))]
    NoStatus(Box<ConsoleOutcome>),
}

impl BootError {
    /// The kind of failure: a payload the bundle cannot give or an unusable run directory
    /// is invalid input; everything after that (TPM, measurement, VMM) is the
    /// environment's.
    pub fn class(&self) -> jek_errors::Class {
        use jek_errors::Class;
        match self {
            BootError::Payload(_) | BootError::RunDir { .. } => Class::Invalid,
            BootError::NoHardwareVirtualization => Class::Environment,
            BootError::SandboxNeedsQemu(_) => Class::Invalid,
            BootError::Write(e) => e.class(),
            BootError::User(e) => e.class(),
            BootError::Attestable(e) => e.class(),
            BootError::Swtpm(_)
            | BootError::Tpm(_)
            | BootError::Measure(_)
            | BootError::Qemu(_)
            | BootError::Kvm(_)
            | BootError::NoStatus(_) => Class::Environment,
        }
    }
}

fn describe_end(o: &ConsoleOutcome) -> String {
    match (&o.error, &o.last_line) {
        (Some(e), _) => format!(" (init error at {}: {})", e.stage, e.error),
        (None, Some(l)) => format!(" (last console line: {l:?})"),
        (None, None) => " (no console output)".into(),
    }
}
