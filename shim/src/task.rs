//! One container's life in a jek pod: created (verified, packed), running (measured,
//! booted), stopped (exit status kept until containerd deletes it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime};

use jek_config::paths::env_program;
use jek_config::runtime::{Runtime, RuntimeVmm};
use jek_loader::console::ConsoleSink;
use jek_loader::kvm::KvmOptions;
use jek_loader::lifecycle::Cleanup;
use jek_loader::qemu::QemuOptions;
use jek_loader::{Backend, BootSink, Machine, TpmSource, VmSpec};
use jek_pod::console::ConsoleLine;
use jek_pod::image::ContainerSegment;
use jek_pod::spec::PodSpec;
use jek_verifier::{Bundle, Verified};

use crate::lock;

/// Where a starting pod says it is up (`Ok`) or why it ended first; taken by whichever
/// comes first.
type Ready = Arc<Mutex<Option<mpsc::Sender<Result<(), String>>>>>;

/// What the shim keeps in containerd's bundle directory ([`RECORD_FILE`]) so that
/// `containerd-shim-jek-v2 delete`, run by containerd after a shim died, finds what the
/// pod left: its run directory and the registration store its kept TPM is registered in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShimRecord {
    /// The pod's run directory.
    pub run_dir: PathBuf,
    /// The registration store of kept TPMs (pods that attest), if any.
    #[serde(default)]
    pub registry: Option<PathBuf>,
    /// The runtime file, when it names a verifier the pod registered itself with: read
    /// again (strictly) at removal for the verifier and the credential.
    #[serde(default)]
    pub runtime_file: Option<PathBuf>,
}

/// The record's file name in the bundle directory.
pub const RECORD_FILE: &str = "jek-shim.json";

/// The largest record read back.
const MAX_RECORD: u64 = 64 * 1024;

impl ShimRecord {
    /// Writes the record into `bundle_dir` (atomically).
    pub fn write(&self, bundle_dir: &Path) -> Result<(), jek_fsio::WriteError> {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        jek_fsio::write_atomic(
            &bundle_dir.join(RECORD_FILE),
            &bytes,
            0o600,
            jek_fsio::Overwrite::Allow,
        )
    }

    /// Reads the record in `bundle_dir`, if there is one that parses.
    pub fn read(bundle_dir: &Path) -> Option<ShimRecord> {
        let path = bundle_dir.join(RECORD_FILE);
        match jek_fsio::read_regular(&path, MAX_RECORD) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "unreadable shim record");
                    None
                }
            },
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "unreadable shim record");
                None
            }
        }
    }

    /// Removes what the record names: the VMM left running under the pod's uid, every kept TPM registered for the run directory
    /// (found by the run directory, so a pod killed while booting is found too) and its
    /// registration, then the run directory. Logs what cannot be removed.
    pub fn remove(&self) {
        // The VMM of a shim that died: everything still running as the uid its lease
        // names, unless a live process holds that lease.
        match jek_loader::pod_user::PodUsers::default().stop_left_by(&self.run_dir) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(processes = n, dir = %self.run_dir.display(), "stopped the VMM a dead shim left")
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.run_dir.display(), "stopping the VMM a dead shim left")
            }
        }
        if let Some(registry) = &self.registry {
            if let Err(e) = self.stop_kept(registry) {
                tracing::warn!(error = %e, dir = %self.run_dir.display(), "stopping the pod's kept TPM");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.run_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, dir = %self.run_dir.display(), "removing the run directory");
            }
        }
    }
}

impl ShimRecord {
    fn stop_kept(
        &self,
        registry: &Path,
    ) -> Result<(), jek_host_attest::registrations::RegistrationStoreError> {
        let registry = jek_host_attest::registrations::RegistrationStore::open(registry)?;
        let ours = std::path::absolute(&self.run_dir).unwrap_or_else(|_| self.run_dir.clone());
        let verifier = self.runtime_file.as_deref().and_then(|path| {
            match jek_config::runtime::load_strict(path) {
                Ok(r) => r.attestation.and_then(|a| a.verifier),
                Err(e) => {
                    tracing::warn!(error = %jek_errors::chain_line(&e), "the runtime file, to remove the pod from its verifier");
                    None
                }
            }
        });
        for reg in registry.list()? {
            if reg.tpm.run_dir.as_deref() == Some(ours.as_path()) {
                if let Some(v) = &verifier {
                    match crate::register::remove(v, reg.id()) {
                        Ok(held) => {
                            tracing::info!(id = %reg.id(), verifier = %v.url, held, "removed the pod from the verifier")
                        }
                        Err(e) => {
                            tracing::warn!(id = %reg.id(), error = %jek_errors::chain_line(&e), "removing the pod from the verifier")
                        }
                    }
                }
                jek_host_attest::kept::stop(&registry, reg.id())?;
                tracing::info!(id = %reg.id(), "stopped the pod's kept TPM");
            }
        }
        Ok(())
    }
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Verified and packed; not booted.
    Created,
    /// Its pod is booting or running.
    Running,
    /// Its pod is gone.
    Stopped {
        /// The exit status containerd reports.
        code: u32,
        /// When.
        at: SystemTime,
    },
}

/// A container that passed Create: everything its boot needs.
pub struct Prepared {
    /// The verified kernel bundle.
    pub bundle: Verified<Bundle>,
    /// The pod (one container).
    pub pod: PodSpec,
    /// The container segment (none for a pod sandbox, which boots without containers).
    pub segment: Option<ContainerSegment>,
    /// The pod sandbox's VM as its containers see it, when this is a sandbox.
    pub sandbox: Option<Arc<crate::pod::PodVm>>,
    /// The runtime file.
    pub runtime: Runtime,
    /// The Kubernetes pod the container belongs to (CRI's annotations), if any.
    pub kubernetes: Option<jek_service_client::wire::KubernetesPod>,
}

/// A container the shim runs.
pub struct Container {
    /// containerd's id.
    pub id: String,
    /// The OCI bundle directory.
    pub bundle_dir: PathBuf,
    /// containerd's stdout FIFO (may be empty).
    pub stdout: String,
    /// containerd's stderr FIFO (may be empty).
    pub stderr: String,
    /// The pod's run directory.
    pub run_dir: PathBuf,
    /// What boots.
    prepared: Mutex<Option<Prepared>>,
    status: Mutex<(Status, Option<i32>)>,
    changed: Condvar,
    /// What Kill stops.
    cleanup: Cleanup,
    /// Where kept TPMs are registered (pods that attest).
    registry: Option<PathBuf>,
    /// The runtime file, when it names a verifier pods register with.
    runtime_file: Option<PathBuf>,
    /// The pod sandbox's VM, when this is a sandbox.
    pub sandbox: Option<Arc<crate::pod::PodVm>>,
    /// Why the pod was stopped for want of a registration, if it was.
    refused: Arc<Mutex<Option<String>>>,
    /// The registration with the verifier, while it is under way.
    registering: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Container {
    /// A created container.
    pub fn new(
        id: String,
        bundle_dir: PathBuf,
        stdout: String,
        stderr: String,
        run_dir: PathBuf,
        prepared: Prepared,
    ) -> Self {
        let registry = prepared
            .runtime
            .attestation
            .as_ref()
            .map(|a| a.registry.clone());
        let runtime_file = prepared
            .runtime
            .attestation
            .as_ref()
            .and_then(|a| a.verifier.as_ref())
            .map(|_| prepared.runtime.path.clone());
        Container {
            registry,
            runtime_file,
            sandbox: prepared.sandbox.clone(),
            refused: Arc::default(),
            registering: Arc::default(),
            id,
            bundle_dir,
            stdout,
            stderr,
            run_dir,
            prepared: Mutex::new(Some(prepared)),
            status: Mutex::new((Status::Created, None)),
            changed: Condvar::new(),
            cleanup: Cleanup::default(),
        }
    }

    /// Its status.
    pub fn status(&self) -> Status {
        lock(&self.status).0
    }

    /// Waits until it has stopped; returns the exit status and when.
    pub fn wait(&self) -> (u32, SystemTime) {
        let mut g = lock(&self.status);
        loop {
            if let Status::Stopped { code, at } = g.0 {
                return (code, at);
            }
            g = self
                .changed
                .wait(g)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Whether it has stopped, waiting at most `limit`.
    fn stopped_within(&self, limit: std::time::Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut g = lock(&self.status);
        loop {
            if matches!(g.0, Status::Stopped { .. }) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = self
                .changed
                .wait_timeout(g, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn stop(&self, code: u32) {
        let mut g = lock(&self.status);
        if !matches!(g.0, Status::Stopped { .. }) {
            g.0 = Status::Stopped {
                code,
                at: SystemTime::now(),
            };
        }
        self.changed.notify_all();
    }

    /// Boots the pod on a thread of its own. The receiver answers once: `Ok` when the
    /// guest's init reported ready (the pod is up), or why the pod ended before that (a
    /// boot that failed fails the Start that asked for it). Once the pod was up, `exited`
    /// is called with the exit status when it is gone. `None` if the container was started
    /// before.
    pub fn start(
        self: &Arc<Self>,
        exited: impl FnOnce(u32) + Send + 'static,
    ) -> Option<mpsc::Receiver<Result<(), String>>> {
        let prepared = lock(&self.prepared).take()?;
        lock(&self.status).0 = Status::Running;
        let (tx, rx) = mpsc::channel();
        let ready: Ready = Arc::new(Mutex::new(Some(tx)));
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            let (code, failure) = me.run(prepared, &ready);
            me.stop(code);
            match lock(&ready).take() {
                Some(tx) => {
                    let reason = failure.unwrap_or_else(|| {
                        format!("the pod ended (status {code}) before its init reported ready")
                    });
                    let _ = tx.send(Err(reason));
                }
                None => exited(code),
            }
        });
        Some(rx)
    }

    /// Stops the pod's VM (any signal: a VM has no process to signal gently) or, before
    /// Start, the container itself.
    pub fn kill(&self, signal: u32) {
        let mut g = lock(&self.status);
        match g.0 {
            Status::Created => {
                drop(lock(&self.prepared).take());
                g.0 = Status::Stopped {
                    code: 128u32.saturating_add(signal),
                    at: SystemTime::now(),
                };
                self.changed.notify_all();
            }
            Status::Running => {
                g.1 = Some(i32::try_from(signal).unwrap_or(9));
                drop(g);
                // A sandbox stops its containers and powers off when its agent asks;
                // the VM is stopped if it cannot.
                // A guest that says Done but does not power off is stopped all the same.
                if let Some(pod) = &self.sandbox {
                    if pod.shutdown(std::time::Duration::ZERO)
                        && self.stopped_within(std::time::Duration::from_secs(10))
                    {
                        tracing::info!(id = %self.id, signal, "the pod sandbox shut down");
                        return;
                    }
                }
                let n = self.cleanup.run();
                tracing::info!(id = %self.id, signal, stopped = n, "killed the pod's VM");
            }
            Status::Stopped { .. } => {}
        }
    }

    /// The record of what this container leaves behind.
    pub fn record(&self) -> ShimRecord {
        ShimRecord {
            run_dir: self.run_dir.clone(),
            registry: self.registry.clone(),
            runtime_file: self.runtime_file.clone(),
        }
    }

    /// Removes what the pod left: its kept TPM and registration, its run directory, and
    /// the record in the bundle directory.
    pub fn remove(&self) {
        // A registration still under way finishes first, so that its removal follows it.
        let registering = lock(&self.registering).take();
        if let Some(t) = registering {
            let _ = t.join();
        }
        self.record().remove();
        let _ = std::fs::remove_file(self.bundle_dir.join(RECORD_FILE));
    }

    /// Boots and runs the pod; its exit status, and why it failed when it did.
    fn run(&self, p: Prepared, ready: &Ready) -> (u32, Option<String>) {
        let stdout = open_fifo(&self.stdout).map(Mutex::new);
        let mut stderr = open_fifo(&self.stderr);
        let name = p.pod.name.clone();
        let up = Arc::clone(ready);
        let sink = Some(ConsoleSink::new(move |line| {
            if let Some(Ok(ConsoleLine::Ready(_))) = ConsoleLine::parse(line) {
                if let Some(tx) = lock(&up).take() {
                    let _ = tx.send(Ok(()));
                }
            }
            if let (Some(out), Some(text)) = (&stdout, container_line(line, &name)) {
                let _ = lock(out).write_all(text.as_bytes());
            }
        }));
        let (spec, tpm) = pod_vm(&p, &self.run_dir);
        let registration = self.registration_hook(&p);
        let sandbox = p.sandbox.clone();
        let on_running = match (registration, sandbox.clone()) {
            (r, None) => r,
            (r, Some(pod)) => Some(jek_loader::RunningHook::new(move |running| {
                if let Some(r) = &r {
                    r.call(running);
                }
                pod.attach(running);
            })),
        };
        let sink = BootSink {
            quiet: true,
            console: sink,
            cleanup: self.cleanup.clone(),
            on_running,
            ..BootSink::new(Instant::now())
        };
        let result = write_pod_file(&self.run_dir, &p.pod)
            .and_then(|()| jek_loader::boot(&p.bundle, &spec, &tpm, &sink));
        if let Some(pod) = &sandbox {
            pod.ended("the pod's VM ended");
        }
        let killed = lock(&self.status).1;
        if let Some(reason) = lock(&self.refused).clone() {
            let text = format!("jek: {reason}\n");
            if let Some(f) = stderr.as_mut() {
                let _ = f.write_all(text.as_bytes());
            }
            return (255, Some(reason));
        }
        match result {
            Ok(report) => {
                // An init that failed before it was up still powers off with a status:
                // its error is why Start fails, and the FIFO is the only place that keeps
                // it (Delete removes console.log with the run directory).
                let failure = report
                    .console
                    .error
                    .as_ref()
                    .map(|e| format!("the pod's init failed at {}: {}", e.stage, e.error));
                if let (Some(reason), None) = (&failure, &report.console.ready) {
                    if let Some(f) = stderr.as_mut() {
                        let _ = f.write_all(format!("jek: {reason}\n").as_bytes());
                    }
                }
                (u32::try_from(report.status).unwrap_or(255), failure)
            }
            Err(_) if killed.is_some() => {
                // The VM was killed: report it as a shell reports a killed process.
                let code = 128u32.saturating_add(u32::try_from(killed.unwrap_or(9)).unwrap_or(9));
                (code, None)
            }
            Err(e) => {
                let reason = jek_errors::chain_line(&e);
                let text = format!("jek: {reason}\n");
                tracing::error!("{}", text.trim_end());
                if let Some(f) = stderr.as_mut() {
                    let _ = f.write_all(text.as_bytes());
                }
                (255, Some(reason))
            }
        }
    }
}

impl Container {
    /// The hook that registers the pod with the verifier the runtime file names, on a
    /// thread of its own, once its VM runs; `None` when it names none.
    fn registration_hook(&self, p: &Prepared) -> Option<jek_loader::RunningHook> {
        use sha2::Digest as _;
        let verifier = p.runtime.attestation.as_ref()?.verifier.clone()?;
        let template = jek_service_client::wire::RegisterRequest {
            agent: verifier.agent.clone(),
            pod_id: String::new(),
            bundle: format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(p.bundle.bytes()))
            ),
            pod_yaml: Some(jek_config::pod::render(&p.pod)),
            kubernetes: p.kubernetes.clone(),
        };
        let (id, refused, registering, cleanup) = (
            self.id.clone(),
            Arc::clone(&self.refused),
            Arc::clone(&self.registering),
            self.cleanup.clone(),
        );
        Some(jek_loader::RunningHook::new(move |running| {
            let Some(pod_id) = running.registration.clone() else {
                return;
            };
            let request = jek_service_client::wire::RegisterRequest {
                pod_id,
                ..template.clone()
            };
            let (verifier, id, refused, cleanup) = (
                verifier.clone(),
                id.clone(),
                Arc::clone(&refused),
                cleanup.clone(),
            );
            let thread = std::thread::spawn(move || {
                match crate::register::register(&verifier, &request) {
                    Ok(state) => tracing::info!(
                        id = %id,
                        registration = %state.id,
                        verifier = %verifier.url,
                        status = %state.status,
                        "registered the pod with the verifier"
                    ),
                    Err(e) if verifier.required => {
                        let reason = format!(
                            "the pod could not be registered with its verifier, so it was stopped (attestation.verifier.required): {}",
                            jek_errors::chain_line(&e)
                        );
                        tracing::error!(id = %id, "{reason}");
                        *lock(&refused) = Some(reason);
                        cleanup.run();
                    }
                    Err(e) => tracing::warn!(
                        id = %id,
                        error = %jek_errors::chain_line(&e),
                        "the pod runs unattested: it could not be registered with its verifier"
                    ),
                }
            });
            *lock(&registering) = Some(thread);
        }))
    }
}

/// The pod file of the pod the shim made, in its run directory (mode 0700): what the
/// pod is registered with at the verifier.
fn write_pod_file(run_dir: &Path, pod: &PodSpec) -> Result<(), jek_loader::BootError> {
    let run = jek_loader::run_dir::RunDir::new(run_dir);
    let err = |source| jek_loader::BootError::RunDir {
        path: run_dir.to_path_buf(),
        source,
    };
    run.create().map_err(err)?;
    jek_fsio::write_atomic(
        &run.pod_file(),
        jek_config::pod::render(pod).as_bytes(),
        0o600,
        jek_fsio::Overwrite::Refuse,
    )
    .map_err(|e| err(std::io::Error::other(jek_errors::chain_line(&e))))
}

/// containerd's FIFO at `path` opened for writing (`None` for no FIFO, or one that cannot
/// be opened: logged).
pub(crate) fn open_fifo(path: &str) -> Option<std::fs::File> {
    if path.is_empty() {
        return None;
    }
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(error = %e, path, "cannot open containerd's FIFO");
            None
        }
    }
}

/// What of a console line belongs to the container: the init writes every line of a
/// container's output as `[name] text`; the kernel's and the init's own lines never start
/// so. The serial line's `\r` is removed.
pub fn container_line(line: &str, name: &str) -> Option<String> {
    let text = line.strip_suffix('\n').unwrap_or(line);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let rest = text
        .strip_prefix('[')?
        .strip_prefix(name)?
        .strip_prefix("] ")?;
    Some(format!("{rest}\n"))
}

/// The pod's VM and TPM as the runtime file asks for them.
fn pod_vm(p: &Prepared, run_dir: &Path) -> (VmSpec, TpmSource) {
    let r = &p.runtime;
    let spec = VmSpec {
        kernel: None,
        pod: Some(p.pod.clone()),
        containers: p.segment.iter().cloned().collect(),
        machine: Machine {
            memory_mib: r.memory_mib,
            vcpus: r.vcpus,
        },
        backend: match r.vmm {
            RuntimeVmm::Qemu => Backend::Qemu(QemuOptions {
                accel: r.accel.clone(),
                ..QemuOptions::default()
            }),
            RuntimeVmm::Kvm => Backend::Kvm(KvmOptions {
                emulated: std::env::var_os("JEK_EMULATED_KVM").is_some_and(|v| v == "true"),
            }),
        },
        run_dir: run_dir.to_path_buf(),
        users: jek_loader::pod_user::PodUsers {
            range: r
                .pod_uids
                .and_then(|(a, b)| jek_loader::pod_user::UidRange::new(a, b).ok())
                .unwrap_or_default(),
            ..Default::default()
        },
    };
    let tpm = jek_host_attest::identity::pod_tpm(
        env_program("JEK_SWTPM", jek_tpm::swtpm::DEFAULT_PROGRAM),
        &env_program("JEK_SWTPM_SETUP", "swtpm_setup"),
        r.attestation
            .as_ref()
            .map(|a| (a.tpm_ca.as_path(), a.registry.as_path())),
    );
    (spec, tpm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_containers_lines_pass() {
        let lines = [
            "[    0.100000] Linux version 6.1\r\n",
            "JEK-READY {\"pod\":\"t1\",\"kernel\":\"6.1\",\"loopback\":\"ok\",\"containers\":1}\r\n",
            "[t1] hi\r\n",
            "[t1] \r\n",
            "[t10] another container's\n",
            "ACPI: PM: Preparing to enter system sleep state S5\r\n",
            "JEK-EXIT {\"container\":\"t1\",\"status\":3}\r\n",
            "reboot: Power down\r\n",
        ];
        let out: Vec<String> = lines
            .iter()
            .filter_map(|l| container_line(l, "t1"))
            .collect();
        assert_eq!(out, ["hi\n", "\n"]);
    }
}
