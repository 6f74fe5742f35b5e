//! `jek boot`: measure into the pod's vTPM, write the log, then run the chosen VMM.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jek_kvm::{MemoryUse, VmRun};
use jek_measure::PcrValues;
use jek_pod::spec::PodSpec;
use jek_tpm::identity::{IdentityError, LocalCa};
use jek_tpm::swtpm::KeptSwtpm;
use jek_tpm::{MeasureError, Swtpm, SwtpmError, Tpm, TpmError};
use jek_verifier::format::Role;
use jek_verifier::{Bundle, Verified};

use crate::console::{pump, ConsoleOutcome};
use crate::qemu::{QemuError, QemuOptions};
use crate::run_dir::RunDir;
use jek_fsio::{write_atomic, Overwrite, WriteError};
use jek_measure::payload::{default_kernel, Payload, PayloadError};

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

/// Where the pod's TPM comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmSource {
    /// Start a swtpm for the pod in the run directory; keep it running afterwards if asked
    /// (for attestation).
    Spawn {
        /// The swtpm program.
        program: PathBuf,
        /// The swtpm_setup program (manufacturing an attestable TPM).
        setup_program: PathBuf,
        /// Leave it running when the pod is gone.
        keep: bool,
        /// Give the TPM an identity for attestation: manufacture it with an EK certificate
        /// from this local CA directory, create an attestation key under the EK, and
        /// register the pod (AK, EK, epoch) in this verifier store.
        identity: Option<(PathBuf, PathBuf)>,
    },
    /// Use an existing TPM through this TCTI (it must be fresh: PCRs at their reset value).
    Tcti(String),
}

/// Everything `boot` needs besides the verified bundle.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The VMM.
    pub vmm: Vmm,
    /// Run the KVM backend even on a host without hardware virtualization.
    pub emulated_kvm: bool,
    /// The kernel format to boot (default: bzImage if present, else vmlinux).
    pub kernel: Option<Role>,
    /// The pod spec, appended as the pod segment.
    pub pod: Option<PodSpec>,
    /// The segments of the pod's containers with an image, in container order
    /// (`jek_image::prepare`), appended after the pod segment and measured into PCR 13.
    pub containers: Vec<jek_pod::image::ContainerSegment>,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The pod's TPM.
    pub tpm: TpmSource,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u8,
    /// QEMU settings (QEMU backend).
    pub qemu: QemuOptions,
    /// Where the pod's VMM user comes from when jek runs as root (QEMU, and the KVM
    /// backend's vCPU thread).
    pub users: crate::pod_user::PodUsers,
    /// Do not copy the console to stdout.
    pub quiet: bool,
    /// Hand console lines to this sink instead of stdout.
    pub console: Option<crate::console::ConsoleSink>,
    /// When the caller started (before it read and verified the bundle): timings are
    /// also reported from this instant.
    pub started: Instant,
    /// Where the boot records the processes an interruption must stop (the caller's
    /// signal handler runs it).
    pub cleanup: crate::lifecycle::Cleanup,
    /// Called once the VM runs, on the boot's thread (keep it short: spawn for slow work),
    /// with the pod's registration for attestation: the moment its TPM answers its host's
    /// agent (through the loader's proxy under QEMU), so that a verifier may be asked to
    /// register it.
    pub on_running: Option<RunningHook>,
}

/// What [`BootOptions::on_running`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The pod's name.
    pub pod: String,
    /// Its registration in the host's store (for the agent), when its TPM is kept for
    /// attestation.
    pub registration: Option<String>,
    /// Its run directory.
    pub run_dir: PathBuf,
}

/// A callback run once a pod's VM runs.
#[derive(Clone)]
pub struct RunningHook(std::sync::Arc<dyn Fn(&Running) + Send + Sync>);

impl RunningHook {
    /// A hook that calls `f`.
    pub fn new(f: impl Fn(&Running) + Send + Sync + 'static) -> Self {
        RunningHook(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for RunningHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunningHook")
    }
}

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
    /// The pod's TPM could not be given an identity (EK certificate, attestation key).
    #[error("cannot give the pod's TPM an identity for attestation")]
    Identity(#[source] IdentityError),
    /// The pod could not be registered with the verifier store.
    #[error("cannot register the pod for attestation")]
    Register(#[source] crate::registrations::RegistrationStoreError),
    /// The TPM's first quote (its epoch) does not parse.
    #[error("the TPM's registration quote does not parse")]
    Epoch(#[source] jek_attest::tpm2::Tpm2Error),
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
            BootError::Identity(_)
            | BootError::Register(_)
            | BootError::Epoch(_)
            | BootError::Swtpm(_)
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
    /// The caller's start ([`BootOptions::started`]).
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

/// Whether the CPU offers VT-x or AMD-V (the `vmx` or `svm` flag in /proc/cpuinfo).
pub fn hardware_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Boots `bundle`: payload, TPM, measurement, event log, VMM. Nothing runs in a VM unless
/// every measurement succeeded and the TPM holds exactly what the log says.
pub fn boot(bundle: &Verified<Bundle>, opts: &BootOptions) -> Result<BootReport, BootError> {
    let t0 = Instant::now();
    let verify = t0.saturating_duration_since(opts.started);
    if opts.vmm == Vmm::Kvm && !opts.emulated_kvm && !hardware_virtualization() {
        return Err(BootError::NoHardwareVirtualization);
    }
    let kernel_role = opts.kernel.unwrap_or_else(|| default_kernel(bundle));
    let payload = Payload::new(bundle, kernel_role, opts.pod.as_ref(), &opts.containers)?;
    let run = RunDir::new(&opts.run_dir);
    run.create().map_err(|source| BootError::RunDir {
        path: opts.run_dir.clone(),
        source,
    })?;
    let prepare = t0.elapsed();
    tracing::info!(
        kernel = kernel_role.name(),
        run_dir = %opts.run_dir.display(),
        containers = opts.containers.len(),
        "payload assembled from the verified bundle"
    );

    let t1 = Instant::now();
    let identity = match &opts.tpm {
        TpmSource::Spawn {
            identity: Some((ca, registry)),
            setup_program,
            ..
        } => {
            let registry = crate::registrations::RegistrationStore::open(registry)
                .map_err(BootError::Register)?;
            let ca = LocalCa::with_setup_program(ca, setup_program);
            ca.manufacture(&run.tpm_state())
                .map_err(BootError::Identity)?;
            tracing::info!(
                "the pod's TPM has an EK certificate under {}",
                ca.root_cert().display()
            );
            Some((ca, registry))
        }
        _ => None,
    };
    let swtpm = match &opts.tpm {
        TpmSource::Spawn { program, keep, .. } => {
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
    let swtpm_token = match (&swtpm, &opts.tpm) {
        (Some(s), TpmSource::Spawn { keep: false, .. }) => {
            Some(opts.cleanup.track(s.pid(), Some(s.sockets().dir.clone())))
        }
        _ => None,
    };
    let tpm_start = t1.elapsed();
    if let Some(s) = &swtpm {
        tracing::info!(pid = s.pid(), ms = ms(tpm_start), "swtpm started");
    }

    let t2 = Instant::now();
    let (log, tcti, registration) = {
        // The connection is closed before the VMM starts: swtpm serves one command
        // connection at a time, and the guest's TPM needs it.
        let mut tpm = match (&swtpm, &opts.tpm) {
            (Some(s), _) => s.connect(),
            (None, TpmSource::Tcti(t)) => Tpm::connect(t),
            (None, TpmSource::Spawn { .. }) => Tpm::connect(""),
        }
        .map_err(BootError::Tpm)?;
        let log = jek_tpm::measure(&mut tpm, &payload.events).map_err(BootError::Measure)?;
        let registration = match (&identity, &swtpm) {
            (Some((ca, registry)), Some(s)) => {
                let pod = opts
                    .pod
                    .as_ref()
                    .map_or_else(|| bundle.manifest().name.clone(), |p| p.name.clone());
                Some(make_attestable(&mut tpm, ca, &run, s, &pod, registry)?)
            }
            _ => None,
        };
        (log, tpm.tcti().to_string(), registration)
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
    tracing::info!(vmm = opts.vmm.name(), "starting the VM");
    let running = Running {
        pod: opts
            .pod
            .as_ref()
            .map_or_else(|| bundle.manifest().name.clone(), |p| p.name.clone()),
        registration: registration.clone(),
        run_dir: opts.run_dir.clone(),
    };
    let started = || {
        if let Some(hook) = &opts.on_running {
            (hook.0)(&running);
        }
    };
    let (console, vm) = match opts.vmm {
        Vmm::Qemu => crate::qemu::run(
            &payload,
            &run,
            opts,
            swtpm.as_ref().map(Swtpm::sockets),
            &started,
        )
        .map(|c| (c, None))
        .map_err(BootError::Qemu)?,
        Vmm::Kvm => run_kvm(&payload, &run, opts, &started).map(|(c, vm)| (c, Some(vm)))?,
    };
    let run_time = t3.elapsed();

    if let Some(t) = swtpm_token {
        opts.cleanup.forget(t);
    }
    let kept_tpm = match (swtpm, &opts.tpm) {
        (Some(s), TpmSource::Spawn { keep: true, .. }) => Some(s.keep()),
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
        run_dir: opts.run_dir.clone(),
        kept_tpm,
        tcti,
        console,
        status,
        timings: Timings {
            verify,
            started: opts.started,
            prepare,
            tpm_start,
            measure,
            run: run_time,
            vm_setup: vm.map(|v| v.entered.saturating_duration_since(t3)),
            guest_entered: vm.map(|v| v.entered),
            cpu_at_guest_entry: vm.map(|v| v.cpu_at_entry),
        },
        memory: vm.and_then(|v| v.memory),
        pod: opts.pod.as_ref().map(|p| p.name.clone()),
        attestable: identity.is_some(),
        registration,
    };
    let record = crate::record::RunRecord::new(&report, bundle, opts.vmm);
    write_atomic(&run.record(), &record.to_json(), 0o600, Overwrite::Refuse)
        .map_err(BootError::Write)?;
    Ok(report)
}

/// Creates the pod's attestation key and stores it, with the EK certificate's issuers, in
/// the run directory; then registers the pod: its AK's name, its EK certificate's digest
/// and the TPM's epoch (read from a first quote) go into the verifier store. Returns the
/// registration's identifier.
fn make_attestable(
    tpm: &mut Tpm,
    ca: &LocalCa,
    run: &RunDir,
    swtpm: &Swtpm,
    pod: &str,
    registry: &crate::registrations::RegistrationStore,
) -> Result<String, BootError> {
    use jek_attest::registration::{Epoch, Registration, TpmLocation};
    let ak = tpm.create_ak().map_err(BootError::Identity)?;
    let issuer = std::fs::read(ca.issuer_cert()).map_err(|source| BootError::RunDir {
        path: ca.issuer_cert(),
        source,
    })?;
    for (path, bytes) in [
        (run.ak_public(), &ak.public),
        (run.ak_private(), &ak.private),
        (run.ek_chain(), &issuer),
    ] {
        write_atomic(&path, bytes, 0o600, Overwrite::Refuse).map_err(BootError::Write)?;
    }
    let ek_cert = tpm.ek_certificate().map_err(BootError::Identity)?;
    let handle = tpm.load_ak(&ak).map_err(BootError::Identity)?;
    let mut nonce = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let (attest, _) = tpm
        .quote(handle, &nonce, &jek_measure::plan::PCRS)
        .map_err(BootError::Identity)?;
    let quote = jek_attest::tpm2::Quote::parse(&attest).map_err(BootError::Epoch)?;
    let name = jek_attest::tpm2::Public::parse(&ak.public)
        .map_err(BootError::Epoch)?
        .name();
    let epoch = Epoch::of(&quote);
    let reg = Registration {
        id: crate::registrations::new_id(),
        pod: pod.to_string(),
        ak_name: hex::encode(name),
        ek_cert_sha256: jek_verifier::Sha256Digest::of(&ek_cert),
        epoch,
        last_clock: epoch.clock,
        tpm: TpmLocation {
            pid: swtpm.pid(),
            socket_dir: swtpm.sockets().dir.clone(),
            run_dir: std::path::absolute(run.root()).ok(),
        },
    };
    registry.put(&reg).map_err(BootError::Register)?;
    tracing::info!(id = %reg.id, pod, "registered the pod's TPM");
    Ok(reg.id)
}

fn run_kvm(
    payload: &Payload<'_>,
    run: &RunDir,
    opts: &BootOptions,
    started: &dyn Fn(),
) -> Result<(ConsoleOutcome, VmRun), BootError> {
    // The vCPU thread drops to the pod's own user (when jek is root), leased until the VM
    // is gone.
    let user = opts.users.lease(run.root()).map_err(BootError::User)?;
    let format = match payload.kernel_role {
        Role::Vmlinux => jek_kvm::KernelFormat::Elf,
        _ => jek_kvm::KernelFormat::BzImage,
    };
    let config = jek_kvm::VmConfig {
        kernel: payload.kernel,
        format,
        initramfs: &payload.initramfs,
        cmdline: payload.cmdline,
        memory_mib: opts.memory_mib,
        vcpus: opts.vcpus,
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
    let (quiet, sink) = (opts.quiet, opts.console.clone());
    let reader_thread = std::thread::spawn(move || pump(reader, log, quiet, sink));
    // The KVM backend gives the guest no TPM device: the swtpm is the agent's alone from
    // here on.
    started();
    let result = jek_kvm::run(&config, writer);
    let outcome = reader_thread
        .join()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let vm = result.map_err(BootError::Kvm)?;
    Ok((outcome, vm))
}
