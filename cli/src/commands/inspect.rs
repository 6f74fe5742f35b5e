//! `jek inspect`: what a bundle claims, without trusting it.

use std::path::PathBuf;

use serde_json::json;

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
    let matches = |role, sha| {
        ins.manifest
            .as_ref()
            .ok()
            .and_then(|m| m.component(role))
            .map(|c| c.sha256 == sha)
    };
    if args.json {
        let manifest = match &ins.manifest {
            Ok(m) => json!({
                "name": m.name,
                "version": m.version,
                "securityVersion": m.security_version,
                "kernelRelease": m.kernel_release,
                "created": m.created,
                "kernel": m.kernel,
                "manifestDigest": jek_verifier::Sha256Digest::of(&ins.envelope.payload).to_string(),
            }),
            Err(e) => json!({ "error": crate::error::chain_line(e) }),
        };
        return super::print_json(&json!({
            "verified": false,
            "size": bytes.len(),
            "formatVersion": jek_verifier::format::FORMAT_VERSION,
            "manifest": manifest,
            "components": ins.sections.iter().map(|s| json!({
                "role": s.role.name(),
                "offset": s.offset,
                "size": s.size,
                "sha256": s.sha256.to_string(),
                "matchesManifest": matches(s.role, s.sha256),
            })).collect::<Vec<_>>(),
            "signatures": ins.envelope.signatures.iter().map(|s| json!({
                "keyId": s.keyid,
                "size": s.sig.len(),
            })).collect::<Vec<_>>(),
        }));
    }
    println!(
        "{} ({} bytes, format v{}) -- not verified",
        args.bundle.display(),
        bytes.len(),
        jek_verifier::format::FORMAT_VERSION
    );
    match &ins.manifest {
        Ok(m) => {
            println!("  name             {}", m.name);
            println!("  version          {}", m.version);
            println!("  security version {}", m.security_version);
            println!("  kernel release   {}", m.kernel_release);
            println!("  created          {}", m.created);
            if let Some(p) = &m.kernel.boot_protocol {
                println!("  boot protocol    {p}");
            }
            if let Some(p) = &m.kernel.payload_format {
                println!("  payload          {p}");
            }
            if let Some(e) = &m.kernel.elf_entry {
                println!("  ELF entry        {e}");
            }
            println!(
                "  manifest digest  sha256:{}",
                jek_verifier::Sha256Digest::of(&ins.envelope.payload)
            );
        }
        Err(e) => println!(
            "  manifest         INVALID: {}",
            crate::error::chain_line(e)
        ),
    }
    println!("  components:");
    for s in &ins.sections {
        let note = match matches(s.role, s.sha256) {
            Some(true) => "matches manifest",
            Some(false) => "DIFFERS FROM MANIFEST",
            None => "NOT IN MANIFEST",
        };
        println!(
            "    {:<10} {:>10} bytes at {:>9}  sha256:{}  {note}",
            s.role.name(),
            s.size,
            s.offset,
            s.sha256
        );
    }
    println!("  signatures:");
    for s in &ins.envelope.signatures {
        let id = if s.keyid.is_empty() {
            "(no key id)"
        } else {
            &s.keyid
        };
        println!("    key {id}");
    }
    Ok(())
}
