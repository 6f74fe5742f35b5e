//! jek's KVM VMM boots the test kernel (bzImage and ELF) and the kernel reports exactly
//! what the VMM was asked to pass. Each VM runs in its own process (`jek-kvm-run`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use jek_testkernel::{fnv1a, Report, E820};

fn require_kvm() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: the KVM VMM tests need KVM (they do not skip)"
    );
}

struct Run {
    out: Output,
    report: Report,
}

fn boot(kernel: &[u8], format: &str, initramfs: &[u8], cmdline: &str, memory: u32) -> Run {
    require_kvm();
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("kernel");
    let i = dir.path().join("initramfs");
    std::fs::write(&k, kernel).unwrap();
    std::fs::write(&i, initramfs).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jek-kvm-run"));
    cmd.arg("--kernel").arg(&k).args(["--format", format]);
    if !initramfs.is_empty() {
        cmd.arg("--initramfs").arg(&i);
    }
    cmd.args(["--cmdline", cmdline, "--memory", &memory.to_string()]);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let report = Report::parse(&String::from_utf8_lossy(&out.stdout));
    Run { out, report }
}

fn run_with_timeout(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("VM did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn expected_e820(mem: u64) -> Vec<E820> {
    let mut v = vec![
        E820 {
            addr: 0,
            size: 0x9fc00,
            kind: 1,
        },
        E820 {
            addr: 0x10_0000,
            size: mem.min(0xC000_0000) - 0x10_0000,
            kind: 1,
        },
    ];
    if mem > 0xC000_0000 {
        v.push(E820 {
            addr: 1 << 32,
            size: mem - 0xC000_0000,
            kind: 1,
        });
    }
    v
}

fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn check(run: &Run, cmdline: &str, initramfs: &[u8], mem_mib: u32) {
    let r = &run.report;
    let stderr = String::from_utf8_lossy(&run.out.stderr);
    assert!(run.out.status.success(), "VM failed: {stderr}");
    assert!(
        r.done,
        "no complete report: {:?}",
        String::from_utf8_lossy(&run.out.stdout)
    );
    assert_eq!(r.boot_flag, 0xaa55);
    assert_eq!(r.loader, 0xff);
    assert_eq!(r.cmdline, cmdline);
    let mem = u64::from(mem_mib) << 20;
    assert_eq!(r.e820, expected_e820(mem));
    assert_eq!(r.initrd_size, initramfs.len() as u64);
    if !initramfs.is_empty() {
        assert_eq!(
            r.initrd_fnv1a,
            fnv1a(initramfs),
            "initramfs bytes differ in the guest"
        );
        assert_eq!(r.initrd_addr % 4096, 0);
        assert!(
            r.initrd_addr >= 0x10_0000 && r.initrd_addr + r.initrd_size <= mem.min(0xC000_0000)
        );
    } else {
        assert_eq!(r.initrd_addr, 0);
    }
}

#[test]
fn bzimage_receives_cmdline_e820_and_initramfs() {
    let initramfs = pseudo_random(64 * 1024, 7);
    let cmdline = "console=ttyS0 jek.pod=alpha quiet";
    let run = boot(jek_testkernel::BZIMAGE, "bzimage", &initramfs, cmdline, 64);
    check(&run, cmdline, &initramfs, 64);
}

#[test]
fn elf_receives_cmdline_e820_and_initramfs() {
    let initramfs = pseudo_random(12_345, 99);
    let cmdline = "root=/dev/null a=b";
    let run = boot(jek_testkernel::ELF, "elf", &initramfs, cmdline, 128);
    check(&run, cmdline, &initramfs, 128);
}

#[test]
fn large_memory_is_split_around_the_pci_hole() {
    let run = boot(jek_testkernel::BZIMAGE, "bzimage", &[], "x", 4096);
    check(&run, "x", &[], 4096);
    assert_eq!(run.report.e820.len(), 3);
}

#[test]
fn bad_requests_fail_with_the_reason() {
    let long = "a".repeat(3000);
    let run = boot(jek_testkernel::BZIMAGE, "bzimage", &[], &long, 64);
    assert_eq!(run.out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&run.out.stderr);
    assert!(err.contains("command line of 3001 bytes"), "{err}");

    let run = boot(
        jek_testkernel::BZIMAGE,
        "bzimage",
        &pseudo_random(80 << 20, 1),
        "x",
        64,
    );
    let err = String::from_utf8_lossy(&run.out.stderr);
    assert!(err.contains("does not fit in 64 MiB"), "{err}");

    let run = boot(b"not a kernel at all, far too short", "elf", &[], "x", 64);
    let err = String::from_utf8_lossy(&run.out.stderr);
    assert!(err.contains("cannot load the Elf kernel image"), "{err}");
}
