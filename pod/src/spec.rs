//! The pod specification the init reads: `/etc/jek/pod.json` (the pod segment appended by
//! the loader, if any) or else `/etc/jek/app.json` (baked into the bundle by the builder).

use serde::{Deserialize, Serialize};

/// Where the loader's pod segment puts the pod spec.
pub const POD_SPEC_PATH: &str = "/etc/jek/pod.json";
/// Where the builder puts the default application.
pub const APP_SPEC_PATH: &str = "/etc/jek/app.json";

/// A pod: a name and the containers to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    /// Pod name, printed in the ready line.
    pub name: String,
    /// The guest's host name (default: the pod's name): Kubernetes' `spec.hostname`, or the
    /// host name containerd's CRI gives the sandbox. Absent from the JSON when unset, so
    /// a pod without one has the segment it always had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// A pod sandbox: the init stays up after boot and serves the host's agent channel
    /// ([`crate::agent`]), through which containers join the running pod. Absent from the
    /// JSON when false, so a pod without it has the segment it always had.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent: bool,
    /// Containers, started together at boot (a sandbox may have none: its containers
    /// arrive over the agent channel).
    pub containers: Vec<Container>,
}

/// One process to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// The OCI image the container runs, as the pod file names it (a registry reference
    /// or `oci:DIR[:TAG]`). Its root file system and record arrive in the container's own
    /// segment ([`crate::image`]). `None`: a program of the bundle's root file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Executable and leading arguments (empty with an image: its Entrypoint and Cmd).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Further arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Working directory (default: the image's, else `/`).
    #[serde(
        default,
        rename = "workingDir",
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
}

/// One environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// The longest DNS-1123 label (RFC 1123, as Kubernetes uses it for pod and container
/// names).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a name is not a DNS-1123 label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelError {
    /// Empty.
    Empty,
    /// Longer than [`MAX_LABEL_LEN`] bytes.
    TooLong,
    /// A host name longer than [`MAX_HOSTNAME_LEN`] bytes.
    HostnameTooLong,
    /// A character other than `a-z`, `0-9` and `-`, at this byte position.
    Character(usize),
    /// Starts or ends with `-`.
    Edge,
}

impl std::fmt::Display for LabelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelError::Empty => f.write_str("it is empty"),
            LabelError::TooLong => write!(f, "it is longer than {MAX_LABEL_LEN} characters"),
            LabelError::HostnameTooLong => {
                write!(f, "it is longer than {MAX_HOSTNAME_LEN} bytes")
            }
            LabelError::Character(at) => write!(
                f,
                "the character at position {at} is not a lowercase letter, digit or '-'"
            ),
            LabelError::Edge => f.write_str("it starts or ends with '-'"),
        }
    }
}

/// Checks that `name` is a DNS-1123 label: 1 to 63 of `a-z 0-9 -`, starting and ending
/// with a letter or digit. Pod names become directory names and parts of option strings
/// (swtpm's `dir=`), so no `/`, `.`, `,` or `=` may pass.
pub fn check_label(name: &str) -> Result<(), LabelError> {
    if name.is_empty() {
        return Err(LabelError::Empty);
    }
    if name.len() > MAX_LABEL_LEN {
        return Err(LabelError::TooLong);
    }
    if let Some(at) = name
        .bytes()
        .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        return Err(LabelError::Character(at));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(LabelError::Edge);
    }
    Ok(())
}

/// The longest host name Linux takes (`HOST_NAME_MAX`).
pub const MAX_HOSTNAME_LEN: usize = 64;

/// Checks a host name: at most [`MAX_HOSTNAME_LEN`] bytes of DNS-1123 labels joined by
/// dots (a character's position counts from the start of the whole name).
pub fn check_hostname(name: &str) -> Result<(), LabelError> {
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(LabelError::HostnameTooLong);
    }
    let mut offset = 0;
    for label in name.split('.') {
        check_label(label).map_err(|e| match e {
            LabelError::Character(at) => LabelError::Character(offset + at),
            e => e,
        })?;
        offset += label.len() + 1;
    }
    Ok(())
}

/// Why a spec is unusable.
#[derive(Debug)]
pub enum SpecError {
    /// Not JSON of the right shape.
    Json(serde_json::Error),
    /// No containers, or a container without a command.
    Empty(&'static str),
    /// A pod or container name that is not a DNS-1123 label.
    Name(String, LabelError),
    /// Two containers of this name.
    Duplicate(String),
    /// A host name that is not DNS-1123 labels joined by dots, at most 64 bytes.
    Hostname(String, LabelError),
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::Json(e) => write!(f, "invalid pod spec JSON: {e}"),
            SpecError::Empty(what) => write!(f, "invalid pod spec: {what}"),
            SpecError::Duplicate(name) => {
                write!(f, "invalid pod spec: two containers are named {name:?}")
            }
            SpecError::Hostname(name, e) => write!(
                f,
                "invalid pod spec: host name {name:?} is not DNS-1123 labels joined by dots, at most {MAX_HOSTNAME_LEN} bytes: {e}"
            ),
            SpecError::Name(name, e) => {
                write!(
                    f,
                    "invalid pod spec: name {name:?} is not a DNS-1123 label: {e}"
                )
            }
        }
    }
}

impl std::error::Error for SpecError {}

impl PodSpec {
    /// Parses and checks a spec.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        let spec: PodSpec = serde_json::from_slice(bytes).map_err(SpecError::Json)?;
        // A sandbox may start empty: its containers join it over the agent channel.
        if spec.containers.is_empty() && !spec.agent {
            return Err(SpecError::Empty("no containers"));
        }
        if spec
            .containers
            .iter()
            .any(|c| c.command.is_empty() && c.image.is_none())
        {
            return Err(SpecError::Empty(
                "a container has neither a command nor an image",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        if let Some(c) = spec.containers.iter().find(|c| !names.insert(&c.name)) {
            return Err(SpecError::Duplicate(c.name.clone()));
        }
        for name in std::iter::once(&spec.name).chain(spec.containers.iter().map(|c| &c.name)) {
            check_label(name).map_err(|e| SpecError::Name(name.clone(), e))?;
        }
        if let Some(h) = &spec.hostname {
            check_hostname(h).map_err(|e| SpecError::Hostname(h.clone(), e))?;
        }
        Ok(spec)
    }

    /// The guest's host name: [`PodSpec::hostname`], else the pod's name.
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_a_sandbox_may_start_without_containers() {
        let sandbox = br#"{"name":"p","agent":true,"containers":[]}"#;
        let spec = PodSpec::from_json(sandbox).unwrap();
        assert!(spec.agent && spec.containers.is_empty());
        assert!(PodSpec::from_json(br#"{"name":"p","containers":[]}"#).is_err());
    }

    #[test]
    fn names_are_dns_1123_labels() {
        for ok in ["a", "web-1", "0abc", &"a".repeat(63)] {
            assert_eq!(check_label(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_label(""), Err(LabelError::Empty));
        assert_eq!(check_label(&"a".repeat(64)), Err(LabelError::TooLong));
        assert_eq!(check_label("../../x"), Err(LabelError::Character(0)));
        assert_eq!(check_label("p,dir=/tmp"), Err(LabelError::Character(1)));
        assert_eq!(check_label("Web"), Err(LabelError::Character(0)));
        assert_eq!(check_label("a.b"), Err(LabelError::Character(1)));
        assert_eq!(check_label("ü"), Err(LabelError::Character(0)));
        assert_eq!(check_label("-a"), Err(LabelError::Edge));
        assert_eq!(check_label("a-"), Err(LabelError::Edge));
        assert!(PodSpec::from_json(
            br#"{"name":"../x","containers":[{"name":"a","command":["/x"]}]}"#
        )
        .is_err());
        assert!(PodSpec::from_json(
            br#"{"name":"p","containers":[{"name":"A","command":["/x"]}]}"#
        )
        .is_err());
    }

    #[test]
    fn host_names_are_labels_joined_by_dots() {
        for ok in ["web", "web-0.svc", &format!("{}.b", "a".repeat(62))] {
            assert_eq!(check_hostname(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_hostname(&"a.".repeat(33)),
            Err(LabelError::HostnameTooLong)
        );
        assert_eq!(check_hostname("a..b"), Err(LabelError::Empty));
        assert_eq!(check_hostname("web.Svc"), Err(LabelError::Character(4)));
        assert_eq!(check_hostname("web.-x"), Err(LabelError::Edge));
        let with = |h: &str| {
            PodSpec::from_json(
                format!(r#"{{"name":"p","hostname":"{h}","containers":[{{"name":"a","command":["/x"]}}]}}"#)
                    .as_bytes(),
            )
        };
        assert_eq!(with("web.svc").unwrap().hostname(), "web.svc");
        assert!(matches!(with("a b"), Err(SpecError::Hostname(..))));
        let none =
            PodSpec::from_json(br#"{"name":"p","containers":[{"name":"a","command":["/x"]}]}"#)
                .unwrap();
        assert_eq!(none.hostname(), "p");
        // Unset, it is not written: a pod without one keeps its segment's bytes.
        assert!(!serde_json::to_string(&none).unwrap().contains("hostname"));
    }

    #[test]
    fn parses_and_rejects() {
        let s = PodSpec::from_json(br#"{"name":"p","containers":[{"name":"a","command":["/bin/x"],"env":[{"name":"K","value":"V"}]}]}"#).unwrap();
        assert_eq!(s.containers[0].env[0].value, "V");
        assert!(matches!(
            PodSpec::from_json(br#"{"name":"p","containers":[]}"#),
            Err(SpecError::Empty(_))
        ));
        assert!(matches!(
            PodSpec::from_json(br#"{"name":"p","containers":[],"x":1}"#),
            Err(SpecError::Json(_))
        ));
    }
}
