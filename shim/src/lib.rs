//! # jek-shim: `containerd-shim-jek-v2`
//!
//! containerd's runtime v2 shim (the `io.containerd.jek.v2` runtime, a Kubernetes
//! RuntimeClass's handler) that runs each container in its own jek pod:
//!
//! - **Create** reads the runtime file ([`jek_config::runtime`]), verifies the kernel
//!   bundle under its policy (a refusal fails `ctr run` with the verifier's reason, and no
//!   VM starts), reads the bundle's `config.json` ([`process`]), mounts containerd's
//!   rootfs mounts and reads the tree ([`rootfs`]) into the container segment, whose
//!   record names the image containerd made the container from ([`containerd`]).
//! - **Start** boots the pod on a thread of its own ([`task`]): a fresh swtpm, every
//!   component and the container segment measured (PCR 13), then QEMU (or jek's KVM VMM
//!   where hardware virtualization exists). The container's output goes to containerd's
//!   stdout FIFO; its exit status to Wait and to a `TaskExit` event.
//! - **Kill** stops the VM (and a TPM that is not kept); **Delete** removes the run
//!   directory and, for attestable pods, the kept TPM and its registration.
//! - With a verifier in the runtime file, each pod registers itself with it once its VM
//!   runs, as the Kubernetes pod CRI's annotations name, and is removed at Delete
//!   ([`register`]).
//!
//! One shim process serves one container (containerd's grouping is the container id), or
//! one Kubernetes pod: the CRI's sandbox container boots a pod sandbox (a VM whose init
//! serves the agent channel) and the pod's containers, grouped into the same shim by
//! `io.kubernetes.cri.sandbox-id`, join that VM ([`pod`]).
#![forbid(unsafe_code)]

pub mod agent;
pub mod containerd;
pub mod mount;
pub mod pod;
pub mod process;
pub mod register;
pub mod rootfs;
pub mod task;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim::api;
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{TaskDelete, TaskExit, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::shim::shim::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Context, ExitSignal, Flags, StartOpts, TtrpcContext, TtrpcResult};
use jek_config::runtime::{BundleSource, Runtime};
use jek_pod::image::{container_segment, ContainerImage, ContainerSegment};
use jek_pod::spec::{Container as PodContainer, PodSpec};

use pod::{Member, PodVm};
use task::{Container, Prepared, Status};

/// The runtime's name, as containerd's `--runtime` names it.
pub const RUNTIME_ID: &str = "io.containerd.jek.v2";

/// Why a container cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The runtime file is unusable.
    #[error(transparent)]
    Config(#[from] jek_config::ConfigError),
    /// The kernel bundle file is refused (or unreadable).
    #[error("the kernel bundle is refused")]
    Bundle(#[source] jek_config::signatures::VerifyFileError),
    /// The registry options (credentials, CA file) are unusable.
    #[error("the registry options for the kernel bundle")]
    RegistryOptions(#[source] jek_oci::auth::AuthError),
    /// The kernel bundle could not be pulled, or was refused.
    #[error("the kernel bundle is refused")]
    BundlePull(#[source] Box<jek_oci::registry::PullError>),
    /// The registry client could not be made.
    #[error("the registry client for the kernel bundle")]
    Registry(#[source] Box<jek_oci::registry::RegistryError>),
    /// The OCI runtime spec is unusable.
    #[error(transparent)]
    Spec(#[from] process::SpecError),
    /// containerd's rootfs mounts cannot be mounted.
    #[error("cannot mount the container's root file system at {target}: {reason}")]
    Mount {
        /// Where.
        target: PathBuf,
        /// Why.
        reason: String,
    },
    /// The root file system cannot be read.
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    /// The image cannot be found out.
    #[error(transparent)]
    Image(#[from] containerd::LookupError),
    /// containerd's image name is not a reference jek reads.
    #[error("containerd's image name {reference} is not an image reference")]
    Reference {
        /// The name.
        reference: String,
        /// Why.
        #[source]
        source: jek_image::reference::ReferenceError,
    },
    /// The image policy refuses the image.
    #[error("the image policy refuses {reference}")]
    ImagePolicy {
        /// The image.
        reference: String,
        /// Why.
        #[source]
        source: jek_image::Refusal,
    },
    /// The container segment cannot be written.
    #[error(transparent)]
    Segment(#[from] jek_pod::image::ContainerSegmentError),
    /// A container with this id exists in this shim.
    #[error("container {0} exists")]
    Exists(String),
    /// A container of a pod sandbox this shim does not run.
    #[error("the container's pod sandbox {0} is not run by this jek shim (was it created with another runtime, or has it stopped?)")]
    NoSandbox(String),
    /// A pod sandbox on the host's network (`hostNetwork: true`).
    #[error("pod sandbox {0} asks for the host's network (hostNetwork: true): a pod VM cannot share the host's network; jek pods need a network namespace of their own (CNI)")]
    HostNetwork(String),
    /// The pod has a container of this name already.
    #[error("the pod has a container named {0} already")]
    NameTaken(String),
}

/// What a Create made.
enum Created {
    /// A container with a VM of its own, or a pod sandbox's VM: what boots, and where.
    Vm(Box<Prepared>, PathBuf),
    /// A container of a pod sandbox this shim runs.
    Member(Box<Member>),
}

/// A task this shim serves.
#[derive(Clone)]
enum Task {
    /// A container with a VM of its own, or a pod sandbox's VM.
    Vm(Arc<Container>),
    /// A container of a pod sandbox.
    Member(Arc<Member>),
}

impl Task {
    fn status(&self) -> Status {
        match self {
            Task::Vm(c) => c.status(),
            Task::Member(m) => m.status(),
        }
    }

    fn wait(&self) -> (u32, std::time::SystemTime) {
        match self {
            Task::Vm(c) => c.wait(),
            Task::Member(m) => m.wait(),
        }
    }

    fn id(&self) -> &str {
        match self {
            Task::Vm(c) => &c.id,
            Task::Member(m) => &m.id,
        }
    }

    fn bundle_dir(&self) -> &Path {
        match self {
            Task::Vm(c) => &c.bundle_dir,
            Task::Member(m) => &m.bundle_dir,
        }
    }

    fn stdio(&self) -> (&str, &str) {
        match self {
            Task::Vm(c) => (&c.stdout, &c.stderr),
            Task::Member(m) => (&m.stdout, &m.stderr),
        }
    }
}

/// The shim: one per container, or one per Kubernetes pod sandbox with its containers.
#[derive(Clone)]
pub struct Service {
    exit: Arc<ExitSignal>,
    namespace: String,
    /// containerd's gRPC socket.
    address: String,
    /// The socket this shim serves (`unix:///run/containerd/s/...`), removed at exit.
    socket: String,
    containers: Arc<Mutex<HashMap<String, Task>>>,
    /// The pod sandboxes this shim runs, by sandbox id.
    pods: Arc<Mutex<HashMap<String, Arc<PodVm>>>>,
    publisher: Option<Arc<RemotePublisher>>,
}

/// The guard of `m`, whether or not a thread panicked holding it (the shim's state stays
/// usable: every critical section leaves it consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ttrpc_error(
    code: containerd_shim::protos::ttrpc::Code,
    msg: String,
) -> containerd_shim::protos::ttrpc::Error {
    containerd_shim::protos::ttrpc::Error::RpcStatus(containerd_shim::protos::ttrpc::get_status(
        code, msg,
    ))
}

fn not_found(id: &str) -> containerd_shim::protos::ttrpc::Error {
    ttrpc_error(
        containerd_shim::protos::ttrpc::Code::NOT_FOUND,
        format!("container {id} not found in this jek shim"),
    )
}

fn timestamp(at: std::time::SystemTime) -> Timestamp {
    let d = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut t = Timestamp::new();
    t.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    t.nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    t
}

/// containerd's options for runtimes other than runc (`runtimeoptions.v1.Options`):
/// what its config.toml's `options.ConfigPath` and `ctr run --runtime-config-path` set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuntimeOptions {
    /// The type of the config file's content (unused by jek).
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The runtime file.
    #[prost(string, tag = "2")]
    pub config_path: String,
    /// The file's content in containerd's config (not supported: a path names a file an
    /// operator can read and diff).
    #[prost(bytes = "vec", tag = "3")]
    pub config_body: Vec<u8>,
}

/// The type URL containerd gives [`RuntimeOptions`].
pub const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// The runtime file named by the options of a Create: `ConfigPath`, else
/// `$JEK_RUNTIME_CONFIG`, else `/etc/jek/runtime.yaml`. Options of another type (or
/// undecodable ones) are ignored with a warning.
pub fn runtime_path(req: &api::CreateTaskRequest) -> PathBuf {
    if let Some(any) = req.options.as_ref() {
        let type_url = any.type_url.rsplit('/').next().unwrap_or_default();
        if type_url == RUNTIME_OPTIONS_TYPE {
            match <RuntimeOptions as prost::Message>::decode(any.value.as_slice()) {
                Ok(o) if !o.config_path.is_empty() => return PathBuf::from(o.config_path),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "containerd's runtime options do not decode"),
            }
        } else if !any.type_url.is_empty() {
            tracing::warn!(type_url = %any.type_url, "runtime options of another type: ignored");
        }
    }
    default_runtime_path()
}

/// `$JEK_RUNTIME_CONFIG`, else `/etc/jek/runtime.yaml`.
pub fn default_runtime_path() -> PathBuf {
    std::env::var_os("JEK_RUNTIME_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(jek_config::runtime::DEFAULT_PATH))
}

/// The kernel bundle, verified under `policy`: read from its file, or pulled with its
/// attached signatures. Nothing is kept on disk either way.
fn verify_bundle(
    source: &BundleSource,
    policy: &jek_verifier::Policy,
) -> Result<jek_verifier::Verified<jek_verifier::Bundle>, CreateError> {
    let now = jek_verifier::UnixTime::now();
    match source {
        BundleSource::File(path) => jek_config::signatures::verify_file(policy, path, None, now)
            .map_err(CreateError::Bundle),
        BundleSource::Registry {
            reference,
            plain_http,
            ca_file,
        } => {
            let options =
                jek_oci::auth::ClientOptions::from_environment(*plain_http, ca_file.as_deref())
                    .map_err(CreateError::RegistryOptions)?;
            let registry = jek_oci::registry::Registry::new(&options)
                .map_err(|e| CreateError::Registry(Box::new(e)))?;
            registry
                .pull_verified(reference, policy, now)
                .map(|p| p.bundle)
                .map_err(|e| CreateError::BundlePull(Box::new(e)))
        }
    }
}

/// The pod's and the container's names in the guest: the Kubernetes pod's and the pod
/// spec's container's (CRI annotations) where they are DNS labels; else containerd's id
/// where that is one ([`pod_name`]); the container is named as the pod when it has no
/// name of its own.
pub fn names(
    id: &str,
    kubernetes: Option<&jek_service_client::wire::KubernetesPod>,
    cri: Option<&process::CriContainer>,
) -> (String, String) {
    let label = |n: &str| jek_pod::spec::check_label(n).is_ok();
    let pod = kubernetes
        .map(|k| k.name.as_str())
        .filter(|n| label(n))
        .map_or_else(|| pod_name(id), str::to_string);
    let container = match cri.map(|c| &c.kind) {
        Some(process::CriKind::Container { name }) if label(name) => name.clone(),
        _ => pod.clone(),
    };
    (pod, container)
}

/// A pod and container name from containerd's id: a DNS label (lower case letters,
/// digits, `-`, at most 63), else `container`.
pub fn pod_name(id: &str) -> String {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        id.to_string()
    } else {
        "container".into()
    }
}

impl Service {
    fn run_dir(&self, runtime: &Runtime, id: &str) -> PathBuf {
        runtime.run_root.join(&self.namespace).join(id)
    }

    fn container(&self, id: &str) -> Result<Task, containerd_shim::protos::ttrpc::Error> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    fn publish(&self, topic: &str, event: Box<dyn Event>) {
        if let Some(p) = &self.publisher {
            if let Err(e) = p.publish(Context::default(), topic, &self.namespace, event) {
                tracing::warn!(error = %e, topic, "publishing an event to containerd");
            }
        }
    }

    /// Create: read the runtime file, the policy and the spec; then, for a container of
    /// its own or a pod sandbox, verify the bundle; for a container (of its own, or of a
    /// sandbox this shim runs), read the root and pack its segment.
    fn prepare(&self, req: &api::CreateTaskRequest) -> Result<Created, CreateError> {
        // The shim acts for every pod on the host: what decides trust must be owned by root
        // (or the shim's user) and writable by no one else.
        let runtime = jek_config::runtime::load_strict(&runtime_path(req))?;
        let policy = jek_config::policy::load_strict(&runtime.policy)?;
        let bundle_dir = PathBuf::from(&req.bundle);
        let spec = process::load(&bundle_dir)?;
        let (pod_name, name) = names(&req.id, spec.kubernetes.as_ref(), spec.cri.as_ref());
        if let Some(process::CriContainer {
            sandbox_id,
            kind: process::CriKind::Container { .. },
        }) = &spec.cri
        {
            // A container of a Kubernetes pod: it joins the pod's VM, whose bundle was
            // verified when the sandbox booted.
            let pod = lock(&self.pods)
                .get(sandbox_id)
                .cloned()
                .ok_or_else(|| CreateError::NoSandbox(sandbox_id.clone()))?;
            let name = pod.free_name(&name);
            let segment = self.segment(req, &spec, &runtime, &policy, &name)?;
            return Ok(Created::Member(Box::new(Member::new(
                req.id.clone(),
                bundle_dir,
                req.stdout.clone(),
                req.stderr.clone(),
                name,
                pod,
                segment,
            ))));
        }
        let sandbox = matches!(
            spec.cri,
            Some(process::CriContainer {
                kind: process::CriKind::Sandbox,
                ..
            })
        );
        if sandbox && spec.network == process::NetworkNamespace::Host {
            return Err(CreateError::HostNetwork(pod_name));
        }
        let bundle = verify_bundle(&runtime.bundle, &policy.policy)?;
        let kubernetes = spec.kubernetes.clone();
        let run_dir = self.run_dir(&runtime, &req.id);
        let (pod, segment, vm) = if sandbox {
            // The pod sandbox: a VM whose init serves the agent channel, without the pause
            // image or any container; they join it as containerd creates them.
            let pod = PodSpec {
                agent: true,
                name: pod_name.clone(),
                hostname: spec.hostname.clone(),
                containers: Vec::new(),
            };
            (pod, None, Some(PodVm::new(pod_name, run_dir.clone())))
        } else {
            let segment = self.segment(req, &spec, &runtime, &policy, &name)?;
            let pod = PodSpec {
                agent: false,
                name: pod_name,
                hostname: spec.hostname.clone(),
                containers: vec![PodContainer {
                    name,
                    image: Some(segment.image.reference.clone()),
                    command: Vec::new(),
                    args: Vec::new(),
                    env: Vec::new(),
                    working_dir: None,
                }],
            };
            (pod, Some(segment), None)
        };
        Ok(Created::Vm(
            Box::new(Prepared {
                bundle,
                pod,
                segment,
                sandbox: vm,
                runtime,
                kubernetes,
            }),
            run_dir,
        ))
    }

    /// The container's segment: its root file system read from containerd's mounts, the
    /// image containerd made it from (allowed by the image policy), its process from the
    /// spec, under the guest name `name`.
    fn segment(
        &self,
        req: &api::CreateTaskRequest,
        spec: &process::SpecProcess,
        runtime: &Runtime,
        policy: &jek_config::policy::PolicyFile,
        name: &str,
    ) -> Result<ContainerSegment, CreateError> {
        let bundle_dir = PathBuf::from(&req.bundle);
        let root = if Path::new(&spec.root).is_absolute() {
            PathBuf::from(&spec.root)
        } else {
            bundle_dir.join(&spec.root)
        };
        let members = self.read_root(req, &root, runtime.max_rootfs_bytes)?;
        let identity = containerd::lookup(Path::new(&self.address), &self.namespace, &req.id)?;
        // The pod records the image by the manifest that runs: a verifier appraises it
        // without asking a registry what a tag names now (the image may have come from
        // `ctr image import` and be in no registry).
        let reference = pinned_reference(&identity.reference, &identity.manifest);
        jek_image::policy::verdict(
            policy.images.as_ref(),
            &reference,
            Path::new("/"),
            &identity.manifest,
        )
        .map_err(|e| match e {
            jek_image::policy::VerdictError::Reference(source) => CreateError::Reference {
                reference: reference.clone(),
                source,
            },
            jek_image::policy::VerdictError::Refused(source) => CreateError::ImagePolicy {
                reference: reference.clone(),
                source,
            },
        })?;
        let image = ContainerImage {
            container: name.to_string(),
            reference,
            manifest: identity.manifest,
            config_digest: identity.config,
            config: spec.config.clone(),
        };
        let bytes = container_segment(&image, &members)?;
        Ok(ContainerSegment { image, bytes })
    }

    /// Mounts containerd's rootfs mounts at `root` (when it gave any), reads the tree,
    /// and unmounts: the pod gets a copy, measured, and the host mount is not kept.
    fn read_root(
        &self,
        req: &api::CreateTaskRequest,
        root: &Path,
        limit: u64,
    ) -> Result<Vec<jek_pod::cpio::Member>, CreateError> {
        let mounted = !req.rootfs.is_empty();
        if mounted {
            std::fs::create_dir_all(root).map_err(|e| CreateError::Mount {
                target: root.to_path_buf(),
                reason: e.to_string(),
            })?;
            for m in &req.rootfs {
                mount::mount(&m.type_, &m.source, &m.options, root).map_err(|e| {
                    CreateError::Mount {
                        target: root.to_path_buf(),
                        reason: e.to_string(),
                    }
                })?;
            }
        }
        let read = rootfs::read_tree(root, limit);
        if mounted {
            if let Err(e) = rustix::mount::unmount(root, rustix::mount::UnmountFlags::DETACH) {
                tracing::warn!(error = %e, root = %root.display(), "unmounting the container's root");
            }
        }
        let (members, skipped) = read?;
        if !skipped.special.is_empty() || !skipped.mounts.is_empty() {
            tracing::info!(special = ?skipped.special, mounts = ?skipped.mounts, "left out of the container segment");
        }
        Ok(members)
    }
}

/// containerd's image name pinned to the manifest that runs: `name[:tag]@manifest` (a
/// digest in the name, perhaps an index's, is replaced).
pub fn pinned_reference(name: &str, manifest: &str) -> String {
    let base = name.split_once('@').map_or(name, |(n, _)| n);
    format!("{base}@{manifest}")
}

impl containerd_shim::Shim for Service {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Service {
            exit: Arc::new(ExitSignal::default()),
            namespace: args.namespace.clone(),
            address: args.address.clone(),
            socket: args.socket.clone(),
            containers: Arc::new(Mutex::new(HashMap::new())),
            pods: Arc::new(Mutex::new(HashMap::new())),
            publisher: None,
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        // The containers of one Kubernetes pod share a shim (and its VM), as containerd's
        // runc shim groups them: by the CRI's sandbox id. A second `start` for the group
        // finds the running shim's socket in use and answers with its address.
        let grouping = std::env::current_dir()
            .ok()
            .and_then(|bundle| process::load(&bundle).ok())
            .and_then(|spec| spec.cri)
            .map_or_else(|| opts.id.clone(), |c| c.sandbox_id);
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> Result<DeleteResponse, containerd_shim::Error> {
        // The shim died (containerd runs `delete` in the bundle directory): its VM's
        // QEMU died with it (setpriv's parent-death signal) and a swtpm that was not kept
        // went with its process group; the record names the rest, and stops a VMM still
        // running under the pod's uid.
        let cwd = std::env::current_dir().unwrap_or_default();
        if let Some(record) = task::ShimRecord::read(&cwd) {
            record.remove();
            let _ = std::fs::remove_file(cwd.join(task::RECORD_FILE));
        }
        let mut resp = DeleteResponse::new();
        resp.exit_status = 137;
        resp.exited_at = MessageField::some(timestamp(std::time::SystemTime::now()));
        Ok(resp)
    }

    fn wait(&mut self) {
        self.exit.wait();
        // containerd-shim removes the socket through the `address` file in the bundle
        // directory, which containerd has removed by the time it asks a shim to shut
        // down: remove it here, or every container would leave one in /run/containerd/s.
        if let Some(path) = self.socket.strip_prefix("unix://") {
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, path, "removing the shim's socket");
                }
            }
        }
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let mut s = self.clone();
        s.publisher = Some(Arc::new(publisher));
        s
    }
}

impl containerd_shim::Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if lock(&self.containers).contains_key(&req.id) {
            return Err(ttrpc_error(
                containerd_shim::protos::ttrpc::Code::ALREADY_EXISTS,
                CreateError::Exists(req.id.clone()).to_string(),
            ));
        }
        let refuse = |e: &CreateError| {
            let msg = format!("jek: {}", jek_errors::chain_line(e));
            tracing::error!(id = %req.id, "{msg}");
            ttrpc_error(
                containerd_shim::protos::ttrpc::Code::FAILED_PRECONDITION,
                msg,
            )
        };
        let t0 = std::time::Instant::now();
        let task = match self.prepare(&req).map_err(|e| refuse(&e))? {
            Created::Member(m) => {
                let m = Arc::new(*m);
                if !m.join_pod() {
                    return Err(refuse(&CreateError::NameTaken(m.name.clone())));
                }
                tracing::info!(
                    id = %req.id,
                    pod = %m.pod_name(),
                    container = %m.name,
                    create_ms = t0.elapsed().as_secs_f64() * 1000.0,
                    "created in its pod sandbox"
                );
                Task::Member(m)
            }
            Created::Vm(prepared, run_dir) => {
                tracing::info!(id = %req.id, bundle = %prepared.runtime.bundle, sandbox = prepared.sandbox.is_some(), "created");
                let c = Arc::new(Container::new(
                    req.id.clone(),
                    PathBuf::from(&req.bundle),
                    req.stdout.clone(),
                    req.stderr.clone(),
                    run_dir,
                    *prepared,
                ));
                c.record().write(&c.bundle_dir).map_err(|e| {
                    ttrpc_error(
                        containerd_shim::protos::ttrpc::Code::INTERNAL,
                        format!("jek: {}", jek_errors::chain_line(&e)),
                    )
                })?;
                if let Some(pod) = &c.sandbox {
                    lock(&self.pods).insert(req.id.clone(), Arc::clone(pod));
                }
                Task::Vm(c)
            }
        };
        lock(&self.containers).insert(req.id.clone(), task);
        Ok(api::CreateTaskResponse {
            pid: std::process::id(),
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let task = self.container(&req.id)?;
        let me = self.clone();
        let id = req.id.clone();
        // A short container may end as soon as it is up: its exit is published after its
        // start, never before (the sender is dropped once /tasks/start is out).
        let (start_published, after_start) = std::sync::mpsc::channel::<()>();
        let exited = move |code| {
            let _ = after_start.recv();
            let mut e = TaskExit::new();
            e.container_id.clone_from(&id);
            e.id.clone_from(&id);
            e.pid = std::process::id();
            e.exit_status = code;
            e.exited_at = MessageField::some(timestamp(std::time::SystemTime::now()));
            me.publish("/tasks/exit", Box::new(e));
        };
        let started_before = || {
            ttrpc_error(
                containerd_shim::protos::ttrpc::Code::FAILED_PRECONDITION,
                format!("container {} was started before", req.id),
            )
        };
        match &task {
            Task::Vm(c) => {
                let Some(up) = c.start(exited) else {
                    return Err(started_before());
                };
                // Started means up: a pod whose boot failed fails its Start, with the reason.
                match up.recv() {
                    Ok(Ok(())) => {}
                    Ok(Err(reason)) => {
                        return Err(ttrpc_error(
                            containerd_shim::protos::ttrpc::Code::UNKNOWN,
                            format!("container {}: {reason}", req.id),
                        ))
                    }
                    Err(_) => {
                        return Err(ttrpc_error(
                            containerd_shim::protos::ttrpc::Code::INTERNAL,
                            format!(
                                "container {}: the pod's boot thread ended without a word",
                                req.id
                            ),
                        ))
                    }
                }
            }
            Task::Member(m) => match m.start(exited) {
                Ok(Some(pid)) => {
                    tracing::info!(id = %req.id, container = %m.name, pid, "started in its pod sandbox");
                }
                Ok(None) => return Err(started_before()),
                Err(e) => {
                    let msg = format!("jek: container {}: {}", req.id, jek_errors::chain_line(&e));
                    tracing::error!("{msg}");
                    return Err(ttrpc_error(
                        containerd_shim::protos::ttrpc::Code::UNKNOWN,
                        msg,
                    ));
                }
            },
        }
        let mut e = TaskStart::new();
        e.container_id.clone_from(&req.id);
        e.pid = std::process::id();
        self.publish("/tasks/start", Box::new(e));
        drop(start_published);
        Ok(api::StartResponse {
            pid: std::process::id(),
            ..Default::default()
        })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        use containerd_shim::protos::types::task::Status as S;
        let task = self.container(&req.id)?;
        let (stdout, stderr) = task.stdio();
        let mut resp = api::StateResponse {
            id: task.id().to_string(),
            bundle: task.bundle_dir().to_string_lossy().into_owned(),
            pid: std::process::id(),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            ..Default::default()
        };
        resp.status = match task.status() {
            Status::Created => S::CREATED,
            Status::Running => S::RUNNING,
            Status::Stopped { code, at } => {
                resp.exit_status = code;
                resp.exited_at = MessageField::some(timestamp(at));
                S::STOPPED
            }
        }
        .into();
        Ok(resp)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let task = self.container(&req.id)?;
        let (code, at) = task.wait();
        Ok(api::WaitResponse {
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        match self.container(&req.id)? {
            Task::Vm(c) => c.kill(req.signal),
            Task::Member(m) => m.kill(req.signal).map_err(|e| {
                ttrpc_error(
                    containerd_shim::protos::ttrpc::Code::UNKNOWN,
                    format!("jek: container {}: {}", req.id, jek_errors::chain_line(&e)),
                )
            })?,
        }
        Ok(api::Empty::new())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let task = self.container(&req.id)?;
        let (code, at) = match task.status() {
            Status::Running => {
                return Err(ttrpc_error(
                    containerd_shim::protos::ttrpc::Code::FAILED_PRECONDITION,
                    format!("container {} is running: kill it first", req.id),
                ))
            }
            Status::Created => {
                match &task {
                    Task::Vm(c) => c.kill(9),
                    Task::Member(m) => {
                        let _ = m.kill(9);
                    }
                }
                task.wait()
            }
            Status::Stopped { code, at } => (code, at),
        };
        match &task {
            Task::Vm(c) => {
                c.remove();
                lock(&self.pods).remove(&req.id);
            }
            Task::Member(m) => m.remove(),
        }
        lock(&self.containers).remove(&req.id);
        let mut e = TaskDelete::new();
        e.container_id.clone_from(&req.id);
        e.id.clone_from(&req.id);
        e.pid = std::process::id();
        e.exit_status = code;
        e.exited_at = MessageField::some(timestamp(at));
        self.publish("/tasks/delete", Box::new(e));
        Ok(api::DeleteResponse {
            pid: std::process::id(),
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let _ = self.container(&req.id)?;
        let mut info = containerd_shim::protos::types::task::ProcessInfo::new();
        info.pid = std::process::id();
        Ok(api::PidsResponse {
            processes: vec![info],
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // containerd asks after every Delete: a shim serving a pod sandbox stays until the
        // sandbox itself is deleted.
        let busy = lock(&self.containers)
            .values()
            .any(|c| c.status() == Status::Running);
        if !busy && lock(&self.pods).is_empty() {
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert_eq!(pod_name("t1"), "t1");
        assert_eq!(pod_name("T_1"), "container");
        let id = "a".repeat(64);
        assert_eq!(
            names(&id, None, None),
            ("container".into(), "container".into())
        );
        let pod = jek_service_client::wire::KubernetesPod {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "u".into(),
        };
        let app = process::CriContainer {
            sandbox_id: "s".into(),
            kind: process::CriKind::Container { name: "app".into() },
        };
        assert_eq!(
            names(&id, Some(&pod), Some(&app)),
            ("web-0".into(), "app".into())
        );
        let sandbox = process::CriContainer {
            sandbox_id: "s".into(),
            kind: process::CriKind::Sandbox,
        };
        assert_eq!(
            names("t1", Some(&pod), Some(&sandbox)),
            ("web-0".into(), "web-0".into())
        );
        // A pod name with dots (a DNS subdomain) is no label: the id stands in.
        let dotted = jek_service_client::wire::KubernetesPod {
            name: "web.0".into(),
            ..pod
        };
        assert_eq!(names("t1", Some(&dotted), None), ("t1".into(), "t1".into()));
        let m = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            pinned_reference("docker.io/library/busybox:jek-test", &m),
            format!("docker.io/library/busybox:jek-test@{m}")
        );
        let index = format!("sha256:{}", "b".repeat(64));
        assert_eq!(
            pinned_reference(&format!("localhost:5000/busybox@{index}"), &m),
            format!("localhost:5000/busybox@{m}")
        );
    }
}
