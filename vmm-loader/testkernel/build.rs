#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Builds the test kernel with the host's gcc and binutils: an ELF `vmlinux`-like image and
//! a bzImage (setup header, boot protocol 2.15, 64-bit entry at 0x200) around the same code.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (install gcc and binutils)"));
    assert!(status.success(), "{cmd:?} failed with {status}");
}

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

fn bzimage(payload: &[u8], bss_end: u32) -> Vec<u8> {
    // Boot sector + one setup sector; the payload follows.
    let setup_sects = 1u8;
    let setup_len = (usize::from(setup_sects) + 1) * 512;
    let mut img = vec![0u8; setup_len];
    put(&mut img, 0x1f1, &[setup_sects]);
    let syssize = u32::try_from(payload.len().div_ceil(16)).unwrap();
    put(&mut img, 0x1f4, &syssize.to_le_bytes());
    put(&mut img, 0x1fe, &0xAA55u16.to_le_bytes());
    put(&mut img, 0x200, &[0xEB, 0x66]); // jmp over the header (real-mode entry, unused)
    put(&mut img, 0x202, b"HdrS");
    put(&mut img, 0x206, &0x020Fu16.to_le_bytes()); // boot protocol 2.15
    put(&mut img, 0x211, &[0x01]); // loadflags: LOADED_HIGH
    put(&mut img, 0x214, &0x0010_0000u32.to_le_bytes()); // code32_start
    put(&mut img, 0x22c, &0x7FFF_FFFFu32.to_le_bytes()); // initrd_addr_max
    put(&mut img, 0x230, &0x0020_0000u32.to_le_bytes()); // kernel_alignment
    put(&mut img, 0x236, &0x0001u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(&mut img, 0x238, &2047u32.to_le_bytes()); // cmdline_size
    put(&mut img, 0x258, &0x0010_0000u64.to_le_bytes()); // pref_address
    put(&mut img, 0x260, &(bss_end - 0x0010_0000).to_le_bytes()); // init_size
    img.extend_from_slice(payload);
    img
}

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let src = Path::new("guest");
    for f in ["testkernel.c", "entry.S", "link.ld"] {
        println!("cargo:rerun-if-changed=guest/{f}");
    }
    let flags = [
        "-O2",
        "-ffreestanding",
        "-fno-pic",
        "-fno-pie",
        "-fno-stack-protector",
        "-mno-red-zone",
        "-mno-sse",
        "-mno-mmx",
        "-mno-80387",
        "-mcmodel=small",
        "-fno-asynchronous-unwind-tables",
        "-nostdlib",
        "-Wall",
        "-Werror",
    ];
    run(Command::new("gcc")
        .args(flags)
        .arg("-c")
        .arg(src.join("testkernel.c"))
        .arg("-o")
        .arg(out.join("testkernel.o")));
    run(Command::new("gcc")
        .args(flags)
        .arg("-c")
        .arg(src.join("entry.S"))
        .arg("-o")
        .arg(out.join("entry.o")));
    let elf = out.join("testkernel.elf");
    run(Command::new("ld")
        .args([
            "-nostdlib",
            "-static",
            "--build-id=none",
            "-z",
            "noexecstack",
            "-T",
        ])
        .arg(src.join("link.ld"))
        .arg(out.join("entry.o"))
        .arg(out.join("testkernel.o"))
        .arg("-o")
        .arg(&elf));
    let bin = out.join("testkernel.bin");
    run(Command::new("objcopy")
        .args(["-O", "binary", "--remove-section=.bss"])
        .arg(&elf)
        .arg(&bin));
    let payload = std::fs::read(&bin).unwrap();
    // The bss ends after the stack; take it from the symbol table via nm.
    let nm = Command::new("nm").arg(&elf).output().unwrap();
    let syms = String::from_utf8_lossy(&nm.stdout);
    let bss_end = syms
        .lines()
        .find(|l| l.ends_with(" stack_top"))
        .and_then(|l| u32::from_str_radix(l.split_whitespace().next()?, 16).ok())
        .expect("stack_top symbol");
    std::fs::write(out.join("testkernel.bzImage"), bzimage(&payload, bss_end)).unwrap();
}
