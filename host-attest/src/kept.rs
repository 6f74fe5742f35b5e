//! The TPMs kept for attestation (`jek boot --keep-tpm`), as the registration store lists
//! them: `jek tpm list` and `jek tpm stop`.

use std::path::PathBuf;

use serde::Serialize;

use crate::registrations::{HostRegistration, RegistrationStore, RegistrationStoreError};

/// A kept TPM as `jek tpm list` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptTpm {
    /// Its registration.
    pub registration: HostRegistration,
    /// Whether its swtpm still answers on its control socket.
    pub running: bool,
}

/// The TPMs the store has registrations for, and whether each still runs.
pub fn kept(registry: &RegistrationStore) -> Result<Vec<KeptTpm>, RegistrationStoreError> {
    Ok(registry
        .list()?
        .into_iter()
        .map(|registration| {
            let sockets = jek_tpm::swtpm::Sockets {
                dir: registration.tpm.socket_dir.clone(),
            };
            let running = sockets.connect_ctrl().is_ok();
            KeptTpm {
                registration,
                running,
            }
        })
        .collect())
}

/// Stops the kept TPM of registration `id` (CMD_SHUTDOWN on its control socket; a swtpm
/// that is gone already is fine) and forgets the registration.
pub fn stop(
    registry: &RegistrationStore,
    id: &str,
) -> Result<Option<HostRegistration>, RegistrationStoreError> {
    let Some(reg) = registry.get(id)? else {
        return Ok(None);
    };
    let kept = jek_tpm::swtpm::KeptSwtpm {
        pid: reg.tpm.pid,
        sockets: jek_tpm::swtpm::Sockets {
            dir: reg.tpm.socket_dir.clone(),
        },
        state_dir: PathBuf::new(),
    };
    if let Err(e) = jek_tpm::swtpm::stop_kept(&kept) {
        tracing::info!(error = %e, id, "the kept TPM was not running");
    }
    registry.remove(id)?;
    Ok(Some(reg))
}
