//! [`Cleanup`]: the processes and directories a boot started that must not outlive an
//! interrupted `jek boot` (QEMU, and the swtpm unless it is kept). The binary's signal
//! handler runs it on SIGINT, SIGTERM or SIGHUP; a boot that ends normally removes its
//! entries itself. (The TPMs kept for attestation are the host attestation's:
//! `jek_host_attest::kept`.)

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
struct Entry {
    id: u64,
    pid: u32,
    dir: Option<PathBuf>,
}

/// What an interrupted boot must stop. Cloning shares the list.
#[derive(Debug, Clone, Default)]
pub struct Cleanup {
    inner: Arc<Mutex<(u64, Vec<Entry>)>>,
}

impl Cleanup {
    /// Stop process `pid` (and remove `dir`) if the boot is interrupted. Returns a token
    /// for [`Cleanup::forget`].
    pub fn track(&self, pid: u32, dir: Option<PathBuf>) -> u64 {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.0 += 1;
        let id = g.0;
        g.1.push(Entry { id, pid, dir });
        id
    }

    /// The process was stopped, or handed over (a kept TPM): nothing to do for it.
    pub fn forget(&self, token: u64) {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.1.retain(|e| e.id != token);
    }

    /// Kills every tracked process (SIGKILL, newest first) and removes its directory.
    /// Returns how many processes were stopped.
    pub fn run(&self) -> usize {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stopped = 0;
        while let Some(e) = g.1.pop() {
            let pid = i32::try_from(e.pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
                    stopped += 1;
                }
            }
            if let Some(d) = e.dir {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_boot_kills_what_it_tracked_and_nothing_it_forgot() {
        let mut a = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap_or_else(|e| panic!("sleep: {e}"));
        let mut b = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap_or_else(|e| panic!("sleep: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")).keep();
        let c = Cleanup::default();
        c.track(a.id(), Some(dir.clone()));
        let tb = c.track(b.id(), None);
        c.forget(tb);
        assert_eq!(c.run(), 1);
        assert!(
            a.wait().is_ok_and(|s| !s.success()),
            "the tracked process was killed"
        );
        assert!(!dir.exists());
        assert!(
            b.try_wait().is_ok_and(|s| s.is_none()),
            "the forgotten one runs on"
        );
        let _ = b.kill();
        let _ = b.wait();
    }
}
