//! The vCPU thread's seccomp filter kills the process on a system call it does not allow,
//! and lets through the ones the vCPU loop makes. Each case runs in a child process (this
//! test binary, re-executed with `JEK_SECCOMP_CASE` set), because a killed process is the
//! expected outcome.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;

const CASE: &str = "JEK_SECCOMP_CASE";

/// In the child: confine this thread and do what the case says. Returns normally only in
/// the parent (no case set).
fn child_case() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    jek_kvm::confine::confine_this_thread(None).unwrap();
    match case.as_str() {
        // Allowed: writing to stderr, allocating.
        "allowed" => {
            let v: Vec<u8> = vec![7; 1 << 20];
            eprintln!("allowed calls work ({} bytes)", v.len());
            std::process::exit(0);
        }
        // Forbidden: opening a file (openat).
        "open" => {
            let _ = std::fs::File::open("/etc/hostname");
            std::process::exit(0);
        }
        // Forbidden: an ioctl that is not KVM's (TCGETS, request type 'T').
        "tty-ioctl" => {
            use std::io::IsTerminal as _;
            let _ = std::io::stdin().is_terminal();
            std::process::exit(0);
        }
        // Forbidden: starting a program (clone/execve).
        "exec" => {
            let _ = Command::new("/bin/true").status();
            std::process::exit(0);
        }
        other => panic!("unknown case {other}"),
    }
}

fn run_case(case: &str) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cases", "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .status()
        .unwrap()
}

#[test]
fn cases() {
    child_case();
    // Parent: each forbidden call kills the child with SIGSYS; the allowed ones do not.
    assert_eq!(run_case("allowed").code(), Some(0));
    for case in ["open", "tty-ioctl", "exec"] {
        let status = run_case(case);
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{case}: {status:?}");
    }
}
