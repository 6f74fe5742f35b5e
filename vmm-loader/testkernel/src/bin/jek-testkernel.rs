//! Writes the test kernel images to a directory, for benchmarks and manual runs:
//! `jek-testkernel DIR` creates `DIR/testkernel.bzImage` and `DIR/testkernel.elf`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: jek-testkernel DIR");
        return ExitCode::from(2);
    };
    let dir = Path::new(&dir);
    for (name, bytes) in [
        ("testkernel.bzImage", jek_testkernel::BZIMAGE),
        ("testkernel.elf", jek_testkernel::ELF),
    ] {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(3);
        }
    }
    ExitCode::SUCCESS
}
