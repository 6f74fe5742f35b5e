//! `jek push` and `jek pull`: bundles through OCI registries.

use std::path::{Path, PathBuf};

use jek_fsio::{write_atomic, Overwrite};
use jek_oci::{Attachment, AttachmentKind, Registry};
use jek_verifier::DetachedSignature;

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

/// Registry credentials: `JEK_REGISTRY_USERNAME` and `JEK_REGISTRY_PASSWORD`, when both
/// are set.
pub fn registry_auth() -> Option<(String, String)> {
    let var = |name| std::env::var(name).ok();
    Some((var("JEK_REGISTRY_USERNAME")?, var("JEK_REGISTRY_PASSWORD")?))
}

/// Runs `jek push`.
pub fn push(args: PushArgs) -> Result<(), CliError> {
    let bundle = read("bundle", &args.bundle)?;
    let signature_files: Vec<PathBuf> = if args.signature.is_empty() {
        jek_config::signatures::default_paths(&args.bundle)
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
    let registry = Registry::new(args.plain_http, registry_auth())?;
    let pushed = registry.push(&bundle, &title, &args.reference, &attachments)?;
    tracing::info!(reference = %pushed.reference, digest = %pushed.manifest_digest, "pushed");
    if args.json {
        return super::print_json(&pushed);
    }
    outln!("{}@{}", pushed.reference, pushed.manifest_digest);
    Ok(())
}

/// Runs `jek pull`: fetch, verify under the policy, and only then write.
pub fn pull(args: PullArgs) -> Result<(), CliError> {
    let policy = jek_config::policy::load(&args.policy)?;
    let registry = Registry::new(args.plain_http, registry_auth())?;
    let pulled = registry.pull(&args.reference)?;
    // Every attached signature is a candidate for the policy's Sigstore rule; the verifier
    // takes the first one it accepts or reports the first one's failure.
    let signatures: Vec<&Attachment> = pulled
        .attachments
        .iter()
        .filter(|a| a.kind.is_signature())
        .collect();
    let origin = format!("{}@{} (referrer)", args.reference, pulled.manifest_digest);
    let candidates: Vec<DetachedSignature<'_>> = signatures
        .iter()
        .map(|a| DetachedSignature {
            origin: &origin,
            bytes: &a.data,
        })
        .collect();
    let verified = jek_verifier::verify_bundle(
        pulled.bundle,
        &policy.policy,
        &candidates,
        jek_verifier::UnixTime::now(),
    )
    .map_err(|source| CliError::Rejected {
        path: PathBuf::from(&args.reference),
        source,
    })?;
    write_atomic(&args.out, verified.bytes(), 0o644, Overwrite::Allow)?;
    if let Some(sig) = verified
        .approving_signature()
        .and_then(|i| signatures.get(i))
    {
        let [sigstore_path, cosign_path] = jek_config::signatures::default_paths(&args.out);
        let path = if sig.kind == AttachmentKind::SigstoreBundle {
            sigstore_path
        } else {
            cosign_path
        };
        write_atomic(&path, &sig.data, 0o644, Overwrite::Allow)?;
    }
    let m = verified.manifest();
    if args.json {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Pulled<'a> {
            accepted: bool,
            out: &'a Path,
            manifest_digest: &'a str,
            name: &'a str,
            version: &'a str,
            security_version: u64,
            signers: &'a [jek_verifier::KeyId],
            approved_by: Option<&'a str>,
        }
        return super::print_json(&Pulled {
            accepted: true,
            out: &args.out,
            manifest_digest: &pulled.manifest_digest,
            name: &m.name,
            version: &m.version,
            security_version: m.security_version,
            signers: verified.signers(),
            approved_by: verified.approval(),
        });
    }
    outln!(
        "ACCEPTED {} {} from {}; wrote {}",
        m.name,
        m.version,
        args.reference,
        args.out.display()
    );
    Ok(())
}
