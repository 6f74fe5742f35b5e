//! The VM: guest memory, kernel loading (linux-loader), zero page, vCPU loop.

use std::io::{Cursor, Write};
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};

use crate::devices::{EventTrigger, PioBus, PioEffect, COM1_IRQ};
use crate::layout::{self, CMDLINE, CMDLINE_MAX, GDT_ADDR, HIMEM, IDT_ADDR, ZERO_PAGE};
use crate::usage::{process_cpu_time, MemoryUse};

/// The kernel image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An ELF `vmlinux`, entered at its ELF entry point.
    Elf,
    /// A bzImage, entered at its 64-bit entry (`code32_start + 0x200`).
    BzImage,
}

/// What to boot.
#[derive(Debug, Clone, Copy)]
pub struct VmConfig<'a> {
    /// The kernel image.
    pub kernel: &'a [u8],
    /// Its format.
    pub format: KernelFormat,
    /// The initramfs (may be empty).
    pub initramfs: &'a [u8],
    /// The command line.
    pub cmdline: &'a str,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u8,
    /// The unprivileged user the vCPU thread drops to before running the guest (see
    /// [`crate::confine`]; `None` keeps the process's user, as when it is not root).
    pub run_as: Option<crate::confine::RunAs>,
}

/// How the guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// Reset through the i8042 (Linux `reboot=k`, the init's power-off).
    Reset,
    /// Triple fault or a KVM system event (shutdown, reset).
    Shutdown,
    /// The vCPU halted with nothing to wake it.
    Halted,
}

/// A finished run: how the guest ended and what it cost the host.
#[derive(Debug, Clone, Copy)]
pub struct VmRun {
    /// How the guest ended.
    pub exit: VmExit,
    /// Just before the first `KVM_RUN`: the guest's first instruction follows.
    pub entered: Instant,
    /// This process's CPU time at that moment.
    pub cpu_at_entry: Duration,
    /// Resident memory when the guest ended (before guest RAM is unmapped).
    pub memory: Option<MemoryUse>,
}

/// Why the VM could not be set up or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The vCPU thread could not be confined; the guest was not started.
    #[error("cannot confine the vCPU thread")]
    Confine(#[source] crate::confine::ConfineError),
    /// The vCPU thread panicked.
    #[error("the vCPU thread panicked")]
    VcpuPanicked,
    /// `/dev/kvm` cannot be opened.
    #[error("cannot open /dev/kvm: is KVM available to this user? (modprobe kvm_intel/kvm_amd, add the user to group kvm)")]
    NoKvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("{op} failed")]
    Kvm {
        /// The operation.
        op: &'static str,
        /// Why.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Only one vCPU can be booted yet.
    #[error("{0} vCPUs asked for: the KVM backend boots exactly 1 (no MP table yet)")]
    Vcpus(u8),
    /// Guest memory size outside what the layout supports.
    #[error("guest memory of {0} MiB is outside 16..=65536 MiB")]
    MemorySize(u32),
    /// Guest memory could not be allocated.
    #[error("cannot allocate {mib} MiB of guest memory")]
    Memory {
        /// Size.
        mib: u32,
        /// Why.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// The kernel image is not loadable.
    #[error("cannot load the {format:?} kernel image")]
    Load {
        /// Format.
        format: KernelFormat,
        /// Why.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// A bzImage without the 64-bit entry point.
    #[error("the bzImage does not declare a 64-bit entry point (xloadflags lacks XLF_KERNEL_64)")]
    No64BitEntry,
    /// The command line is too long or has characters the boot protocol cannot carry.
    #[error("command line of {len} bytes does not fit the kernel's limit of {max}")]
    CmdlineTooLong {
        /// Its length with the NUL.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The command line was refused by linux-loader.
    #[error("invalid command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// The initramfs does not fit.
    #[error("an initramfs of {size} bytes does not fit in {mib} MiB above the kernel")]
    InitramfsTooLarge {
        /// Its size.
        size: usize,
        /// Guest memory.
        mib: u32,
    },
    /// Writing boot structures into guest memory failed.
    #[error("cannot write the {what} into guest memory")]
    GuestWrite {
        /// Which structure.
        what: &'static str,
    },
    /// KVM could not emulate an instruction or deliver an event.
    #[error(
        "KVM internal error at rip {rip:#x} (the guest needs something this host cannot emulate)"
    )]
    Internal {
        /// Guest instruction pointer.
        rip: u64,
    },
    /// VM entry failed.
    #[error("VM entry failed: hardware reason {reason:#x}")]
    FailEntry {
        /// Hardware entry failure reason.
        reason: u64,
    },
    /// An exit this VMM does not handle.
    #[error("unhandled vCPU exit {0}")]
    Unhandled(String),
}

fn kvm_err(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { op, source }
}

fn to_u32(v: u64) -> u32 {
    u32::try_from(v & 0xffff_ffff).unwrap_or(0)
}

/// Everything placed in guest memory; also what a test compares the guest's report with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootLayout {
    /// First guest instruction.
    pub entry: u64,
    /// Initramfs address (0 when empty).
    pub initramfs_addr: u64,
    /// e820 map given to the kernel.
    pub e820: Vec<layout::E820Entry>,
}

fn guest_memory(mib: u32) -> Result<GuestMemoryMmap, VmError> {
    if !(16..=65536).contains(&mib) {
        return Err(VmError::MemorySize(mib));
    }
    let ranges: Vec<(GuestAddress, usize)> = layout::ram_regions(u64::from(mib) << 20)
        .into_iter()
        .map(|(s, l)| (GuestAddress(s), usize::try_from(l).unwrap_or(usize::MAX)))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| VmError::Memory { mib, source })
}

fn write_u64s(
    mem: &GuestMemoryMmap,
    at: u64,
    values: &[u64],
    what: &'static str,
) -> Result<(), VmError> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(at))
        .map_err(|_| VmError::GuestWrite { what })
}

/// Loads the kernel, command line, initramfs, zero page, GDT and page tables into `mem`.
pub fn load(mem: &GuestMemoryMmap, cfg: &VmConfig<'_>) -> Result<BootLayout, VmError> {
    let mut image = Cursor::new(cfg.kernel);
    let load_err = |source| VmError::Load {
        format: cfg.format,
        source,
    };
    let (entry, kernel_end, mut hdr) = match cfg.format {
        KernelFormat::Elf => {
            let r =
                Elf::load(mem, None, &mut image, Some(GuestAddress(HIMEM))).map_err(load_err)?;
            let hdr = setup_header {
                boot_flag: 0xaa55,
                header: 0x5372_6448,
                kernel_alignment: 0x0100_0000,
                initrd_addr_max: 0x37ff_ffff,
                cmdline_size: 2048,
                ..Default::default()
            };
            (r.kernel_load.0, r.kernel_end, hdr)
        }
        KernelFormat::BzImage => {
            let r = BzImage::load(mem, None, &mut image, Some(GuestAddress(HIMEM)))
                .map_err(load_err)?;
            let hdr = r.setup_header.unwrap_or_default();
            let xloadflags = hdr.xloadflags;
            if xloadflags & 1 == 0 {
                return Err(VmError::No64BitEntry);
            }
            (r.kernel_load.0 + 0x200, r.kernel_end, hdr)
        }
    };
    // The kernel may use up to init_size bytes from its load address while decompressing.
    let init_size = hdr.init_size;
    let kernel_end = kernel_end.max(HIMEM + u64::from(init_size));

    let (version, cmdline_size) = (hdr.version, hdr.cmdline_size);
    let max = if version >= 0x206 || cfg.format == KernelFormat::Elf {
        usize::try_from(cmdline_size).unwrap_or(0)
    } else {
        256
    }
    .min(CMDLINE_MAX);
    let len = cfg.cmdline.len() + 1;
    if len > max {
        return Err(VmError::CmdlineTooLong { len, max });
    }
    let mut cmdline = Cmdline::new(max).map_err(VmError::Cmdline)?;
    cmdline.insert_str(cfg.cmdline).map_err(VmError::Cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE), &cmdline).map_err(|_| VmError::GuestWrite {
        what: "command line",
    })?;

    let mem_bytes = u64::from(cfg.memory_mib) << 20;
    let size = cfg.initramfs.len();
    let initramfs_addr = if size == 0 {
        0
    } else {
        let addr = layout::initramfs_addr(
            mem_bytes,
            size as u64,
            u64::from(hdr.initrd_addr_max),
            kernel_end,
        )
        .ok_or(VmError::InitramfsTooLarge {
            size,
            mib: cfg.memory_mib,
        })?;
        mem.write_slice(cfg.initramfs, GuestAddress(addr))
            .map_err(|_| VmError::GuestWrite { what: "initramfs" })?;
        addr
    };

    let e820 = layout::e820(mem_bytes);
    let mut params = boot_params::default();
    hdr.type_of_loader = 0xff;
    hdr.cmd_line_ptr = to_u32(CMDLINE);
    hdr.cmdline_size = u32::try_from(max).unwrap_or(0);
    hdr.ramdisk_image = to_u32(initramfs_addr);
    hdr.ramdisk_size = to_u32(size as u64);
    params.hdr = hdr;
    params.ext_ramdisk_image = to_u32(initramfs_addr >> 32);
    params.ext_ramdisk_size = to_u32((size as u64) >> 32);
    params.ext_cmd_line_ptr = to_u32(CMDLINE >> 32);
    for (slot, e) in params.e820_table.iter_mut().zip(&e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
        };
    }
    params.e820_entries = u8::try_from(e820.len()).unwrap_or(0);
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE)),
        mem,
    )
    .map_err(|_| VmError::GuestWrite { what: "zero page" })?;

    write_u64s(mem, GDT_ADDR, &layout::GDT, "GDT")?;
    write_u64s(mem, IDT_ADDR, &[0], "IDT")?;
    for (addr, entries) in layout::page_tables() {
        write_u64s(mem, addr, &entries, "page tables")?;
    }
    Ok(BootLayout {
        entry,
        initramfs_addr,
        e820,
    })
}

fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), VmError> {
    for (slot, region) in mem.iter().enumerate() {
        let region_desc = kvm_userspace_memory_region {
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mmap owned by `mem`, of exactly `memory_size` bytes at
        // `userspace_addr`, and `mem` outlives the VM: both live in `run` and the VM fd is
        // dropped first (declared after `mem`). Slots are distinct and regions do not overlap.
        unsafe { vm.set_user_memory_region(region_desc) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

/// LINT0 as ExtINT (the PIC's virtual wire) and LINT1 as NMI, as firmware would leave them.
fn set_lint(vcpu: &VcpuFd) -> Result<(), VmError> {
    const LVT_LINT0: usize = 0x350;
    const LVT_LINT1: usize = 0x360;
    const EXTINT: u32 = 0x700;
    const NMI: u32 = 0x400;
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    for (off, mode) in [(LVT_LINT0, EXTINT), (LVT_LINT1, NMI)] {
        let regs = &mut lapic.regs;
        let mut bytes = [0u8; 4];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = regs.get(off + i).map_or(0, |c| c.to_ne_bytes()[0]);
        }
        let v = (u32::from_le_bytes(bytes) & !0x700) | mode;
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            if let Some(slot) = regs.get_mut(off + i) {
                *slot = i8::from_ne_bytes([*b]);
            }
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))
}

/// Boots `cfg` and runs until the guest resets, shuts down or fails. The serial console
/// is written to `console`.
pub fn run<W: Write + Send>(cfg: &VmConfig<'_>, console: W) -> Result<VmRun, VmError> {
    if cfg.vcpus != 1 {
        return Err(VmError::Vcpus(cfg.vcpus));
    }
    let mem = guest_memory(cfg.memory_mib)?;
    let boot = load(&mem, cfg)?;
    tracing::debug!(
        entry = format_args!("{:#x}", boot.entry),
        initramfs = format_args!("{:#x}", boot.initramfs_addr),
        "kernel loaded"
    );

    let kvm = Kvm::new().map_err(VmError::NoKvm)?;
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    vm.set_tss_address(0xfffb_d000)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .map_err(kvm_err("KVM_CREATE_PIT2"))?;
    register_memory(&vm, &mem)?;

    let serial_irq = EventTrigger::new().map_err(|e| VmError::Kvm {
        op: "eventfd",
        source: kvm_ioctls::Error::new(e.raw_os_error().unwrap_or(0)),
    })?;
    vm.register_irqfd(&serial_irq.0, COM1_IRQ)
        .map_err(kvm_err("KVM_IRQFD"))?;
    let mut bus = PioBus::new(console, serial_irq).map_err(|e| VmError::Kvm {
        op: "eventfd",
        source: kvm_ioctls::Error::new(e.raw_os_error().unwrap_or(0)),
    })?;

    let mut vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let emulated = !crate::cpu::host_has_hw_virt();
    if emulated {
        tracing::info!("no VT-x/AMD-V on this host: KVM emulates the guest; hiding CMPXCHG16B");
    }
    crate::cpu::setup(
        &vcpu,
        &crate::cpu::cpuid_for(cpuid, 0, cfg.vcpus, emulated),
        boot.entry,
    )
    .map_err(kvm_err("vCPU set-up"))?;
    set_lint(&vcpu)?;

    let cpu_at_entry = process_cpu_time();
    let entered = Instant::now();
    // The guest runs in its own thread, confined (crate::confine) before its first
    // KVM_RUN; the calling thread only waits, and keeps its privileges for what follows.
    let run_as = cfg.run_as;
    let exit = std::thread::scope(|s| {
        s.spawn(|| {
            crate::confine::confine_this_thread(run_as).map_err(VmError::Confine)?;
            let exit = vcpu_loop(&mut vcpu, &mut bus);
            bus.flush();
            exit
        })
        .join()
        .unwrap_or(Err(VmError::VcpuPanicked))
    });
    let guest: Vec<usize> = mem.iter().map(|r| r.as_ptr() as usize).collect();
    Ok(VmRun {
        exit: exit?,
        entered,
        cpu_at_entry,
        memory: MemoryUse::of_this_process(&guest),
    })
}

fn vcpu_loop<W: Write>(vcpu: &mut VcpuFd, bus: &mut PioBus<W>) -> Result<VmExit, VmError> {
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                if bus.write(port, data) == PioEffect::Reset {
                    return Ok(VmExit::Reset);
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => bus.read(port, data),
            Ok(VcpuExit::MmioRead(_, data)) => data.fill(0xff),
            Ok(VcpuExit::MmioWrite(..) | VcpuExit::IrqWindowOpen | VcpuExit::Intr) => {}
            Ok(VcpuExit::Hlt) => return Ok(VmExit::Halted),
            Ok(VcpuExit::Shutdown | VcpuExit::SystemEvent(..)) => return Ok(VmExit::Shutdown),
            Ok(VcpuExit::InternalError) => {
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                return Err(VmError::Internal { rip });
            }
            Ok(VcpuExit::FailEntry(reason, _)) => return Err(VmError::FailEntry { reason }),
            Ok(other) => return Err(VmError::Unhandled(format!("{other:?}"))),
            Err(e) if e.errno() == 4 || e.errno() == 11 => {} // EINTR, EAGAIN
            Err(e) => return Err(kvm_err("KVM_RUN")(e)),
        }
    }
}
