//! The pod's swtpm as QEMU's TPM, without letting QEMU reset it.
//!
//! QEMU's `tpm-emulator` backend speaks swtpm's control protocol over a Unix socket: it
//! hands over the TPM command channel as a file descriptor (`CMD_SET_DATAFD`) and, at every
//! machine reset, power-cycles the TPM (`CMD_INIT`), which would erase the measurements jek
//! made before the guest's first instruction. swtpm also cannot serve a TCP data channel
//! (which tss-esapi needs for measuring) and accept a data fd at the same time.
//!
//! So jek stands in between. QEMU connects to this proxy's socket (in the 0700 run
//! directory):
//! - `CMD_SET_DATAFD`: the fd QEMU sends is pumped to the swtpm's data socket;
//! - `CMD_INIT`, `CMD_STOP`, `CMD_SHUTDOWN`: answered with success and not forwarded. The
//!   TPM was initialised and started up before measuring and keeps its PCRs; it is jek,
//!   not the VMM, that ends its life;
//! - state-blob migration: refused (`TPM_FAIL`);
//! - `CMD_SET_BUFFERSIZE`: forwarded as a query (the size cannot change on a running TPM);
//! - everything else with a fixed-size answer: forwarded to the swtpm's control socket,
//!   with `PTM_CAP_SET_DATAFD` added to the capabilities.
//!
//! The proxy also owns the swtpm's one command connection, so that the host's attestation
//! agent can quote the TPM while the guest runs: it serves a second pair of sockets,
//! `side/data.sock` and `side/ctrl.sock` in the swtpm's private socket directory (mode
//! 0700, so only the pod's owner reaches them), laid out as the swtpm's own. Commands are
//! interleaved whole: each command (the guest's or a side client's) is written and its
//! response read under one lock, so no command ever sees another's bytes. The guest keeps
//! every TPM command it could issue before; side clients may not initialise, stop or shut
//! down the TPM.

use std::io::{IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use jek_tpm::bridge::{read_ctrl_command, read_message, RESPONSE_TIMEOUT};
use jek_tpm::swtpm::{ctrl, ctrl_command, Sockets};
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

/// `TPM_FAIL`, the answer to commands the proxy refuses.
const TPM_FAIL: u32 = 9;

/// A running proxy; the thread ends when QEMU closes its control connection.
#[derive(Debug)]
pub struct CtrlProxy {
    socket: PathBuf,
    waker: Waker,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    side: Option<Side>,
}

/// Ends a thread's wait in `accept()` on a listener without the filesystem: whoever stopped
/// the pod (a signal's or containerd's clean-up) may have removed the socket's directory
/// already, and a wake-up connection to a path that is gone would leave the thread, and
/// the boot that joins it, waiting for ever.
#[derive(Debug)]
struct Waker {
    /// A second handle on the listener.
    listener: UnixListener,
    /// Set before the wake-up, so that the woken accept() reads as an end, not a failure.
    woken: Arc<AtomicBool>,
}

impl Waker {
    fn new(listener: &UnixListener) -> std::io::Result<Self> {
        Ok(Waker {
            listener: listener.try_clone()?,
            woken: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether [`Waker::wake`] ended the wait.
    fn woken(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.woken)
    }

    /// Shutting a listening socket down for reading ends an accept() waiting on it
    /// (EINVAL), whether or not its path still exists.
    fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Read);
    }
}

/// Where the proxy listens for a VMM that runs as the invoking user: beside the swtpm's
/// sockets, in its private directory, so the path's length does not depend on the run
/// directory's (a Unix socket path has at most 107 bytes).
pub fn vmm_socket(swtpm: &Sockets) -> PathBuf {
    swtpm.dir.join("vmm-ctrl.sock")
}

/// The side sockets of a TPM served by a running proxy: `side/` in the swtpm's socket
/// directory, laid out as the swtpm's own.
pub fn side_sockets(swtpm: &Sockets) -> Sockets {
    Sockets {
        dir: swtpm.dir.join("side"),
    }
}

/// The swtpm's two connections, shared by the guest and the side clients: one command
/// and its response at a time on each.
#[derive(Debug)]
struct Shared {
    data: Mutex<UnixStream>,
    ctrl: Mutex<UnixStream>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn connect(sockets: &Sockets) -> std::io::Result<Self> {
        let data = UnixStream::connect(sockets.data())?;
        data.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
        Ok(Shared {
            data: Mutex::new(data),
            ctrl: Mutex::new(sockets.connect_ctrl()?),
        })
    }

    /// One TPM command and its whole response.
    fn transact(&self, command: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut tpm = lock(&self.data);
        tpm.write_all(command)?;
        read_message(&mut *tpm)?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the swtpm closed the command connection",
            )
        })
    }

    fn ctrl(&self, code: u32, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        ctrl_command(&mut *lock(&self.ctrl), code, payload)
    }
}

/// The side listeners and their threads.
#[derive(Debug)]
struct Side {
    sockets: Sockets,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<()>>,
}

impl Side {
    fn start(shared: &Arc<Shared>, swtpm: &Sockets) -> std::io::Result<Side> {
        let sockets = side_sockets(swtpm);
        let _ = std::fs::remove_dir_all(&sockets.dir);
        std::fs::create_dir(&sockets.dir)?;
        std::fs::set_permissions(
            &sockets.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let mut threads = Vec::new();
        let mut wakers = Vec::new();
        for (path, data) in [(sockets.data(), true), (sockets.ctrl(), false)] {
            let listener = UnixListener::bind(&path)?;
            let waker = Waker::new(&listener)?;
            let (shared, stop) = (shared.clone(), waker.woken());
            wakers.push(waker);
            threads.push(
                std::thread::Builder::new()
                    .name("tpm-side".into())
                    .spawn(move || side_accept(&listener, &shared, data, &stop))?,
            );
        }
        Ok(Side {
            sockets,
            wakers,
            threads,
        })
    }

    fn finish(mut self) {
        for waker in self.wakers.drain(..) {
            waker.wake();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.sockets.dir);
    }
}

fn side_accept(listener: &UnixListener, shared: &Arc<Shared>, data: bool, stop: &AtomicBool) {
    loop {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("tpm-side-conn".into())
            .spawn(move || {
                let result = if data {
                    serve_commands(client, &shared)
                } else {
                    serve_side_ctrl(client, &shared)
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "a side connection to the pod's TPM ended");
                }
            });
    }
}

/// One client's TPM commands, each forwarded whole through the shared connection.
fn serve_commands(mut client: UnixStream, shared: &Shared) -> std::io::Result<()> {
    let result = (|| {
        while let Some(cmd) = read_message(&mut client)? {
            let resp = shared.transact(&cmd)?;
            client.write_all(&resp)?;
        }
        Ok(())
    })();
    let _ = client.shutdown(Shutdown::Both);
    result
}

/// A side client's control commands: queries and locality are forwarded; initialising,
/// stopping or shutting down the guest's TPM is refused.
fn serve_side_ctrl(mut client: UnixStream, shared: &Shared) -> std::io::Result<()> {
    while let Some((c, payload)) = read_ctrl_command(&mut client)? {
        let answer = match c {
            ctrl::GET_CAPABILITY
            | ctrl::GET_TPMESTABLISHED
            | ctrl::GET_CONFIG
            | ctrl::SET_LOCALITY
            | ctrl::CANCEL_TPM_CMD => shared.ctrl(c, &payload)?,
            _ => {
                tracing::warn!(
                    code = c,
                    "a side client asked to reset or stop the guest's TPM: refused"
                );
                let len = ctrl::response_len(c).unwrap_or(4);
                let mut a = vec![0u8; len];
                if let Some(head) = a.get_mut(..4) {
                    head.copy_from_slice(&TPM_FAIL.to_be_bytes());
                }
                a
            }
        };
        client.write_all(&answer)?;
    }
    Ok(())
}

impl CtrlProxy {
    /// Listens on `socket` (a path QEMU's `-chardev socket,path=` connects to) and serves
    /// one QEMU, forwarding to the swtpm's `sockets`.
    pub fn start(socket: &Path, sockets: &Sockets) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let waker = Waker::new(&listener)?;
        let shared = Arc::new(Shared::connect(sockets)?);
        let side = Side::start(&shared, sockets)?;
        let woken = waker.woken();
        let thread = std::thread::Builder::new()
            .name("tpm-ctrl-proxy".into())
            .spawn(move || serve(&listener, &shared, &woken))?;
        Ok(CtrlProxy {
            socket: socket.to_path_buf(),
            waker,
            thread: Some(thread),
            side: Some(side),
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits for the proxy to finish (after QEMU exited) and removes the socket.
    pub fn finish(mut self) -> std::io::Result<()> {
        // A VMM that failed before connecting leaves the thread in accept().
        if self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            self.waker.wake();
        }
        let result = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the TPM control proxy panicked")),
            None => Ok(()),
        };
        let _ = std::fs::remove_file(&self.socket);
        if let Some(side) = self.side.take() {
            side.finish();
        }
        result
    }
}

impl Drop for CtrlProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        if let Some(side) = self.side.take() {
            side.finish();
        }
    }
}

fn serve(listener: &UnixListener, shared: &Arc<Shared>, woken: &AtomicBool) -> std::io::Result<()> {
    let (mut qemu, _) = match listener.accept() {
        Ok(c) => c,
        // No VMM ever connected: nothing to serve.
        Err(_) if woken.load(Ordering::SeqCst) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut pumps = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let received = recvmsg(
            &qemu,
            &mut [IoSliceMut::new(&mut buf)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        let n = received.bytes;
        if n == 0 {
            break;
        }
        let mut fds = Vec::new();
        for msg in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = msg {
                fds.extend(rights);
            }
        }
        let head = buf.get(..n).unwrap_or(&[]);
        let Some(code) = head.get(..4).and_then(|c| <[u8; 4]>::try_from(c).ok()) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "short control command from the VMM",
            ));
        };
        let code = u32::from_be_bytes(code);
        let payload = head.get(4..).unwrap_or(&[]);
        let answer = match code {
            ctrl::SET_DATAFD => match fds.pop() {
                Some(fd) => {
                    let vm_side = UnixStream::from(fd);
                    let shared = shared.clone();
                    pumps.push(std::thread::Builder::new().name("tpm-guest".into()).spawn(
                        move || {
                            if let Err(e) = serve_commands(vm_side, &shared) {
                                tracing::debug!(error = %e, "the guest's TPM channel ended");
                            }
                        },
                    )?);
                    0u32.to_be_bytes().to_vec()
                }
                None => TPM_FAIL.to_be_bytes().to_vec(),
            },
            ctrl::INIT | ctrl::STOP | ctrl::SHUTDOWN => {
                tracing::debug!(code, "VMM asked to reset or stop the measured TPM: ignored");
                0u32.to_be_bytes().to_vec()
            }
            ctrl::SET_BUFFERSIZE => shared.ctrl(code, &0u32.to_be_bytes())?,
            ctrl::GET_CAPABILITY => {
                let resp = shared.ctrl(code, payload)?;
                let caps = <[u8; 8]>::try_from(resp.as_slice()).map_or(0, u64::from_be_bytes);
                (caps | ctrl::CAP_SET_DATAFD).to_be_bytes().to_vec()
            }
            c if ctrl::response_len(c).is_some() => shared.ctrl(c, payload)?,
            _ => TPM_FAIL.to_be_bytes().to_vec(),
        };
        qemu.write_all(&answer)?;
    }
    for p in pumps {
        let _ = p.join();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vmm_socket_does_not_grow_with_the_run_directory() {
        // What Sockets::create makes: /tmp/jek-tpm-XXXXXX (TMPDIR may be longer, but is
        // the host's, not the pod's).
        let swtpm = Sockets {
            dir: std::env::temp_dir().join("jek-tpm-abcdef"),
        };
        let socket = vmm_socket(&swtpm);
        assert!(socket.starts_with(&swtpm.dir));
        assert!(socket.as_os_str().len() < 108, "{}", socket.display());
    }
}
