//! `jek`: signed just-enough-kernel bundles and measured boot for microVM pods.
#![forbid(unsafe_code)]

/// `println!` for everything jek prints: the line passes [`jek_fsio::terminal::escape`]
/// first, so untrusted text in it (key IDs, manifest fields, pod names) cannot drive the
/// terminal. The std macros are disallowed in this crate (`cli/clippy.toml`).
macro_rules! outln {
    ($($arg:tt)*) => { $crate::print_line(false, &::std::format!($($arg)*)) };
}

/// `eprintln!` through the same escaping as [`outln!`].
macro_rules! errln {
    ($($arg:tt)*) => { $crate::print_line(true, &::std::format!($($arg)*)) };
}

/// The one place the CLI prints a line (see [`outln!`]).
#[allow(clippy::disallowed_macros)]
fn print_line(stderr: bool, line: &str) {
    let line = jek_fsio::terminal::escape(line);
    if stderr {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

mod commands;
mod error;
mod progress;

use clap::Parser;
use error::{CliError, Exit};

/// Logging flags shared by every subcommand.
#[derive(Debug, clap::Args)]
struct LogArgs {
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

/// Signed just-enough-kernel bundles and measured boot for microVM pods.
///
/// Exit codes: 0 success; 1 rejected (a bundle failed verification, or a pod did not
/// attest as affirming); 2 bad usage or an invalid input file; 3 the environment failed
/// (missing tool, I/O error, unreachable TPM); 4 the pod exited with a non-zero status.
/// Every result can be printed as JSON (--json; shapes in docs/cli.md).
#[derive(Debug, Parser)]
#[command(name = "jek", version = concat!(env!("CARGO_PKG_VERSION"), " (bundle format v1)"))]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: commands::Command,
}

fn init_tracing(log: &LogArgs) {
    let level = match (log.quiet, log.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("JEK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<(), CliError> {
    commands::run(cli.command, cli.log.quiet)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    match run(cli) {
        Ok(()) => std::process::ExitCode::from(Exit::Ok as u8),
        Err(e) => {
            errln!("error: {}", error::chain(&e));
            std::process::ExitCode::from(e.exit() as u8)
        }
    }
}
