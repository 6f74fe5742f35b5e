//! Bundle container format v1: a strict, bounded parser and its encoder.
//!
//! The byte layout is specified in `docs/bundle-format.md`; this module is its only
//! implementation. The parser takes `&[u8]` and never panics: every length is checked
//! against the bytes that remain and against a per-section maximum before it is used, and
//! every rejection names the offset at which it happened.
//!
//! ```text
//! header   (16 bytes)  magic[8] | version u16 LE | section count u16 LE | reserved u32 (0)
//! section  (16 bytes)  kind u16 LE | reserved [6] (0) | length u64 LE
//!          (length bytes of data follow each section header)
//! ```
//!
//! Sections appear in strictly ascending kind order (so each kind at most once), the
//! envelope section is last and mandatory, and the file ends exactly where it ends.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::fmt;
use std::ops::Range;

/// The eight magic bytes at offset 0. The high first byte catches 7-bit transfers, the
/// CR LF and the Ctrl-Z catch text-mode line-ending and end-of-file conversions (as in PNG).
pub const MAGIC: [u8; 8] = *b"\x89JEK\r\n\x1a\n";
/// The only format version this reader understands.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the file header.
pub const HEADER_LEN: usize = 16;
/// Size of each section header.
pub const SECTION_HEADER_LEN: usize = 16;
/// Kind code of the DSSE envelope section.
pub const ENVELOPE_KIND: u16 = 0x00ff;
/// Largest envelope accepted (1 MiB): a statement and a few dozen signatures fit easily.
pub const MAX_ENVELOPE_LEN: u64 = 1 << 20;
/// Largest command line (x86 `COMMAND_LINE_SIZE` is 2048 including the terminating NUL).
pub const MAX_CMDLINE_LEN: u64 = 2047;
/// The largest bundle file jek reads (checked by size before it is read).
pub const MAX_BUNDLE_SIZE: u64 = 1 << 30;

/// The role of a component: what its bytes are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A Linux bzImage (x86 boot protocol, setup header at 0x1f1).
    BzImage,
    /// An uncompressed ELF `vmlinux`.
    Vmlinux,
    /// An initramfs (newc cpio, optionally compressed).
    Initramfs,
    /// The kernel command line: printable ASCII, no terminating NUL.
    Cmdline,
    /// The kernel's resolved `.config`.
    Config,
}

impl Role {
    /// Every role, in the order their sections appear in a bundle.
    pub const ALL: [Role; 5] = [
        Role::BzImage,
        Role::Vmlinux,
        Role::Initramfs,
        Role::Cmdline,
        Role::Config,
    ];

    /// The section kind code that carries this role.
    pub const fn kind(self) -> u16 {
        match self {
            Role::BzImage => 0x0001,
            Role::Vmlinux => 0x0002,
            Role::Initramfs => 0x0003,
            Role::Cmdline => 0x0004,
            Role::Config => 0x0005,
        }
    }

    /// The role carried by a section kind code, if any.
    pub fn from_kind(kind: u16) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.kind() == kind)
    }

    /// The role's name as it appears in the manifest.
    pub const fn name(self) -> &'static str {
        match self {
            Role::BzImage => "bzimage",
            Role::Vmlinux => "vmlinux",
            Role::Initramfs => "initramfs",
            Role::Cmdline => "cmdline",
            Role::Config => "config",
        }
    }

    /// The role with this manifest name, if any.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The largest section of this role that the parser accepts.
    pub const fn max_len(self) -> u64 {
        match self {
            Role::BzImage => 128 << 20,
            Role::Vmlinux => 512 << 20,
            Role::Initramfs => 1 << 30,
            Role::Cmdline => MAX_CMDLINE_LEN,
            Role::Config => 16 << 20,
        }
    }

    /// Whether this role is a kernel image.
    pub const fn is_kernel(self) -> bool {
        matches!(self, Role::BzImage | Role::Vmlinux)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A section kind as named in error messages: a component role or the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// A component section.
    Component(Role),
    /// The DSSE envelope section.
    Envelope,
}

impl SectionKind {
    fn from_kind(kind: u16) -> Option<SectionKind> {
        if kind == ENVELOPE_KIND {
            Some(SectionKind::Envelope)
        } else {
            Role::from_kind(kind).map(SectionKind::Component)
        }
    }

    fn code(self) -> u16 {
        match self {
            SectionKind::Component(r) => r.kind(),
            SectionKind::Envelope => ENVELOPE_KIND,
        }
    }

    fn max_len(self) -> u64 {
        match self {
            SectionKind::Component(r) => r.max_len(),
            SectionKind::Envelope => MAX_ENVELOPE_LEN,
        }
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SectionKind::Component(r) => r.fmt(f),
            SectionKind::Envelope => f.write_str("envelope"),
        }
    }
}

/// Why the container could not be parsed. Every variant names the file offset involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The file cannot even hold the header.
    #[error("file is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// File length.
        len: usize,
    },
    /// The magic at offset 0 is wrong.
    #[error("bad magic at offset 0: this is not a jek bundle")]
    BadMagic,
    /// The version at offset 8 is not one this reader knows.
    #[error("unsupported format version {version} at offset 8 (this reader knows version {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        version: u16,
    },
    /// The section count at offset 10 is impossible.
    #[error("section count {count} at offset 10 is outside 2..=6")]
    BadSectionCount {
        /// The count found.
        count: u16,
    },
    /// A reserved field holds a non-zero byte.
    #[error("reserved byte at offset {offset} is not zero")]
    ReservedNotZero {
        /// Offset of the first non-zero reserved byte.
        offset: usize,
    },
    /// The file ends inside a section header.
    #[error("section header {index} at offset {offset} is truncated")]
    TruncatedSectionHeader {
        /// Index of the section (0-based).
        index: u16,
        /// Offset where the section header starts.
        offset: usize,
    },
    /// A section kind code this version does not define.
    #[error("unknown section kind {kind:#06x} at offset {offset}")]
    UnknownSection {
        /// The kind code found.
        kind: u16,
        /// Offset of the section header.
        offset: usize,
    },
    /// A section appears after one of the same or a later kind (duplicates included).
    #[error("section {kind} at offset {offset} is duplicated or out of order")]
    SectionOrder {
        /// The section's kind.
        kind: SectionKind,
        /// Offset of the section header.
        offset: usize,
    },
    /// A section is larger than the maximum for its kind.
    #[error(
        "section {kind} at offset {offset} declares {len} bytes, more than its maximum of {max}"
    )]
    SectionTooLarge {
        /// The section's kind.
        kind: SectionKind,
        /// Offset of the section header.
        offset: usize,
        /// Declared length.
        len: u64,
        /// Maximum for this kind.
        max: u64,
    },
    /// A section's declared length runs past the end of the file.
    #[error("section {kind} at offset {offset} declares {len} bytes but only {available} remain")]
    TruncatedSection {
        /// The section's kind.
        kind: SectionKind,
        /// Offset of the section header.
        offset: usize,
        /// Declared length.
        len: u64,
        /// Bytes left in the file after the section header.
        available: usize,
    },
    /// Bytes follow the last section.
    #[error("{count} trailing bytes after the last section, at offset {offset}")]
    TrailingBytes {
        /// Offset of the first trailing byte.
        offset: usize,
        /// How many bytes trail.
        count: usize,
    },
    /// A mandatory section is absent.
    #[error("the bundle has no {kind} section")]
    MissingSection {
        /// What is missing (`bzimage` stands for "a kernel image").
        kind: SectionKind,
    },
    /// The envelope is not the last section.
    #[error("the envelope section is not the last section")]
    EnvelopeNotLast,
    /// The command line contains a byte that is not printable ASCII.
    #[error("command line byte {byte:#04x} at offset {offset} is not printable ASCII")]
    CmdlineByte {
        /// Offset of the byte in the file.
        offset: usize,
        /// The byte.
        byte: u8,
    },
}

/// One component section of a parsed container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSection<'a> {
    /// The section's role.
    pub role: Role,
    /// File offset of the first data byte.
    pub offset: usize,
    /// The section's data.
    pub data: &'a [u8],
}

impl RawSection<'_> {
    /// The byte range of the data within the file.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset.saturating_add(self.data.len())
    }
}

/// A structurally valid container. Nothing in it is authenticated yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBundle<'a> {
    /// Component sections in file order.
    pub sections: Vec<RawSection<'a>>,
    /// File offset of the envelope data.
    pub envelope_offset: usize,
    /// The envelope's bytes (DSSE JSON).
    pub envelope: &'a [u8],
}

impl<'a> RawBundle<'a> {
    /// The section with this role, if present.
    pub fn section(&self, role: Role) -> Option<&RawSection<'a>> {
        self.sections.iter().find(|s| s.role == role)
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(b.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

fn check_zero(bytes: &[u8], range: Range<usize>) -> Result<(), FormatError> {
    let start = range.start;
    match bytes.get(range) {
        Some(b) => match b.iter().position(|&x| x != 0) {
            Some(i) => Err(FormatError::ReservedNotZero {
                offset: start.saturating_add(i),
            }),
            None => Ok(()),
        },
        // Callers check lengths first; a short slice here is a truncated header.
        None => Err(FormatError::ReservedNotZero { offset: start }),
    }
}

/// Parses a container. Checks structure only: magic, version, bounds, order, and that every
/// byte belongs to exactly one header or section. Signatures and digests are the
/// verifier's job.
pub fn parse(bytes: &[u8]) -> Result<RawBundle<'_>, FormatError> {
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or(FormatError::TooShort { len: bytes.len() })?;
    if header.get(..8) != Some(&MAGIC[..]) {
        return Err(FormatError::BadMagic);
    }
    let version = read_u16(header, 8).ok_or(FormatError::TooShort { len: bytes.len() })?;
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion { version });
    }
    let count = read_u16(header, 10).ok_or(FormatError::TooShort { len: bytes.len() })?;
    let max_sections = u16::try_from(Role::ALL.len())
        .unwrap_or(u16::MAX)
        .saturating_add(1);
    if !(2..=max_sections).contains(&count) {
        return Err(FormatError::BadSectionCount { count });
    }
    check_zero(bytes, 12..16)?;

    let mut pos = HEADER_LEN;
    let mut last_kind: Option<u16> = None;
    let mut sections = Vec::with_capacity(usize::from(count));
    let mut envelope: Option<(usize, &[u8])> = None;
    for index in 0..count {
        let offset = pos;
        let shdr_end = offset
            .checked_add(SECTION_HEADER_LEN)
            .filter(|&end| end <= bytes.len())
            .ok_or(FormatError::TruncatedSectionHeader { index, offset })?;
        let code =
            read_u16(bytes, offset).ok_or(FormatError::TruncatedSectionHeader { index, offset })?;
        let kind = SectionKind::from_kind(code)
            .ok_or(FormatError::UnknownSection { kind: code, offset })?;
        if envelope.is_some() {
            return Err(FormatError::EnvelopeNotLast);
        }
        if last_kind.is_some_and(|prev| prev >= code) {
            return Err(FormatError::SectionOrder { kind, offset });
        }
        last_kind = Some(code);
        check_zero(bytes, offset.saturating_add(2)..offset.saturating_add(8))?;
        let len = read_u64(bytes, offset.saturating_add(8))
            .ok_or(FormatError::TruncatedSectionHeader { index, offset })?;
        let max = kind.max_len();
        if len > max {
            return Err(FormatError::SectionTooLarge {
                kind,
                offset,
                len,
                max,
            });
        }
        let available = bytes.len().saturating_sub(shdr_end);
        let data = usize::try_from(len)
            .ok()
            .and_then(|l| bytes.get(shdr_end..shdr_end.checked_add(l)?))
            .ok_or(FormatError::TruncatedSection {
                kind,
                offset,
                len,
                available,
            })?;
        let data_end = shdr_end.saturating_add(data.len());
        match kind {
            SectionKind::Envelope => envelope = Some((shdr_end, data)),
            SectionKind::Component(role) => {
                if role == Role::Cmdline {
                    check_cmdline(data, shdr_end)?;
                }
                sections.push(RawSection {
                    role,
                    offset: shdr_end,
                    data,
                });
            }
        }
        pos = data_end;
    }
    if pos != bytes.len() {
        return Err(FormatError::TrailingBytes {
            offset: pos,
            count: bytes.len().saturating_sub(pos),
        });
    }
    let (envelope_offset, envelope) = envelope.ok_or(FormatError::MissingSection {
        kind: SectionKind::Envelope,
    })?;
    if !sections.iter().any(|s| s.role.is_kernel()) {
        return Err(FormatError::MissingSection {
            kind: SectionKind::Component(Role::BzImage),
        });
    }
    if !sections.iter().any(|s| s.role == Role::Cmdline) {
        return Err(FormatError::MissingSection {
            kind: SectionKind::Component(Role::Cmdline),
        });
    }
    Ok(RawBundle {
        sections,
        envelope_offset,
        envelope,
    })
}

fn check_cmdline(data: &[u8], base: usize) -> Result<(), FormatError> {
    match data.iter().position(|b| !(0x20..=0x7e).contains(b)) {
        Some(i) => Err(FormatError::CmdlineByte {
            offset: base.saturating_add(i),
            byte: data.get(i).copied().unwrap_or(0),
        }),
        None => Ok(()),
    }
}

/// Why a container could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Two components share a role.
    #[error("component {role} given twice")]
    DuplicateRole {
        /// The role.
        role: Role,
    },
    /// A component or the envelope exceeds its maximum size.
    #[error("{kind} is {len} bytes, more than the format's maximum of {max}")]
    TooLarge {
        /// What is too large.
        kind: SectionKind,
        /// Its length.
        len: u64,
        /// The maximum.
        max: u64,
    },
    /// No kernel image or no command line.
    #[error("a bundle needs a {kind} component")]
    Missing {
        /// What is missing.
        kind: SectionKind,
    },
    /// The command line has a non-printable byte.
    #[error("command line byte {byte:#04x} at position {index} is not printable ASCII")]
    CmdlineByte {
        /// Position in the command line.
        index: usize,
        /// The byte.
        byte: u8,
    },
}

/// Writes a container holding `components` (in any order) and `envelope`. The output is a
/// pure function of the inputs, and [`parse`] accepts everything this function writes.
pub fn encode(components: &[(Role, &[u8])], envelope: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut sorted: Vec<(Role, &[u8])> = components.to_vec();
    sorted.sort_by_key(|(role, _)| role.kind());
    for pair in sorted.windows(2) {
        if let [(a, _), (b, _)] = pair {
            if a == b {
                return Err(EncodeError::DuplicateRole { role: *a });
            }
        }
    }
    if !sorted.iter().any(|(r, _)| r.is_kernel()) {
        return Err(EncodeError::Missing {
            kind: SectionKind::Component(Role::BzImage),
        });
    }
    let cmdline = sorted
        .iter()
        .find(|(r, _)| *r == Role::Cmdline)
        .ok_or(EncodeError::Missing {
            kind: SectionKind::Component(Role::Cmdline),
        })?;
    if let Some(index) = cmdline.1.iter().position(|b| !(0x20..=0x7e).contains(b)) {
        return Err(EncodeError::CmdlineByte {
            index,
            byte: cmdline.1.get(index).copied().unwrap_or(0),
        });
    }
    let sections: Vec<(SectionKind, &[u8])> = sorted
        .iter()
        .map(|&(r, d)| (SectionKind::Component(r), d))
        .chain(std::iter::once((SectionKind::Envelope, envelope)))
        .collect();
    let mut total = HEADER_LEN;
    for (kind, data) in &sections {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if len > kind.max_len() {
            return Err(EncodeError::TooLarge {
                kind: *kind,
                len,
                max: kind.max_len(),
            });
        }
        total = total
            .saturating_add(SECTION_HEADER_LEN)
            .saturating_add(data.len());
    }
    let count = u16::try_from(sections.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    for (kind, data) in &sections {
        out.extend_from_slice(&kind.code().to_le_bytes());
        out.extend_from_slice(&[0u8; 6]);
        out.extend_from_slice(&u64::try_from(data.len()).unwrap_or(u64::MAX).to_le_bytes());
        out.extend_from_slice(data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::arithmetic_side_effects
    )]
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        encode(
            &[
                (Role::Cmdline, b"console=ttyS0"),
                (Role::BzImage, b"KERNEL"),
                (Role::Initramfs, b"INITRD"),
            ],
            b"{}",
        )
        .unwrap()
    }

    #[test]
    fn layout_matches_the_spec() {
        let b = sample();
        assert_eq!(&b[..8], b"\x89JEK\r\n\x1a\n");
        assert_eq!(&b[8..10], &[1, 0]);
        assert_eq!(&b[10..12], &[4, 0]);
        // First section: bzimage, 6 bytes, data at 32.
        assert_eq!(&b[16..18], &[1, 0]);
        assert_eq!(&b[24..32], &6u64.to_le_bytes());
        assert_eq!(&b[32..38], b"KERNEL");
        let raw = parse(&b).unwrap();
        assert_eq!(raw.sections.len(), 3);
        assert_eq!(raw.sections[0].offset, 32);
        assert_eq!(raw.section(Role::Cmdline).unwrap().data, b"console=ttyS0");
        assert_eq!(raw.envelope, b"{}");
        assert_eq!(raw.envelope_offset, b.len() - 2);
    }

    #[test]
    fn rejects_each_structural_fault_with_its_offset() {
        let b = sample();
        assert_eq!(parse(&b[..10]), Err(FormatError::TooShort { len: 10 }));
        let mut m = b.clone();
        m[0] = 0x88;
        assert_eq!(parse(&m), Err(FormatError::BadMagic));
        let mut m = b.clone();
        m[8] = 2;
        assert_eq!(
            parse(&m),
            Err(FormatError::UnsupportedVersion { version: 2 })
        );
        let mut m = b.clone();
        m[10] = 9;
        assert_eq!(parse(&m), Err(FormatError::BadSectionCount { count: 9 }));
        let mut m = b.clone();
        m[13] = 1;
        assert_eq!(parse(&m), Err(FormatError::ReservedNotZero { offset: 13 }));
        let mut m = b.clone();
        m[20] = 1;
        assert_eq!(parse(&m), Err(FormatError::ReservedNotZero { offset: 20 }));
        let mut m = b.clone();
        m[16] = 0x33;
        assert_eq!(
            parse(&m),
            Err(FormatError::UnknownSection {
                kind: 0x33,
                offset: 16
            })
        );
        let mut m = b.clone();
        m[31] = 0x80;
        assert!(matches!(
            parse(&m),
            Err(FormatError::SectionTooLarge { offset: 16, .. })
        ));
        let mut m = b.clone();
        m.push(0);
        assert_eq!(
            parse(&m),
            Err(FormatError::TrailingBytes {
                offset: b.len(),
                count: 1
            })
        );
        let t = &b[..b.len() - 1];
        assert!(matches!(
            parse(t),
            Err(FormatError::TruncatedSection {
                kind: SectionKind::Envelope,
                ..
            })
        ));
    }

    #[test]
    fn rejects_duplicate_and_out_of_order_sections() {
        let mut b = sample();
        // Turn the initramfs section (second) into a bzimage: a duplicate.
        let second = 32 + 6;
        assert_eq!(b[second], 3);
        b[second] = 1;
        assert_eq!(
            parse(&b),
            Err(FormatError::SectionOrder {
                kind: SectionKind::Component(Role::BzImage),
                offset: second
            })
        );
    }

    #[test]
    fn rejects_missing_kernel_cmdline_and_envelope() {
        assert_eq!(
            encode(&[(Role::Cmdline, b"")], b"{}"),
            Err(EncodeError::Missing {
                kind: SectionKind::Component(Role::BzImage)
            })
        );
        assert_eq!(
            encode(&[(Role::BzImage, b"k")], b"{}"),
            Err(EncodeError::Missing {
                kind: SectionKind::Component(Role::Cmdline)
            })
        );
        // Hand-made: header claiming two sections, bzimage and cmdline, no envelope.
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&[1, 0, 2, 0, 0, 0, 0, 0]);
        for (kind, data) in [(1u16, &b"k"[..]), (4, &b"c"[..])] {
            b.extend_from_slice(&kind.to_le_bytes());
            b.extend_from_slice(&[0; 6]);
            b.extend_from_slice(&(data.len() as u64).to_le_bytes());
            b.extend_from_slice(data);
        }
        assert_eq!(
            parse(&b),
            Err(FormatError::MissingSection {
                kind: SectionKind::Envelope
            })
        );
    }

    #[test]
    fn rejects_control_bytes_in_the_command_line() {
        assert_eq!(
            encode(&[(Role::BzImage, b"k"), (Role::Cmdline, b"a\nb")], b"{}"),
            Err(EncodeError::CmdlineByte {
                index: 1,
                byte: b'\n'
            })
        );
        let mut b = encode(&[(Role::BzImage, b"k"), (Role::Cmdline, b"abc")], b"{}").unwrap();
        let at = 16 + 16 + 1 + 16 + 1;
        b[at] = 0;
        assert_eq!(
            parse(&b),
            Err(FormatError::CmdlineByte {
                offset: at,
                byte: 0
            })
        );
    }

    fn arb_components() -> impl Strategy<Value = Vec<(Role, Vec<u8>)>> {
        (
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
            prop::collection::vec(0x20u8..=0x7e, 0..64),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
        )
            .prop_filter_map("needs a kernel", |(bz, vm, init, cmd, cfg)| {
                if bz.is_none() && vm.is_none() {
                    return None;
                }
                let mut v = Vec::new();
                v.extend(bz.map(|d| (Role::BzImage, d)));
                v.extend(vm.map(|d| (Role::Vmlinux, d)));
                v.extend(init.map(|d| (Role::Initramfs, d)));
                v.push((Role::Cmdline, cmd));
                v.extend(cfg.map(|d| (Role::Config, d)));
                Some(v)
            })
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(
            comps in arb_components(),
            env in prop::collection::vec(any::<u8>(), 0..128),
        ) {
            let refs: Vec<(Role, &[u8])> = comps.iter().map(|(r, d)| (*r, d.as_slice())).collect();
            let bytes = encode(&refs, &env).unwrap();
            let raw = parse(&bytes).unwrap();
            let back: Vec<(Role, Vec<u8>)> =
                raw.sections.iter().map(|s| (s.role, s.data.to_vec())).collect();
            prop_assert_eq!(back, comps);
            prop_assert_eq!(raw.envelope, &env[..]);
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_mutated_bundles(pos in any::<prop::sample::Index>(), val in any::<u8>()) {
            let mut b = sample();
            let i = pos.index(b.len());
            b[i] = val;
            let _ = parse(&b);
        }
    }
}
