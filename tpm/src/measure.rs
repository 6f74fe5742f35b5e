//! The measured-boot step: planned events into the TPM, the event log out, fail closed.

use jek_measure::{Event, EventLog, PcrValues, PlannedEvent};
use jek_verifier::Sha256Digest;

use crate::client::{Tpm, TpmError};

/// Why measurement failed; the pod must not boot.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// Reading the PCRs before measuring failed.
    #[error("cannot read {} before measuring", pcr_list(pcrs))]
    ReadBefore {
        /// The PCRs.
        pcrs: Vec<u32>,
        /// Why.
        #[source]
        source: TpmError,
    },
    /// A PCR already holds a measurement, so the log could not explain its value.
    #[error(
        "PCR {pcr} is not in its reset state (it holds {value}): this TPM already has \
         measurements; each pod needs a fresh TPM"
    )]
    NotFresh {
        /// The PCR.
        pcr: u32,
        /// Its value.
        value: Sha256Digest,
    },
    /// An extend failed.
    #[error("measuring {what} into PCR {pcr} failed")]
    Extend {
        /// The PCR.
        pcr: u32,
        /// What was being measured.
        what: String,
        /// Why.
        #[source]
        source: TpmError,
    },
    /// Reading the PCRs back failed.
    #[error("cannot read {} back after measuring", pcr_list(pcrs))]
    ReadAfter {
        /// The PCRs.
        pcrs: Vec<u32>,
        /// Why.
        #[source]
        source: TpmError,
    },
    /// Before measuring more into a running pod's TPM: it holds another value than the
    /// pod's event log replays to, so the log could not explain what is added.
    #[error(
        "PCR {pcr} holds {actual} but the pod's event log replays to {expected}: the log \
         does not explain the TPM, so nothing more is measured"
    )]
    Unexplained {
        /// The PCR.
        pcr: u32,
        /// What the log replays to.
        expected: Sha256Digest,
        /// What the TPM holds.
        actual: Sha256Digest,
    },
    /// The TPM holds another value than the log replays to.
    #[error("PCR {pcr} holds {actual} but the event log replays to {expected}")]
    Mismatch {
        /// The PCR.
        pcr: u32,
        /// What the log replays to.
        expected: Sha256Digest,
        /// What the TPM holds.
        actual: Sha256Digest,
    },
}

/// "PCR 4" or "PCRs 4, 7, 8".
fn pcr_list(pcrs: &[u32]) -> String {
    let list: Vec<String> = pcrs.iter().map(u32::to_string).collect();
    match pcrs.len() {
        1 => format!("PCR {}", list.join("")),
        _ => format!("PCRs {}", list.join(", ")),
    }
}

fn pcrs_of(events: &[PlannedEvent]) -> Vec<u32> {
    let mut pcrs: Vec<u32> = events.iter().map(|e| e.event.pcr).collect();
    pcrs.sort_unstable();
    pcrs.dedup();
    pcrs
}

/// Extends every planned event into `tpm` in order and returns the event log.
///
/// Before: every PCR the plan touches must be zero (a fresh TPM), or the log could not
/// explain it. After: the PCRs read back must equal the log's replay. Either check failing,
/// or any extend failing, is an error that names the PCR.
pub fn measure(tpm: &mut Tpm, events: &[PlannedEvent]) -> Result<EventLog, MeasureError> {
    let pcrs = pcrs_of(events);
    let before = tpm
        .read_pcrs(&pcrs)
        .map_err(|source| MeasureError::ReadBefore {
            pcrs: pcrs.clone(),
            source,
        })?;
    if let Some((pcr, value)) = before.iter().find(|(_, v)| v.0 != [0; 32]) {
        return Err(MeasureError::NotFresh {
            pcr: *pcr,
            value: *value,
        });
    }
    let mut log = EventLog::default();
    extend_all(tpm, &mut log, events)?;
    let after = tpm
        .read_pcrs(&pcrs)
        .map_err(|source| MeasureError::ReadAfter {
            pcrs: pcrs.clone(),
            source,
        })?;
    check_replay(&log.replay(), &after)?;
    Ok(log)
}

/// Extends `events` into a running pod's `tpm`, whose measurements so far `log` records,
/// and returns the log with them appended.
///
/// Fails closed like [`measure`]: before, every PCR the events touch must hold what `log`
/// replays to (else [`MeasureError::Unexplained`]); after, what the longer log replays to.
/// An extend that failed half-way leaves the TPM ahead of every log, so later
/// measurements (and every appraisal) fail rather than explain it away.
pub fn measure_more(
    tpm: &mut Tpm,
    log: &EventLog,
    events: &[PlannedEvent],
) -> Result<EventLog, MeasureError> {
    let pcrs = pcrs_of(events);
    let before = tpm
        .read_pcrs(&pcrs)
        .map_err(|source| MeasureError::ReadBefore {
            pcrs: pcrs.clone(),
            source,
        })?;
    let replay = log.replay();
    for pcr in &pcrs {
        let want = replay.get(pcr).copied().unwrap_or(Sha256Digest([0; 32]));
        let got = before.get(pcr).copied().unwrap_or(Sha256Digest([0; 32]));
        if got != want {
            return Err(MeasureError::Unexplained {
                pcr: *pcr,
                expected: want,
                actual: got,
            });
        }
    }
    let mut log = log.clone();
    extend_all(tpm, &mut log, events)?;
    let after = tpm
        .read_pcrs(&pcrs)
        .map_err(|source| MeasureError::ReadAfter {
            pcrs: pcrs.clone(),
            source,
        })?;
    // Only the PCRs read back: the log's other PCRs were not touched here.
    let replayed: PcrValues = log
        .replay()
        .into_iter()
        .filter(|(pcr, _)| pcrs.contains(pcr))
        .collect();
    check_replay(&replayed, &after)?;
    Ok(log)
}

/// Extends each planned event into `tpm` in order, appending it to `log` once extended.
fn extend_all(
    tpm: &mut Tpm,
    log: &mut EventLog,
    events: &[PlannedEvent],
) -> Result<(), MeasureError> {
    for planned in events {
        let Event { pcr, digest, .. } = &planned.event;
        tracing::debug!(pcr, digest = %digest, what = %planned.what, "extend");
        tpm.extend(*pcr, digest)
            .map_err(|source| MeasureError::Extend {
                pcr: *pcr,
                what: planned.what.to_string(),
                source,
            })?;
        log.push(planned.event.clone());
    }
    Ok(())
}

/// Every PCR the log touches holds exactly its replayed value.
pub(crate) fn check_replay(expected: &PcrValues, actual: &PcrValues) -> Result<(), MeasureError> {
    for (pcr, want) in expected {
        let got = actual.get(pcr).copied().unwrap_or(Sha256Digest([0; 32]));
        if got != *want {
            return Err(MeasureError::Mismatch {
                pcr: *pcr,
                expected: *want,
                actual: got,
            });
        }
    }
    Ok(())
}
