//! `jek boot`: read the bundle once, verify it, measure it into the pod's vTPM, boot it.

use std::path::PathBuf;

use jek_loader::boot::TpmSource;
use jek_loader::paths::{default_registry, default_tpm_ca, env_program};
use jek_loader::qemu::QemuOptions;
use jek_loader::run_dir::RunDir;
use jek_loader::{boot, BootOptions, Vmm};

use super::target::{Loaded, Target};
use crate::error::CliError;

/// VMMs on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum VmmArg {
    /// jek's own KVM VMM (needs hardware virtualization to boot Linux to userspace).
    Kvm,
    /// QEMU, with jek as its pre-boot hook.
    Qemu,
}

/// Arguments of `jek boot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Run directory for the event log, console log, TPM state and run record
    /// (default: jek-run/<name>-<unix time>-<pid>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The VMM.
    #[arg(long, value_enum, default_value = "kvm")]
    vmm: VmmArg,
    /// Use this existing TPM (a tss-esapi TCTI, e.g. swtpm:host=127.0.0.1,port=2321)
    /// instead of starting a swtpm for the pod. Its PCRs must be fresh.
    #[arg(long, value_name = "TCTI")]
    tpm: Option<String>,
    /// Leave the pod's swtpm running after the pod ends, for `jek attest`: the TPM is
    /// manufactured with an EK certificate from the local CA and gets an attestation key.
    #[arg(long, conflicts_with = "tpm")]
    keep_tpm: bool,
    /// The local CA that certifies pod EKs (created on first use; name its
    /// swtpm-localca-rootca-cert.pem as `attestation.ek_ca` in the attestation policy).
    /// Default: $JEK_TPM_CA, else $XDG_DATA_HOME/jek/tpm-ca, else ~/.local/share/jek/tpm-ca.
    #[arg(long, value_name = "DIR", requires = "keep_tpm")]
    tpm_ca: Option<PathBuf>,
    /// The verifier's registration store, where a kept TPM's AK, EK and epoch are recorded
    /// (mode 0700). Default: $XDG_DATA_HOME/jek/registry, else ~/.local/share/jek/registry.
    #[arg(long, value_name = "DIR", requires = "keep_tpm")]
    registry: Option<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// QEMU binary (QEMU backend).
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// QEMU firmware: qboot, which neither measures into nor resets the TPM.
    #[arg(long, default_value = "/usr/share/qemu/bios-microvm.bin")]
    qemu_firmware: PathBuf,
    /// QEMU accelerator: tcg works everywhere, kvm needs hardware virtualization.
    #[arg(long, default_value = "tcg")]
    accel: String,
    /// Use KVM even without VT-x/AMD-V (a software KVM such as PVM runs test kernels, but
    /// no Linux guest reaches userspace): without it, such a host is refused at once.
    #[arg(long, env = "JEK_EMULATED_KVM")]
    emulated_kvm: bool,
    /// When run as root: the host uids set aside for pods, FIRST-LAST. The pod's VMM runs
    /// as one of them, leased for this pod alone, so no other user or pod can signal it or
    /// read its memory.
    #[arg(long, value_name = "FIRST-LAST", default_value_t = jek_loader::pod_user::DEFAULT_UIDS)]
    pod_uids: jek_loader::pod_user::UidRange,
    /// Machine-readable output (the run record) instead of the console.
    #[arg(long)]
    json: bool,
}

/// Runs `jek boot`.
pub fn run(args: Args, quiet: bool) -> Result<(), CliError> {
    let started = std::time::Instant::now();
    // The only read of the bundle file: from here on, only these bytes.
    let Loaded {
        bundle,
        pod,
        containers,
    } = args.target.load()?;
    let name = pod.as_ref().map_or(&bundle.manifest().name, |p| &p.name);
    let run_dir = (args.run_dir.clone()).unwrap_or_else(|| RunDir::default_path(name));
    let vmm = match args.vmm {
        VmmArg::Kvm => Vmm::Kvm,
        VmmArg::Qemu => Vmm::Qemu,
    };
    let opts = BootOptions {
        vmm,
        emulated_kvm: args.emulated_kvm,
        kernel: args.target.kernel_role(),
        pod,
        containers,
        run_dir: run_dir.clone(),
        tpm: match args.tpm {
            Some(t) => TpmSource::Tcti(t),
            None => TpmSource::Spawn {
                program: env_program("JEK_SWTPM", jek_tpm::swtpm::DEFAULT_PROGRAM),
                setup_program: env_program("JEK_SWTPM_SETUP", "swtpm_setup"),
                keep: args.keep_tpm,
                identity: args.keep_tpm.then(|| {
                    (
                        args.tpm_ca.clone().unwrap_or_else(default_tpm_ca),
                        args.registry.clone().unwrap_or_else(default_registry),
                    )
                }),
            },
        },
        memory_mib: args.memory,
        vcpus: args.vcpus,
        qemu: QemuOptions {
            program: args.qemu,
            firmware: args.qemu_firmware,
            accel: args.accel,
        },
        users: jek_loader::pod_user::PodUsers {
            range: args.pod_uids,
            ..Default::default()
        },
        quiet: quiet || args.json,
        console: None,
        started,
        cleanup: jek_loader::lifecycle::Cleanup::default(),
    };
    jek_loader::lifecycle::stop_on_signals(&opts.cleanup).map_err(CliError::Signals)?;
    let report = boot(&bundle, &opts).map_err(|source| CliError::Boot {
        path: args.target.bundle.clone(),
        source,
    })?;
    if args.json {
        super::print_json(&jek_loader::RunRecord::new(&report, &bundle, vmm))?;
    } else if !quiet {
        errln!(
            "jek: pod ended with status {} ({} backend, {} kernel); run directory {}",
            report.status,
            vmm.name(),
            report.kernel.name(),
            run_dir.display()
        );
    }
    if report.status != 0 {
        return Err(CliError::PodFailed {
            status: report.status,
            console: run_dir.join("console.log"),
        });
    }
    Ok(())
}
