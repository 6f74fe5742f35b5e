//! `jek provenance verify`: is this SLSA provenance signed by trusted keys, and is it
//! about this bundle file?

use std::path::PathBuf;

use jek_verifier::provenance::{verify_provenance, ProvenanceSummary};

use crate::error::{read, CliError};

/// `jek provenance` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Args {
    /// Verify a provenance file (the DSSE envelope `jek build` writes) for a bundle file:
    /// signed by the policy's trusted keys, SLSA provenance v1 from jek's builder, with the
    /// bundle's SHA-256 as a subject.
    Verify {
        /// The provenance file (`NAME-VERSION.provenance.intoto.json`).
        provenance: PathBuf,
        /// The bundle it must be about.
        #[arg(long)]
        bundle: PathBuf,
        #[command(flatten)]
        trust: super::verify::TrustArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `jek provenance`.
pub fn run(args: Args) -> Result<(), CliError> {
    let Args::Verify {
        provenance,
        bundle,
        trust,
        json,
    } = args;
    let policy = trust.load()?;
    let envelope = read("provenance", &provenance)?;
    let bundle_bytes = read("bundle", &bundle)?;
    let now = jek_verifier::UnixTime::now();
    let v = verify_provenance(&envelope, &bundle_bytes, &policy, now).map_err(|source| {
        CliError::Provenance {
            path: provenance,
            source,
        }
    })?;
    let summary = ProvenanceSummary::of(&v);
    if json {
        return super::print_json(&summary);
    }
    outln!("{}", summary.text());
    Ok(())
}
