//! `jek predict`: the PCR values and event log a boot will produce, offline, without a TPM.

use std::path::PathBuf;

use jek_loader::boot::pcrs_json;
use jek_loader::payload::{default_kernel, Payload};
use jek_verifier::{verify, UnixTime};
use serde_json::json;

use crate::error::{read, CliError};

/// Kernel formats on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KernelArg {
    /// The bzImage.
    Bzimage,
    /// The ELF vmlinux.
    Vmlinux,
}

impl KernelArg {
    /// The bundle role.
    pub fn role(self) -> jek_verifier::format::Role {
        match self {
            KernelArg::Bzimage => jek_verifier::format::Role::BzImage,
            KernelArg::Vmlinux => jek_verifier::format::Role::Vmlinux,
        }
    }
}

/// Arguments of `jek predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle.
    bundle: PathBuf,
    /// Policy file: the signer measurements are the keys this policy accepts the bundle with.
    #[arg(long)]
    policy: PathBuf,
    /// Pod file (Kubernetes Pod subset), measured into PCR 12.
    #[arg(long)]
    pod: Option<PathBuf>,
    /// Kernel format the boot will use (default: bzimage if the bundle has one).
    #[arg(long, value_enum)]
    kernel: Option<KernelArg>,
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

/// Runs `jek predict`.
pub fn run(args: Args) -> Result<(), CliError> {
    let policy = crate::policy_file::load(&args.policy)?;
    let pod = args.pod.as_deref().map(crate::pod_file::load).transpose()?;
    let bytes = read("bundle", &args.bundle)?;
    let bundle = verify(bytes, &policy, UnixTime::now()).map_err(|source| CliError::Rejected {
        path: args.bundle.clone(),
        source,
    })?;
    let role = args
        .kernel
        .map_or_else(|| default_kernel(&bundle), KernelArg::role);
    let payload =
        Payload::new(&bundle, role, pod.as_ref()).map_err(|source| CliError::Payload {
            path: args.bundle.clone(),
            source,
        })?;
    let log = payload.event_log();
    let pcrs = log.replay();
    if let Some(out) = &args.log_out {
        jek_builder::fsio::write_atomic(
            out,
            &log.to_bytes(),
            0o644,
            jek_builder::fsio::Overwrite::Allow,
        )?;
    }
    if args.json {
        super::print_json(&json!({
            "kernel": role.name(),
            "pcrs": pcrs_json(&pcrs),
            "events": log.events.iter().map(|e| json!({
                "pcr": e.pcr,
                "type": e.event_type,
                "sha256": e.digest.to_string(),
                "data": event_text(e),
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        println!("kernel {}; {} events", role.name(), log.events.len());
        for (pcr, value) in &pcrs {
            println!("  PCR {pcr:>2}  sha256:{value}");
        }
    }
    Ok(())
}
