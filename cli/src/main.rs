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

/// The one place the CLI prints a line (see [`outln!`]). A reader that went away
/// (`jek inspect B | head -1`) ends the output quietly, as SIGPIPE ends peers' output.
fn print_line(stderr: bool, line: &str) {
    use std::io::Write as _;
    let line = jek_fsio::terminal::escape(line);
    let written = match stderr {
        true => writeln!(std::io::stderr(), "{line}"),
        false => writeln!(std::io::stdout(), "{line}"),
    };
    if written.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
        std::process::exit(Exit::Ok as i32);
    }
}

mod commands;
mod error;
mod signals;

use clap::Parser;
use error::Exit;

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
    let levels = ["warn", "info", "debug", "trace"];
    let verbosity = levels.get(usize::from(log.verbose)).unwrap_or(&"trace");
    let level = if log.quiet { "error" } else { verbosity };
    let filter = tracing_subscriber::EnvFilter::try_from_env("JEK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal, and never with NO_COLOR set.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_target(false)
        .init();
}

fn main() -> std::process::ExitCode {
    // With --json, a failure is also one JSON object on stdout, whatever the command.
    let json = std::env::args_os().any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if json && e.use_stderr() {
                let _ = commands::print_json(&error::ErrorReport::usage(e.kind().to_string()));
            }
            e.exit()
        }
    };
    init_tracing(&cli.log);
    match commands::run(cli.command, cli.log.quiet) {
        Ok(()) => std::process::ExitCode::from(Exit::Ok as u8),
        Err(e) => {
            errln!("error: {}", jek_errors::chain_lines(&e));
            if let Some(report) = e.report().filter(|_| json) {
                let _ = commands::print_json(&report);
            }
            std::process::ExitCode::from(e.exit() as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn every_typed_argument_parses() {
        // Typed values are only checked when parsed: one command line per parser.
        for line in [
            "jek attest --evidence d --nonce 00ff --ak-name 0a0b --bundle b --policy p",
            "jek cache prune --older-than 30d",
            "jek attest --verifier http://127.0.0.1:7080 0123456789abcdef0123456789abcdef",
            "jek pull r/x:1 --policy p --out o --ca-file c --force",
            "jek push b r/x:1 --cosign-key k --plain-http",
        ] {
            let cli = Cli::try_parse_from(line.split(' ')).unwrap();
            assert!(format!("{cli:?}").len() > 10);
        }
    }
}
