//! `jek cache list` and `jek cache prune`: the kernel builds, work directories, logs and
//! image layers under the cache directory.

use std::path::PathBuf;

use jek_builder::cache::{self, Prune};

use crate::error::CliError;

/// `jek cache` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Args {
    /// List every entry: kind, size, age, key, path, and whether a build holds it.
    List(Common),
    /// Remove leftovers of builds that did not finish (work directories, unfinished
    /// entries, their logs); with --older-than or --all, finished entries too. What a
    /// build in progress holds is never removed.
    Prune {
        /// Also remove finished entries not used for this long (e.g. 30d, 12h).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Remove everything not in use.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        common: Common,
    },
}

/// Options of every `jek cache` subcommand.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// The cache directory [default: $XDG_CACHE_HOME/jek or ~/.cache/jek].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Machine-readable output: the entries listed or removed.
    #[arg(long)]
    json: bool,
}

/// Runs `jek cache`.
pub fn run(args: Args) -> Result<(), CliError> {
    let (Args::List(c) | Args::Prune { common: c, .. }) = &args;
    let root = c.cache_dir.clone().unwrap_or_else(jek_fsio::cache_root);
    let entries = match &args {
        Args::List(_) => cache::list(&root)?,
        Args::Prune {
            older_than, all, ..
        } => cache::prune(
            &root,
            Prune {
                all: *all,
                older_than: *older_than,
            },
        )?,
    };
    if c.json {
        return super::print_json(&entries);
    }
    for e in &entries {
        outln!("{}", e.line());
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    let verb = if matches!(args, Args::List(_)) {
        "in"
    } else {
        "removed from"
    };
    errln!(
        "{} entries, {:.1} MiB, {verb} {}",
        entries.len(),
        total as f64 / f64::from(1 << 20),
        root.display()
    );
    Ok(())
}
