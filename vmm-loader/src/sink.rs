//! Where a boot reports to: the console's lines, the caller's start (for timings), the
//! processes an interruption must stop, and the moment the VM runs.

use std::path::PathBuf;
use std::time::Instant;

use crate::console::ConsoleSink;
use crate::lifecycle::Cleanup;

/// Where a boot reports to.
#[derive(Debug, Clone)]
pub struct BootSink {
    /// Do not copy the console to stdout.
    pub quiet: bool,
    /// Hand console lines to this sink instead of stdout.
    pub console: Option<ConsoleSink>,
    /// When the caller started (before it read and verified the bundle): timings are
    /// also reported from this instant.
    pub started: Instant,
    /// Where the boot records the processes an interruption must stop (the caller's
    /// signal handler runs it).
    pub cleanup: Cleanup,
    /// Called once the VM runs, on the boot's thread (keep it short: spawn for slow work),
    /// with the pod's registration for attestation: the moment its TPM answers its host's
    /// agent (through the loader's proxy under QEMU), so that a verifier may be asked to
    /// register it.
    pub on_running: Option<RunningHook>,
}

impl BootSink {
    /// A sink that copies the console to stdout, tracks clean-up in a list of its own and
    /// calls nothing when the VM runs; `started` is when the caller started.
    pub fn new(started: Instant) -> Self {
        BootSink {
            quiet: false,
            console: None,
            started,
            cleanup: Cleanup::default(),
            on_running: None,
        }
    }
}

/// What [`BootSink::on_running`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The pod's name.
    pub pod: String,
    /// Its registration in the host's store (for the agent), when its TPM is kept for
    /// attestation.
    pub registration: Option<String>,
    /// Its run directory.
    pub run_dir: PathBuf,
    /// Where the pod's swtpm listens (its proxy serves the side sockets in it while the VM
    /// runs): what a container joining the pod is measured into ([`crate::late`]).
    pub tpm: Option<jek_tpm::swtpm::Sockets>,
    /// The host's end of the pod sandbox's agent channel (`jek_pod::agent`), connected by
    /// the VMM before the guest runs; empty for a pod that is no sandbox.
    pub agent: AgentChannel,
}

/// The host's end of a pod sandbox's agent channel, for the running hook to take once.
#[derive(Debug, Clone, Default)]
pub struct AgentChannel(std::sync::Arc<std::sync::Mutex<Option<std::os::unix::net::UnixStream>>>);

impl AgentChannel {
    /// A channel holding `stream`.
    pub fn new(stream: Option<std::os::unix::net::UnixStream>) -> Self {
        AgentChannel(std::sync::Arc::new(std::sync::Mutex::new(stream)))
    }

    /// The stream, the first time it is asked for.
    pub fn take(&self) -> Option<std::os::unix::net::UnixStream> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl PartialEq for AgentChannel {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for AgentChannel {}

/// A callback run once a pod's VM runs.
#[derive(Clone)]
pub struct RunningHook(std::sync::Arc<dyn Fn(&Running) + Send + Sync>);

impl RunningHook {
    /// A hook that calls `f`.
    pub fn new(f: impl Fn(&Running) + Send + Sync + 'static) -> Self {
        RunningHook(std::sync::Arc::new(f))
    }

    /// Calls it.
    pub fn call(&self, running: &Running) {
        (self.0)(running);
    }
}

impl std::fmt::Debug for RunningHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunningHook")
    }
}
