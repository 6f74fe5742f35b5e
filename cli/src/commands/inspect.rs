//! `jek inspect`: what a bundle claims, without trusting it; `jek extract`: one of its
//! components, as stored. Both read a file or pull a registry reference, unverified.

use std::path::{Path, PathBuf};

use jek_fsio::{write_atomic, Overwrite};
use jek_verifier::format::Role;

use crate::error::{read, CliError};

/// A bundle to look at.
#[derive(Debug, clap::Args)]
pub struct Source {
    /// The bundle: a file, or a registry reference (registry/repository:tag) pulled as is.
    bundle: String,
    #[command(flatten)]
    registry: super::oci::RegistryArgs,
}

impl Source {
    /// A file if one exists, else a registry reference if it looks like one.
    fn load(&self) -> Result<Vec<u8>, CliError> {
        let b = &self.bundle;
        if Path::new(b).exists() || !(b.contains('/') && (b.contains(':') || b.contains('@'))) {
            return read("bundle", Path::new(b));
        }
        let registry = jek_oci::Registry::new(&self.registry.options()?)?;
        Ok(registry.pull(b)?.bundle)
    }

    fn error(&self) -> impl FnOnce(jek_verifier::verify::InspectError) -> CliError + '_ {
        |source| CliError::Inspect {
            path: self.bundle.clone().into(),
            source,
        }
    }
}

/// Arguments of `jek inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: Source,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Arguments of `jek extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    source: Source,
    /// The component: bzimage, vmlinux, initramfs, cmdline or config.
    #[arg(value_parser = |s: &str| Role::from_name(s).ok_or("not a component role"))]
    component: Role,
    /// Where to write it.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
}

/// Runs `jek inspect`.
pub fn run(args: Args) -> Result<(), CliError> {
    let bytes = args.source.load()?;
    let ins = jek_verifier::inspect(&bytes).map_err(args.source.error())?;
    let report = ins.report(bytes.len(), |e| crate::error::chain_line(e));
    if args.json {
        return super::print_json(&report);
    }
    for line in report.text(&args.source.bundle) {
        outln!("{line}");
    }
    Ok(())
}

/// Runs `jek extract`.
pub fn extract(args: ExtractArgs) -> Result<(), CliError> {
    let bytes = args.source.load()?;
    let role = args.component;
    let data = jek_verifier::verify::extract(&bytes, role)
        .map_err(args.source.error())?
        .ok_or_else(|| CliError::Usage(format!("the bundle has no {} component", role.name())))?;
    write_atomic(&args.out, data, 0o644, Overwrite::from_force(args.force))?;
    Ok(())
}
