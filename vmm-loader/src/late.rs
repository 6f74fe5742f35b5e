//! The third feed: a container joining a running pod sandbox is measured by the host
//! before a byte of it reaches the guest.
//!
//! Under the run directory's exclusive measurement lock, the pod's event log is read, the
//! TPM is asked (through the proxy's side sockets, the same the agent quotes through) to
//! confirm it holds what the log replays to, the container's event
//! (`jek_measure::plan::added_container_event`: PCR 13, its own tag, the segment's
//! SHA-256) is extended, read back, and the longer log replaces the old one atomically.
//! A quote (which takes the lock shared) sees either both or neither.

use std::path::PathBuf;

use jek_measure::plan::{added_container_event, ContainerEvent};
use jek_measure::EventLog;
use jek_tpm::swtpm::Sockets;
use jek_tpm::Tpm;
use jek_verifier::Sha256Digest;

use crate::run_dir::RunDir;

/// The largest event log read back (a pod's log is a few KiB per container).
pub const MAX_LOG: u64 = 16 << 20;

/// Why an added container could not be measured: it must not be sent to the guest.
#[derive(Debug, thiserror::Error)]
pub enum LateError {
    /// The measurement lock could not be taken.
    #[error("cannot lock the pod's measurements ({path})")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pod's event log cannot be read.
    #[error("cannot read the pod's event log")]
    ReadLog(#[source] jek_fsio::ReadError),
    /// The pod's event log does not parse.
    #[error("the pod's event log {path} does not parse")]
    ParseLog {
        /// The log.
        path: PathBuf,
        /// Why.
        #[source]
        source: jek_measure::LogError,
    },
    /// The pod's TPM cannot be reached.
    #[error("cannot reach the pod's TPM")]
    Tpm(#[source] jek_tpm::TpmError),
    /// Measuring failed.
    #[error("measuring container {container} into the pod's TPM failed")]
    Measure {
        /// The container.
        container: String,
        /// Why.
        #[source]
        source: jek_tpm::MeasureError,
    },
    /// The longer log could not be written (the TPM has the extend: attestation of the
    /// pod now fails, as it must).
    #[error("cannot write the pod's event log")]
    WriteLog(#[source] jek_fsio::WriteError),
}

/// Measures `container`, whose segment has SHA-256 `digest`, into the running pod of `run`
/// whose swtpm listens in `swtpm` (its proxy's side sockets are used).
pub fn measure_added(
    run: &RunDir,
    swtpm: &Sockets,
    container: &ContainerEvent,
    digest: Sha256Digest,
) -> Result<(), LateError> {
    let _lock = run
        .lock_measurements(true)
        .map_err(|source| LateError::Lock {
            path: run.measure_lock(),
            source,
        })?;
    let path = run.event_log();
    let bytes = jek_fsio::read_regular(&path, MAX_LOG).map_err(LateError::ReadLog)?;
    let log = EventLog::from_bytes(&bytes).map_err(|source| LateError::ParseLog {
        path: path.clone(),
        source,
    })?;
    let side = crate::tpm_proxy::side_sockets(swtpm);
    let mut tpm = Tpm::connect_swtpm(&side).map_err(LateError::Tpm)?;
    let event = added_container_event(container, digest);
    let longer =
        jek_tpm::measure_more(&mut tpm, &log, std::slice::from_ref(&event)).map_err(|source| {
            LateError::Measure {
                container: container.container.clone(),
                source,
            }
        })?;
    jek_fsio::write_atomic(&path, &longer.to_bytes(), 0o600, jek_fsio::Overwrite::Allow)
        .map_err(LateError::WriteLog)?;
    tracing::info!(
        container = %container.container,
        digest = %digest,
        events = longer.events.len(),
        "measured a container joining the running pod"
    );
    Ok(())
}
