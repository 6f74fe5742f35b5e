//! `jek predict`: the PCR values and event log a boot will produce, offline, without a TPM.

use std::path::PathBuf;

use jek_measure::payload::{default_kernel, Payload};

use super::target::{Loaded, Target};
use crate::error::CliError;

/// Arguments of `jek predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Also write the predicted event log (binary, TCG crypto-agile) to this file.
    #[arg(long)]
    log_out: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Runs `jek predict`.
pub fn run(args: Args) -> Result<(), CliError> {
    let Loaded {
        bundle,
        pod,
        containers,
    } = args.target.load()?;
    let role = args
        .target
        .kernel_role()
        .unwrap_or_else(|| default_kernel(&bundle));
    let payload = Payload::new(&bundle, role, pod.as_ref(), &containers).map_err(|source| {
        CliError::Payload {
            path: args.target.bundle.clone(),
            source,
        }
    })?;
    let log = payload.event_log();
    let pcrs = log.replay();
    if let Some(out) = &args.log_out {
        jek_fsio::write_atomic(out, &log.to_bytes(), 0o644, jek_fsio::Overwrite::Allow)?;
    }
    if args.json {
        super::print_json(&payload.prediction())?;
    } else {
        outln!("kernel {}; {} events", role.name(), log.events.len());
        for (pcr, value) in &pcrs {
            outln!("  PCR {pcr:>2}  sha256:{value}");
        }
    }
    Ok(())
}
