//! The pod file: a small subset of a Kubernetes Pod in YAML, turned into the guest's
//! [`PodSpec`]. Anything outside the subset is refused by name rather than ignored, so a
//! pod never silently runs without a setting its author wrote.
//!
//! ```yaml
//! apiVersion: v1
//! kind: Pod
//! metadata:
//!   name: hello
//! spec:
//!   containers:
//!     - name: app
//!       command: ["/bin/jek-sample-app"]
//!       args: ["--exit-code", "0"]
//!       env:
//!         - name: GREETING
//!           value: hi
//!     - name: web
//!       image: localhost:5000/jek/busybox:1.35   # or oci:DIR[:TAG]
//!       command: [/bin/sh, -c]                   # optional with an image
//!       args: ["echo hi from $(hostname)"]
//!       workingDir: /tmp
//! ```
//!
//! A container with `image` runs that OCI image (its root file system, Entrypoint, Cmd,
//! Env, WorkingDir and User, with Kubernetes' override rules); one without runs a program
//! of the bundle's own root file system.

use std::path::Path;

use jek_pod::spec::{Container, EnvVar, PodSpec};

use crate::{ConfigError, MAX_CONFIG_SIZE};
use serde::{Deserialize, Serialize};

/// Why a pod file is invalid.
#[derive(Debug, thiserror::Error)]
pub enum PodFileError {
    /// Not YAML of the expected shape (unknown fields are named).
    #[error("not a valid pod document")]
    Yaml(#[source] serde_yaml::Error),
    /// `apiVersion` or `kind` is not `v1` / `Pod`.
    #[error(
        "expected apiVersion: v1 and kind: Pod, found apiVersion: {api_version:?}, kind: {kind:?}"
    )]
    Kind {
        /// Found apiVersion.
        api_version: String,
        /// Found kind.
        kind: String,
    },
    /// A container with an image reference that does not parse.
    #[error("spec.containers[{index}].image ({name:?})")]
    Image {
        /// Index.
        index: usize,
        /// Name.
        name: String,
        /// Why.
        #[source]
        source: jek_image::reference::ReferenceError,
    },
    /// Two containers with one name.
    #[error("spec.containers[{index}].name = {name:?} is used by an earlier container too")]
    Duplicate {
        /// Index.
        index: usize,
        /// Name.
        name: String,
    },
    /// A container without a command or an image.
    #[error("spec.containers[{index}] ({name:?}) has neither a command nor an image")]
    NoCommand {
        /// Index.
        index: usize,
        /// Name.
        name: String,
    },
    /// No containers (in a pod that is no sandbox).
    #[error("spec.containers is empty (only a pod sandbox, annotation {AGENT_ANNOTATION}: \"true\", starts without containers)")]
    NoContainers,
    /// An annotation jek does not know, or a value it does not take.
    #[error("metadata.annotations[{key:?}] = {value:?}: {reason}")]
    Annotation {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A name that is not a DNS-1123 label (as in Kubernetes): it would become a
    /// directory name and part of option strings.
    #[error("{field} = {value:?} is not a DNS-1123 label (1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit): {reason}")]
    Name {
        /// The field.
        field: String,
        /// The name found.
        value: String,
        /// What is wrong with it.
        reason: jek_pod::spec::LabelError,
    },
    /// A host name that is not DNS-1123 labels joined by dots.
    #[error("spec.hostname = {value:?} is not DNS-1123 labels joined by dots (at most 64 bytes): {reason}")]
    Hostname {
        /// The host name found.
        value: String,
        /// What is wrong with it.
        reason: jek_pod::spec::LabelError,
    },
}

fn label(field: impl FnOnce() -> String, value: &str) -> Result<(), PodFileError> {
    jek_pod::spec::check_label(value).map_err(|reason| PodFileError::Name {
        field: field(),
        value: value.to_string(),
        reason,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodDoc {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The annotation that makes a pod a sandbox ([`PodSpec::agent`]): `"true"` or `"false"`.
pub const AGENT_ANNOTATION: &str = "jek.dev/agent";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    hostname: Option<String>,
    containers: Vec<ContainerDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerDoc {
    name: String,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default, rename = "workingDir")]
    working_dir: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvDoc {
    name: String,
    #[serde(default)]
    value: String,
}

/// Parses a pod document.
pub fn parse(yaml: &str) -> Result<PodSpec, PodFileError> {
    let doc: PodDoc = serde_yaml::from_str(yaml).map_err(PodFileError::Yaml)?;
    if doc.api_version != "v1" || doc.kind != "Pod" {
        return Err(PodFileError::Kind {
            api_version: doc.api_version,
            kind: doc.kind,
        });
    }
    label(|| "metadata.name".into(), &doc.metadata.name)?;
    if let Some(h) = &doc.spec.hostname {
        jek_pod::spec::check_hostname(h).map_err(|reason| PodFileError::Hostname {
            value: h.clone(),
            reason,
        })?;
    }
    let mut agent = false;
    for (key, value) in &doc.metadata.annotations {
        let refuse = |reason| PodFileError::Annotation {
            key: key.clone(),
            value: value.clone(),
            reason,
        };
        if key != AGENT_ANNOTATION {
            return Err(refuse("jek knows only the annotation jek.dev/agent"));
        }
        agent = match value.as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(refuse("\"true\" or \"false\"")),
        };
    }
    if doc.spec.containers.is_empty() && !agent {
        return Err(PodFileError::NoContainers);
    }
    let mut containers = Vec::new();
    for (index, c) in doc.spec.containers.into_iter().enumerate() {
        label(|| format!("spec.containers[{index}].name"), &c.name)?;
        if containers.iter().any(|o: &Container| o.name == c.name) {
            return Err(PodFileError::Duplicate {
                index,
                name: c.name,
            });
        }
        if let Some(image) = &c.image {
            jek_image::ImageRef::parse(image, Path::new("/")).map_err(|source| {
                PodFileError::Image {
                    index,
                    name: c.name.clone(),
                    source,
                }
            })?;
        } else if c.command.is_empty() {
            return Err(PodFileError::NoCommand {
                index,
                name: c.name,
            });
        }
        containers.push(Container {
            name: c.name,
            image: c.image,
            working_dir: c.working_dir,
            command: c.command,
            args: c.args,
            env: c
                .env
                .into_iter()
                .map(|e| EnvVar {
                    name: e.name,
                    value: e.value,
                })
                .collect(),
        });
    }
    Ok(PodSpec {
        agent,
        name: doc.metadata.name,
        hostname: doc.spec.hostname,
        containers,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: MetadataOut<'a>,
    spec: SpecOut<'a>,
}

#[derive(Serialize)]
struct MetadataOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    annotations: std::collections::BTreeMap<&'static str, &'static str>,
}

#[derive(Serialize)]
struct SpecOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    // The pod spec's containers serialize with the pod file's field names.
    containers: &'a [Container],
}

/// The pod file of `spec`: what [`parse`] reads back as `spec`. The containerd shim
/// writes it beside a pod it made, for registering that pod with the verifier.
pub fn render(spec: &PodSpec) -> String {
    let doc = PodOut {
        api_version: "v1",
        kind: "Pod",
        metadata: MetadataOut {
            name: &spec.name,
            annotations: if spec.agent {
                [(AGENT_ANNOTATION, "true")].into()
            } else {
                std::collections::BTreeMap::new()
            },
        },
        spec: SpecOut {
            hostname: spec.hostname.as_deref(),
            containers: &spec.containers,
        },
    };
    // Strings, lists and maps only: serializing cannot fail.
    serde_yaml::to_string(&doc).unwrap_or_default()
}

/// Reads and parses a pod file.
pub fn load(path: &Path) -> Result<PodSpec, ConfigError> {
    let text = crate::read_text("pod file", path, MAX_CONFIG_SIZE)?;
    parse(&text).map_err(|source| ConfigError::Pod {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - name: a\n      command: [/bin/x]\n      env: [{name: K, value: V}]\n";

    #[test]
    fn render_reads_back() {
        let mut p = parse(POD).unwrap();
        p.hostname = Some("web-0.svc".into());
        p.containers.push(Container {
            name: "b".into(),
            image: Some("docker.io/library/busybox:t@sha256:".to_string() + &"a".repeat(64)),
            command: Vec::new(),
            args: vec!["echo 'q' \"x\": y".into()],
            env: Vec::new(),
            working_dir: Some("/srv".into()),
        });
        assert_eq!(parse(&render(&p)).unwrap(), p);
        let sandbox = PodSpec {
            agent: true,
            containers: Vec::new(),
            ..p
        };
        assert_eq!(parse(&render(&sandbox)).unwrap(), sandbox);
    }

    #[test]
    fn a_sandbox_is_an_annotation_and_may_start_empty() {
        let sandbox = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {jek.dev/agent: \"true\"}\nspec:\n  containers: []\n";
        let p = parse(sandbox).unwrap();
        assert!(p.agent && p.containers.is_empty());
        let e = parse(&sandbox.replace("\"true\"", "\"false\"")).unwrap_err();
        assert!(matches!(e, PodFileError::NoContainers), "{e}");
        let e = parse(&sandbox.replace("\"true\"", "yes")).unwrap_err();
        assert!(e.to_string().contains("jek.dev/agent"), "{e}");
        let e = parse(&sandbox.replace("jek.dev/agent", "example.com/x")).unwrap_err();
        assert!(
            matches!(&e, PodFileError::Annotation { key, .. } if key == "example.com/x"),
            "{e}"
        );
        // A pod that is no sandbox keeps the segment it always had.
        assert!(!jek_pod::segment::spec_json(&parse(POD).unwrap())
            .windows(5)
            .any(|w| w == b"agent"));
    }

    #[test]
    fn reads_the_subset() {
        let p = parse(POD).unwrap();
        assert_eq!(p.name, "p");
        assert_eq!(p.containers[0].env[0].value, "V");
    }

    #[test]
    fn refuses_what_it_does_not_implement() {
        let err = parse(&POD.replace("spec:\n", "spec:\n  hostname: Web\n")).unwrap_err();
        assert!(err.to_string().contains("spec.hostname"), "{err}");
        let with_volume = POD.replace("spec:\n", "spec:\n  volumes: []\n");
        let err = format!(
            "{:#}",
            parse(&with_volume).map(|_| ()).unwrap_err().source_text()
        );
        assert!(err.contains("volumes"), "{err}");
        assert!(matches!(
            parse(&POD.replace("kind: Pod", "kind: Deployment")),
            Err(PodFileError::Kind { .. })
        ));
        assert!(matches!(
            parse(&POD.replace("command: [/bin/x]", "args: [x]")),
            Err(PodFileError::NoCommand { index: 0, .. })
        ));
    }

    #[test]
    fn images() {
        let pod = POD.replace(
            "command: [/bin/x]",
            "image: localhost:5000/jek/busybox:1\n      workingDir: /srv",
        );
        let p = parse(&pod).unwrap();
        assert_eq!(
            p.containers[0].image.as_deref(),
            Some("localhost:5000/jek/busybox:1")
        );
        assert_eq!(p.containers[0].working_dir.as_deref(), Some("/srv"));
        assert!(p.containers[0].command.is_empty());
        let bad = POD.replace("command: [/bin/x]", "image: \"a b\"");
        assert!(matches!(
            parse(&bad),
            Err(PodFileError::Image { index: 0, .. })
        ));
        let two = POD.replace(
            "spec:\n  containers:\n",
            "spec:\n  containers:\n    - {name: a, command: [/y]}\n",
        );
        assert!(matches!(
            parse(&two),
            Err(PodFileError::Duplicate { index: 1, .. })
        ));
    }

    #[test]
    fn names_must_be_dns_1123_labels() {
        for (bad, field) in [
            ("metadata: {name: ../../x}", "metadata.name"),
            ("metadata: {name: \"p,dir=/tmp/evil\"}", "metadata.name"),
            ("metadata: {name: \"\"}", "metadata.name"),
            ("metadata: {name: Web}", "metadata.name"),
        ] {
            let err = parse(&POD.replace("metadata: {name: p}", bad)).unwrap_err();
            assert!(
                matches!(&err, PodFileError::Name { field: f, .. } if f == field),
                "{bad}: {err}"
            );
        }
        let err = parse(&POD.replace("- name: a", "- name: a/b")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.containers[0].name = \"a/b\" is not a DNS-1123 label (1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit): the character at position 1 is not a lowercase letter, digit or '-'"
        );
    }

    impl PodFileError {
        fn source_text(&self) -> String {
            match self {
                PodFileError::Yaml(e) => e.to_string(),
                other => other.to_string(),
            }
        }
    }
}
