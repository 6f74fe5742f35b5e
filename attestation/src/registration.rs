//! The registration record: what the verifier learnt about a pod's TPM when the pod was
//! created, and binds every later attestation to. The run directory is the pod host's and
//! may be rewritten; the registration lives in a store that belongs to the verifier.
//!
//! - `ak_name` and `ek_cert_sha256`: the AK and the certified TPM the pod got. A later
//!   quote must be signed by this AK, activated by this EK.
//! - `epoch`: the TPM's `resetCount` and `restartCount` and its clock at registration.
//!   A TPM that was reset (power-cycled, `TPM2_Startup(CLEAR)`) or restarted
//!   (`TPM2_Shutdown(STATE)` then `TPM2_Startup(STATE)`) since has PCRs that no longer
//!   describe the boot, whatever their values: every later quote must show the same
//!   counts, `safe` set, and a clock not below the last one seen.

use jek_verifier::Sha256Digest;
use serde::{Deserialize, Serialize};

use crate::tpm2::Quote;

/// The TPM's boot epoch, from a quote's `clockInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Epoch {
    /// `resetCount`.
    pub reset_count: u32,
    /// `restartCount`.
    pub restart_count: u32,
    /// `clock` (milliseconds the TPM has been powered).
    pub clock: u64,
}

impl Epoch {
    /// The epoch a quote shows.
    pub fn of(quote: &Quote) -> Self {
        Epoch {
            reset_count: quote.reset_count,
            restart_count: quote.restart_count,
            clock: quote.clock,
        }
    }
}

/// Where the verifier reaches a registered pod's TPM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TpmLocation {
    /// The swtpm's process id.
    pub pid: u32,
    /// Its private socket directory. While the pod's QEMU runs, the loader's proxy serves
    /// the TPM to other clients from `side/` in it, interleaved with the guest's commands.
    pub socket_dir: std::path::PathBuf,
    /// The pod's run directory (AK blobs, EK chain, event log), for the host's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<std::path::PathBuf>,
}

/// A registered pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registration {
    /// The registration's identifier (random; the run record names it).
    pub id: String,
    /// The pod's name.
    pub pod: String,
    /// The AK's name (hex).
    pub ak_name: String,
    /// SHA-256 of the EK certificate (DER).
    pub ek_cert_sha256: Sha256Digest,
    /// The epoch at registration.
    pub epoch: Epoch,
    /// The highest clock any accepted quote showed.
    pub last_clock: u64,
    /// The TPM.
    pub tpm: TpmLocation,
}

/// Why a quote's epoch does not continue the registered one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    /// The TPM was reset.
    #[error("the TPM was reset since the pod registered (resetCount {actual}, registered {registered}): its PCRs no longer describe the boot")]
    Reset {
        /// At registration.
        registered: u32,
        /// In the quote.
        actual: u32,
    },
    /// The TPM was restarted.
    #[error("the TPM was restarted since the pod registered (restartCount {actual}, registered {registered})")]
    Restart {
        /// At registration.
        registered: u32,
        /// In the quote.
        actual: u32,
    },
    /// The clock is not known to be monotonic.
    #[error("the TPM's clock is not safe (it may have been set back)")]
    Unsafe,
    /// The clock went backwards.
    #[error(
        "the TPM's clock {actual} is below {seen}, already seen: a replayed or rolled-back TPM"
    )]
    ClockBack {
        /// The highest seen.
        seen: u64,
        /// In the quote.
        actual: u64,
    },
}

impl Registration {
    /// Whether `quote` continues this registration's epoch.
    pub fn check(&self, quote: &Quote) -> Result<(), EpochError> {
        if quote.reset_count != self.epoch.reset_count {
            return Err(EpochError::Reset {
                registered: self.epoch.reset_count,
                actual: quote.reset_count,
            });
        }
        if quote.restart_count != self.epoch.restart_count {
            return Err(EpochError::Restart {
                registered: self.epoch.restart_count,
                actual: quote.restart_count,
            });
        }
        if !quote.safe {
            return Err(EpochError::Unsafe);
        }
        let seen = self.last_clock.max(self.epoch.clock);
        if quote.clock < seen {
            return Err(EpochError::ClockBack {
                seen,
                actual: quote.clock,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn quote(reset: u32, restart: u32, clock: u64, safe: bool) -> Quote {
        Quote {
            qualified_signer: vec![],
            extra_data: vec![],
            clock,
            reset_count: reset,
            restart_count: restart,
            safe,
            firmware_version: 0,
            selection: vec![],
            pcr_digest: vec![],
        }
    }

    #[test]
    fn only_the_same_epoch_with_a_clock_moving_forward_passes() {
        let reg = Registration {
            id: "r".into(),
            pod: "p".into(),
            ak_name: "00".into(),
            ek_cert_sha256: Sha256Digest::of(b"ek"),
            epoch: Epoch {
                reset_count: 2,
                restart_count: 0,
                clock: 100,
            },
            last_clock: 150,
            tpm: TpmLocation {
                pid: 1,
                socket_dir: "/x".into(),
                run_dir: None,
            },
        };
        assert!(reg.check(&quote(2, 0, 150, true)).is_ok());
        assert_eq!(
            reg.check(&quote(3, 0, 500, true)),
            Err(EpochError::Reset {
                registered: 2,
                actual: 3
            })
        );
        assert!(matches!(
            reg.check(&quote(2, 1, 500, true)),
            Err(EpochError::Restart { .. })
        ));
        assert_eq!(reg.check(&quote(2, 0, 500, false)), Err(EpochError::Unsafe));
        assert!(matches!(
            reg.check(&quote(2, 0, 149, true)),
            Err(EpochError::ClockBack { seen: 150, .. })
        ));
    }
}
