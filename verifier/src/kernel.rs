//! The facts a manifest signs about its kernel image, read back out of the image bytes.
//!
//! A manifest's `kernel` object (boot protocol, payload format, ELF entry) is a claim the
//! signer makes; the verifier recomputes it from the bytes and requires the two to be
//! equal, so one kernel has exactly one valid `kernel` object and a signed fact can never
//! disagree with what the loader will see. The builder writes the object with the same
//! function ([`facts`]), so the producer and the checker cannot drift apart.
//!
//! bzImage offsets are those of the x86 boot protocol (`Documentation/x86/boot.rst`):
//! `setup_sects` at 0x1f1, `"HdrS"` at 0x202, `version` at 0x206, `payload_offset` at
//! 0x248 (protocol 2.08 and later, relative to the protected-mode code at
//! `(setup_sects + 1) * 512`, where `setup_sects` 0 means 4). ELF: `e_ident[EI_CLASS]` at
//! 4 (1 = 32-bit, 2 = 64-bit), `e_ident[EI_DATA]` at 5 (1 = little-endian), `e_entry` at
//! 0x18 (4 bytes for ELF32, 8 for ELF64).

use crate::manifest::KernelInfo;

/// The compressions a bzImage payload may use, by their magic bytes.
const PAYLOAD_MAGICS: [(&[u8], &str); 7] = [
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\x89LZO", "lzo"),
    (b"\x5d\x00\x00", "lzma"),
];

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The boot protocol version of a bzImage as `"major.minor"` (minor two digits), if the
/// bytes carry an `"HdrS"` setup header.
pub fn boot_protocol(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return None;
    }
    let version = u16_at(image, 0x206)?;
    Some(format!("{}.{:02}", version >> 8, version & 0xff))
}

/// The compression of a bzImage's payload (protocol 2.08 and later), by its magic.
pub fn payload_format(image: &[u8]) -> Option<&'static str> {
    if image.get(0x202..0x206) != Some(b"HdrS") || u16_at(image, 0x206)? < 0x0208 {
        return None;
    }
    let setup_sects = match image.get(0x1f1).copied()? {
        0 => 4,
        n => usize::from(n),
    };
    let offset = usize::try_from(u32_at(image, 0x248)?).ok()?;
    let start = setup_sects
        .checked_add(1)?
        .checked_mul(512)?
        .checked_add(offset)?;
    let payload = image.get(start..)?;
    PAYLOAD_MAGICS
        .iter()
        .find(|(m, _)| payload.starts_with(m))
        .map(|(_, n)| *n)
}

/// The entry point of a little-endian ELF image, if the bytes are one.
pub fn elf_entry(image: &[u8]) -> Option<u64> {
    if !image.starts_with(b"\x7fELF") || image.get(5) != Some(&1) {
        return None;
    }
    match image.get(4)? {
        1 => u32_at(image, 0x18).map(u64::from),
        2 => u64_at(image, 0x18),
        _ => None,
    }
}

/// The `kernel` object a manifest must sign for these images: the boot protocol and
/// payload format of the bzImage, and the entry point of the `vmlinux` (or of the only
/// kernel, when that is an ELF file).
pub fn facts(bzimage: Option<&[u8]>, vmlinux: Option<&[u8]>) -> KernelInfo {
    KernelInfo {
        boot_protocol: bzimage.and_then(boot_protocol),
        payload_format: bzimage.and_then(payload_format).map(str::to_string),
        elf_entry: vmlinux.and_then(elf_entry).map(|e| format!("{e:#x}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn bzimage(version: u16, setup_sects: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x2000];
        b[0x1f1] = setup_sects;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&0x10u32.to_le_bytes());
        let sects = if setup_sects == 0 {
            4
        } else {
            setup_sects as usize
        };
        let at = (sects + 1) * 512 + 0x10;
        b[at..at + payload.len()].copy_from_slice(payload);
        b
    }

    #[test]
    fn reads_the_setup_header() {
        let b = bzimage(0x020f, 1, b"\x28\xb5\x2f\xfd");
        assert_eq!(boot_protocol(&b).as_deref(), Some("2.15"));
        assert_eq!(payload_format(&b), Some("zstd"));
        // setup_sects 0 means 4.
        assert_eq!(
            payload_format(&bzimage(0x020f, 0, b"\x1f\x8b")),
            Some("gzip")
        );
        // Before 2.08 there is no payload_offset.
        assert_eq!(payload_format(&bzimage(0x0207, 1, b"\x1f\x8b")), None);
        assert_eq!(boot_protocol(b"not a kernel"), None);
    }

    #[test]
    fn reads_elf_entries_of_both_classes() {
        let mut e64 = vec![0u8; 64];
        e64[..4].copy_from_slice(b"\x7fELF");
        e64[4] = 2;
        e64[5] = 1;
        e64[0x18..0x20].copy_from_slice(&0x0100_0000u64.to_le_bytes());
        assert_eq!(elf_entry(&e64), Some(0x0100_0000));
        let mut e32 = e64.clone();
        e32[4] = 1;
        e32[0x18..0x1c].copy_from_slice(&0x10_0000u32.to_le_bytes());
        assert_eq!(elf_entry(&e32), Some(0x10_0000));
        let mut be = e64.clone();
        be[5] = 2;
        assert_eq!(elf_entry(&be), None);
        assert_eq!(elf_entry(&e64[..0x1c]), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..0x600)) {
            let _ = facts(Some(&bytes), Some(&bytes));
        }
    }
}
