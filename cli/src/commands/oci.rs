//! `jek push` and `jek pull`: bundles through OCI registries.

use std::path::{Path, PathBuf};

use jek_builder::fsio::{write_atomic, Overwrite};
use jek_oci::{Attachment, AttachmentKind, Registry};

use crate::error::{read, CliError};

/// Arguments of `jek push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The bundle file.
    bundle: PathBuf,
    /// Where to: registry/repository:tag (e.g. registry.example/kernels/pod:6.1).
    reference: String,
    /// Detached signatures to attach as referrers (default: BUNDLE.sigstore.json and
    /// BUNDLE.sig, those that exist). A `.json` file is a Sigstore bundle, anything else a
    /// cosign signature.
    #[arg(long, value_name = "FILE")]
    signature: Vec<PathBuf>,
    /// Provenance to attach (the builder's in-toto statement).
    #[arg(long, value_name = "FILE")]
    provenance: Option<PathBuf>,
    /// Talk HTTP, not HTTPS (a registry on localhost).
    #[arg(long)]
    plain_http: bool,
    /// Print `{"reference", "manifestDigest", "bundleDigest", "attachments"}`.
    #[arg(long)]
    json: bool,
}

/// Arguments of `jek pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// registry/repository:tag or registry/repository@sha256:...
    reference: String,
    /// The policy the bundle must pass before anything is written.
    #[arg(long)]
    policy: PathBuf,
    /// Output bundle file; the accepted signature is written beside it
    /// (OUT.sigstore.json or OUT.sig), so `jek boot OUT` finds it.
    #[arg(long)]
    out: PathBuf,
    /// Talk HTTP, not HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Print the verified bundle as JSON.
    #[arg(long)]
    json: bool,
}

fn registry_error(source: jek_oci::RegistryError) -> CliError {
    CliError::Registry(source)
}

/// Runs `jek push`.
pub fn push(args: PushArgs) -> Result<(), CliError> {
    let bundle = read("bundle", &args.bundle)?;
    let signature_files: Vec<PathBuf> = if args.signature.is_empty() {
        crate::policy_file::default_signature_paths(&args.bundle)
            .into_iter()
            .filter(|p| p.is_file())
            .collect()
    } else {
        args.signature.clone()
    };
    let mut attachments = Vec::new();
    for p in &signature_files {
        let kind = if p.extension().is_some_and(|e| e == "json") {
            AttachmentKind::SigstoreBundle
        } else {
            AttachmentKind::CosignSignature
        };
        attachments.push(Attachment {
            kind,
            data: read("signature", p)?,
        });
    }
    if let Some(p) = &args.provenance {
        attachments.push(Attachment {
            kind: AttachmentKind::Provenance,
            data: read("provenance", p)?,
        });
    }
    let title = args
        .bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle.jek".into());
    let registry = Registry::new(args.plain_http).map_err(registry_error)?;
    let pushed = registry
        .push(&bundle, &title, &args.reference, &attachments)
        .map_err(registry_error)?;
    tracing::info!(reference = %pushed.reference, digest = %pushed.manifest_digest, "pushed");
    if args.json {
        return super::print_json(&serde_json::json!({
            "reference": pushed.reference,
            "manifestDigest": pushed.manifest_digest,
            "bundleDigest": pushed.bundle_digest,
            "attachments": pushed.attachments.iter().map(|(k, d)| serde_json::json!({
                "kind": k.name(), "manifestDigest": d,
            })).collect::<Vec<_>>(),
        }));
    }
    println!("{}@{}", pushed.reference, pushed.manifest_digest);
    Ok(())
}

/// Runs `jek pull`: fetch, verify under the policy, and only then write.
pub fn pull(args: PullArgs) -> Result<(), CliError> {
    let policy = crate::policy_file::load(&args.policy)?;
    let registry = Registry::new(args.plain_http).map_err(registry_error)?;
    let pulled = registry.pull(&args.reference).map_err(registry_error)?;
    let source = Path::new(&args.reference);
    // The first attached signature the policy's Sigstore rule accepts; if none does, the
    // first one's failure is the reason.
    let signatures: Vec<&Attachment> = pulled
        .attachments
        .iter()
        .filter(|a| a.kind.is_signature())
        .collect();
    let origin = PathBuf::from(format!(
        "{}@{} (referrer)",
        args.reference, pulled.manifest_digest
    ));
    let candidates: Vec<(PathBuf, &[u8])> = signatures
        .iter()
        .map(|a| (origin.clone(), a.data.as_slice()))
        .collect();
    let (approval, accepted_sig) = match policy.approve_any(source, &pulled.bundle, &candidates)? {
        Some((i, approval)) => (Some(approval), signatures.get(i).copied()),
        None => (None, None),
    };
    let verified = policy.verify_approved(source, pulled.bundle, approval)?;
    write_atomic(&args.out, verified.bytes(), 0o644, Overwrite::Allow)?;
    if let Some(sig) = accepted_sig {
        let [sigstore_path, cosign_path] = crate::policy_file::default_signature_paths(&args.out);
        let path = if sig.kind == AttachmentKind::SigstoreBundle {
            sigstore_path
        } else {
            cosign_path
        };
        write_atomic(&path, &sig.data, 0o644, Overwrite::Allow)?;
    }
    let m = verified.manifest();
    if args.json {
        return super::print_json(&serde_json::json!({
            "accepted": true,
            "out": args.out,
            "manifestDigest": pulled.manifest_digest,
            "name": m.name,
            "version": m.version,
            "securityVersion": m.security_version,
            "signers": verified.signers().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "approvedBy": verified.approval(),
        }));
    }
    println!(
        "ACCEPTED {} {} from {}; wrote {}",
        m.name,
        m.version,
        args.reference,
        args.out.display()
    );
    Ok(())
}
