//! The container's process, from the bundle's OCI runtime spec (`config.json`).
//!
//! containerd (or the CRI plugin) has already merged the image config and the user's
//! request into the spec's `process`: its args, env, cwd and user are final. The shim
//! hands them to the guest's init as the container record's process fields, so the init
//! applies them with the same rules as a pod file's container (`jek_pod::image::resolve`):
//! the args as the entrypoint, the env as given, the user as `uid:gid`.

use std::path::Path;

use jek_pod::image::ImageConfig;
use jek_service_client::wire::KubernetesPod;
use oci_spec::runtime::Spec;

/// The CRI plugin's annotations naming the Kubernetes pod a container belongs to (on the
/// sandbox's spec and on every container's).
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
/// The pod's name.
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
/// The pod's uid.
pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";

/// What the CRI plugin made the spec for: `sandbox` (the pod's pause container) or
/// `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The id of the sandbox a container belongs to (the sandbox's own id on the sandbox).
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// The container's name in the pod spec (containers only).
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";

/// The largest `config.json` the shim reads.
pub const MAX_SPEC_SIZE: u64 = 4 << 20;

/// Why the spec cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("cannot read the OCI runtime spec {path}")]
    Read {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: jek_fsio::ReadError,
    },
    /// Not an OCI runtime spec.
    #[error("{path} is not an OCI runtime spec")]
    Parse {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No process, or one without arguments.
    #[error("the OCI runtime spec has no process arguments")]
    NoProcess,
    /// A terminal: the pod's console is a serial line, not a pty containerd can resize.
    #[error("a terminal (ctr run -t) is not supported: the container's output comes over the pod's serial console")]
    Terminal,
    /// The Kubernetes annotations are partial or malformed.
    #[error("the OCI runtime spec's Kubernetes annotations: {0}")]
    Kubernetes(String),
    /// The spec's host name is not one the guest can take.
    #[error("the OCI runtime spec's hostname {0:?} is not DNS-1123 labels joined by dots (at most 64 bytes): {1}")]
    Hostname(String, jek_pod::spec::LabelError),
}

/// The container's process and where its root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProcess {
    /// The process fields, as the container record carries them.
    pub config: ImageConfig,
    /// `root.path` (relative to the bundle when not absolute): where the root file system
    /// is, once containerd's mounts are mounted.
    pub root: String,
    /// `io.kubernetes.cri.image-name`, when the CRI plugin made the container.
    pub cri_image: Option<String>,
    /// The Kubernetes pod (namespace, name, uid) from the CRI plugin's annotations, when
    /// it made the container: what the pod is registered as with the verifier.
    pub kubernetes: Option<KubernetesPod>,
    /// `hostname`: the guest's host name (the CRI plugin sets the sandbox's).
    pub hostname: Option<String>,
    /// What the CRI plugin made this spec for, when it made it.
    pub cri: Option<CriContainer>,
    /// The container's network namespace, as the spec asks for it.
    pub network: NetworkNamespace,
}

/// The network namespace an OCI spec asks for (`linux.namespaces`, type `network`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkNamespace {
    /// None: the host's network (Kubernetes' `hostNetwork: true`, `ctr run --net-host`).
    Host,
    /// A new, empty one.
    New,
    /// The one at this path (the CRI's sandbox: what CNI configured).
    Path(std::path::PathBuf),
}

fn network_namespace(spec: &Spec) -> NetworkNamespace {
    let network = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| {
            ns.iter()
                .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        });
    match network {
        None => NetworkNamespace::Host,
        Some(n) => match n.path() {
            Some(p) if !p.as_os_str().is_empty() => NetworkNamespace::Path(p.clone()),
            _ => NetworkNamespace::New,
        },
    }
}

/// The CRI plugin's view of a container: the pod sandbox it belongs to and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriContainer {
    /// The sandbox's id (containerd's id of the pause container).
    pub sandbox_id: String,
    /// The sandbox itself, or one of its containers.
    pub kind: CriKind,
}

/// A CRI container's role in its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriKind {
    /// The pod sandbox (the pause container).
    Sandbox,
    /// A container of the pod, by its name in the pod spec.
    Container {
        /// `io.kubernetes.cri.container-name`.
        name: String,
    },
}

/// The CRI container the annotations describe: none when the CRI plugin did not make the
/// spec (no container type); a type without a sandbox id (or a container without a
/// name, or an unknown type) is refused.
fn cri_container(
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> Result<Option<CriContainer>, SpecError> {
    let get = |k: &str| annotations.and_then(|a| a.get(k)).cloned();
    let Some(kind) = get(CONTAINER_TYPE) else {
        return Ok(None);
    };
    let sandbox_id = get(SANDBOX_ID)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SpecError::Kubernetes(format!("{CONTAINER_TYPE} without {SANDBOX_ID}")))?;
    let kind = match kind.as_str() {
        "sandbox" => CriKind::Sandbox,
        "container" => CriKind::Container {
            name: get(CONTAINER_NAME)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    SpecError::Kubernetes(format!("a container without {CONTAINER_NAME}"))
                })?,
        },
        other => {
            return Err(SpecError::Kubernetes(format!(
                "{CONTAINER_TYPE} {other:?} is neither sandbox nor container"
            )))
        }
    };
    Ok(Some(CriContainer { sandbox_id, kind }))
}

/// The Kubernetes pod the annotations name: none of the three annotations, no pod; all
/// three and valid, the pod; anything else is refused (a registration would carry it).
fn kubernetes_pod(
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> Result<Option<KubernetesPod>, SpecError> {
    let get = |k: &str| annotations.and_then(|a| a.get(k)).cloned();
    match (get(SANDBOX_NAMESPACE), get(SANDBOX_NAME), get(SANDBOX_UID)) {
        (None, None, None) => Ok(None),
        (Some(namespace), Some(name), Some(uid)) => {
            let pod = KubernetesPod {
                namespace,
                name,
                uid,
            };
            pod.check().map_err(SpecError::Kubernetes)?;
            Ok(Some(pod))
        }
        _ => Err(SpecError::Kubernetes(format!(
            "{SANDBOX_NAMESPACE}, {SANDBOX_NAME} and {SANDBOX_UID} come together, or not at all"
        ))),
    }
}

/// Parses a spec's bytes.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<SpecProcess, SpecError> {
    let spec: Spec = serde_json::from_slice(bytes).map_err(|source| SpecError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let process = spec.process().as_ref().ok_or(SpecError::NoProcess)?;
    if process.terminal().unwrap_or(false) {
        return Err(SpecError::Terminal);
    }
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(SpecError::NoProcess);
    }
    let user = process.user();
    let cwd = process.cwd().to_string_lossy().into_owned();
    Ok(SpecProcess {
        config: ImageConfig {
            entrypoint: args,
            cmd: Vec::new(),
            env: process.env().clone().unwrap_or_default(),
            working_dir: (!cwd.is_empty()).then_some(cwd),
            user: Some(format!("{}:{}", user.uid(), user.gid())),
        },
        root: spec.root().as_ref().map_or_else(
            || "rootfs".into(),
            |r| r.path().to_string_lossy().into_owned(),
        ),
        cri_image: spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get("io.kubernetes.cri.image-name"))
            .cloned(),
        kubernetes: kubernetes_pod(spec.annotations().as_ref())?,
        cri: cri_container(spec.annotations().as_ref())?,
        network: network_namespace(&spec),
        hostname: match spec.hostname().as_deref() {
            None | Some("") => None,
            Some(h) => {
                jek_pod::spec::check_hostname(h)
                    .map_err(|e| SpecError::Hostname(h.to_string(), e))?;
                Some(h.to_string())
            }
        },
    })
}

/// Reads and parses `BUNDLE/config.json`.
pub fn load(bundle: &Path) -> Result<SpecProcess, SpecError> {
    let path = bundle.join("config.json");
    let bytes = jek_fsio::read_file(&path, MAX_SPEC_SIZE).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&path, &bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SPEC: &str = r#"{"ociVersion":"1.0.2","process":{"user":{"uid":1000,"gid":100},"args":["sh","-c","echo hi"],"env":["PATH=/bin","A=b"],"cwd":"/tmp"},"root":{"path":"rootfs"},"annotations":{"io.kubernetes.cri.image-name":"docker.io/library/busybox:1"}}"#;

    #[test]
    fn takes_the_merged_process() {
        let p = parse(Path::new("c.json"), SPEC.as_bytes()).unwrap();
        assert_eq!(p.config.entrypoint, ["sh", "-c", "echo hi"]);
        assert_eq!(p.config.env, ["PATH=/bin", "A=b"]);
        assert_eq!(p.config.working_dir.as_deref(), Some("/tmp"));
        assert_eq!(p.config.user.as_deref(), Some("1000:100"));
        assert_eq!(p.root, "rootfs");
        assert_eq!(p.cri_image.as_deref(), Some("docker.io/library/busybox:1"));
        assert_eq!(p.kubernetes, None);
        assert_eq!(p.cri, None);
        // No linux.namespaces at all: the host's network.
        assert_eq!(p.network, NetworkNamespace::Host);
        let with = |ns: &str| {
            SPEC.replace(
                r#""root":"#,
                &format!(r#""linux":{{"namespaces":[{ns}]}},"root":"#),
            )
        };
        let new = parse(
            Path::new("c"),
            with(r#"{"type":"pid"},{"type":"network"}"#).as_bytes(),
        );
        assert_eq!(new.unwrap().network, NetworkNamespace::New);
        let cni = with(r#"{"type":"network","path":"/var/run/netns/cni-1"}"#);
        assert_eq!(
            parse(Path::new("c"), cni.as_bytes()).unwrap().network,
            NetworkNamespace::Path("/var/run/netns/cni-1".into())
        );
    }

    #[test]
    fn the_cri_role_comes_from_the_container_type() {
        let with = |extra: &str| {
            SPEC.replace(r#""annotations":{"#, &format!(r#""annotations":{{{extra}"#))
        };
        let sandbox = with(&format!(
            r#""{CONTAINER_TYPE}":"sandbox","{SANDBOX_ID}":"s1","#
        ));
        assert_eq!(
            parse(Path::new("c"), sandbox.as_bytes()).unwrap().cri,
            Some(CriContainer {
                sandbox_id: "s1".into(),
                kind: CriKind::Sandbox
            })
        );
        let app = with(&format!(
            r#""{CONTAINER_TYPE}":"container","{SANDBOX_ID}":"s1","{CONTAINER_NAME}":"app","#
        ));
        assert_eq!(
            parse(Path::new("c"), app.as_bytes()).unwrap().cri,
            Some(CriContainer {
                sandbox_id: "s1".into(),
                kind: CriKind::Container { name: "app".into() }
            })
        );
        for bad in [
            format!(r#""{CONTAINER_TYPE}":"sandbox","#),
            format!(r#""{CONTAINER_TYPE}":"container","{SANDBOX_ID}":"s1","#),
            format!(r#""{CONTAINER_TYPE}":"vm","{SANDBOX_ID}":"s1","#),
        ] {
            let e = parse(Path::new("c"), with(&bad).as_bytes()).unwrap_err();
            assert!(matches!(e, SpecError::Kubernetes(_)), "{bad}: {e}");
            assert!(e.to_string().contains("io.kubernetes.cri."), "{e}");
        }
    }

    #[test]
    fn the_kubernetes_pod_comes_from_all_three_annotations_or_none() {
        let uid = "0d1c3a5e-7f00-4b1e-9a53-2c4e5f6a7b8c";
        let with = |extra: &str| {
            SPEC.replace(r#""annotations":{"#, &format!(r#""annotations":{{{extra}"#))
        };
        let all = with(&format!(
            r#""{SANDBOX_NAMESPACE}":"shop","{SANDBOX_NAME}":"web-7d4f.x","{SANDBOX_UID}":"{uid}","#
        ));
        let p = parse(Path::new("c"), all.as_bytes()).unwrap();
        assert_eq!(
            p.kubernetes,
            Some(KubernetesPod {
                namespace: "shop".into(),
                name: "web-7d4f.x".into(),
                uid: uid.into()
            })
        );
        let partial = with(&format!(r#""{SANDBOX_NAME}":"web","#));
        assert!(matches!(
            parse(Path::new("c"), partial.as_bytes()),
            Err(SpecError::Kubernetes(_))
        ));
        let bad = with(&format!(
            r#""{SANDBOX_NAMESPACE}":"Shop","{SANDBOX_NAME}":"web","{SANDBOX_UID}":"{uid}","#
        ));
        let e = parse(Path::new("c"), bad.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("kubernetes.namespace"), "{e}");
    }

    #[test]
    fn the_host_name_is_the_specs_when_it_is_a_host_name() {
        assert_eq!(
            parse(Path::new("c"), SPEC.as_bytes()).unwrap().hostname,
            None
        );
        let with = |h: &str| SPEC.replace(r#""root":"#, &format!(r#""hostname":"{h}","root":"#));
        let p = parse(Path::new("c"), with("web-0").as_bytes()).unwrap();
        assert_eq!(p.hostname.as_deref(), Some("web-0"));
        let e = parse(Path::new("c"), with("web 0;x").as_bytes()).unwrap_err();
        assert!(
            matches!(&e, SpecError::Hostname(h, _) if h == "web 0;x"),
            "{e}"
        );
        assert!(e.to_string().contains("hostname"), "{e}");
    }

    #[test]
    fn refuses_terminals_and_empty_processes() {
        let t = SPEC.replace(r#""cwd":"/tmp""#, r#""cwd":"/tmp","terminal":true"#);
        assert!(matches!(
            parse(Path::new("c"), t.as_bytes()),
            Err(SpecError::Terminal)
        ));
        let e = SPEC.replace(r#"["sh","-c","echo hi"]"#, "[]");
        assert!(matches!(
            parse(Path::new("c"), e.as_bytes()),
            Err(SpecError::NoProcess)
        ));
        assert!(matches!(
            parse(Path::new("c"), b"{"),
            Err(SpecError::Parse { .. })
        ));
    }
}
