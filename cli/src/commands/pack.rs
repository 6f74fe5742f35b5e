//! `jek pack`: components that already exist -> a signed bundle.

use std::path::PathBuf;

use jek_builder::pack::{pack, PackRequest};
use jek_fsio::{write_atomic, Overwrite};
use jek_verifier::UnixTime;

use crate::error::{read, CliError};

/// Arguments of `jek pack`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kernel image: a bzImage or an uncompressed ELF vmlinux (recognised by content).
    #[arg(long)]
    kernel: PathBuf,
    /// An ELF vmlinux to carry next to a bzImage (for VMMs that load ELF).
    #[arg(long)]
    vmlinux: Option<PathBuf>,
    /// Initramfs (newc cpio, optionally compressed).
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Kernel command line (printable ASCII, at most 2047 bytes).
    #[arg(long, allow_hyphen_values = true)]
    cmdline: String,
    /// The kernel's resolved .config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Bundle name ([A-Za-z0-9._-], at most 128).
    #[arg(long)]
    name: String,
    /// Bundle version.
    #[arg(long)]
    version: String,
    /// Security version: the anti-rollback counter policies compare against.
    #[arg(long)]
    security_version: u64,
    /// Kernel release (`uname -r`); read from the image when omitted.
    #[arg(long)]
    kernel_release: Option<String>,
    /// Signing key (PKCS#8 PEM); repeat for several signers.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Output bundle path (written atomically; an existing file only with --force).
    #[arg(long)]
    out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Print `{"bundle", "size", "sha256"}` instead of the output path.
    #[arg(long)]
    json: bool,
}

/// Runs `jek pack`.
pub fn run(args: Args) -> Result<(), CliError> {
    Overwrite::from_force(args.force).check([args.out.as_path()])?;
    let kernel = read("kernel image", &args.kernel)?;
    let vmlinux = args
        .vmlinux
        .as_deref()
        .map(|p| read("vmlinux", p))
        .transpose()?;
    let initramfs = args
        .initramfs
        .as_deref()
        .map(|p| read("initramfs", p))
        .transpose()?;
    let config = args
        .config
        .as_deref()
        .map(|p| read("kernel config", p))
        .transpose()?;
    let keys = args
        .keys
        .iter()
        .map(|p| jek_build_config::keys::signing_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let req = PackRequest {
        kernel: &kernel,
        vmlinux: vmlinux.as_deref(),
        initramfs: initramfs.as_deref(),
        cmdline: &args.cmdline,
        config: config.as_deref(),
        name: args.name,
        version: args.version,
        security_version: args.security_version,
        kernel_release: args.kernel_release,
        created: jek_builder::pack::created_time(|| UnixTime::now().0)?,
    };
    let bytes = pack(&req, &keys).map_err(CliError::Pack)?;
    write_atomic(&args.out, &bytes, 0o644, Overwrite::from_force(args.force))?;
    tracing::info!(bytes = bytes.len(), "wrote {}", args.out.display());
    if args.json {
        return super::print_json(&jek_builder::pack::Packed {
            bundle: &args.out,
            size: bytes.len(),
            sha256: jek_verifier::Sha256Digest::of(&bytes),
        });
    }
    outln!("{}", args.out.display());
    Ok(())
}
