//! Records the commit jek is built from, for the provenance's `builder.version.commit`.

use std::path::Path;
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}-dirty")
            } else {
                c
            }
        }
        _ => "unknown".into(),
    };
    println!("cargo:rustc-env=JEK_GIT_COMMIT={commit}");
    for f in [".git/HEAD", ".git/index", ".git/packed-refs"] {
        if root.join(f).exists() {
            println!("cargo:rerun-if-changed=../{f}");
        }
    }
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if root.join(".git").join(&head).exists() {
            println!("cargo:rerun-if-changed=../.git/{head}");
        }
    }
}
