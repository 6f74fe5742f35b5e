//! # jek-kvm: direct boot of a Linux kernel under KVM, and nothing else
//!
//! The VMM behind `jek boot --vmm kvm`. It boots a kernel the way Linux's 64-bit boot
//! protocol describes (`Documentation/x86/boot.rst`): no firmware, the CPU already in long
//! mode with identity-mapped page tables, RSI pointing at the zero page that carries the
//! command line, the e820 map and the initramfs location.
//!
//! - [`layout`] (pure): guest physical memory layout, e820 map, initramfs placement, GDT
//!   and page-table contents.
//! - [`cpu`]: vCPU registers, CPUID (from `KVM_GET_SUPPORTED_CPUID`), MSRs.
//! - [`devices`]: COM1 (a vm-superio 16550 wired to an irqfd) and the i8042 reset line.
//!   No keyboard, no video, no PCI, no BIOS.
//! - [`vm`]: memory, loading (linux-loader), the vCPU loop, exits.
//! - [`confine`]: the vCPU thread's unprivileged user and seccomp filter.
//! - [`usage`]: CPU time at guest entry and resident memory beyond guest RAM.
//!
//! This crate is the only one in jek with `unsafe` code; every block says why it is sound.

pub mod confine;
pub mod cpu;
pub mod devices;
pub mod layout;
pub mod usage;
pub mod vm;

pub use usage::MemoryUse;
pub use vm::{run, KernelFormat, VmConfig, VmError, VmExit, VmRun};
