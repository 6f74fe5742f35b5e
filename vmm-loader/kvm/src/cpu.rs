//! vCPU state for the 64-bit boot protocol: long mode, flat segments, identity paging.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs};
use kvm_ioctls::VcpuFd;

use crate::layout::{BOOT_STACK, GDT, GDT_ADDR, IDT_ADDR, PML4, ZERO_PAGE};

const X86_CR0_PE: u64 = 1;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;

fn segment(index: u16, entry: u64) -> kvm_segment {
    let flags = (entry >> 40) & 0xf0ff;
    let bit = |n: u64| u8::from((flags >> n) & 1 == 1);
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: index * 8,
        type_: u8::try_from(flags & 0xf).unwrap_or(0),
        present: bit(7),
        dpl: u8::try_from((flags >> 5) & 3).unwrap_or(0),
        db: bit(14),
        s: bit(4),
        l: bit(13),
        g: bit(15),
        avl: bit(12),
        unusable: 0,
        padding: 0,
    }
}

/// Special registers: GDT/IDT, flat 64-bit segments, paging on, long mode active.
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment(1, GDT[1]);
    let data = segment(2, GDT[2]);
    let tss = segment(3, GDT[3]);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = u16::try_from(GDT.len() * 8 - 1).unwrap_or(u16::MAX);
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = PML4;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG | X86_CR0_ET;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// General registers: entry point, boot stack, RSI = zero page.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rsi: ZERO_PAGE,
        rflags: 0x2,
        ..Default::default()
    }
}

/// x87/SSE state after reset, as firmware leaves it.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// CPUID.1:ECX.CX16 (CMPXCHG16B).
const CPUID_1_ECX_CX16: u32 = 1 << 13;

/// Whether the host CPU has hardware virtualization (VT-x or AMD-V). Without it, KVM is a
/// software backend (such as PVM) that runs a guest under instruction emulation.
pub fn host_has_hw_virt() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    })
}

/// CPUID for vCPU `index` of `count`: what KVM supports, with this vCPU's APIC ID and the
/// hypervisor bit. When the guest runs under instruction `emulated` (no hardware
/// virtualization), CMPXCHG16B is hidden: the emulator cannot execute it, and Linux's SLUB
/// would otherwise stop in its first cmpxchg_double.
pub fn cpuid_for(mut cpuid: CpuId, index: u8, count: u8, emulated: bool) -> CpuId {
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(count) << 16);
                e.ecx |= 1 << 31; // running under a hypervisor
                if emulated {
                    e.ecx &= !CPUID_1_ECX_CX16;
                }
            }
            0xb => e.edx = u32::from(index),
            _ => {}
        }
    }
    cpuid
}

/// Applies the boot state to a vCPU.
pub fn setup(vcpu: &VcpuFd, cpuid: &CpuId, entry: u64) -> Result<(), kvm_ioctls::Error> {
    vcpu.set_cpuid2(cpuid)?;
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_MISC_ENABLE,
        data: MISC_ENABLE_FAST_STRING,
        ..Default::default()
    }])
    .map_err(|_| kvm_ioctls::Error::new(libc_einval()))?;
    vcpu.set_msrs(&msrs)?;
    vcpu.set_sregs(&long_mode_sregs(vcpu.get_sregs()?))?;
    vcpu.set_regs(&boot_regs(entry))?;
    vcpu.set_fpu(&boot_fpu())?;
    Ok(())
}

fn libc_einval() -> i32 {
    22
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_64_bit() {
        let cs = segment(1, GDT[1]);
        assert_eq!(
            (cs.l, cs.db, cs.present, cs.selector, cs.type_),
            (1, 0, 1, 8, 0xb)
        );
        let ds = segment(2, GDT[2]);
        assert_eq!((ds.l, ds.db, ds.type_), (0, 1, 3));
    }
}
