//! `jek completions SHELL`: shell completions generated from the argument definitions.

use std::io::Write;

use crate::error::CliError;

/// Arguments of `jek completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Runs `jek completions`.
pub fn run(args: Args) -> Result<(), CliError> {
    let mut cmd = <crate::Cli as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "jek", &mut out);
    std::io::stdout().write_all(&out).map_err(CliError::Stdout)
}
