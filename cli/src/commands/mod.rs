//! One module per subcommand.

use crate::error::CliError;

mod attest;
mod boot;
pub(crate) mod build;
mod cache;
mod completions;
mod inspect;
mod kconfig;
mod keygen;
mod man;
mod oci;
mod pack;
mod predict;
mod provenance;
mod result;
mod sign;
mod target;
mod tpm;
mod verify;

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Generate an Ed25519 signing key pair.
    Keygen(keygen::Args),
    /// Pack existing kernel, initramfs, command line and config into a signed bundle.
    Pack(pack::Args),
    /// Add a signature to a bundle.
    Sign(sign::Args),
    /// Build a just-enough kernel and initramfs from a recipe and pack them into a signed bundle.
    ///
    /// The build time is $SOURCE_DATE_EPOCH, else the recipe's `source_date_epoch`, else the
    /// kernel source's modification time: unchanged inputs hit the kernel cache.
    Build(build::Args),
    /// The build cache: list it, prune it.
    #[command(subcommand)]
    Cache(cache::Args),
    /// Kernel configuration checks.
    #[command(subcommand)]
    Kconfig(kconfig::Args),
    /// Show a bundle's manifest, command line, components and signatures (without verifying
    /// them), from a file or a registry.
    Inspect(inspect::Args),
    /// Write one component of a bundle (as stored, not verified) to a file.
    Extract(inspect::ExtractArgs),
    /// Verify a bundle under a policy: exit 0 only if the policy accepts it.
    Verify(verify::Args),
    /// Compute offline the PCR values and event log a boot of this bundle will produce.
    Predict(predict::Args),
    /// Verify, measure into the pod's vTPM, and boot only the verified bytes.
    Boot(boot::Args),
    /// Prove from each pod's vTPM that it booted clean: a fresh quote appraised against the
    /// signed bundle, as an EAR attestation result.
    Attest(attest::Args),
    /// Signed attestation results from `jek-attestation-verifier`: check one against a JWKS.
    #[command(subcommand)]
    Result(result::Args),
    /// SLSA provenance: verify what `jek build` wrote for a bundle.
    #[command(subcommand)]
    Provenance(provenance::Args),
    /// Push a bundle and its signatures (as referrers) to an OCI registry.
    Push(oci::PushArgs),
    /// Pull a bundle from an OCI registry, verify it under a policy, then write it.
    Pull(oci::PullArgs),
    /// The TPMs kept for attestation: list them, stop them.
    #[command(subcommand)]
    Tpm(tpm::Args),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to standard output.
    Completions(completions::Args),
    /// Write man pages (jek.1 and one per subcommand) into a directory.
    Man(man::Args),
}

/// Runs one subcommand.
pub fn run(cmd: Command, quiet: bool) -> Result<(), CliError> {
    match cmd {
        Command::Build(a) => build::run(a, quiet),
        Command::Cache(a) => cache::run(a),
        Command::Kconfig(a) => kconfig::run(a),
        Command::Keygen(a) => keygen::run(a),
        Command::Pack(a) => pack::run(a),
        Command::Sign(a) => sign::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Extract(a) => inspect::extract(a),
        Command::Verify(a) => verify::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Boot(a) => boot::run(a, quiet),
        Command::Attest(a) => attest::run(a, quiet),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
        Command::Tpm(a) => tpm::run(a),
        Command::Push(a) => oci::push(a),
        Command::Provenance(a) => provenance::run(a),
        Command::Result(a) => result::run(a),
        Command::Pull(a) => oci::pull(a),
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(|e| CliError::Stdout(e.into()))?;
    writeln!(out).map_err(CliError::Stdout)
}
