//! `jek boot`: read the bundle once, verify it, measure it into the pod's vTPM, boot it.

use std::path::PathBuf;

use jek_config::paths::{default_registry, default_tpm_ca, env_program};
use jek_loader::kvm::KvmOptions;
use jek_loader::qemu::QemuOptions;
use jek_loader::run_dir::RunDir;
use jek_loader::{boot, Backend, BootSink, Machine, TpmSource, VmSpec};

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
    /// Register the pod with this attestation verifier (its base URL) once its VM runs, under an
    /// admin credential (--token-file, or --client-cert and --client-key; --ca-file adds
    /// trust roots): it is attested from its first seconds. A refused registration stops
    /// the pod. `jek tpm stop --verifier URL` removes it again.
    #[arg(long, value_name = "URL", requires_all = ["keep_tpm", "agent"])]
    register_with: Option<String>,
    /// This host's jek-agent as the verifier reaches it (with --register-with).
    #[arg(long, value_name = "URL", requires = "register_with")]
    agent: Option<String>,
    /// The Kubernetes pod to register it as: NAMESPACE/NAME/UID (with --register-with).
    #[arg(long, value_name = "NAMESPACE/NAME/UID", requires = "register_with", value_parser = kubernetes_arg)]
    kubernetes: Option<jek_service_client::wire::KubernetesPod>,
    #[command(flatten)]
    credentials: super::result::Credentials,
    /// Machine-readable output (the run record) instead of the console.
    #[arg(long)]
    json: bool,
}

/// `NAMESPACE/NAME/UID`, each checked as the Kubernetes API server checks it.
fn kubernetes_arg(v: &str) -> Result<jek_service_client::wire::KubernetesPod, String> {
    let mut parts = v.splitn(3, '/');
    let (Some(namespace), Some(name), Some(uid)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("expected NAMESPACE/NAME/UID".into());
    };
    let pod = jek_service_client::wire::KubernetesPod {
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.into(),
    };
    pod.check()?;
    Ok(pod)
}

/// The outcome of a registration with the verifier, filled by the boot's hook.
type Registered = std::sync::Arc<
    std::sync::Mutex<
        Option<std::thread::JoinHandle<Result<String, jek_service_client::client::ClientError>>>,
    >,
>;

/// The hook that registers the pod with `url` once its VM runs, on a thread of its own; a
/// refusal stops the VM through `cleanup`.
fn registration_hook(
    url: String,
    request: jek_service_client::wire::RegisterRequest,
    credentials: jek_service_client::client::Credentials,
    cleanup: jek_loader::lifecycle::Cleanup,
    registered: Registered,
) -> jek_loader::RunningHook {
    let credentials = std::sync::Arc::new(credentials);
    jek_loader::RunningHook::new(move |running| {
        let Some(pod_id) = running.registration.clone() else {
            return;
        };
        let request = jek_service_client::wire::RegisterRequest {
            pod_id,
            ..request.clone()
        };
        let (url, credentials, cleanup) = (url.clone(), credentials.clone(), cleanup.clone());
        let thread = std::thread::spawn(move || {
            let result = jek_service_client::client::register(&url, &request, credentials.reach())
                .map(|state| state.id);
            if result.is_err() {
                cleanup.run();
            }
            result
        });
        *registered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(thread);
    })
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
    let spec = VmSpec {
        kernel: args.target.kernel_role(),
        pod,
        containers,
        machine: Machine {
            memory_mib: args.memory,
            vcpus: args.vcpus,
        },
        backend: match args.vmm {
            VmmArg::Kvm => Backend::Kvm(KvmOptions {
                emulated: args.emulated_kvm,
            }),
            VmmArg::Qemu => Backend::Qemu(QemuOptions {
                program: args.qemu,
                firmware: args.qemu_firmware,
                accel: args.accel,
            }),
        },
        run_dir: run_dir.clone(),
        users: jek_loader::pod_user::PodUsers {
            range: args.pod_uids,
            ..Default::default()
        },
    };
    let vmm = spec.backend.vmm();
    let tpm = match args.tpm {
        Some(t) => TpmSource::Tcti(t),
        None => {
            let (ca, registry) = (
                args.tpm_ca.clone().unwrap_or_else(default_tpm_ca),
                args.registry.clone().unwrap_or_else(default_registry),
            );
            jek_host_attest::identity::pod_tpm(
                env_program("JEK_SWTPM", jek_tpm::swtpm::DEFAULT_PROGRAM),
                &env_program("JEK_SWTPM_SETUP", "swtpm_setup"),
                args.keep_tpm.then_some((ca.as_path(), registry.as_path())),
            )
        }
    };
    let mut sink = BootSink {
        quiet: quiet || args.json,
        ..BootSink::new(started)
    };
    // Interrupted, the pod's VM and its TPM (unless kept) are stopped before jek exits.
    let cleanup = sink.cleanup.clone();
    crate::signals::on_termination(move |signal| {
        let n = cleanup.run();
        errln!("jek: interrupted (signal {signal}); stopped {n} process(es) of the pod");
    })
    .map_err(CliError::Signals)?;
    let registered = Registered::default();
    if let (Some(url), Some(agent)) = (&args.register_with, &args.agent) {
        use sha2::Digest as _;
        let credentials = args
            .credentials
            .load(args.target.registry.ca_file.as_deref())?;
        let request = jek_service_client::wire::RegisterRequest {
            agent: agent.clone(),
            pod_id: String::new(),
            bundle: format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(bundle.bytes()))
            ),
            pod_yaml: spec.pod.as_ref().map(jek_config::pod::render),
            kubernetes: args.kubernetes.clone(),
        };
        sink.on_running = Some(registration_hook(
            url.clone(),
            request,
            credentials,
            sink.cleanup.clone(),
            registered.clone(),
        ));
    }
    let result = boot(&bundle, &spec, &tpm, &sink);
    let registration = registered
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .map(|t| {
            t.join().unwrap_or_else(|_| {
                Err(jek_service_client::client::ClientError::Http {
                    url: args.register_with.clone().unwrap_or_default(),
                    reason: "the registration thread panicked".into(),
                })
            })
        });
    match (&registration, &args.register_with) {
        (Some(Err(_)), _) => {
            // The pod was stopped for it: the refusal is the error, not the stopped VM.
            if let Some(Err(e)) = registration {
                return Err(CliError::Service(e));
            }
        }
        (Some(Ok(id)), Some(url)) if !args.json && !quiet => {
            errln!("jek: registered with {url} as {id}");
        }
        _ => {}
    }
    let report = result.map_err(|source| CliError::Boot {
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
