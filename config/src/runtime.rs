//! `runtime.yaml`: how the containerd shim (`containerd-shim-jek-v2`) runs containers.
//!
//! YAML like every other jek file (one parser, one set of error messages; the issue
//! suggested TOML, but a second configuration language would be a second parser to
//! harden and fuzz), found at the path containerd's runtime options name (`ConfigPath`,
//! from containerd's config.toml or `ctr run --runtime-config-path`), else
//! `$JEK_RUNTIME_CONFIG`, else `/etc/jek/runtime.yaml`. Relative paths are taken from
//! the file's directory.
//!
//! ```yaml
//! bundle: /var/lib/jek/default.jek     # the signed kernel bundle every pod boots, or
//! # bundleRef: registry.example/jek/kernel:6.1   # pulled and verified at each Create
//! # registry: {plainHttp: false, caFile: /etc/jek/registry-ca.pem}
//! policy: /etc/jek/policy.yaml         # the policy it must pass (and the image policy)
//! vmm: qemu                            # qemu | kvm
//! memoryMiB: 256
//! vcpus: 1
//! runRoot: /run/jek/shim               # run directories, one per container
//! podUids: 1879048192-1879113727      # host uids for pods' VMMs, one per pod (default)
//! attestation:                         # optional: pods get an EK certificate and an AK
//!   tpmCa: /var/lib/jek/tpm-ca         #   and are registered in the agent's store
//!   registry: /var/lib/jek/registry
//!   verifier:                          # optional: each pod registers itself at start
//!     url: https://verifier.example:8443
//!     agent: https://node-1.example:9443   # how the verifier reaches this host's jek-agent
//!     ca: /etc/jek/verifier-ca.pem     # trust roots for the verifier's certificate
//!     token: /etc/jek/verifier.token   # a bearer token of the admin role, or
//!     # cert: /etc/jek/shim.crt        # a client certificate of the admin role
//!     # key: /etc/jek/shim.key
//!     required: true                   # a pod that cannot register is stopped (default)
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{ConfigError, MAX_CONFIG_SIZE};

/// The default location of the runtime file.
pub const DEFAULT_PATH: &str = "/etc/jek/runtime.yaml";

/// Which VMM runs the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeVmm {
    /// QEMU with jek as its pre-boot hook (TCG here; `accel: kvm` with hardware
    /// virtualization).
    Qemu,
    /// jek's own KVM VMM (hardware virtualization only).
    Kvm,
}

/// Pods registered for attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeAttestation {
    /// The local CA that certifies pod EKs.
    pub tpm_ca: PathBuf,
    /// The registration store the attestation agent serves.
    pub registry: PathBuf,
    /// The verifier each pod registers itself with, if any.
    pub verifier: Option<RuntimeVerifier>,
}

/// The attestation verifier pods register themselves with (and are removed from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVerifier {
    /// Its base URL: `https://`, or `http://` on loopback.
    pub url: String,
    /// This host's agent as the verifier reaches it (the verifier checks it further).
    pub agent: String,
    /// Extra trust roots (PEM) for the verifier's certificate.
    pub ca: Option<PathBuf>,
    /// The client credential, of the verifier's `admin` role.
    pub credential: VerifierCredential,
    /// Whether a pod that cannot be registered is stopped (else it runs unattested, with a
    /// warning in the shim's log).
    pub required: bool,
}

/// How the shim proves itself to the verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifierCredential {
    /// A file holding a bearer token.
    Token(PathBuf),
    /// A client certificate chain and its private key, PEM.
    Certificate {
        /// The certificate chain.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
}

impl RuntimeVerifier {
    /// The files that decide whom the shim trusts and how it proves itself, each with
    /// whether it holds a secret (the token, the key).
    pub fn files(&self) -> Vec<(&'static str, &Path, bool)> {
        let mut files = Vec::new();
        if let Some(ca) = &self.ca {
            files.push((
                "runtime file's attestation.verifier.ca",
                ca.as_path(),
                false,
            ));
        }
        match &self.credential {
            VerifierCredential::Token(t) => files.push((
                "runtime file's attestation.verifier.token",
                t.as_path(),
                true,
            )),
            VerifierCredential::Certificate { cert, key } => {
                files.push((
                    "runtime file's attestation.verifier.cert",
                    cert.as_path(),
                    false,
                ));
                files.push((
                    "runtime file's attestation.verifier.key",
                    key.as_path(),
                    true,
                ));
            }
        }
        files
    }
}

/// Where the kernel bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleSource {
    /// A bundle file (its detached signatures beside it).
    File(PathBuf),
    /// An OCI reference, pulled with its attached signatures and verified before use.
    Registry {
        /// `registry/repository:tag` or `@sha256:...`.
        reference: String,
        /// Talk HTTP, not HTTPS (a local test registry).
        plain_http: bool,
        /// Extra trust roots for the registry's TLS certificate.
        ca_file: Option<PathBuf>,
    },
}

impl std::fmt::Display for BundleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleSource::File(p) => write!(f, "{}", p.display()),
            BundleSource::Registry { reference, .. } => f.write_str(reference),
        }
    }
}

/// A validated runtime file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// The file it came from.
    pub path: PathBuf,
    /// The kernel bundle.
    pub bundle: BundleSource,
    /// The policy file.
    pub policy: PathBuf,
    /// The VMM.
    pub vmm: RuntimeVmm,
    /// QEMU's accelerator (`tcg` or `kvm`).
    pub accel: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u8,
    /// Where run directories go.
    pub run_root: PathBuf,
    /// The largest container root file system packed into a pod, in bytes.
    pub max_rootfs_bytes: u64,
    /// Attestation, if pods register.
    pub attestation: Option<RuntimeAttestation>,
    /// The host uids set aside for pods' VMMs, `(first, last)`, when the file names them
    /// (`podUids: FIRST-LAST`); the loader's default range otherwise.
    pub pod_uids: Option<(u32, u32)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAttestation {
    tpm_ca: PathBuf,
    registry: PathBuf,
    #[serde(default)]
    verifier: Option<RawVerifier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawVerifier {
    url: String,
    agent: String,
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    token: Option<PathBuf>,
    #[serde(default)]
    cert: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
    #[serde(default = "default_required")]
    required: bool,
}

fn default_required() -> bool {
    true
}

/// Whether `url`'s host is a loopback name or address.
fn loopback_host(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn verifier(
    raw: RawVerifier,
    abs: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<RuntimeVerifier, RuntimeFileError> {
    let value = |field, reason: &str| RuntimeFileError::Value {
        field,
        reason: reason.to_string(),
    };
    let url = raw.url.trim_end_matches('/').to_string();
    let plain_ok = url.strip_prefix("http://").is_some_and(loopback_host);
    let https = url.strip_prefix("https://").is_some_and(|r| !r.is_empty());
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) || !(https || plain_ok) {
        return Err(value(
            "attestation.verifier.url",
            "must be an https:// URL (http:// only on loopback: anyone on the path could read the credential)",
        ));
    }
    let agent = raw.agent.trim().to_string();
    if agent.is_empty()
        || !["https://", "http://", "unix:"]
            .iter()
            .any(|p| agent.starts_with(p))
    {
        return Err(value(
            "attestation.verifier.agent",
            "must be this host's agent as the verifier reaches it: https://, http:// (loopback) or unix:",
        ));
    }
    let credential = match (raw.token, raw.cert, raw.key) {
        (Some(t), None, None) => VerifierCredential::Token(abs(t)),
        (None, Some(cert), Some(key)) => VerifierCredential::Certificate {
            cert: abs(cert),
            key: abs(key),
        },
        (None, None, None) => {
            return Err(value(
                "attestation.verifier",
                "names no credential: token (a file), or cert and key (the verifier admits no anonymous registration)",
            ))
        }
        _ => {
            return Err(value(
                "attestation.verifier",
                "name either token, or cert and key together",
            ))
        }
    };
    Ok(RuntimeVerifier {
        url,
        agent,
        ca: raw.ca.map(abs),
        credential,
        required: raw.required,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRegistry {
    #[serde(default)]
    plain_http: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    bundle: Option<PathBuf>,
    #[serde(default)]
    bundle_ref: Option<String>,
    #[serde(default)]
    registry: Option<RawRegistry>,
    policy: PathBuf,
    #[serde(default = "default_vmm")]
    vmm: RuntimeVmm,
    #[serde(default = "default_accel")]
    accel: String,
    #[serde(default = "default_memory", rename = "memoryMiB")]
    memory_mib: u32,
    #[serde(default = "default_vcpus")]
    vcpus: u8,
    #[serde(default = "default_run_root")]
    run_root: PathBuf,
    #[serde(default = "default_max_rootfs", rename = "maxRootfsMiB")]
    max_rootfs_mib: u64,
    #[serde(default)]
    attestation: Option<RawAttestation>,
    #[serde(default)]
    pod_uids: Option<String>,
}

fn default_vmm() -> RuntimeVmm {
    RuntimeVmm::Qemu
}
fn default_accel() -> String {
    "tcg".into()
}
fn default_memory() -> u32 {
    256
}
fn default_vcpus() -> u8 {
    1
}
fn default_run_root() -> PathBuf {
    PathBuf::from("/run/jek/shim")
}
fn default_max_rootfs() -> u64 {
    256
}

/// Why a runtime file is invalid.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeFileError {
    /// Not the schema.
    #[error(transparent)]
    Yaml(#[from] serde_yaml::Error),
    /// A value out of range.
    #[error("{field}: {reason}")]
    Value {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Parses a runtime file's text; `base` is its directory.
pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Runtime, RuntimeFileError> {
    let raw: Raw = serde_yaml::from_str(text)?;
    let value = |field, reason: &str| RuntimeFileError::Value {
        field,
        reason: reason.to_string(),
    };
    if !(16..=65536).contains(&raw.memory_mib) {
        return Err(value("memoryMiB", "must be between 16 and 65536"));
    }
    if raw.vcpus == 0 || raw.vcpus > 32 {
        return Err(value("vcpus", "must be between 1 and 32"));
    }
    if !matches!(raw.accel.as_str(), "tcg" | "kvm") {
        return Err(value("accel", "must be tcg or kvm"));
    }
    if raw.max_rootfs_mib == 0 || raw.max_rootfs_mib > 4096 {
        return Err(value("maxRootfsMiB", "must be between 1 and 4096"));
    }
    let pod_uids = match raw.pod_uids.as_deref() {
        None => None,
        Some(text) => {
            let bad = || value("podUids", "must be FIRST-LAST, two uids above 65535");
            let (a, b) = text.split_once('-').ok_or_else(bad)?;
            let (a, b) = (
                a.trim().parse::<u32>().map_err(|_| bad())?,
                b.trim().parse::<u32>().map_err(|_| bad())?,
            );
            // The loader checks the rest (jek_loader::pod_user::UidRange).
            if a <= 65_535 || a > b || b == u32::MAX {
                return Err(bad());
            }
            Some((a, b))
        }
    };
    let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
    let bundle = match (raw.bundle, raw.bundle_ref, raw.registry) {
        (Some(file), None, None) => BundleSource::File(abs(file)),
        (None, Some(reference), registry) => {
            if reference.is_empty()
                || reference
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(value(
                    "bundleRef",
                    "must be a registry reference (host/repository:tag)",
                ));
            }
            let registry = registry.unwrap_or(RawRegistry {
                plain_http: false,
                ca_file: None,
            });
            BundleSource::Registry {
                reference,
                plain_http: registry.plain_http,
                ca_file: registry.ca_file.map(abs),
            }
        }
        (Some(_), Some(_), _) => {
            return Err(value(
                "bundle",
                "name either bundle (a file) or bundleRef (a registry reference), not both",
            ))
        }
        (Some(_), None, Some(_)) => return Err(value("registry", "applies to bundleRef only")),
        (None, None, _) => {
            return Err(value(
                "bundle",
                "missing: name bundle (a file) or bundleRef (a registry reference)",
            ))
        }
    };
    Ok(Runtime {
        path: path.to_path_buf(),
        bundle,
        policy: abs(raw.policy),
        vmm: raw.vmm,
        accel: raw.accel,
        memory_mib: raw.memory_mib,
        vcpus: raw.vcpus,
        run_root: abs(raw.run_root),
        max_rootfs_bytes: raw.max_rootfs_mib.saturating_mul(1 << 20),
        attestation: match raw.attestation {
            None => None,
            Some(a) => Some(RuntimeAttestation {
                tpm_ca: abs(a.tpm_ca),
                registry: abs(a.registry),
                verifier: a.verifier.map(|v| verifier(v, &abs)).transpose()?,
            }),
        },
        pod_uids,
    })
}

/// Reads and parses a runtime file strictly (as the containerd shim does, acting for every
/// pod on the host): the file must pass [`jek_fsio::check_strict`], and so must the
/// attestation CA and registration store it names (their directories are checked, the
/// CA's key and the registrations inside them are then safe from other users).
pub fn load_strict(path: &Path) -> Result<Runtime, ConfigError> {
    let untrusted = |what| move |source| ConfigError::Untrusted { what, source };
    jek_fsio::check_strict(path).map_err(untrusted("runtime file"))?;
    let runtime = load(path)?;
    if let Some(a) = &runtime.attestation {
        // Both are made on first use: until then, the directory they will be made in.
        jek_fsio::check_strict_or_nearest(&a.tpm_ca)
            .map_err(untrusted("runtime file's attestation.tpmCa"))?;
        jek_fsio::check_strict_or_nearest(&a.registry)
            .map_err(untrusted("runtime file's attestation.registry"))?;
        // Whom the shim trusts as the verifier and the credential it registers pods with:
        // a file another user could write would let that user take the registrations.
        for (what, file, secret) in a.verifier.iter().flat_map(RuntimeVerifier::files) {
            if secret {
                jek_fsio::check_secret(file).map_err(untrusted(what))?;
            } else {
                jek_fsio::check_strict(file).map_err(untrusted(what))?;
            }
        }
    }
    Ok(runtime)
}

/// Reads and parses a runtime file.
pub fn load(path: &Path) -> Result<Runtime, ConfigError> {
    let text = crate::read_text("runtime file", path, MAX_CONFIG_SIZE)?;
    parse(&text, path, crate::base_dir(path)).map_err(|source| ConfigError::Runtime {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_and_relative_paths() {
        let r = parse(
            "bundle: k.jek\npolicy: /etc/p.yaml\n",
            Path::new("/e/r.yaml"),
            Path::new("/e"),
        )
        .unwrap();
        assert_eq!(r.bundle, BundleSource::File(PathBuf::from("/e/k.jek")));
        assert_eq!(r.policy, Path::new("/etc/p.yaml"));
        assert_eq!((r.vmm, r.memory_mib, r.vcpus), (RuntimeVmm::Qemu, 256, 1));
        assert!(r.attestation.is_none());
        assert_eq!(r.pod_uids, None);
    }

    #[test]
    fn a_pod_uid_range() {
        let p = Path::new("/r.yaml");
        let r = parse(
            "bundle: a\npolicy: b\npodUids: 200000-200099\n",
            p,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(r.pod_uids, Some((200_000, 200_099)));
        for bad in [
            "0-100",
            "65534-70000",
            "300000-200000",
            "200000",
            "a-b",
            "200000-4294967295",
        ] {
            let e = parse(
                &format!("bundle: a\npolicy: b\npodUids: \"{bad}\"\n"),
                p,
                Path::new("/"),
            )
            .unwrap_err();
            assert!(e.to_string().starts_with("podUids:"), "{bad}: {e}");
        }
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values() {
        let p = Path::new("/r.yaml");
        assert!(parse("bundle: a\npolicy: b\nvmm: xen\n", p, Path::new("/")).is_err());
        assert!(parse("bundle: a\npolicy: b\nfoo: 1\n", p, Path::new("/")).is_err());
        let e = parse("bundle: a\npolicy: b\nvcpus: 0\n", p, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("vcpus"), "{e}");
        let e = parse("policy: b\n", p, Path::new("/")).unwrap_err();
        assert!(e.to_string().starts_with("bundle: missing"), "{e}");
        let e = parse(
            "bundle: a\nbundleRef: r/k:1\npolicy: b\n",
            p,
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e = parse(
            "bundle: a\nregistry: {plainHttp: true}\npolicy: b\n",
            p,
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("registry:"), "{e}");
    }

    #[test]
    fn a_verifier_to_register_with() {
        let head =
            "bundle: a\npolicy: b\nattestation:\n  tpmCa: ca\n  registry: reg\n  verifier:\n";
        let parse_v = |body: &str| {
            parse(
                &format!("{head}{body}"),
                Path::new("/e/r.yaml"),
                Path::new("/e"),
            )
        };
        let r = parse_v(
            "    url: https://v.example:8443/\n    agent: https://node:9443\n    token: t\n",
        )
        .unwrap();
        let v = r.attestation.unwrap().verifier.unwrap();
        assert_eq!(v.url, "https://v.example:8443");
        assert_eq!(
            v.credential,
            VerifierCredential::Token(PathBuf::from("/e/t"))
        );
        assert!(v.required);
        let r = parse_v("    url: http://127.0.0.1:9/\n    agent: unix:/run/a.sock\n    cert: c.pem\n    key: k.pem\n    ca: ca.pem\n    required: false\n")
            .unwrap();
        let v = r.attestation.unwrap().verifier.unwrap();
        assert_eq!(v.files().len(), 3);
        assert!(!v.required);
        for (body, field) in [
            // The credential would cross the network in the clear.
            (
                "    url: http://v.example/\n    agent: unix:/a\n    token: t\n",
                "attestation.verifier.url:",
            ),
            (
                "    url: http://localhost.evil.example/\n    agent: unix:/a\n    token: t\n",
                "attestation.verifier.url:",
            ),
            (
                "    url: https://v\n    agent: ftp://x\n    token: t\n",
                "attestation.verifier.agent:",
            ),
            (
                "    url: https://v\n    agent: unix:/a\n",
                "attestation.verifier: names no credential",
            ),
            (
                "    url: https://v\n    agent: unix:/a\n    token: t\n    key: k\n",
                "attestation.verifier: name either",
            ),
            (
                "    url: https://v\n    agent: unix:/a\n    cert: c\n",
                "attestation.verifier: name either",
            ),
        ] {
            let e = parse_v(body).unwrap_err().to_string();
            assert!(e.starts_with(field), "{body}: {e}");
        }
    }

    #[test]
    fn a_registry_reference() {
        let r = parse(
            "bundleRef: localhost:5000/jek/kernel:1\nregistry: {plainHttp: true, caFile: ca.pem}\npolicy: p.yaml\n",
            Path::new("/e/r.yaml"),
            Path::new("/e"),
        )
        .unwrap();
        assert_eq!(
            r.bundle,
            BundleSource::Registry {
                reference: "localhost:5000/jek/kernel:1".into(),
                plain_http: true,
                ca_file: Some(PathBuf::from("/e/ca.pem")),
            }
        );
    }
}
