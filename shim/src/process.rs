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
