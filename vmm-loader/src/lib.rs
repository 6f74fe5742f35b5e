//! # jek-loader: from a verified bundle to a running, measured pod
//!
//! `jek boot` in library form. The caller reads the bundle once and verifies it; from then
//! on only the bytes inside the [`Verified<Bundle>`](jek_verifier::Verified) are used:
//!
//! 1. [`payload`] (pure, in `jek-measure`): the kernel image, the initramfs (the verified one, plus the pod
//!    segment appended), the command line, and the measurement plan. `jek predict` stops
//!    here and replays the plan.
//! 2. [`boot`]: a fresh swtpm for the pod, every planned event extended into it (failing
//!    closed), the TCG event log written into the run directory, then a backend:
//!    - [`qemu`]: jek as QEMU's pre-boot hook. The components go to QEMU as sealed memfds,
//!      and the pod's swtpm becomes the guest's TPM through [`tpm_proxy`], which refuses to
//!      let the VMM reset the measured TPM.
//!    - KVM (`jek-kvm`): jek's own VMM, direct boot without firmware.
//! 3. [`attest`]: later, the pod is attested through its kept TPM (`jek attest`).
//! 4. [`console`]: the guest's serial output goes to the terminal and to `console.log`;
//!    the init's `JEK-POWEROFF` line carries the pod's exit status back.
#![forbid(unsafe_code)]

pub mod attest;
pub mod boot;
pub mod console;
pub mod lifecycle;
pub mod pod_user;
pub mod qemu;
pub mod record;
pub mod registrations;
pub mod run_dir;
pub mod tpm_proxy;

pub use boot::{boot, BootError, BootOptions, BootReport, Vmm};
pub use jek_measure::payload::{self, Payload, PayloadError};
pub use record::{RecordError, RunRecord};
