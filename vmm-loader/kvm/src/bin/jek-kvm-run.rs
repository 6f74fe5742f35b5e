//! `jek-kvm-run`: boots a kernel image from files with jek's KVM VMM, without verification
//! or measurement. For developing the VMM and for its tests (each VM in its own process);
//! pods boot through `jek boot`, which only ever passes verified bytes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use jek_kvm::{run, KernelFormat, VmConfig, VmExit};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Kernel image.
    #[arg(long)]
    kernel: PathBuf,
    /// Kernel format.
    #[arg(long, value_parser = ["elf", "bzimage"], default_value = "bzimage")]
    format: String,
    /// Initramfs.
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Command line.
    #[arg(long, default_value = "console=ttyS0")]
    cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| eprintln!("error: cannot read {}: {e}", p.display()))
    };
    let Ok(kernel) = read(&args.kernel) else {
        return ExitCode::from(2);
    };
    let initramfs = match &args.initramfs {
        Some(p) => match read(p) {
            Ok(b) => b,
            Err(()) => return ExitCode::from(2),
        },
        None => Vec::new(),
    };
    let cfg = VmConfig {
        kernel: &kernel,
        format: if args.format == "elf" {
            KernelFormat::Elf
        } else {
            KernelFormat::BzImage
        },
        initramfs: &initramfs,
        cmdline: &args.cmdline,
        memory_mib: args.memory,
        vcpus: args.vcpus,
        run_as: jek_kvm::confine::default_run_as(),
    };
    match run(&cfg, std::io::stdout()) {
        Ok(r) => {
            eprintln!("jek-kvm-run: guest ended: {:?}", r.exit);
            if r.exit == VmExit::Reset {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(4)
            }
        }
        Err(e) => {
            let mut msg = format!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::from(3)
        }
    }
}
