//! The CLI's error type (fields are named for what they hold) and its mapping to documented exit codes. Each library error says
//! what kind of failure it is (`class()`, an exhaustive match in its own crate); the CLI
//! only maps kinds to codes.

use std::path::{Path, PathBuf};

use jek_fsio::WriteError;
use jek_verifier::format::MAX_BUNDLE_SIZE;

pub use jek_errors::Exit;

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Writing an output file failed.
    #[error("cannot write output")]
    Write(#[from] WriteError),
    /// A policy, pod or runtime file is unusable.
    #[error(transparent)]
    Config(#[from] jek_config::ConfigError),
    /// A recipe or kconfig policy file is unusable.
    #[error(transparent)]
    BuildConfig(#[from] jek_build_config::BuildConfigError),
    /// A key file (or key variable) is unusable.
    #[error(transparent)]
    Key(#[from] jek_build_config::keys::KeyFileError),
    /// Encoding a new key failed.
    #[error("cannot encode the new key")]
    Keygen(#[source] jek_builder::keys::KeyError),
    /// Verification rejected the bundle.
    #[error("bundle {path} rejected")]
    Rejected {
        path: PathBuf,
        #[source]
        source: jek_verifier::VerifyError,
    },
    /// A registry push or pull failed.
    #[error("registry")]
    Registry(#[from] jek_oci::RegistryError),
    /// Registry credentials or trust roots are unusable.
    #[error(transparent)]
    RegistryAuth(#[from] jek_oci::AuthError),
    /// A container's image is refused or cannot be prepared.
    #[error(transparent)]
    Image(#[from] jek_image::ImageError),
    /// The bundle cannot be inspected.
    #[error("cannot inspect {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: jek_verifier::verify::InspectError,
    },
    /// Packing failed.
    #[error("cannot pack the bundle")]
    Pack(#[source] jek_builder::pack::PackError),
    /// Signing a bundle file failed.
    #[error(transparent)]
    Sign(#[from] jek_builder::sign::SignFileError),
    /// `SOURCE_DATE_EPOCH` is not a number.
    #[error(transparent)]
    SourceDateEpoch(#[from] jek_builder::pack::SourceDateEpochError),
    /// The build failed.
    #[error("build failed")]
    Build(#[from] jek_builder::build::BuildError),
    /// Two clean builds differ.
    #[error("the build is not reproducible: {component} differs between two clean builds")]
    NotReproducible { component: &'static str },
    /// Generating a cosign key failed.
    #[error("cannot generate a cosign key")]
    CosignKeygen(#[source] jek_builder::cosign::CosignError),
    /// A kconfig file does not parse.
    #[error("invalid kconfig file {path}")]
    Kconfig {
        path: PathBuf,
        #[source]
        source: jek_builder::kconfig::KconfigError,
    },
    /// The config check found problems.
    #[error("{path}: {count} kernel config findings")]
    KconfigFindings { path: PathBuf, count: usize },
    /// Arguments that do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// The payload (kernel choice, pod segment) cannot be assembled.
    #[error("cannot prepare the boot of {path}")]
    Payload {
        path: PathBuf,
        #[source]
        source: jek_loader::PayloadError,
    },
    /// The boot failed.
    #[error("cannot boot {path}")]
    Boot {
        path: PathBuf,
        #[source]
        source: jek_loader::BootError,
    },
    /// The pod ran and exited with a non-zero status.
    #[error("the pod exited with status {status} (console: {console})")]
    PodFailed { status: i32, console: PathBuf },
    /// An evidence directory is unusable.
    #[error("evidence directory {path}")]
    EvidenceDir {
        path: PathBuf,
        #[source]
        source: jek_host_attest::driver::ExportedError,
    },
    /// Some pods could not be attested at all.
    #[error("{count} pod(s) could not be attested")]
    AttestErrors { count: usize },
    /// Some pods did not boot clean.
    #[error("{count} pod(s) did not attest as affirming")]
    Contraindicated { count: usize },
    /// The registration store cannot be used.
    #[error(transparent)]
    Store(#[from] jek_host_attest::registrations::RegistrationStoreError),
    /// `jek attest`'s pods or store cannot be set up.
    #[error(transparent)]
    Attestor(#[from] jek_host_attest::driver::AttestorError),
    /// A provenance file is not accepted.
    #[error("provenance {path} rejected")]
    Provenance {
        path: PathBuf,
        #[source]
        source: jek_verifier::provenance::ProvenanceError,
    },
    /// The cache cannot be listed or pruned.
    #[error(transparent)]
    Cache(#[from] jek_builder::cache::CacheError),
    /// Signal handlers cannot be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// A signed result cannot be fetched or does not verify.
    #[error(transparent)]
    Service(#[from] jek_service_client::client::ClientError),
    /// Writing to standard output failed.
    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),
}

/// What a failed command prints on stdout with `--json` (docs/cli.md).
#[derive(Debug, serde::Serialize)]
pub struct ErrorReport {
    /// `false` when a bundle was rejected (verify, pull, predict, boot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<bool>,
    /// The exit code.
    pub exit: u8,
    /// The verifier's rejection code, else the kind: `rejected`, `usage`, `environment`.
    pub code: &'static str,
    /// The error and its causes on one line.
    pub reason: String,
}

impl ErrorReport {
    /// The object of a command line clap refused.
    pub fn usage(reason: String) -> Self {
        let (accepted, exit, code) = (None, Exit::Usage as u8, "usage");
        ErrorReport {
            accepted,
            exit,
            code,
            reason,
        }
    }
}

impl CliError {
    /// The `--json` error object, unless the command printed its JSON result already (an
    /// attestation report, a run record, kconfig findings, a reproducibility comparison).
    pub fn report(&self) -> Option<ErrorReport> {
        let exit = self.exit();
        let code = match (self, exit) {
            (CliError::AttestErrors { .. } | CliError::Contraindicated { .. }, _)
            | (CliError::PodFailed { .. } | CliError::KconfigFindings { .. }, _)
            | (CliError::NotReproducible { .. }, _) => return None,
            (CliError::Rejected { source, .. }, _) => source.code(),
            (CliError::Inspect { source, .. }, _) => source.code(),
            (CliError::Provenance { source, .. }, _) => source.code(),
            (CliError::Sign(e), Exit::Rejected) => e.rejection_code().unwrap_or("rejected"),
            (_, Exit::Rejected) => "rejected",
            (_, Exit::Environment) => "environment",
            _ => "usage",
        };
        Some(ErrorReport {
            accepted: matches!(self, CliError::Rejected { .. }).then_some(false),
            exit: exit as u8,
            code,
            reason: chain_line(self),
        })
    }

    /// The exit code for this error.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Write(e) => e.class().into(),
            CliError::Config(e) => e.class().into(),
            CliError::BuildConfig(e) => e.class().into(),
            CliError::Registry(e) => e.class().into(),
            CliError::RegistryAuth(e) => e.class().into(),
            CliError::Image(e) => e.class().into(),
            CliError::Build(e) => e.class().into(),
            CliError::Boot { source, .. } => source.class().into(),
            CliError::Store(e) => e.class().into(),
            CliError::Attestor(e) => e.class().into(),
            CliError::Sign(e) => e.class().into(),
            CliError::Cache(e) => e.class().into(),
            CliError::Key(e) => e.class().into(),
            CliError::Service(e) => e.class().into(),
            // A file that is not an intact bundle is rejected by every command alike.
            CliError::Rejected { .. }
            | CliError::Inspect { .. }
            | CliError::Provenance { .. }
            | CliError::NotReproducible { .. }
            | CliError::KconfigFindings { .. }
            | CliError::Contraindicated { .. } => Exit::Rejected,
            CliError::Pack(_)
            | CliError::SourceDateEpoch(_)
            | CliError::Kconfig { .. }
            | CliError::Usage(_)
            | CliError::Payload { .. }
            | CliError::EvidenceDir { .. } => Exit::Usage,
            CliError::Keygen(_)
            | CliError::CosignKeygen(_)
            | CliError::AttestErrors { .. }
            | CliError::Signals(_)
            | CliError::Stdout(_) => Exit::Environment,
            CliError::PodFailed { .. } => Exit::PodFailed,
        }
    }
}

/// Reads a whole input file named on the command line (symlinks followed; at most the
/// largest bundle jek accepts, checked by size before reading).
pub fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, CliError> {
    Ok(jek_config::read(what, path, MAX_BUNDLE_SIZE)?)
}

/// Reads a whole input file that must be UTF-8 text.
pub fn read_text(what: &'static str, path: &Path) -> Result<String, CliError> {
    Ok(jek_config::read_text(what, path, MAX_BUNDLE_SIZE)?)
}

pub use jek_errors::chain_line;
