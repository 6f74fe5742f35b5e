//! `jek inspect`: what a bundle claims, without trusting it.

use std::path::PathBuf;

use jek_verifier::manifest::KernelInfo;
use jek_verifier::Sha256Digest;
use serde::Serialize;

use crate::error::{read, CliError};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InspectJson<'a> {
    verified: bool,
    size: usize,
    format_version: u16,
    manifest: ManifestJson<'a>,
    components: Vec<SectionJson>,
    signatures: Vec<SignatureJson<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ManifestJson<'a> {
    #[serde(rename_all = "camelCase")]
    Claimed {
        name: &'a str,
        version: &'a str,
        security_version: u64,
        kernel_release: &'a str,
        created: &'a str,
        kernel: &'a KernelInfo,
        manifest_digest: Sha256Digest,
    },
    Invalid {
        error: String,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SectionJson {
    role: &'static str,
    offset: usize,
    size: usize,
    sha256: Sha256Digest,
    matches_manifest: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignatureJson<'a> {
    key_id: &'a str,
    size: usize,
}

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
            Ok(m) => ManifestJson::Claimed {
                name: &m.name,
                version: &m.version,
                security_version: m.security_version,
                kernel_release: &m.kernel_release,
                created: &m.created,
                kernel: &m.kernel,
                manifest_digest: Sha256Digest::of(&ins.envelope.payload),
            },
            Err(e) => ManifestJson::Invalid {
                error: crate::error::chain_line(e),
            },
        };
        return super::print_json(&InspectJson {
            verified: false,
            size: bytes.len(),
            format_version: jek_verifier::format::FORMAT_VERSION,
            manifest,
            components: ins
                .sections
                .iter()
                .map(|s| SectionJson {
                    role: s.role.name(),
                    offset: s.offset,
                    size: s.size,
                    sha256: s.sha256,
                    matches_manifest: matches(s.role, s.sha256),
                })
                .collect(),
            signatures: ins
                .envelope
                .signatures
                .iter()
                .map(|s| SignatureJson {
                    key_id: &s.keyid,
                    size: s.sig.len(),
                })
                .collect(),
        });
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
