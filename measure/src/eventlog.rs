//! The TCG PC Client Platform Firmware Profile event log, crypto-agile form, SHA-256 only:
//! the binary format firmware exposes as `binary_bios_measurements`.
//!
//! ```text
//! TCG_PCR_EVENT (first event, SHA-1 layout)
//!   u32 pcrIndex = 0 | u32 eventType = EV_NO_ACTION | u8 digest[20] = 0 | u32 eventSize | event
//!   event = TCG_EfiSpecIDEventStruct:
//!     "Spec ID Event03\0" | u32 platformClass = 0 | u8 specVersionMinor = 0
//!     | u8 specVersionMajor = 2 | u8 specErrata = 2 | u8 uintnSize = 2
//!     | u32 numberOfAlgorithms = 1 | { u16 algorithmId = 0x000B, u16 digestSize = 32 }
//!     | u8 vendorInfoSize = 0
//! TCG_PCR_EVENT2 (every further event)
//!   u32 pcrIndex | u32 eventType | u32 digestCount = 1 | u16 hashAlg = 0x000B
//!   | u8 digest[32] | u32 eventSize | event
//! ```
//!
//! All integers little-endian. Replay: every PCR starts at 32 zero bytes and each event
//! other than EV_NO_ACTION sets `PCR = SHA-256(PCR || digest)`.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;

use jek_verifier::Sha256Digest;
use sha2::{Digest as _, Sha256};

/// `EV_NO_ACTION`: informational, never extended.
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_EVENT_TAG`: a `TCG_PCClientTaggedEvent` (tag ID, size, data).
pub const EV_EVENT_TAG: u32 = 0x0000_0006;
/// `EV_IPL`: measurements by the initial program loader (here: the VMM).
pub const EV_IPL: u32 = 0x0000_000D;
/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000B;
/// Signature of the Spec ID event.
pub const SPEC_ID_SIGNATURE: [u8; 16] = *b"Spec ID Event03\0";
/// PCRs 0..=23 exist.
pub const PCR_COUNT: u32 = 24;
/// The most events a log may hold.
pub const MAX_EVENTS: usize = 4096;
/// The largest event data accepted.
pub const MAX_EVENT_DATA: usize = 64 * 1024;

/// One measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// PCR index.
    pub pcr: u32,
    /// TCG event type.
    pub event_type: u32,
    /// The SHA-256 extended into the PCR.
    pub digest: Sha256Digest,
    /// The event data (what the digest is of, or a tag naming it).
    pub data: Vec<u8>,
}

impl Event {
    /// The readable part of the event's data: the tag text of an EV_EVENT_TAG, or the
    /// string of an EV_IPL event (without its NUL).
    pub fn text(&self) -> String {
        let bytes = if self.event_type == EV_EVENT_TAG {
            self.data.get(8..).unwrap_or(&[])
        } else {
            self.data.strip_suffix(&[0]).unwrap_or(&self.data)
        };
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// PCR values after a replay: only PCRs that were extended appear.
pub type PcrValues = BTreeMap<u32, Sha256Digest>;

/// A log: the events after the Spec ID header, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLog {
    /// The events.
    pub events: Vec<Event>,
}

/// Why a log could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The log ends inside a structure.
    #[error("event log truncated at offset {offset} (reading {what})")]
    Truncated {
        /// Where.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// The first event is not the Spec ID event this reader expects.
    #[error(
        "event log header at offset {offset} is not a crypto-agile SHA-256 Spec ID event: {what}"
    )]
    BadHeader {
        /// Where.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// An event carries another set of digests than the header declares.
    #[error("event {index} at offset {offset} does not carry exactly one SHA-256 digest")]
    BadDigests {
        /// Event number (0 = first event after the header).
        index: usize,
        /// Where.
        offset: usize,
    },
    /// A PCR index above 23.
    #[error("event {index} at offset {offset} names PCR {pcr}")]
    BadPcr {
        /// Event number.
        index: usize,
        /// Where.
        offset: usize,
        /// The index.
        pcr: u32,
    },
    /// An event larger than [`MAX_EVENT_DATA`].
    #[error(
        "event {index} at offset {offset} has {size} bytes of data, more than {MAX_EVENT_DATA}"
    )]
    EventTooLarge {
        /// Event number.
        index: usize,
        /// Where.
        offset: usize,
        /// Declared size.
        size: u32,
    },
    /// More than [`MAX_EVENTS`] events.
    #[error("event log has more than {MAX_EVENTS} events")]
    TooManyEvents,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], LogError> {
        let end = self.pos.checked_add(n).ok_or(LogError::Truncated {
            offset: self.pos,
            what,
        })?;
        let s = self.bytes.get(self.pos..end).ok_or(LogError::Truncated {
            offset: self.pos,
            what,
        })?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, LogError> {
        Ok(self.take(1, what)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, LogError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes(b.try_into().unwrap_or([0; 2])))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, LogError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    }
}

fn spec_id_event() -> Vec<u8> {
    let mut e = Vec::with_capacity(33);
    e.extend_from_slice(&SPEC_ID_SIGNATURE);
    e.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
    e.extend_from_slice(&[0, 2, 2, 2]); // version 2.0, errata 2, uintnSize 2 (64-bit)
    e.extend_from_slice(&1u32.to_le_bytes()); // numberOfAlgorithms
    e.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
    e.extend_from_slice(&32u16.to_le_bytes());
    e.push(0); // vendorInfoSize
    e
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl EventLog {
    /// Appends an event.
    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Encodes the log: the Spec ID header, then every event.
    pub fn to_bytes(&self) -> Vec<u8> {
        let spec = spec_id_event();
        let mut out = Vec::new();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0u8; 20]);
        out.extend_from_slice(&len_u32(spec.len()).to_le_bytes());
        out.extend_from_slice(&spec);
        for e in &self.events {
            out.extend_from_slice(&e.pcr.to_le_bytes());
            out.extend_from_slice(&e.event_type.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
            out.extend_from_slice(e.digest.as_bytes());
            out.extend_from_slice(&len_u32(e.data.len()).to_le_bytes());
            out.extend_from_slice(&e.data);
        }
        out
    }

    /// Reads a log written in the form above. Strict: the header must declare SHA-256 and
    /// nothing else, every event must carry exactly that digest, and the log must end exactly
    /// after its last event.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LogError> {
        let mut r = Reader { bytes, pos: 0 };
        let bad = |offset, what| LogError::BadHeader { offset, what };
        if r.u32("header pcrIndex")? != 0 {
            return Err(bad(0, "pcrIndex is not 0"));
        }
        if r.u32("header eventType")? != EV_NO_ACTION {
            return Err(bad(4, "eventType is not EV_NO_ACTION"));
        }
        if r.take(20, "header digest")?.iter().any(|&b| b != 0) {
            return Err(bad(8, "SHA-1 digest field is not zero"));
        }
        let size = r.u32("header eventSize")?;
        let start = r.pos;
        let mut s = Reader {
            bytes: r.take(usize::try_from(size).unwrap_or(usize::MAX), "Spec ID event")?,
            pos: 0,
        };
        if s.take(16, "signature")? != SPEC_ID_SIGNATURE {
            return Err(bad(start, "signature is not \"Spec ID Event03\""));
        }
        let _platform_class = s.u32("platformClass")?;
        let (minor, major, _errata, uintn) = (
            s.u8("version")?,
            s.u8("version")?,
            s.u8("errata")?,
            s.u8("uintnSize")?,
        );
        if (major, minor) != (2, 0) || uintn != 2 {
            return Err(bad(
                start.saturating_add(20),
                "not spec version 2.0 with 64-bit UINTN",
            ));
        }
        if s.u32("numberOfAlgorithms")? != 1
            || s.u16("algorithmId")? != TPM_ALG_SHA256
            || s.u16("digestSize")? != 32
        {
            return Err(bad(
                start.saturating_add(24),
                "the log must declare exactly SHA-256 (32 bytes)",
            ));
        }
        let vendor = s.u8("vendorInfoSize")?;
        s.take(usize::from(vendor), "vendorInfo")?;
        if s.pos != s.bytes.len() {
            return Err(bad(start, "bytes after vendorInfo"));
        }
        let mut events = Vec::new();
        while r.pos < bytes.len() {
            let index = events.len();
            if index >= MAX_EVENTS {
                return Err(LogError::TooManyEvents);
            }
            let offset = r.pos;
            let pcr = r.u32("pcrIndex")?;
            if pcr >= PCR_COUNT {
                return Err(LogError::BadPcr { index, offset, pcr });
            }
            let event_type = r.u32("eventType")?;
            if r.u32("digest count")? != 1 || r.u16("hashAlg")? != TPM_ALG_SHA256 {
                return Err(LogError::BadDigests { index, offset });
            }
            let digest: [u8; 32] = r.take(32, "digest")?.try_into().unwrap_or([0; 32]);
            let size = r.u32("eventSize")?;
            if usize::try_from(size).map_or(true, |s| s > MAX_EVENT_DATA) {
                return Err(LogError::EventTooLarge {
                    index,
                    offset,
                    size,
                });
            }
            let data = r
                .take(usize::try_from(size).unwrap_or(0), "event data")?
                .to_vec();
            events.push(Event {
                pcr,
                event_type,
                digest: Sha256Digest(digest),
                data,
            });
        }
        Ok(EventLog { events })
    }

    /// The PCR values this log explains: each extended PCR from zero, in log order.
    pub fn replay(&self) -> PcrValues {
        let mut pcrs = PcrValues::new();
        for e in self.events.iter().filter(|e| e.event_type != EV_NO_ACTION) {
            let cur = pcrs.entry(e.pcr).or_insert(Sha256Digest([0; 32]));
            *cur = extend(cur, &e.digest);
        }
        pcrs
    }
}

/// `SHA-256(pcr || digest)`: what TPM2_PCR_Extend does to a SHA-256 PCR.
pub fn extend(pcr: &Sha256Digest, digest: &Sha256Digest) -> Sha256Digest {
    let mut h = Sha256::new();
    h.update(pcr.as_bytes());
    h.update(digest.as_bytes());
    Sha256Digest(h.finalize().into())
}

/// Fuzz entry point: whatever parses must encode and parse back to the same events and
/// replay to the same PCRs. Panics (for the fuzzer) when it does not.
pub fn fuzz(data: &[u8]) {
    if let Ok(log) = EventLog::from_bytes(data) {
        let again = EventLog::from_bytes(&log.to_bytes());
        assert_eq!(
            again.as_ref().ok(),
            Some(&log),
            "event log does not round-trip"
        );
        assert_eq!(again.map(|l| l.replay()).ok(), Some(log.replay()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )]
    use super::*;
    use proptest::prelude::*;

    fn ev(pcr: u32, data: &[u8]) -> Event {
        Event {
            pcr,
            event_type: EV_IPL,
            digest: Sha256Digest::of(data),
            data: data.to_vec(),
        }
    }

    #[test]
    fn header_layout_and_replay() {
        let log = EventLog {
            events: vec![ev(8, b"console=ttyS0"), ev(8, b"x"), ev(9, b"y")],
        };
        let b = log.to_bytes();
        // TCG_PCR_EVENT header: 32 bytes, then the 33-byte Spec ID event.
        assert_eq!(&b[..8], &[0, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&b[28..32], &33u32.to_le_bytes());
        assert_eq!(&b[32..48], b"Spec ID Event03\0");
        assert_eq!(&b[56..60], &1u32.to_le_bytes());
        assert_eq!(&b[60..64], &[0x0b, 0, 32, 0]);
        assert_eq!(b[64], 0);
        // First TCG_PCR_EVENT2 at 65: pcrIndex, eventType, count, hashAlg, digest, size, data.
        assert_eq!(&b[65..69], &8u32.to_le_bytes());
        assert_eq!(&b[73..77], &1u32.to_le_bytes());
        assert_eq!(&b[77..79], &0x000bu16.to_le_bytes());
        assert_eq!(EventLog::from_bytes(&b).unwrap(), log);
        let pcrs = log.replay();
        let zero = Sha256Digest([0; 32]);
        let p8 = extend(
            &extend(&zero, &Sha256Digest::of(b"console=ttyS0")),
            &Sha256Digest::of(b"x"),
        );
        assert_eq!(pcrs[&8], p8);
        assert_eq!(pcrs[&9], extend(&zero, &Sha256Digest::of(b"y")));
        assert_eq!(pcrs.len(), 2);
    }

    #[test]
    fn rejects_bad_logs_with_offsets() {
        let b = EventLog {
            events: vec![ev(8, b"abc")],
        }
        .to_bytes();
        assert_eq!(
            EventLog::from_bytes(&b[..b.len() - 1]),
            Err(LogError::Truncated {
                offset: 65 + 50,
                what: "event data"
            })
        );
        let mut m = b.clone();
        m[65] = 24;
        assert_eq!(
            EventLog::from_bytes(&m),
            Err(LogError::BadPcr {
                index: 0,
                offset: 65,
                pcr: 24
            })
        );
        let mut m = b.clone();
        m[60] = 0x04; // SHA-1 declared
        assert!(matches!(
            EventLog::from_bytes(&m),
            Err(LogError::BadHeader { offset: 56, .. })
        ));
        let mut m = b.clone();
        m[73] = 2; // two digests
        assert_eq!(
            EventLog::from_bytes(&m),
            Err(LogError::BadDigests {
                index: 0,
                offset: 65
            })
        );
        assert!(matches!(
            EventLog::from_bytes(&[]),
            Err(LogError::Truncated { offset: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn parse_of_encode_is_identity(events in prop::collection::vec((0u32..24, any::<u32>(), prop::collection::vec(any::<u8>(), 0..64)), 0..12)) {
            let log = EventLog { events: events.into_iter().map(|(pcr, t, d)| Event { pcr, event_type: t, digest: Sha256Digest::of(&d), data: d }).collect() };
            prop_assert_eq!(EventLog::from_bytes(&log.to_bytes()).unwrap(), log);
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = EventLog::from_bytes(&bytes);
        }
    }
}
