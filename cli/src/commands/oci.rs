//! `jek push` and `jek pull`: bundles through OCI registries.

use std::path::PathBuf;

use jek_fsio::{write_atomic, Overwrite};
use jek_oci::registry::PullError;
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
    /// Also sign the bundle manifest with this cosign key (password in $COSIGN_PASSWORD)
    /// and push the signature at cosign's `sha256-<hex>.sig` tag (`cosign verify --key`).
    #[arg(long, value_name = "KEY")]
    cosign_key: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
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
    /// Replace OUT and its signature file if they exist.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Print the verified bundle as JSON.
    #[arg(long)]
    json: bool,
}

/// How to reach registries: shared by every command that talks to one. Credentials come
/// from `JEK_REGISTRY_USERNAME`/`JEK_REGISTRY_PASSWORD` or the auth files skopeo reads.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Talk HTTP, not HTTPS (a registry on localhost).
    #[arg(long)]
    pub plain_http: bool,
    /// CA certificates (PEM) to trust for registries' TLS, besides the built-in roots.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

impl RegistryArgs {
    /// The client options these flags and the environment give.
    pub fn options(&self) -> Result<jek_oci::ClientOptions, CliError> {
        Ok(jek_oci::ClientOptions::from_environment(
            self.plain_http,
            self.ca_file.as_deref(),
        )?)
    }
}

/// Runs `jek push`.
pub fn push(args: PushArgs) -> Result<(), CliError> {
    let bundle = read("bundle", &args.bundle)?;
    let signature_files: Vec<PathBuf> = if args.signature.is_empty() {
        jek_verifier::detached_signature_paths(&args.bundle)
            .into_iter()
            .filter(|p| p.is_file())
            .collect()
    } else {
        args.signature.clone()
    };
    let mut attachments = Vec::new();
    for p in &signature_files {
        let (kind, data) = (AttachmentKind::of_signature_file(p), read("signature", p)?);
        attachments.push(Attachment { kind, data });
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
    let registry = Registry::new(&args.registry.options()?)?;
    let key = args
        .cosign_key
        .as_deref()
        .map(jek_build_config::keys::cosign_key)
        .transpose()?;
    let sign = key.as_ref().map(jek_builder::cosign::CosignKey::signer);
    let signer = sign
        .as_ref()
        .map(|f| f as jek_oci::registry::CosignSigner<'_>);
    let pushed = registry.push(&bundle, &title, &args.reference, &attachments, signer)?;
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
    let overwrite = Overwrite::from_force(args.force);
    overwrite.check(
        jek_verifier::detached_signature_paths(&args.out)
            .iter()
            .map(|p| p.as_path())
            .chain([args.out.as_path()]),
    )?;
    let registry = Registry::new(&args.registry.options()?)?;
    let now = jek_verifier::UnixTime::now();
    let pull = match registry.pull_verified(&args.reference, &policy.policy, now) {
        Ok(p) => p,
        Err(PullError::Registry(e)) => return Err(e.into()),
        Err(PullError::Rejected { reference, source }) => {
            return Err(CliError::Rejected {
                path: reference.into(),
                source,
            })
        }
    };
    write_atomic(&args.out, pull.bundle.bytes(), 0o644, overwrite)?;
    if let Some(sig) = &pull.approval {
        let [sigstore_path, cosign_path] = jek_verifier::detached_signature_paths(&args.out);
        let path = match sig.kind {
            AttachmentKind::SigstoreBundle => sigstore_path,
            _ => cosign_path,
        };
        write_atomic(&path, &sig.data, 0o644, overwrite)?;
    }
    if args.json {
        return super::print_json(&pull.summary(&args.out));
    }
    let m = pull.bundle.manifest();
    outln!(
        "ACCEPTED {} {} from {}; wrote {}",
        m.name,
        m.version,
        args.reference,
        args.out.display()
    );
    Ok(())
}
