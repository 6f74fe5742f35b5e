//! `jek boot`: measure into the pod's vTPM, write the log, then run the chosen VMM.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jek_kvm::MemoryUse;
use jek_measure::PcrValues;
use jek_tpm::swtpm::KeptSwtpm;
use jek_tpm::{MeasureError, Swtpm, SwtpmError, Tpm, TpmError};
use jek_verifier::format::Role;
use jek_verifier::{Bundle, Verified};

use crate::console::ConsoleOutcome;
use crate::qemu::QemuError;
use crate::run_dir::RunDir;
use crate::sink::{BootSink, Running};
use crate::tpm::{MeasuredPod, SpawnTpm, TpmIdentityError, TpmSource};
use crate::vm::{Backend, VmSpec, VmStart};
use jek_fsio::{write_atomic, Overwrite, WriteError};
use jek_measure::payload::{default_kernel, Payload, PayloadError};

pub use crate::vm::Vmm;

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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Boots `bundle` as `spec` says, with the pod's TPM from `tpm`, reporting to `sink`:
/// payload, TPM, measurement, event log, VMM. Nothing runs in a VM unless every
/// measurement succeeded and the TPM holds exactly what the log says.
pub fn boot(
    bundle: &Verified<Bundle>,
    spec: &VmSpec,
    tpm: &TpmSource,
    sink: &BootSink,
) -> Result<BootReport, BootError> {
    let t0 = Instant::now();
    let verify = t0.saturating_duration_since(sink.started);
    if let Backend::Kvm(kvm) = &spec.backend {
        crate::kvm::check(kvm)?;
    }
    let kernel_role = spec.kernel.unwrap_or_else(|| default_kernel(bundle));
    let payload = Payload::new(bundle, kernel_role, spec.pod.as_ref(), &spec.containers)?;
    let run = RunDir::new(&spec.run_dir);
    run.create().map_err(|source| BootError::RunDir {
        path: spec.run_dir.clone(),
        source,
    })?;
    let prepare = t0.elapsed();
    tracing::info!(
        kernel = kernel_role.name(),
        run_dir = %spec.run_dir.display(),
        containers = spec.containers.len(),
        "payload assembled from the verified bundle"
    );

    let t1 = Instant::now();
    let identity = match tpm {
        TpmSource::Spawn(SpawnTpm {
            identity: Some(identity),
            ..
        }) => {
            identity
                .manufacture(&run.tpm_state())
                .map_err(BootError::Attestable)?;
            Some(identity)
        }
        _ => None,
    };
    let swtpm = match tpm {
        TpmSource::Spawn(SpawnTpm { program, keep, .. }) => {
            let lifetime = if *keep {
                jek_tpm::swtpm::Lifetime::Kept
            } else {
                jek_tpm::swtpm::Lifetime::WithStarter
            };
            Some(
                Swtpm::start_program(program, &run.tpm_state(), lifetime)
                    .map_err(BootError::Swtpm)?,
            )
        }
        TpmSource::Tcti(_) => None,
    };
    // Interrupted, a TPM that is not kept goes with the pod.
    let swtpm_token = match (&swtpm, tpm) {
        (Some(s), TpmSource::Spawn(SpawnTpm { keep: false, .. })) => {
            Some(sink.cleanup.track(s.pid(), Some(s.sockets().dir.clone())))
        }
        _ => None,
    };
    let tpm_start = t1.elapsed();
    if let Some(s) = &swtpm {
        tracing::info!(pid = s.pid(), ms = ms(tpm_start), "swtpm started");
    }

    let t2 = Instant::now();
    let pod_name = spec.pod_name(bundle);
    let (log, tcti, registration) = {
        // The connection is closed before the VMM starts: swtpm serves one command
        // connection at a time, and the guest's TPM needs it.
        let mut conn = match (&swtpm, tpm) {
            (Some(s), _) => s.connect(),
            (None, TpmSource::Tcti(t)) => Tpm::connect(t),
            (None, TpmSource::Spawn(_)) => Tpm::connect(""),
        }
        .map_err(BootError::Tpm)?;
        let log = jek_tpm::measure(&mut conn, &payload.events).map_err(BootError::Measure)?;
        let registration = match (identity, &swtpm) {
            (Some(identity), Some(s)) => {
                let pod = MeasuredPod {
                    name: &pod_name,
                    run: &run,
                    swtpm: s,
                };
                Some(
                    identity
                        .register(&mut conn, &pod)
                        .map_err(BootError::Attestable)?,
                )
            }
            _ => None,
        };
        (log, conn.tcti().to_string(), registration)
    };
    // measure() has checked that the TPM holds exactly this replay.
    let pcrs = log.replay();
    let log_path = run.event_log();
    write_atomic(&log_path, &log.to_bytes(), 0o600, Overwrite::Refuse).map_err(BootError::Write)?;
    let measure = t2.elapsed();
    tracing::info!(
        kernel = kernel_role.name(),
        events = log.events.len(),
        ms = ms(measure),
        "measured into the pod's TPM"
    );

    let t3 = Instant::now();
    let vmm = spec.backend.vmm();
    tracing::info!(vmm = vmm.name(), "starting the VM");
    let running = Running {
        pod: pod_name,
        registration: registration.clone(),
        run_dir: spec.run_dir.clone(),
    };
    let started = || {
        if let Some(hook) = &sink.on_running {
            hook.call(&running);
        }
    };
    let start = VmStart {
        payload: &payload,
        run: &run,
        machine: spec.machine,
        users: &spec.users,
        tpm: swtpm.as_ref().map(Swtpm::sockets),
        sink,
        started: &started,
    };
    let (console, vm) = match &spec.backend {
        Backend::Qemu(qemu) => crate::qemu::run(&start, qemu)
            .map(|c| (c, None))
            .map_err(BootError::Qemu)?,
        Backend::Kvm(_) => crate::kvm::run(&start).map(|(c, vm)| (c, Some(vm)))?,
    };
    let run_time = t3.elapsed();

    if let Some(t) = swtpm_token {
        sink.cleanup.forget(t);
    }
    let kept_tpm = match (swtpm, tpm) {
        (Some(s), TpmSource::Spawn(SpawnTpm { keep: true, .. })) => Some(s.keep()),
        (Some(s), _) => {
            if let Err(e) = s.stop() {
                tracing::warn!(error = %e, "stopping the pod's swtpm");
            }
            None
        }
        (None, _) => None,
    };
    let status = console
        .status
        .ok_or_else(|| BootError::NoStatus(Box::new(console.clone())))?;
    let report = BootReport {
        kernel: kernel_role,
        pcrs,
        run_dir: spec.run_dir.clone(),
        kept_tpm,
        tcti,
        console,
        status,
        timings: Timings {
            verify,
            started: sink.started,
            prepare,
            tpm_start,
            measure,
            run: run_time,
            vm_setup: vm.map(|v| v.entered.saturating_duration_since(t3)),
            guest_entered: vm.map(|v| v.entered),
            cpu_at_guest_entry: vm.map(|v| v.cpu_at_entry),
        },
        memory: vm.and_then(|v| v.memory),
        pod: spec.pod.as_ref().map(|p| p.name.clone()),
        attestable: identity.is_some(),
        registration,
    };
    let record = crate::record::RunRecord::new(&report, bundle, vmm);
    write_atomic(&run.record(), &record.to_json(), 0o600, Overwrite::Refuse)
        .map_err(BootError::Write)?;
    Ok(report)
}
