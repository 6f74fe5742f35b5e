//! # jek-testkernel: a tiny kernel that reports what its loader handed it
//!
//! Built from `guest/` (C and assembly, gcc and binutils) into two images of the same code:
//! [`ELF`] (like a `vmlinux`, 64-bit entry `0x100200`) and [`BZIMAGE`] (a Linux boot
//! protocol 2.15 setup header with `XLF_KERNEL_64`, payload at `code32_start = 1 MiB`,
//! 64-bit entry 0x200 into it). Booted with the 64-bit boot protocol, it prints the zero
//! page's command line, e820 map and initramfs (address, size, FNV-1a) to COM1 in
//! `JEKTEST` lines ([`Report::parse`]) and resets through the i8042.

/// The test kernel as an ELF executable.
pub const ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/testkernel.elf"));
/// The test kernel as a bzImage.
pub const BZIMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/testkernel.bzImage"));

/// One e820 entry as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820 {
    /// Start address.
    pub addr: u64,
    /// Length.
    pub size: u64,
    /// Type (1 = RAM).
    pub kind: u32,
}

/// What the test kernel reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `boot_flag` of the zero page.
    pub boot_flag: u64,
    /// `type_of_loader`.
    pub loader: u64,
    /// The command line.
    pub cmdline: String,
    /// The e820 map.
    pub e820: Vec<E820>,
    /// Initramfs address.
    pub initrd_addr: u64,
    /// Initramfs size.
    pub initrd_size: u64,
    /// FNV-1a (32-bit) of the initramfs bytes as the guest read them.
    pub initrd_fnv1a: u32,
    /// The report ended with `JEKTEST done`.
    pub done: bool,
}

/// 32-bit FNV-1a, as the test kernel computes it.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| u64::from_str_radix(v, 16).ok())
}

impl Report {
    /// Parses the `JEKTEST` lines out of a console transcript.
    pub fn parse(console: &str) -> Report {
        let mut r = Report::default();
        for line in console.lines().map(|l| l.trim_end_matches('\r')) {
            let Some(rest) = line.strip_prefix("JEKTEST ") else {
                continue;
            };
            if let Some(cmd) = rest.strip_prefix("cmdline=") {
                r.cmdline = cmd.to_string();
            } else if rest.starts_with("boot_flag=") {
                r.boot_flag = field(rest, "boot_flag=").unwrap_or(0);
                r.loader = field(rest, "loader=").unwrap_or(0);
            } else if let Some(e) = rest.strip_prefix("e820 ") {
                let parts: Vec<u64> = e
                    .split_whitespace()
                    .filter_map(|p| u64::from_str_radix(p, 16).ok())
                    .collect();
                if let [addr, size, kind] = parts[..] {
                    r.e820.push(E820 {
                        addr,
                        size,
                        kind: u32::try_from(kind).unwrap_or(u32::MAX),
                    });
                }
            } else if rest.starts_with("initrd ") {
                r.initrd_addr = field(rest, "addr=").unwrap_or(0);
                r.initrd_size = field(rest, "size=").unwrap_or(0);
                r.initrd_fnv1a = field(rest, "fnv1a=")
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(0);
            } else if rest == "done" {
                r.done = true;
            }
        }
        r
    }
}
