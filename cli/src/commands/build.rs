//! `jek build`: recipe -> signed bundle, provenance and checksums.

use std::path::PathBuf;

use jek_builder::build::{self, BuildOptions};
use serde::Serialize;

use crate::error::CliError;
use crate::progress::StatusLine;

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

/// The default cache directory.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("jek")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Reproducible<'a> {
    reproducible: bool,
    first_difference: Option<&'static str>,
    components: &'a [build::Comparison],
}

/// Runs `jek build`.
pub fn run(args: Args, quiet: bool) -> Result<(), CliError> {
    let recipe = jek_config::recipe::load(&args.recipe)?;
    let mut keys = Vec::new();
    for p in recipe.keys.iter().chain(&args.keys) {
        keys.push(super::load_signing_key(p)?);
    }
    if let Some(var) = &args.key_env {
        let pem = zeroize::Zeroizing::new(
            std::env::var(var).map_err(|_| CliError::KeyEnv { var: var.clone() })?,
        );
        keys.push(
            jek_builder::keys::read_private_key_pem(&pem).map_err(|source| {
                CliError::SigningKey {
                    path: PathBuf::from(format!("${var}")),
                    source,
                }
            })?,
        );
    }
    let opts = BuildOptions {
        cache: args.cache_dir.unwrap_or_else(default_cache_dir),
        out_dir: args.out_dir,
        source_date_epoch: super::pack::created_time_or(|| recipe.default_epoch())?.0,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let mut status = StatusLine::new(quiet || args.no_progress || args.json);
    let mut report = |p: jek_builder::kernel::Progress<'_>| status.report(p);
    if args.check_reproducible {
        let cmp = build::check_reproducible(&recipe, &keys, &opts, &mut report)
            .map_err(CliError::Build)?;
        status.finish();
        let first_diff = cmp.iter().find(|c| !c.identical());
        if args.json {
            super::print_json(&Reproducible {
                reproducible: first_diff.is_none(),
                first_difference: first_diff.map(|c| c.component),
                components: &cmp,
            })?;
        } else {
            for c in &cmp {
                let mark = if c.identical() {
                    "identical"
                } else {
                    "DIFFERS"
                };
                outln!("{:<10} {mark}  {} {}", c.component, c.first, c.second);
            }
        }
        return match first_diff {
            None => Ok(()),
            Some(c) => Err(CliError::NotReproducible {
                component: c.component,
            }),
        };
    }
    let out = build::build(&recipe, &keys, &opts, &mut report).map_err(CliError::Build)?;
    status.finish();
    if args.json {
        return super::print_json(&out.summary());
    }
    outln!(
        "bundle      {} ({} bytes, sha256:{})",
        out.bundle.display(),
        out.bundle_size,
        out.bundle_sha256
    );
    outln!("provenance  {}", out.provenance.display());
    outln!("checksums   {}", out.sums.display());
    outln!(
        "kernel      {} ({} symbols =y, {})",
        out.kernel_release,
        out.builtin_symbols,
        if out.kernel.cached {
            "from cache"
        } else {
            "built"
        }
    );
    Ok(())
}
