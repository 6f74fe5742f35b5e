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

/// A TPM object's name (the AK's: a hash algorithm identifier and a digest), as bytes.
/// Written as lowercase hex (in stores, on the wire, in exported evidence); text that is
/// not lowercase hex is refused when read, never turned into an empty name.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AkName(pub Vec<u8>);

impl std::fmt::Display for AkName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl std::fmt::Debug for AkName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AkName({self})")
    }
}

/// Why text is not an AK name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AkNameError {
    /// Upper-case hex digits: the one spelling is lowercase.
    #[error("an AK name is lowercase hex")]
    Uppercase,
    /// Not hex.
    #[error("an AK name is hex: {0}")]
    Hex(String),
}

impl std::str::FromStr for AkName {
    type Err = AkNameError;

    fn from_str(text: &str) -> Result<Self, AkNameError> {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(AkNameError::Uppercase);
        }
        hex::decode(text)
            .map(AkName)
            .map_err(|e| AkNameError::Hex(e.to_string()))
    }
}

impl Serialize for AkName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for AkName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A registered pod: its TPM's identity, and the epoch every later quote must continue.
/// Where the TPM is (a process, sockets) is the host's business, not the appraisal's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registration {
    /// The registration's identifier (random; the run record names it).
    pub id: String,
    /// The pod's name.
    pub pod: String,
    /// The AK's name.
    pub ak_name: AkName,
    /// SHA-256 of the EK certificate (DER).
    pub ek_cert_sha256: Sha256Digest,
    /// The epoch at registration.
    pub epoch: Epoch,
    /// The highest clock any accepted quote showed.
    pub last_clock: u64,
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
            ak_name: AkName(vec![0]),
            ek_cert_sha256: Sha256Digest::of(b"ek"),
            epoch: Epoch {
                reset_count: 2,
                restart_count: 0,
                clock: 100,
            },
            last_clock: 150,
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

    #[test]
    fn an_ak_name_is_lowercase_hex_and_nothing_else_reads_back() {
        let name = AkName(vec![0x00, 0x0b, 0xab, 0xcd]);
        let json = serde_json::to_string(&name).unwrap();
        assert_eq!(json, "\"000babcd\"");
        assert_eq!(serde_json::from_str::<AkName>(&json).unwrap(), name);
        assert_eq!(name.to_string(), "000babcd");
        assert_eq!("000babcd".parse::<AkName>().unwrap(), name);
        // A name that does not decode is refused, never an empty one.
        for bad in ["\"000BABCD\"", "\"000bxx\"", "\"000\"", "7"] {
            assert!(serde_json::from_str::<AkName>(bad).is_err(), "{bad}");
        }
    }
}
