//! # jek-loader: from a verified bundle to a running, measured pod
//!
//! `jek boot` in library form. The caller reads the bundle once and verifies it; from then
//! on only the bytes inside the [`Verified<Bundle>`](jek_verifier::Verified) are used:
//!
//! 1. [`payload`] (pure, in `jek-measure`): the kernel image, the initramfs (the verified one, plus the pod
//!    segment appended), the command line, and the measurement plan. `jek predict` stops
//!    here and replays the plan.
//! 2. [`boot()`]`(bundle, &VmSpec, &TpmSource, &BootSink)`: a fresh swtpm for the pod
//!    ([`tpm`]; a [`TpmIdentity`](tpm::TpmIdentity) may give it an identity for
//!    attestation), every planned event extended into it (failing closed), the TCG event
//!    log written into the run directory, then the backend [`vm::VmSpec`] names, handed a
//!    [`start::VmStart`] and its own options:
//!    - [`qemu`]: jek as QEMU's pre-boot hook. The components go to QEMU as sealed memfds,
//!      and the pod's swtpm becomes the guest's TPM through [`tpm_proxy`], which refuses to
//!      let the VMM reset the measured TPM.
//!    - [`kvm`]: jek's own VMM (`jek-kvm`), direct boot without firmware.
//! 3. [`console`]: the guest's serial output goes to the terminal (or the
//!    [`sink::BootSink`]'s console sink) and to `console.log`; the init's `JEK-POWEROFF`
//!    line carries the pod's exit status back.
//!
//! Attestation on the host (registering a pod's TPM, `jek attest`, the kept TPMs) is
//! `jek-host-attest`'s: the loader links no appraisal, no image client and no store.
#![forbid(unsafe_code)]

pub mod boot;
pub mod console;
pub mod error;
pub mod kvm;
pub mod late;
pub mod lifecycle;
pub mod pod_user;
pub mod qemu;
pub mod record;
pub mod report;
pub mod run_dir;
pub mod sink;
pub mod start;
pub mod tpm;
pub mod tpm_proxy;
pub mod vm;

pub use boot::{boot, BootError, BootReport};
pub use jek_measure::payload::{self, Payload, PayloadError};
pub use record::{RecordError, RunRecord};
pub use sink::{AgentChannel, BootSink, Running, RunningHook};
pub use start::Machine;
pub use tpm::{SpawnTpm, TpmSource};
pub use vm::{Backend, VmSpec, Vmm};
