//! `jek boot`: measure into the pod's vTPM, write the log, then run the chosen VMM.

use std::time::{Duration, Instant};

use jek_tpm::{Swtpm, Tpm};
use jek_verifier::{Bundle, Verified};

use crate::run_dir::RunDir;
use crate::sink::{AgentChannel, BootSink, Running};
use crate::start::VmStart;
use crate::tpm::{MeasuredPod, SpawnTpm, TpmSource};
use crate::vm::{Backend, VmSpec};
use jek_fsio::{write_atomic, Overwrite};
use jek_measure::payload::{default_kernel, Payload};

pub use crate::error::BootError;
pub use crate::report::{BootReport, Timings};
pub use crate::vm::Vmm;

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
        if let Some(pod) = spec.pod.as_ref().filter(|p| p.agent) {
            return Err(BootError::SandboxNeedsQemu(pod.name.clone()));
        }
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
    let started = |agent: Option<std::os::unix::net::UnixStream>| {
        if let Some(hook) = &sink.on_running {
            hook.call(&Running {
                pod: pod_name.clone(),
                registration: registration.clone(),
                run_dir: spec.run_dir.clone(),
                tpm: swtpm.as_ref().map(|s| s.sockets().clone()),
                agent: AgentChannel::new(agent),
            });
        }
    };
    let start = VmStart {
        payload: &payload,
        run: &run,
        machine: spec.machine,
        users: &spec.users,
        tpm: swtpm.as_ref().map(Swtpm::sockets),
        agent: spec.pod.as_ref().is_some_and(|p| p.agent),
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
