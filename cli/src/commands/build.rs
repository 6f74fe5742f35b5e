//! `jek build`: recipe -> signed bundle, provenance and checksums.

use std::path::PathBuf;

use jek_builder::build::{self, BuildOptions};

use crate::error::CliError;
use jek_builder::progress::StatusLine;

/// Arguments of `jek build`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe (YAML).
    recipe: PathBuf,
    /// Signing key (PKCS#8 PEM); repeatable. Adds to the recipe's `signing.keys`.
    #[arg(long = "key")]
    keys: Vec<PathBuf>,
    /// Name of an environment variable that holds a PKCS#8 PEM signing key (for CI secrets;
    /// the key is never printed).
    #[arg(long, value_name = "VAR")]
    key_env: Option<String>,
    /// Output directory.
    #[arg(long, default_value = "out")]
    out_dir: PathBuf,
    /// Cache directory for kernel builds [default: $XDG_CACHE_HOME/jek or ~/.cache/jek].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Parallel make jobs [default: number of CPUs].
    #[arg(long)]
    jobs: Option<usize>,
    /// Build twice from clean and report identical digests or the first component that differs.
    #[arg(long)]
    check_reproducible: bool,
    /// No progress output.
    #[arg(long)]
    no_progress: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Runs `jek build`.
pub fn run(args: Args, quiet: bool) -> Result<(), CliError> {
    let recipe = jek_build_config::recipe::load(&args.recipe)?;
    let mut keys = Vec::new();
    for p in recipe.keys.iter().chain(&args.keys) {
        keys.push(jek_build_config::keys::signing_key(p)?);
    }
    if let Some(var) = &args.key_env {
        keys.push(jek_build_config::keys::signing_key_from_env(var)?);
    }
    let opts = BuildOptions {
        cache: args.cache_dir.unwrap_or_else(jek_fsio::cache_root),
        out_dir: args.out_dir,
        source_date_epoch: jek_builder::pack::created_time(|| recipe.default_epoch())?.0,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    // Interrupted, a build stops its make and removes its work directory.
    crate::signals::on_termination(|signal| {
        let removed = jek_builder::kernel::interrupt_builds();
        tracing::warn!(
            signal,
            removed,
            "build interrupted; work directories removed"
        );
    })
    .map_err(CliError::Signals)?;
    let mut status = StatusLine::new(quiet || args.no_progress || args.json);
    let mut report = |p: jek_builder::kernel::Progress<'_>| status.report(p);
    if args.check_reproducible {
        let cmp = build::check_reproducible(&recipe, &keys, &opts, &mut report)?;
        status.finish();
        let r = build::Reproducibility::of(&cmp);
        match args.json {
            true => super::print_json(&r)?,
            false => outln!("{}", r.text()),
        }
        return match r.first_difference {
            None => Ok(()),
            Some(component) => Err(CliError::NotReproducible { component }),
        };
    }
    let out = build::build(&recipe, &keys, &opts, &mut report)?;
    status.finish();
    if args.json {
        return super::print_json(&out.summary());
    }
    outln!("{}", out.text());
    Ok(())
}
