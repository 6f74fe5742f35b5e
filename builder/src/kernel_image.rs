//! Facts read out of kernel images: which format, the kernel release, the boot protocol of a
//! bzImage and the compression of its payload, the entry point of an ELF `vmlinux`.
//!
//! bzImage offsets are those of the x86 boot protocol (`Documentation/x86/boot.rst`):
//! `setup_sects` at 0x1f1, `"HdrS"` at 0x202, `version` at 0x206, `kernel_version` at
//! 0x20e (a pointer to a NUL-terminated string, relative to 0x200), `payload_offset` and
//! `payload_length` at 0x248 and 0x24c (protocol 2.08 and later).

use jek_verifier::format::Role;

/// What a kernel image told us about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFacts {
    /// bzImage or vmlinux.
    pub role: Role,
    /// `uname -r`, when the image says.
    pub release: Option<String>,
    /// bzImage boot protocol version as `"major.minor"`.
    pub boot_protocol: Option<String>,
    /// bzImage payload compression.
    pub payload_format: Option<&'static str>,
    /// ELF entry point.
    pub elf_entry: Option<u64>,
}

/// Why an image is not a kernel we recognise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelImageError {
    /// Neither an ELF file nor a bzImage.
    #[error("not a kernel image: no ELF magic and no \"HdrS\" setup header at offset 0x202")]
    Unrecognised,
    /// An ELF file that goblin cannot parse.
    #[error("ELF header is invalid: {0}")]
    Elf(String),
    /// A bzImage older than boot protocol 2.06 (no 64-bit loading rules, no cmdline_size).
    #[error("bzImage boot protocol {0} is older than 2.06")]
    OldProtocol(String),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Reads the release from a `"Linux version 6.1.0 (...)"` banner anywhere in `bytes`.
fn release_from_banner(bytes: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let start = bytes.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
    release_token(bytes.get(start..)?)
}

/// The first space- or NUL-terminated token, if it is 1 to 64 printable characters.
fn release_token(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == b' ' || b == 0)?;
    let token = bytes.get(..end)?;
    if token.is_empty() || token.len() > 64 || !token.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    String::from_utf8(token.to_vec()).ok()
}

/// Recognises a kernel image and reads what it says about itself.
pub fn examine(image: &[u8]) -> Result<KernelFacts, KernelImageError> {
    if image.starts_with(b"\x7fELF") {
        let elf =
            goblin::elf::Elf::parse(image).map_err(|e| KernelImageError::Elf(e.to_string()))?;
        // The banner lives in .rodata; search that section first, then the whole file.
        let rodata = elf
            .section_headers
            .iter()
            .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(".rodata"));
        let release = rodata
            .and_then(|sh| {
                let start = usize::try_from(sh.sh_offset).ok()?;
                let len = usize::try_from(sh.sh_size).ok()?;
                image.get(start..start.checked_add(len)?)
            })
            .and_then(release_from_banner)
            .or_else(|| release_from_banner(image));
        return Ok(KernelFacts {
            role: Role::Vmlinux,
            release,
            boot_protocol: None,
            payload_format: None,
            elf_entry: Some(elf.entry),
        });
    }
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err(KernelImageError::Unrecognised);
    }
    let version = u16_at(image, 0x206).ok_or(KernelImageError::Unrecognised)?;
    let protocol = format!("{}.{:02}", version >> 8, version & 0xff);
    if version < 0x0206 {
        return Err(KernelImageError::OldProtocol(protocol));
    }
    let release = u16_at(image, 0x20e)
        .filter(|&p| p != 0)
        .and_then(|p| image.get(usize::from(p) + 0x200..))
        .and_then(release_token);
    let payload_format = jek_verifier::kernel::payload_format(image);
    Ok(KernelFacts {
        role: Role::BzImage,
        release,
        boot_protocol: Some(protocol),
        payload_format,
        elf_entry: None,
    })
}

/// A synthetic bzImage for tests and fixtures: a 2.15 setup header with a release string and
/// an LZ4 payload magic, padded to 4 KiB. Not bootable; enough for `pack` to recognise and
/// describe it.
/// (Recipe: the layout of `Documentation/x86/boot.rst`, fields at the offsets written.)
pub fn synthetic_bzimage(release: &str) -> Vec<u8> {
    let mut b = vec![0u8; 0x1000];
    b[0x1f1] = 1;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
    let s = format!("{release} (jek@test) #1 SMP\0");
    // The release string sits in the setup area before the payload (at most 0x500 bytes).
    let n = s.len().min(0x500);
    b[0x300..0x300 + n].copy_from_slice(&s.as_bytes()[..n]);
    b[0x248..0x24c].copy_from_slice(&0x10u32.to_le_bytes());
    b[1024 + 0x10..1024 + 0x14].copy_from_slice(b"\x02\x21\x4c\x18");
    for (i, x) in b[0x800..].iter_mut().enumerate() {
        *x = u8::try_from(i * 7 % 251).unwrap_or(0);
    }
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// A synthetic bzImage: the setup header fields this module reads, nothing else.
    fn fake_bzimage(version: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x1000];
        b[0x1f1] = 1; // one setup sector: protected-mode code at 1024
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        b[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        b[0x300..0x300 + 25].copy_from_slice(b"6.1.192-jek (a@b) #1 SMP\0");
        b[0x248..0x24c].copy_from_slice(&0x10u32.to_le_bytes());
        b[1024 + 0x10..1024 + 0x10 + payload.len()].copy_from_slice(payload);
        b
    }

    #[test]
    fn reads_a_bzimage_setup_header() {
        let f = examine(&fake_bzimage(0x020f, b"\x02\x21\x4c\x18rest")).unwrap();
        assert_eq!(f.role, Role::BzImage);
        assert_eq!(f.release.as_deref(), Some("6.1.192-jek"));
        assert_eq!(f.boot_protocol.as_deref(), Some("2.15"));
        assert_eq!(f.payload_format, Some("lz4"));
    }

    #[test]
    fn rejects_old_protocols_and_unknown_files() {
        assert_eq!(
            examine(&fake_bzimage(0x0205, b"")),
            Err(KernelImageError::OldProtocol("2.05".into()))
        );
        assert_eq!(examine(b"hello"), Err(KernelImageError::Unrecognised));
        assert!(matches!(
            examine(b"\x7fELF\x02"),
            Err(KernelImageError::Elf(_))
        ));
    }

    #[test]
    fn finds_the_banner_release() {
        assert_eq!(
            release_from_banner(b"xxLinux version 6.1.0-13-amd64 (debian-kernel@lists) #1"),
            Some("6.1.0-13-amd64".into())
        );
        assert_eq!(release_from_banner(b"Linux version "), None);
    }

    proptest::proptest! {
        #[test]
        fn examine_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..0x400)) {
            let _ = examine(&bytes);
        }
    }
}
