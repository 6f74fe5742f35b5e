//! `jek kconfig check`: a resolved .config against the policy and the fragments.

use std::path::PathBuf;

use jek_builder::kconfig::{self, Config};

use crate::error::{read_text, CliError};

/// `jek kconfig` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Args {
    /// Check a resolved .config: forbidden and required symbols, and every symbol a fragment
    /// asked for that the resolved config dropped. Exit 1 on any finding.
    Check(CheckArgs),
}

/// Arguments of `jek kconfig check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The resolved .config.
    config: PathBuf,
    /// The kconfig policy (YAML: required, forbidden).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// A fragment whose requests must all be honoured; repeatable.
    #[arg(long = "fragment")]
    fragments: Vec<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Runs `jek kconfig`.
pub fn run(args: Args) -> Result<(), CliError> {
    let Args::Check(a) = args;
    if a.policy.is_none() && a.fragments.is_empty() {
        return Err(CliError::Usage("give --policy, --fragment, or both".into()));
    }
    let name = a.config.display().to_string();
    let resolved =
        Config::parse(&read_text("kernel config", &a.config)?, &name).map_err(|source| {
            CliError::Kconfig {
                path: a.config.clone(),
                source,
            }
        })?;
    let policy = a
        .policy
        .as_deref()
        .map(jek_build_config::kconfig::load)
        .transpose()?;
    let mut fragments = Vec::new();
    for p in &a.fragments {
        let n = p.display().to_string();
        let c = Config::parse(&read_text("kconfig fragment", p)?, &n).map_err(|source| {
            CliError::Kconfig {
                path: p.clone(),
                source,
            }
        })?;
        fragments.push((n, c));
    }
    let report = kconfig::CheckReport::new(&a.config, &resolved, &fragments, policy.as_ref());
    match a.json {
        true => super::print_json(&report)?,
        false => outln!("{}", report.text()),
    }
    if report.ok {
        return Ok(());
    }
    let count = report.findings.len();
    Err(CliError::KconfigFindings {
        path: a.config,
        count,
    })
}
