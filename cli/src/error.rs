//! The CLI's error type and its mapping to documented exit codes.

use std::path::PathBuf;

use jek_builder::fsio::WriteError;

/// Process exit codes. Documented in the README and `docs/cli.md`; tests check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The bundle was rejected (verification failed).
    Rejected = 1,
    /// Bad usage or an invalid input file (policy, key, recipe, component).
    Usage = 2,
    /// The environment failed: a missing tool, an I/O error, an unreachable TPM.
    Environment = 3,
    /// `jek boot`: the pod ran and its init reported a non-zero exit status.
    PodFailed = 4,
}

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Reading an input file failed.
    #[error("cannot read {what} {path}")]
    Read {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing an output file failed.
    #[error("cannot write output")]
    Write(#[from] WriteError),
    /// The policy file is invalid.
    #[error("invalid policy file {path}")]
    Policy {
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: crate::policy_file::PolicyFileError,
    },
    /// A private key file is invalid.
    #[error("invalid signing key file {path}")]
    SigningKey {
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: jek_builder::keys::KeyError,
    },
    /// Encoding a new key failed.
    #[error("cannot encode the new key")]
    Keygen(#[source] jek_builder::keys::KeyError),
    /// A file that must be text is not UTF-8.
    #[error("{what} {path} is not UTF-8 text")]
    NotText {
        /// What the file is for.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// Verification rejected the bundle.
    #[error("bundle {path} rejected")]
    Rejected {
        /// The bundle.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_verifier::VerifyError,
    },
    /// The Sigstore signature over the bundle was rejected.
    #[error("bundle {path} rejected: its Sigstore signature {signature} failed")]
    Sigstore {
        /// The bundle.
        path: PathBuf,
        /// The signature file.
        signature: PathBuf,
        /// The failed step.
        #[source]
        source: jek_verifier::sigstore::SigstoreError,
    },
    /// A registry push or pull failed.
    #[error("registry")]
    Registry(#[source] jek_oci::RegistryError),
    /// The bundle cannot be inspected.
    #[error("cannot inspect {path}")]
    Inspect {
        /// The bundle.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_verifier::verify::InspectError,
    },
    /// Packing failed.
    #[error("cannot pack the bundle")]
    Pack(#[source] jek_builder::pack::PackError),
    /// Signing failed.
    #[error("cannot sign {path}")]
    Sign {
        /// The bundle.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_builder::pack::SignError,
    },
    /// `SOURCE_DATE_EPOCH` is not a number.
    #[error("SOURCE_DATE_EPOCH={value:?} is not a whole number of seconds")]
    SourceDateEpoch {
        /// The value.
        value: String,
    },
    /// The recipe is invalid.
    #[error("invalid recipe {path}")]
    Recipe {
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: jek_builder::recipe::RecipeError,
    },
    /// The build failed.
    #[error("build failed")]
    Build(#[source] jek_builder::build::BuildError),
    /// Two clean builds differ.
    #[error("the build is not reproducible: {component} differs between two clean builds")]
    NotReproducible {
        /// The first differing component.
        component: &'static str,
    },
    /// `--key-env` names an unset variable.
    #[error("environment variable {var} (named by --key-env) is not set")]
    KeyEnv {
        /// The variable.
        var: String,
    },
    /// A cosign key file that cannot be decrypted or used.
    #[error("cosign key {path}")]
    CosignKey {
        /// The key file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: jek_builder::cosign::CosignError,
    },
    /// Generating a cosign key failed.
    #[error("cannot generate a cosign key")]
    CosignKeygen(#[source] jek_builder::cosign::CosignError),
    /// A kconfig file does not parse.
    #[error("invalid kconfig file {path}")]
    Kconfig {
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: jek_builder::kconfig::KconfigError,
    },
    /// A kconfig policy does not parse.
    #[error("invalid kconfig policy {path}")]
    KconfigPolicy {
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: jek_builder::kconfig::PolicyParseError,
    },
    /// The config check found problems.
    #[error("{path}: {count} kernel config findings")]
    KconfigFindings {
        /// The config.
        path: PathBuf,
        /// How many.
        count: usize,
    },
    /// Arguments that do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// The pod spec file is invalid.
    #[error("invalid pod file {path}")]
    Pod {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::pod_file::PodFileError,
    },
    /// The payload (kernel choice, pod segment) cannot be assembled.
    #[error("cannot prepare the boot of {path}")]
    Payload {
        /// The bundle.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_loader::PayloadError,
    },
    /// The boot failed.
    #[error("cannot boot {path}")]
    Boot {
        /// The bundle.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_loader::BootError,
    },
    /// The pod ran and exited with a non-zero status.
    #[error("the pod exited with status {status} (console: {console})")]
    PodFailed {
        /// The status.
        status: i32,
        /// The console transcript.
        console: PathBuf,
    },
    /// The policy has no `attestation` section.
    #[error("policy {path} has no `attestation:` section (attestation.ek_ca names the CA of pod EK certificates)")]
    NoAttestationPolicy {
        /// The policy file.
        path: PathBuf,
    },
    /// Some pods could not be attested at all.
    #[error("{count} pod(s) could not be attested")]
    AttestErrors {
        /// How many.
        count: usize,
    },
    /// Some pods did not boot clean.
    #[error("{count} pod(s) did not attest as affirming")]
    Contraindicated {
        /// How many.
        count: usize,
    },
    /// An evidence directory cannot be written.
    #[error("cannot write evidence directory {path}")]
    Evidence {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing to standard output failed.
    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),
}

impl CliError {
    /// The exit code for this error.
    pub fn exit(&self) -> Exit {
        use std::io::ErrorKind;
        match self {
            CliError::Rejected { .. } | CliError::Sigstore { .. } => Exit::Rejected,
            CliError::Read { source, .. } => match source.kind() {
                ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::InvalidInput => {
                    Exit::Usage
                }
                _ => Exit::Environment,
            },
            CliError::Write(WriteError::Exists { .. }) => Exit::Usage,
            CliError::Write(WriteError::Write { .. }) | CliError::Stdout(_) => Exit::Environment,
            CliError::Policy { .. }
            | CliError::SigningKey { .. }
            | CliError::NotText { .. }
            | CliError::Inspect { .. }
            | CliError::Pack(_)
            | CliError::Sign { .. }
            | CliError::SourceDateEpoch { .. } => Exit::Usage,
            CliError::Keygen(_) | CliError::CosignKeygen(_) => Exit::Environment,
            CliError::Registry(e) => match e {
                jek_oci::RegistryError::BlobDigest { .. }
                | jek_oci::RegistryError::Artifact { .. } => Exit::Rejected,
                jek_oci::RegistryError::Reference { .. } => Exit::Usage,
                _ => Exit::Environment,
            },
            CliError::Build(e) => crate::commands::build::exit_of(e),
            CliError::NotReproducible { .. } | CliError::KconfigFindings { .. } => Exit::Rejected,
            CliError::Recipe { .. }
            | CliError::KeyEnv { .. }
            | CliError::CosignKey { .. }
            | CliError::Kconfig { .. }
            | CliError::KconfigPolicy { .. }
            | CliError::Usage(_)
            | CliError::Pod { .. }
            | CliError::Payload { .. } => Exit::Usage,
            CliError::Boot { source, .. } => match source {
                jek_loader::BootError::Payload(_) | jek_loader::BootError::RunDir { .. } => {
                    Exit::Usage
                }
                _ => Exit::Environment,
            },
            CliError::PodFailed { .. } => Exit::PodFailed,
            CliError::NoAttestationPolicy { .. } => Exit::Usage,
            CliError::Contraindicated { .. } => Exit::Rejected,
            CliError::AttestErrors { .. } | CliError::Evidence { .. } => Exit::Environment,
        }
    }
}

/// Reads a whole input file.
pub fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a whole input file that must be UTF-8 text.
pub fn read_text(what: &'static str, path: &std::path::Path) -> Result<String, CliError> {
    String::from_utf8(read(what, path)?).map_err(|_| CliError::NotText {
        what,
        path: path.to_path_buf(),
    })
}

/// The whole `source()` chain of an error, one cause per line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str("\n  caused by: ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// The `source()` chain on one line, for JSON `reason` fields.
pub fn chain_line(err: &dyn std::error::Error) -> String {
    chain(err).replace("\n  caused by: ", ": ")
}
