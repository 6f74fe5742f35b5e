//! Guest physical memory layout for the 64-bit boot protocol (pure: no KVM here).

/// GDT: null, 64-bit code, data, TSS.
pub const GDT_ADDR: u64 = 0x500;
/// IDT (empty: the kernel installs its own before enabling interrupts).
pub const IDT_ADDR: u64 = 0x520;
/// The zero page (`struct boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack top.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Level-4 page table.
pub const PML4: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT: u64 = 0xa000;
/// Four page directories (2 MiB pages), identity-mapping the first 4 GiB.
pub const PD: u64 = 0xb000;
/// The command line.
pub const CMDLINE: u64 = 0x20000;
/// Largest command line (with its NUL) the layout has room for.
pub const CMDLINE_MAX: usize = 0x10000;
/// End of conventional memory below the EBDA.
pub const EBDA_START: u64 = 0x9fc00;
/// Where the kernel is loaded (1 MiB).
pub const HIMEM: u64 = 0x10_0000;
/// Start of the 32-bit PCI hole: RAM above this moves to 4 GiB.
pub const MMIO_GAP_START: u64 = 0xC000_0000;
/// 4 GiB.
pub const FOUR_GIB: u64 = 0x1_0000_0000;

/// `E820_RAM`.
pub const E820_RAM: u32 = 1;

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start.
    pub addr: u64,
    /// Length.
    pub size: u64,
    /// Type.
    pub kind: u32,
}

/// Guest RAM regions (start, length) for `mem` bytes: one below the PCI hole, the rest
/// above 4 GiB.
pub fn ram_regions(mem: u64) -> Vec<(u64, u64)> {
    if mem <= MMIO_GAP_START {
        vec![(0, mem)]
    } else {
        vec![(0, MMIO_GAP_START), (FOUR_GIB, mem - MMIO_GAP_START)]
    }
}

/// The e820 map for `mem` bytes of RAM: low memory up to the EBDA, then from 1 MiB.
pub fn e820(mem: u64) -> Vec<E820Entry> {
    let mut map = vec![E820Entry {
        addr: 0,
        size: EBDA_START,
        kind: E820_RAM,
    }];
    for (start, len) in ram_regions(mem) {
        let (s, e) = (start.max(HIMEM), start + len);
        if e > s {
            map.push(E820Entry {
                addr: s,
                size: e - s,
                kind: E820_RAM,
            });
        }
    }
    map
}

/// Where an initramfs of `size` bytes goes: as high as possible in low RAM, below both
/// `addr_max` (the kernel's `initrd_addr_max`) and the end of low RAM, page aligned, and
/// above `kernel_end`. `None` if it does not fit.
pub fn initramfs_addr(mem: u64, size: u64, addr_max: u64, kernel_end: u64) -> Option<u64> {
    let low_end = mem.min(MMIO_GAP_START);
    let limit = low_end.min(addr_max.saturating_add(1));
    let start = limit.checked_sub(size)? & !0xfff;
    (start >= kernel_end).then_some(start)
}

/// GDT entries: null, code (64-bit, 0x08), data (0x10), TSS (0x18).
pub const GDT: [u64; 4] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x008f_8b00_0000_ffff,
];

/// The page tables identity-mapping 4 GiB with 2 MiB pages: (address, u64 entries).
pub fn page_tables() -> Vec<(u64, Vec<u64>)> {
    const PRESENT_RW: u64 = 0x3;
    const HUGE: u64 = 0x80;
    let pml4 = vec![PDPT | PRESENT_RW];
    let pdpt = (0..4).map(|i| (PD + i * 0x1000) | PRESENT_RW).collect();
    let mut tables = vec![(PML4, pml4), (PDPT, pdpt)];
    for i in 0..4u64 {
        let pd = (0..512u64)
            .map(|j| ((i * 512 + j) << 21) | PRESENT_RW | HUGE)
            .collect();
        tables.push((PD + i * 0x1000, pd));
    }
    tables
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn e820_skips_the_legacy_hole_and_the_pci_gap() {
        let small = e820(64 << 20);
        assert_eq!(small.len(), 2);
        assert_eq!(small[1].addr, HIMEM);
        assert_eq!(small[1].size, (64 << 20) - HIMEM);
        let big = e820(4 << 30);
        assert_eq!(big.len(), 3);
        assert_eq!(big[2].addr, FOUR_GIB);
        assert_eq!(big[2].size, (4 << 30) - MMIO_GAP_START);
    }

    #[test]
    fn initramfs_goes_high_but_not_over_the_kernel() {
        let a = initramfs_addr(64 << 20, 10_000, 0x7fff_ffff, 2 << 20).unwrap();
        assert_eq!(a % 4096, 0);
        assert!(a + 10_000 <= 64 << 20);
        assert!(initramfs_addr(4 << 20, 3 << 20, 0x7fff_ffff, 2 << 20).is_none());
        let capped = initramfs_addr(2 << 30, 4096, 0x37ff_ffff, HIMEM).unwrap();
        assert!(capped + 4096 <= 0x3800_0000);
    }

    #[test]
    fn page_tables_map_four_gib_identically() {
        let t = page_tables();
        let last_pd = &t.last().unwrap().1;
        assert_eq!(last_pd[511] & !0xfff, (4u64 << 30) - (2 << 20));
    }
}
