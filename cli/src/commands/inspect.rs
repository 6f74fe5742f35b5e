//! `jek inspect`: what a bundle claims, without trusting it.

use std::path::PathBuf;

use crate::error::{read, CliError};

/// Arguments of `jek inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bundle.
    bundle: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Runs `jek inspect`.
pub fn run(args: Args) -> Result<(), CliError> {
    let bytes = read("bundle", &args.bundle)?;
    let ins = jek_verifier::inspect(&bytes).map_err(|source| CliError::Inspect {
        path: args.bundle.clone(),
        source,
    })?;
    if args.json {
        return super::print_json(&ins.report(bytes.len(), |e| crate::error::chain_line(e)));
    }
    outln!(
        "{} ({} bytes, format v{}) -- not verified",
        args.bundle.display(),
        bytes.len(),
        jek_verifier::format::FORMAT_VERSION
    );
    match &ins.manifest {
        Ok(m) => {
            outln!("  name             {}", m.name);
            outln!("  version          {}", m.version);
            outln!("  security version {}", m.security_version);
            outln!("  kernel release   {}", m.kernel_release);
            outln!("  created          {}", m.created);
            if let Some(p) = &m.kernel.boot_protocol {
                outln!("  boot protocol    {p}");
            }
            if let Some(p) = &m.kernel.payload_format {
                outln!("  payload          {p}");
            }
            if let Some(e) = &m.kernel.elf_entry {
                outln!("  ELF entry        {e}");
            }
            outln!(
                "  manifest digest  sha256:{}",
                jek_verifier::Sha256Digest::of(&ins.envelope.payload)
            );
        }
        Err(e) => outln!(
            "  manifest         INVALID: {}",
            crate::error::chain_line(e)
        ),
    }
    outln!("  components:");
    for s in &ins.sections {
        let note = match ins.matches_manifest(s.role, s.sha256) {
            Some(true) => "matches manifest",
            Some(false) => "DIFFERS FROM MANIFEST",
            None => "NOT IN MANIFEST",
        };
        outln!(
            "    {:<10} {:>10} bytes at {:>9}  sha256:{}  {note}",
            s.role.name(),
            s.size,
            s.offset,
            s.sha256
        );
    }
    outln!("  signatures:");
    for s in &ins.envelope.signatures {
        let id = if s.keyid.is_empty() {
            "(no key id)"
        } else {
            &s.keyid
        };
        outln!("    key {id}");
    }
    Ok(())
}
