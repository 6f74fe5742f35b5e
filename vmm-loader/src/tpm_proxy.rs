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

use std::io::{IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use jek_tpm::swtpm::{ctrl, ctrl_command, Sockets};
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

/// `TPM_FAIL`, the answer to commands the proxy refuses.
const TPM_FAIL: u32 = 9;

/// A running proxy; the thread ends when QEMU closes its control connection.
#[derive(Debug)]
pub struct CtrlProxy {
    socket: PathBuf,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl CtrlProxy {
    /// Listens on `socket` (a path QEMU's `-chardev socket,path=` connects to) and serves
    /// one QEMU, forwarding to the swtpm's `sockets`.
    pub fn start(socket: &Path, sockets: &Sockets) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        let sockets = sockets.clone();
        let thread = std::thread::Builder::new()
            .name("tpm-ctrl-proxy".into())
            .spawn(move || serve(&listener, &sockets))?;
        Ok(CtrlProxy {
            socket: socket.to_path_buf(),
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits for the proxy to finish (after QEMU exited) and removes the socket.
    pub fn finish(mut self) -> std::io::Result<()> {
        // A VMM that failed before connecting leaves the thread in accept(): wake it with an
        // empty connection, which it reads as "closed".
        if self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            let _ = UnixStream::connect(&self.socket);
        }
        let result = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the TPM control proxy panicked")),
            None => Ok(()),
        };
        let _ = std::fs::remove_file(&self.socket);
        result
    }
}

fn serve(listener: &UnixListener, sockets: &Sockets) -> std::io::Result<()> {
    let (mut qemu, _) = listener.accept()?;
    let mut swtpm_ctrl = sockets.connect_ctrl()?;
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
                    let tpm_side = UnixStream::connect(sockets.data())?;
                    pumps.push(pump_pair(vm_side, tpm_side)?);
                    0u32.to_be_bytes().to_vec()
                }
                None => TPM_FAIL.to_be_bytes().to_vec(),
            },
            ctrl::INIT | ctrl::STOP | ctrl::SHUTDOWN => {
                tracing::debug!(code, "VMM asked to reset or stop the measured TPM: ignored");
                0u32.to_be_bytes().to_vec()
            }
            ctrl::SET_BUFFERSIZE => ctrl_command(&mut swtpm_ctrl, code, &0u32.to_be_bytes())?,
            ctrl::GET_CAPABILITY => {
                let resp = ctrl_command(&mut swtpm_ctrl, code, payload)?;
                let caps = <[u8; 8]>::try_from(resp.as_slice()).map_or(0, u64::from_be_bytes);
                (caps | ctrl::CAP_SET_DATAFD).to_be_bytes().to_vec()
            }
            c if ctrl::response_len(c).is_some() => ctrl_command(&mut swtpm_ctrl, c, payload)?,
            _ => TPM_FAIL.to_be_bytes().to_vec(),
        };
        qemu.write_all(&answer)?;
    }
    for p in pumps {
        let _ = p.join();
    }
    Ok(())
}

/// Copies bytes both ways between the VMM's end of the TPM command channel and the swtpm.
fn pump_pair(vm: UnixStream, tpm: UnixStream) -> std::io::Result<JoinHandle<()>> {
    let (mut vm_r, mut tpm_w) = (vm.try_clone()?, tpm.try_clone()?);
    let (mut tpm_r, mut vm_w) = (tpm, vm);
    let up = std::thread::Builder::new()
        .name("tpm-data-up".into())
        .spawn(move || {
            let _ = std::io::copy(&mut vm_r, &mut tpm_w);
            let _ = tpm_w.shutdown(Shutdown::Write);
        })?;
    std::thread::Builder::new()
        .name("tpm-data-down".into())
        .spawn(move || {
            let _ = std::io::copy(&mut tpm_r, &mut vm_w);
            let _ = vm_w.shutdown(Shutdown::Both);
            let _ = up.join();
        })
}
