//! One swtpm per pod: a child process with its state in the pod's run directory, serving
//! its data and control channels on Unix sockets (mode 0600) in a private directory (mode
//! 0700, created with `mkdtemp`), so that no other user of the host can reach it. This
//! process talks to it through a [`Bridge`](crate::bridge::Bridge) that only it can use.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The swtpm program looked up on `PATH` unless the caller names another.
pub const DEFAULT_PROGRAM: &str = "swtpm";

/// How long a new swtpm may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a swtpm could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    /// The state directory cannot be created or written.
    #[error("cannot prepare the swtpm state directory {path}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program cannot be started (typically: not installed).
    #[error(
        "cannot run {program}: install swtpm (Debian: apt-get install swtpm swtpm-tools), \
         or name it with JEK_SWTPM"
    )]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The private socket directory cannot be created.
    #[error("cannot create a private socket directory for the swtpm")]
    SocketDir(#[source] std::io::Error),
    /// The swtpm exited during start-up.
    #[error("swtpm exited during start-up ({status}); its log {log} ends with: {tail}")]
    Exited {
        /// Exit status.
        status: std::process::ExitStatus,
        /// The log file.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// The swtpm did not accept connections in time.
    #[error("swtpm (pid {pid}) did not accept connections on {socket} within {secs} s")]
    NotReady {
        /// Process id.
        pid: u32,
        /// Its control socket.
        socket: PathBuf,
        /// Seconds waited.
        secs: u64,
    },
    /// A control-channel command failed.
    #[error(
        "swtpm control command {command} on {socket} failed (is the pod's TPM still running?)"
    )]
    Control {
        /// Command code.
        command: u32,
        /// The control socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where a swtpm listens: a private directory holding its data and control sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sockets {
    /// The directory (mode 0700).
    pub dir: PathBuf,
}

impl Sockets {
    /// The TPM command channel.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data.sock")
    }

    /// The control channel (swtpm_ioctls(3) over a socket).
    pub fn ctrl(&self) -> PathBuf {
        self.dir.join("ctrl.sock")
    }

    /// A connection to the control channel, with a response timeout.
    pub fn connect_ctrl(&self) -> std::io::Result<UnixStream> {
        let s = UnixStream::connect(self.ctrl())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(s)
    }

    /// A private directory under the system's temporary directory: created with `mkdtemp`
    /// (so its name cannot be predicted or pre-planted) with mode 0700. Unix socket paths
    /// are limited to 108 bytes, which a run directory deep in a tree can exceed.
    fn create() -> std::io::Result<Sockets> {
        let dir = tempfile::Builder::new()
            .prefix("jek-tpm-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?
            .keep();
        Ok(Sockets { dir })
    }
}

/// A running swtpm. Dropping it stops the process and removes its sockets unless
/// [`Swtpm::keep`] was called.
#[derive(Debug)]
pub struct Swtpm {
    child: Option<Child>,
    pid: u32,
    sockets: Sockets,
    state_dir: PathBuf,
}

/// Where a swtpm kept for later (attestation) can be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSwtpm {
    /// Process id.
    pub pid: u32,
    /// Its sockets.
    pub sockets: Sockets,
    /// State directory.
    pub state_dir: PathBuf,
}

fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail.join(" | ")
    }
}

/// How long a swtpm lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// It dies with the thread that started it, even when that is killed with SIGKILL
    /// (util-linux `setpriv --pdeathsig`): a pod's TPM that is not kept.
    WithStarter,
    /// It outlives the process that started it: a TPM kept for attestation, stopped
    /// through the registration store.
    Kept,
}

impl Swtpm {
    /// Starts a TPM 2.0 swtpm with its state in `state_dir` on private sockets, already
    /// initialised and started up (`TPM2_Startup(SU_CLEAR)`), and waits until it accepts
    /// connections. Its log is `state_dir/swtpm.log`.
    pub fn start(state_dir: &Path) -> Result<Self, SwtpmError> {
        Self::start_program(Path::new(DEFAULT_PROGRAM), state_dir, Lifetime::Kept)
    }

    /// [`Swtpm::start`] with an explicit swtpm program and lifetime. `state_dir` is
    /// created with mode 0700.
    pub fn start_program(
        program: &Path,
        state_dir: &Path,
        lifetime: Lifetime,
    ) -> Result<Self, SwtpmError> {
        let program = program.to_path_buf();
        let dir_err = |source| SwtpmError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(dir_err)?;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(dir_err)?;
        let sockets = Sockets::create().map_err(SwtpmError::SocketDir)?;
        let log = state_dir.join("swtpm.log");
        let log_file = File::create(&log).map_err(dir_err)?;
        let mut cmd = match lifetime {
            Lifetime::Kept => Command::new(&program),
            Lifetime::WithStarter => {
                // setpriv sets the signal and then runs swtpm in its place (same pid).
                let mut c = Command::new("setpriv");
                c.args(["--pdeathsig=KILL", "--"]).arg(&program);
                c
            }
        };
        cmd.arg("socket")
            .arg("--tpm2")
            .arg("--server")
            .arg(unixio(&sockets.data()))
            .arg("--ctrl")
            .arg(unixio(&sockets.ctrl()))
            .arg("--tpmstate")
            .arg(format!("dir={}", state_dir.display()))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            // Its own process group: a Ctrl-C meant for jek does not kill a TPM that is
            // kept for attestation; jek stops it itself otherwise.
            .process_group(0);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                let _ = std::fs::remove_dir_all(&sockets.dir);
                return Err(SwtpmError::Spawn { program, source });
            }
        };
        let mut tpm = Swtpm {
            pid: child.id(),
            child: Some(child),
            sockets,
            state_dir: state_dir.to_path_buf(),
        };
        tpm.wait_ready(&log)?;
        tracing::debug!(pid = tpm.pid, sockets = %tpm.sockets.dir.display(), "swtpm ready");
        Ok(tpm)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), SwtpmError> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    // Gone before it was ready: nothing to stop, but its socket
                    // directory is still ours to remove.
                    self.child = None;
                    let _ = std::fs::remove_dir_all(&self.sockets.dir);
                    return Err(SwtpmError::Exited {
                        status,
                        log: log.to_path_buf(),
                        tail: tail_of(log),
                    });
                }
            }
            if UnixStream::connect(self.sockets.data()).is_ok() {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(SwtpmError::NotReady {
                    pid: self.pid,
                    socket: self.sockets.data(),
                    secs: READY_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its sockets.
    pub fn sockets(&self) -> &Sockets {
        &self.sockets
    }

    /// State directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A TPM connection from this process.
    pub fn connect(&self) -> Result<crate::Tpm, crate::TpmError> {
        crate::Tpm::connect_swtpm(&self.sockets)
    }

    /// Leaves the swtpm running after this handle is gone (for attestation); returns where
    /// to find it.
    pub fn keep(mut self) -> KeptSwtpm {
        self.child = None;
        KeptSwtpm {
            pid: self.pid,
            sockets: self.sockets.clone(),
            state_dir: self.state_dir.clone(),
        }
    }

    /// Stops the swtpm: an orderly CMD_SHUTDOWN on its control channel, then waits; kills it
    /// if it does not exit within a second.
    pub fn stop(mut self) -> Result<(), SwtpmError> {
        let result = shutdown(&self.sockets);
        self.reap();
        let _ = std::fs::remove_dir_all(&self.sockets.dir);
        result
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&self.sockets.dir);
        }
    }
}

/// Whether process `pid` still runs: it has a `/proc` entry and is not a zombie (a kept
/// swtpm's parent may never reap it; a zombie has closed its sockets).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// swtpm's option for a Unix socket only its owner may connect to.
fn unixio(path: &Path) -> String {
    format!("type=unixio,path={},mode=0600", path.display())
}

/// The tss-esapi TCTI string of a swtpm on 127.0.0.1:`port` (control on `port + 1`).
pub fn tcti_for(port: u16) -> String {
    format!("swtpm:host=127.0.0.1,port={port}")
}

/// Control-channel command codes (swtpm_ioctls(3)); the wire format is the 4-byte
/// big-endian code followed by the request structure, answered by the response structure.
pub mod ctrl {
    /// Capability bits (u64 response, no result code).
    pub const GET_CAPABILITY: u32 = 1;
    /// Initialise (power-cycle) the TPM.
    pub const INIT: u32 = 2;
    /// Shut the TPM down and end the process.
    pub const SHUTDOWN: u32 = 3;
    /// Read the TPM-established flag.
    pub const GET_TPMESTABLISHED: u32 = 4;
    /// Set the locality of following commands.
    pub const SET_LOCALITY: u32 = 5;
    /// Cancel the running TPM command.
    pub const CANCEL_TPM_CMD: u32 = 9;
    /// Write volatile state to disk.
    pub const STORE_VOLATILE: u32 = 10;
    /// Reset the TPM-established flag.
    pub const RESET_TPMESTABLISHED: u32 = 11;
    /// Read a state blob (migration).
    pub const GET_STATEBLOB: u32 = 12;
    /// Write a state blob (migration).
    pub const SET_STATEBLOB: u32 = 13;
    /// Stop the TPM without ending the process.
    pub const STOP: u32 = 14;
    /// Read the configuration flags.
    pub const GET_CONFIG: u32 = 15;
    /// Hand over the TPM command channel as a file descriptor (Unix sockets only).
    pub const SET_DATAFD: u32 = 16;
    /// Query or set the I/O buffer size.
    pub const SET_BUFFERSIZE: u32 = 17;
    /// `PTM_CAP_SET_DATAFD`.
    pub const CAP_SET_DATAFD: u64 = 1 << 12;

    /// Length of the response to `command`, for the commands with a fixed-size response.
    pub fn response_len(command: u32) -> Option<usize> {
        match command {
            GET_CAPABILITY | GET_TPMESTABLISHED | GET_CONFIG => Some(8),
            INIT | SHUTDOWN | SET_LOCALITY | CANCEL_TPM_CMD | STORE_VOLATILE
            | RESET_TPMESTABLISHED | STOP | SET_DATAFD => Some(4),
            SET_BUFFERSIZE => Some(16),
            _ => None,
        }
    }
}

/// Sends one control command over `stream` and reads its fixed-size response.
pub fn ctrl_command(
    stream: &mut (impl Read + Write),
    command: u32,
    request: &[u8],
) -> std::io::Result<Vec<u8>> {
    let len = ctrl::response_len(command).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("control command {command} has no fixed-size response"),
        )
    })?;
    let mut msg = command.to_be_bytes().to_vec();
    msg.extend_from_slice(request);
    stream.write_all(&msg)?;
    let mut resp = vec![0; len];
    stream.read_exact(&mut resp)?;
    Ok(resp)
}

fn shutdown(sockets: &Sockets) -> Result<(), SwtpmError> {
    let err = |source| SwtpmError::Control {
        command: ctrl::SHUTDOWN,
        socket: sockets.ctrl(),
        source,
    };
    let mut s = sockets.connect_ctrl().map_err(err)?;
    ctrl_command(&mut s, ctrl::SHUTDOWN, &[]).map_err(err)?;
    Ok(())
}

/// Stops a swtpm that was kept: CMD_SHUTDOWN on its control socket, then its socket
/// directory is removed.
pub fn stop_kept(kept: &KeptSwtpm) -> Result<(), SwtpmError> {
    let result = shutdown(&kept.sockets);
    // swtpm unlinks its own sockets as it exits: removing the directory while it does
    // fails half-way and left it behind. Wait for the process (not our child: its
    // /proc entry goes when its parent reaps it), then remove, once more if raced.
    let deadline = Instant::now() + Duration::from_secs(2);
    while running(kept.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(&kept.sockets.dir);
        if std::fs::symlink_metadata(&kept.sockets.dir).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ctrl_response_lengths_follow_the_protocol() {
        assert_eq!(ctrl::response_len(ctrl::GET_CAPABILITY), Some(8));
        assert_eq!(ctrl::response_len(ctrl::SET_BUFFERSIZE), Some(16));
        assert_eq!(ctrl::response_len(ctrl::GET_STATEBLOB), None);
    }
}
