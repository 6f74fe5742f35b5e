//! What a boot did: its figures and outcome, from which the run record is made.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jek_kvm::MemoryUse;
use jek_measure::PcrValues;
use jek_tpm::swtpm::KeptSwtpm;
use jek_verifier::format::Role;

use crate::console::ConsoleOutcome;

/// Durations of the boot's steps.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// From the caller's start to [`boot`]: reading and verifying the bundle.
    pub verify: Duration,
    /// Assembling the payload and the plan.
    pub prepare: Duration,
    /// Starting the swtpm.
    pub tpm_start: Duration,
    /// Extends, read-back and writing the event log.
    pub measure: Duration,
    /// From handing over to the VMM until the guest's end.
    pub run: Duration,
    /// From handing over to the VMM until just before the first guest instruction (KVM
    /// backend; QEMU's set-up happens in another process).
    pub vm_setup: Option<Duration>,
    /// The caller's start ([`BootSink::started`]).
    pub started: Instant,
    /// When the guest was first entered (KVM backend).
    pub guest_entered: Option<Instant>,
    /// This process's CPU time when the guest was first entered (KVM backend).
    pub cpu_at_guest_entry: Option<Duration>,
}

/// What a boot did.
#[derive(Debug)]
pub struct BootReport {
    /// The kernel format booted.
    pub kernel: Role,
    /// PCR values after measurement (read back from the TPM, equal to the log's replay).
    pub pcrs: PcrValues,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The swtpm left running, if kept.
    pub kept_tpm: Option<KeptSwtpm>,
    /// The TCTI of the pod's TPM.
    pub tcti: String,
    /// The console outcome.
    pub console: ConsoleOutcome,
    /// The pod's exit status.
    pub status: i32,
    /// Step durations.
    pub timings: Timings,
    /// The loader's resident memory (KVM backend).
    pub memory: Option<MemoryUse>,
    /// The pod's name, when a pod spec was given.
    pub pod: Option<String>,
    /// Whether the TPM was given an identity (EK certificate, AK) for attestation.
    pub attestable: bool,
    /// The pod's registration in the verifier store, when it was made attestable.
    pub registration: Option<String>,
}
