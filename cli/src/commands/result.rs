//! `jek result verify`: check a signed attestation result (an EAR JWT from
//! `jek-attestation-verifier`) against a JWKS file or URL, as any relying party would.

use std::path::PathBuf;

use jek_host_attest::driver::{PodResult, Report};

use crate::error::CliError;

/// `jek result` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Args {
    /// Verify a signed result against a JWKS (a file, or the verifier's /v1/jwks URL);
    /// exit 0 only if it verifies, has not expired, is for --pod when given, and every pod
    /// in it is affirming.
    Verify(VerifyArgs),
}

/// Arguments of `jek result verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The file holding the token.
    token: PathBuf,
    /// The JWKS: a file, or an http(s) URL.
    #[arg(long)]
    jwks: String,
    /// The pod (registration identifier) the result must be for: a result for any other
    /// pod is refused.
    #[arg(long, value_name = "ID")]
    pod: Option<String>,
    /// Extra trust roots (PEM) for a JWKS URL over HTTPS.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Credentials for a JWKS URL behind client authentication (the attestation
    /// verifier's own JWKS is public).
    #[command(flatten)]
    credentials: Credentials,
    /// Print the EAR as JSON.
    #[arg(long)]
    json: bool,
}

/// How a command proves itself to the attestation verifier: a bearer token
/// (`jek-attestation-verifier add-token`) or a client certificate.
#[derive(Debug, clap::Args)]
pub struct Credentials {
    /// A file holding the bearer token to present (readable by its owner only).
    #[arg(
        long,
        value_name = "FILE",
        env = "JEK_VERIFIER_TOKEN_FILE",
        conflicts_with = "client_cert"
    )]
    token_file: Option<PathBuf>,
    /// A client certificate chain (PEM) to present (mutual TLS); needs --client-key.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM; readable by its owner only).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl Credentials {
    /// Reads the credential files, and the trust roots from `ca_file` (`--ca-file`).
    pub fn load(
        &self,
        ca_file: Option<&std::path::Path>,
    ) -> Result<jek_service_client::client::Credentials, CliError> {
        let ca_pem = ca_file
            .map(|f| crate::error::read("--ca-file", f))
            .transpose()?;
        let token = match &self.token_file {
            None => None,
            // Its owner's alone (as ssh requires of a private key), one token on one line.
            Some(path) => Some(jek_service_client::tls::read_token(path).map_err(|e| {
                CliError::Usage(format!("--token-file: {}", jek_errors::chain_line(&e)))
            })?),
        };
        let identity_pem = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(
                jek_service_client::tls::identity_pem(cert, key)
                    .map_err(|e| CliError::Usage(jek_errors::chain_line(&e)))?,
            ),
            _ => None,
        };
        Ok(jek_service_client::client::Credentials {
            ca_pem,
            token,
            identity_pem,
        })
    }
}

/// Runs `jek result`.
pub fn run(Args::Verify(a): Args) -> Result<(), CliError> {
    let token = crate::error::read_text("token", &a.token)?;
    let credentials = a.credentials.load(a.ca_file.as_deref())?;
    let ear = jek_service_client::client::verify_token(
        &token,
        &a.jwks,
        credentials.reach(),
        a.pod.as_deref(),
    )?;
    report_ears(&[(a.token.clone(), ear)], a.json)
}

/// Prints pod results as `jek attest` does, and turns errors and contraindicated pods
/// into the exit code.
pub fn report(results: &[PodResult], json_out: bool, quiet: bool) -> Result<(), CliError> {
    let report = Report::new(results);
    if json_out {
        super::print_json(&report)?;
    } else if !quiet {
        for line in report.text() {
            outln!("{line}");
        }
    }
    match report.summary {
        s if s.errors > 0 => Err(CliError::AttestErrors { count: s.errors }),
        s if s.contraindicated > 0 => Err(CliError::Contraindicated {
            count: s.contraindicated,
        }),
        _ => Ok(()),
    }
}

/// Reports signed results already verified, as `jek attest` reports its own.
pub fn report_ears(ears: &[(PathBuf, jek_attest::Ear)], json: bool) -> Result<(), CliError> {
    let results: Vec<_> = ears
        .iter()
        .flat_map(|(f, e)| PodResult::of_ear(f, e))
        .collect();
    report(&results, json, false)
}
