//! What `jek predict` and `jek boot` share: a bundle, the policy it must pass, the pod and
//! the kernel format. Loading it is the one place where the bundle file is read (once) and
//! verified.

use std::path::PathBuf;

use jek_pod::image::ContainerSegment;
use jek_pod::spec::PodSpec;
use jek_verifier::format::Role;
use jek_verifier::{Bundle, Verified};

use crate::error::CliError;

/// Kernel formats on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KernelArg {
    /// The bzImage.
    Bzimage,
    /// The ELF vmlinux.
    Vmlinux,
}

impl KernelArg {
    /// The bundle role.
    pub fn role(self) -> Role {
        match self {
            KernelArg::Bzimage => Role::BzImage,
            KernelArg::Vmlinux => Role::Vmlinux,
        }
    }
}

/// Bundle, policy, pod and kernel format.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The bundle. It is read once; only the verified bytes in memory are used.
    pub bundle: PathBuf,
    /// Policy file. The signer measurements (PCR 7) are the keys it accepts the bundle with.
    #[arg(long)]
    pub policy: PathBuf,
    /// Pod file (Kubernetes Pod subset): appended as the pod segment, measured into PCR 12;
    /// its containers' images are pulled (or taken from the image cache), checked against
    /// the policy's `images:` and measured into PCR 13.
    #[arg(long)]
    pub pod: Option<PathBuf>,
    #[command(flatten)]
    pub registry: super::oci::RegistryArgs,
    #[command(flatten)]
    pub sigstore: super::verify::SignatureArg,
    /// Kernel format (default: bzimage if the bundle has one).
    #[arg(long, value_enum)]
    pub kernel: Option<KernelArg>,
}

/// A loaded target: the verified bundle and the parsed pod.
pub struct Loaded {
    /// The verified bundle.
    pub bundle: Verified<Bundle>,
    /// The pod spec, if a pod file was given.
    pub pod: Option<PodSpec>,
    /// The segments of its containers' images, in container order.
    pub containers: Vec<ContainerSegment>,
}

impl Target {
    /// Parses the policy and the pod file, reads and verifies the bundle, then prepares the
    /// pod's images under the policy (a refused image stops here, before any VM or TPM).
    pub fn load(&self) -> Result<Loaded, CliError> {
        let policy = jek_config::policy::load(&self.policy)?;
        let pod = self.pod.as_deref().map(jek_config::pod::load).transpose()?;
        let bundle = super::verify::verify_file(&policy.policy, &self.bundle, &self.sigstore)?;
        let mut containers = Vec::new();
        if let (Some(spec), Some(file)) = (&pod, &self.pod) {
            let opts =
                jek_image::Options::new(jek_config::base_dir(file), self.registry.options()?);
            let prepared = jek_image::prepare(spec, policy.images.as_ref(), &opts)?;
            containers = prepared.into_iter().map(|p| p.segment).collect();
        }
        Ok(Loaded {
            bundle,
            pod,
            containers,
        })
    }

    /// The kernel role asked for, if any.
    pub fn kernel_role(&self) -> Option<Role> {
        self.kernel.map(KernelArg::role)
    }
}
