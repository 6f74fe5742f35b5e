//! A tss-esapi connection with the commands the loader uses.

use std::str::FromStr;

use jek_measure::PcrValues;
use jek_verifier::Sha256Digest;
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, DigestValues, PcrSelectionListBuilder, PcrSlot};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;

/// Why a TPM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The TCTI string is not one tss-esapi understands.
    #[error("invalid TCTI {tcti:?}")]
    Tcti {
        /// The TCTI given.
        tcti: String,
        /// Why.
        #[source]
        source: tss_esapi::Error,
    },
    /// The TPM cannot be reached.
    #[error("cannot connect to the TPM at {tcti}")]
    Connect {
        /// The TCTI used.
        tcti: String,
        /// Why.
        #[source]
        source: tss_esapi::Error,
    },
    /// Nothing answers on the swtpm's control socket: the swtpm has stopped.
    #[error("the swtpm at {dir} is not running (nothing answers on its control socket)")]
    NotRunning {
        /// The swtpm's socket directory.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The loopback bridge to a swtpm's sockets cannot be opened.
    #[error("cannot open the bridge to the swtpm at {dir}")]
    Bridge {
        /// The swtpm's socket directory.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PCR index outside 0..=23.
    #[error("PCR {0} does not exist (0..=23)")]
    NoSuchPcr(u32),
    /// TPM2_PCR_Extend failed.
    #[error("TPM2_PCR_Extend of PCR {pcr} failed")]
    Extend {
        /// The PCR.
        pcr: u32,
        /// Why.
        #[source]
        source: tss_esapi::Error,
    },
    /// TPM2_PCR_Read failed.
    #[error("TPM2_PCR_Read of PCRs {pcrs:?} failed")]
    Read {
        /// The PCRs asked for.
        pcrs: Vec<u32>,
        /// Why.
        #[source]
        source: tss_esapi::Error,
    },
    /// The TPM answered a read with other PCRs or digests than asked for.
    #[error("TPM2_PCR_Read of PCRs {pcrs:?} returned {got} SHA-256 digests")]
    ReadShape {
        /// The PCRs asked for.
        pcrs: Vec<u32>,
        /// How many digests came back.
        got: usize,
    },
}

/// An open TPM connection.
pub struct Tpm {
    // Declared before the bridge: the context is dropped (and disconnects) first.
    ctx: Context,
    tcti: String,
    _bridge: Option<crate::bridge::Bridge>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").field("tcti", &self.tcti).finish()
    }
}

/// The tss-esapi handle of a PCR.
pub(crate) fn pcr_slot(pcr: u32) -> Result<PcrSlot, TpmError> {
    let bit = 1u32.checked_shl(pcr).filter(|_| pcr < 24);
    bit.and_then(|b| PcrSlot::try_from(b).ok())
        .ok_or(TpmError::NoSuchPcr(pcr))
}

fn pcr_handle(pcr: u32) -> Result<PcrHandle, TpmError> {
    let h = 0u32
        .checked_add(pcr)
        .filter(|p| *p < 24)
        .ok_or(TpmError::NoSuchPcr(pcr))?;
    PcrHandle::try_from(h).map_err(|_| TpmError::NoSuchPcr(pcr))
}

impl Tpm {
    /// Connects through a TCTI string, e.g. `swtpm:host=127.0.0.1,port=2321`.
    pub fn connect(tcti: &str) -> Result<Self, TpmError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|source| TpmError::Tcti {
            tcti: tcti.to_string(),
            source,
        })?;
        let ctx = Context::new(conf).map_err(|source| TpmError::Connect {
            tcti: tcti.to_string(),
            source,
        })?;
        Ok(Tpm {
            ctx,
            tcti: tcti.to_string(),
            _bridge: None,
        })
    }

    /// Connects to a swtpm that listens on private Unix sockets, through a loopback bridge
    /// only this process can use (see [`crate::bridge`]).
    pub fn connect_swtpm(sockets: &crate::swtpm::Sockets) -> Result<Self, TpmError> {
        // Asked first, so a stopped swtpm is named as such, not reported by the TCTI's own
        // retries and log lines.
        sockets
            .connect_ctrl()
            .map_err(|source| TpmError::NotRunning {
                dir: sockets.dir.clone(),
                source,
            })?;
        let bridge =
            crate::bridge::Bridge::start(&sockets.data(), &sockets.ctrl()).map_err(|source| {
                TpmError::Bridge {
                    dir: sockets.dir.clone(),
                    source,
                }
            })?;
        let mut tpm = Self::connect(&crate::swtpm::tcti_for(bridge.port()))?;
        tpm.tcti = format!("swtpm:dir={}", sockets.dir.display());
        tpm._bridge = Some(bridge);
        Ok(tpm)
    }

    /// The loopback port of this connection's bridge, for a swtpm on Unix sockets.
    pub fn bridge_port(&self) -> Option<u16> {
        self._bridge.as_ref().map(crate::bridge::Bridge::port)
    }

    /// The TCTI this connection uses.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// The underlying tss-esapi context, for commands beyond measured boot (attestation).
    pub fn context(&mut self) -> &mut Context {
        &mut self.ctx
    }

    /// TPM2_PCR_Extend of the SHA-256 bank of `pcr` with `digest`.
    pub fn extend(&mut self, pcr: u32, digest: &Sha256Digest) -> Result<(), TpmError> {
        let handle = pcr_handle(pcr)?;
        let mut values = DigestValues::new();
        let d = Digest::try_from(digest.as_bytes().to_vec())
            .map_err(|source| TpmError::Extend { pcr, source })?;
        values.set(HashingAlgorithm::Sha256, d);
        // PCRs 0..=23 have an empty authValue: the password session authorises the extend
        // in this one command (an HMAC session would cost a StartAuthSession, key
        // derivation and a flush per extend, ~3.5 ms against swtpm).
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.pcr_extend(handle, values)
            })
            .map_err(|source| TpmError::Extend { pcr, source })
    }

    /// TPM2_PCR_Read of the SHA-256 bank of `pcrs` (eight at a time, the most one read returns).
    pub fn read_pcrs(&mut self, pcrs: &[u32]) -> Result<PcrValues, TpmError> {
        // PCR_Read is refused (0x984) while an authorization session is set.
        self.ctx.clear_sessions();
        let mut out = PcrValues::new();
        for chunk in pcrs.chunks(8) {
            let slots = chunk
                .iter()
                .map(|p| pcr_slot(*p))
                .collect::<Result<Vec<_>, _>>()?;
            let selection = PcrSelectionListBuilder::new()
                .with_selection(HashingAlgorithm::Sha256, &slots)
                .build()
                .map_err(|source| TpmError::Read {
                    pcrs: chunk.to_vec(),
                    source,
                })?;
            let (_, _, digests) =
                self.ctx
                    .pcr_read(selection)
                    .map_err(|source| TpmError::Read {
                        pcrs: chunk.to_vec(),
                        source,
                    })?;
            let values = digests.value();
            let mut sorted = chunk.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            if values.len() != sorted.len() {
                return Err(TpmError::ReadShape {
                    pcrs: chunk.to_vec(),
                    got: values.len(),
                });
            }
            // The TPM returns digests in ascending PCR order.
            for (pcr, d) in sorted.iter().zip(values) {
                let bytes: [u8; 32] = d.value().try_into().map_err(|_| TpmError::ReadShape {
                    pcrs: chunk.to_vec(),
                    got: values.len(),
                })?;
                out.insert(*pcr, Sha256Digest(bytes));
            }
        }
        Ok(out)
    }
}
