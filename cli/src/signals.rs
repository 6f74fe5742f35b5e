//! The process's answer to SIGINT, SIGTERM and SIGHUP: libraries say how to clean up
//! (`jek_builder::kernel::interrupt_builds`, `jek_loader::lifecycle::Cleanup::run`); only
//! the binary decides that the process ends, with 128 + the signal, as a shell reports a
//! process it killed.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// On the first SIGINT, SIGTERM or SIGHUP, runs `cleanup` with the signal's number on a
/// thread of its own, then exits with 128 + the signal.
pub fn on_termination(cleanup: impl FnOnce(i32) + Send + 'static) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("jek-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                cleanup(sig);
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}
