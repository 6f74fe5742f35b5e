//! `jek tpm list` and `jek tpm stop`: the TPMs kept for attestation, from the registration
//! store.

use std::path::PathBuf;

use jek_host_attest::kept;
use jek_host_attest::registrations::RegistrationStore;

use crate::error::CliError;

/// `jek tpm` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Args {
    /// List the kept TPMs: registration, pod, swtpm pid, sockets, whether it runs.
    List(Common),
    /// Stop kept TPMs (by registration identifier, or --all) and forget them.
    Stop {
        /// Registration identifiers, as `jek tpm list` prints them.
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Every kept TPM.
        #[arg(long)]
        all: bool,
        /// Remove each pod from this attestation verifier first (as `jek boot --register-with`
        /// registered it), under an admin credential; a pod it does not hold is no error.
        #[arg(long, value_name = "URL")]
        verifier: Option<String>,
        /// Extra trust roots (PEM) for the verifier's HTTPS.
        #[arg(long, value_name = "PEM", requires = "verifier")]
        ca_file: Option<PathBuf>,
        #[command(flatten)]
        credentials: super::result::Credentials,
        #[command(flatten)]
        common: Common,
    },
}

/// Options of every `jek tpm` subcommand.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// The registration store (default: $XDG_DATA_HOME/jek/registry).
    #[arg(long, value_name = "DIR")]
    registry: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Runs `jek tpm`.
pub fn run(args: Args) -> Result<(), CliError> {
    let (Args::List(c) | Args::Stop { common: c, .. }) = &args;
    let dir = c
        .registry
        .clone()
        .unwrap_or_else(jek_config::paths::default_registry);
    let registry = RegistrationStore::open(&dir)?;
    let kept = kept::kept(&registry)?;
    let Args::Stop {
        ids,
        all,
        verifier,
        ca_file,
        credentials,
        ..
    } = &args
    else {
        if c.json {
            return super::print_json(&kept);
        }
        for k in &kept {
            let (r, state) = (&k.registration, if k.running { "running" } else { "gone" });
            let sockets = r.tpm.socket_dir.display();
            outln!(
                "{} {} pid {} {sockets} {state}",
                r.id(),
                r.registration.pod,
                r.tpm.pid
            );
        }
        return Ok(());
    };
    let known = |id: &String| kept.iter().any(|k| k.registration.id() == id);
    if let Some(id) = ids.iter().find(|id| !known(id)) {
        return Err(CliError::Usage(format!(
            "no kept TPM {id} in {}",
            dir.display()
        )));
    }
    let ids: Vec<String> = match all {
        true => kept
            .iter()
            .map(|k| k.registration.id().to_string())
            .collect(),
        false => ids.clone(),
    };
    let credentials = match verifier {
        Some(_) => Some(credentials.load(ca_file.as_deref())?),
        None => None,
    };
    for id in &ids {
        if let (Some(url), Some(credentials)) = (verifier, &credentials) {
            let held = jek_service_client::client::remove(url, id, credentials.reach())?;
            if !held && !c.json {
                errln!("jek: {url} held no registration {id}");
            }
        }
        kept::stop(&registry, id)?;
    }
    if c.json {
        return super::print_json(&ids);
    }
    ids.iter().for_each(|id| outln!("stopped {id}"));
    Ok(())
}
