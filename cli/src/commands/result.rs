//! `jek result verify`: check a signed attestation result (an EAR JWT from `jek-verifier`)
//! against a JWKS file or URL, as any relying party would.

use std::path::PathBuf;

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
    /// Print the EAR as JSON.
    #[arg(long)]
    json: bool,
}

/// Extra trust roots from `--ca-file`.
pub fn ca(file: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, CliError> {
    file.map(|f| crate::error::read("--ca-file", f)).transpose()
}

/// Runs `jek result`.
pub fn run(Args::Verify(a): Args) -> Result<(), CliError> {
    let token = crate::error::read_text("token", &a.token)?;
    let ear = jek_service::client::verify_token(
        &token,
        &a.jwks,
        ca(a.ca_file.as_deref())?.as_deref(),
        a.pod.as_deref(),
    )?;
    super::attest::report_ears(&[(a.token.clone(), ear)], a.json)
}
