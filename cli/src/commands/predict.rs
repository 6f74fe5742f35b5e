//! `jek predict`: the PCR values and event log a boot will produce, offline, without a TPM.

use std::path::PathBuf;

use jek_measure::payload::{default_kernel, Payload};
use jek_measure::PcrValues;
use jek_verifier::Sha256Digest;
use serde::Serialize;

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

/// The readable part of an event's data: the tag text, or the EV_IPL string.
pub fn event_text(e: &jek_measure::Event) -> String {
    let bytes = if e.event_type == jek_measure::eventlog::EV_EVENT_TAG {
        e.data.get(8..).unwrap_or(&[])
    } else {
        e.data.strip_suffix(&[0]).unwrap_or(&e.data)
    };
    String::from_utf8_lossy(bytes).into_owned()
}

#[derive(Serialize)]
struct Prediction {
    kernel: &'static str,
    pcrs: PcrValues,
    events: Vec<EventJson>,
}

#[derive(Serialize)]
struct EventJson {
    pcr: u32,
    #[serde(rename = "type")]
    event_type: u32,
    sha256: Sha256Digest,
    data: String,
}

/// Runs `jek predict`.
pub fn run(args: Args) -> Result<(), CliError> {
    let Loaded { bundle, pod } = args.target.load()?;
    let role = args
        .target
        .kernel_role()
        .unwrap_or_else(|| default_kernel(&bundle));
    let payload =
        Payload::new(&bundle, role, pod.as_ref()).map_err(|source| CliError::Payload {
            path: args.target.bundle.clone(),
            source,
        })?;
    let log = payload.event_log();
    let pcrs = log.replay();
    if let Some(out) = &args.log_out {
        jek_fsio::write_atomic(out, &log.to_bytes(), 0o644, jek_fsio::Overwrite::Allow)?;
    }
    if args.json {
        super::print_json(&Prediction {
            kernel: role.name(),
            pcrs: pcrs.clone(),
            events: log
                .events
                .iter()
                .map(|e| EventJson {
                    pcr: e.pcr,
                    event_type: e.event_type,
                    sha256: e.digest,
                    data: event_text(e),
                })
                .collect(),
        })?;
    } else {
        println!("kernel {}; {} events", role.name(), log.events.len());
        for (pcr, value) in &pcrs {
            println!("  PCR {pcr:>2}  sha256:{value}");
        }
    }
    Ok(())
}
