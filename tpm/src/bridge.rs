//! The loopback bridge: how this process reaches a swtpm that listens only on Unix sockets.
//!
//! A pod's swtpm serves its data and control channels on Unix sockets in a directory only
//! the pod's owner can enter (mode 0700), so no other user of the host can reset, extend,
//! quote or read out the TPM. tss-esapi 7.x can only reach a swtpm over TCP (its
//! `swtpm:path=` form silently becomes `localhost:2321`), so while this process talks to
//! the TPM it opens a port pair on 127.0.0.1 and forwards it to the sockets. Any local user
//! can connect to a loopback port, so every accepted connection is checked before a byte
//! is forwarded: the connecting socket must be one of *this process's* file descriptors
//! (its inode is asked of the kernel with one sock_diag lookup by address and port, or
//! read from `/proc/net/tcp` where netlink is not allowed, and looked up among
//! `/proc/self/fd`). Any other connection is closed at once.
//!
//! Both channels are forwarded command by command (a TPM command header gives its size; a
//! control command's code gives its request and response sizes), and each response must
//! arrive within the timeout: a TPM that accepts and never answers is an error within
//! seconds, not a hung pod. Control commands a TCTI never sends (state-blob transfer,
//! data-fd hand-over) are not forwarded at all.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the TPM may take to answer one command.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest TPM command or response forwarded (TPM 2.0 buffers are 4 KiB).
pub const MAX_MESSAGE: usize = 64 << 10;
/// TPM command and response headers: tag (2), size (4), code (4).
const HEADER: usize = 10;

/// A bridge from a loopback port pair to a swtpm's Unix sockets, for this process only.
/// Dropping it closes the ports.
#[derive(Debug)]
pub struct Bridge {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn free_pair() -> std::io::Result<(TcpListener, TcpListener)> {
    let mut last = None;
    for _ in 0..32 {
        let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let Some(next) = a.local_addr()?.port().checked_add(1) else {
            continue;
        };
        match TcpListener::bind((Ipv4Addr::LOCALHOST, next)) {
            Ok(b) => return Ok((a, b)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port pair on 127.0.0.1")))
}

impl Bridge {
    /// Forwards 127.0.0.1:`port()` to `data` and `port() + 1` to `ctrl`.
    pub fn start(data: &Path, ctrl: &Path) -> std::io::Result<Bridge> {
        let (data_l, ctrl_l) = free_pair()?;
        let port = data_l.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (listener, target, framed) in [(data_l, data, true), (ctrl_l, ctrl, false)] {
            let stop = stop.clone();
            let target = target.to_path_buf();
            threads.push(
                std::thread::Builder::new()
                    .name("tpm-bridge".into())
                    .spawn(move || accept_loop(&listener, &target, framed, &stop))?,
            );
        }
        Ok(Bridge {
            port,
            stop,
            threads,
        })
    }

    /// The data port (the control port is `port + 1`).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake both accept() calls; they see the flag and return.
        for p in [self.port, self.port.saturating_add(1)] {
            let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, p));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: &Path, framed: bool, stop: &AtomicBool) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        let Ok((client, peer)) = listener.accept() else {
            return;
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match peer_of(local, peer) {
            Ok(Peer::ThisProcess) => {}
            Ok(Peer::Gone) => {
                // Closed before it could be checked (a TCTI probing the port): nothing to
                // forward, and nobody to warn about.
                tracing::debug!(%peer, "a connection to the TPM bridge closed before its check");
                continue;
            }
            Ok(Peer::Other) | Err(_) => {
                tracing::warn!(%peer, "refused a connection to the TPM bridge from another process");
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
        }
        let target = target.to_path_buf();
        let _ = std::thread::Builder::new()
            .name("tpm-bridge-conn".into())
            .spawn(move || {
                if let Ok(tpm) = UnixStream::connect(&target) {
                    let _ = if framed {
                        forward_commands(client, tpm)
                    } else {
                        forward_ctrl(client, tpm)
                    };
                }
            });
    }
}

/// `/proc/net/tcp` spells 127.0.0.1:port as `0100007F:PORT` (address in host order).
fn proc_addr(addr: SocketAddr) -> Option<String> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    let ip = u32::from_le_bytes(v4.ip().octets());
    Some(format!("{ip:08X}:{:04X}", v4.port()))
}

/// Who holds the socket that connected from `peer` to a listener at `local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// One of this process's file descriptors.
    ThisProcess,
    /// Some other process (of any user).
    Other,
    /// Nobody any more: it was closed (its table entry is gone or has no inode).
    Gone,
}

/// Whether the socket connected from `peer` to our listener at `local` is one of this
/// process's file descriptors.
pub fn peer_is_this_process(local: SocketAddr, peer: SocketAddr) -> std::io::Result<bool> {
    Ok(peer_of(local, peer)? == Peer::ThisProcess)
}

/// The inode of the TCP socket whose local end is `socket` and remote end `remote`, asked
/// of the kernel with one sock_diag request (`NETLINK_SOCK_DIAG`, an exact lookup by the
/// 4-tuple): `None` when no such socket exists. The cost does not grow with the number of
/// sockets on the host, unlike reading `/proc/net/tcp` (which a TCTI that opens a
/// connection per command fills with thousands of TIME_WAIT entries).
fn diag_inode(socket: SocketAddr, remote: SocketAddr) -> std::io::Result<Option<u64>> {
    use rustix::net::{netlink, recv, sendto, socket_with, AddressFamily, RecvFlags, SendFlags};
    use rustix::net::{SocketFlags, SocketType};
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLMSG_ERROR: u16 = 2;
    let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (socket, remote) else {
        return Err(std::io::Error::other("only IPv4 loopback is bridged"));
    };
    let fd = socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    let mut req = Vec::with_capacity(72);
    req.extend_from_slice(&72u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
                                                // inet_diag_req_v2: AF_INET, IPPROTO_TCP, no extensions, every state.
    req.extend_from_slice(&[2, 6, 0, 0]);
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid: ports and addresses in network order, no interface, no cookie.
    req.extend_from_slice(&local.port().to_be_bytes());
    req.extend_from_slice(&remote.port().to_be_bytes());
    for ip in [local.ip(), remote.ip()] {
        req.extend_from_slice(&ip.octets());
        req.extend_from_slice(&[0; 12]);
    }
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    sendto(
        &fd,
        &req,
        SendFlags::empty(),
        &netlink::SocketAddrNetlink::new(0, 0),
    )?;
    let mut buf = [0u8; 512];
    let (_, n) = recv(&fd, &mut buf, RecvFlags::empty())?;
    let msg = buf.get(..n).unwrap_or(&[]);
    let u16_at = |o: usize| msg.get(o..o + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        msg.get(o..o + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    match u16_at(4) {
        // An error message: ENOENT means no such socket; anything else is a failure.
        Some(NLMSG_ERROR) => match u32_at(16).map(|e| i32::from_ne_bytes(e.to_ne_bytes())) {
            Some(-2) => Ok(None),
            Some(e) => Err(std::io::Error::from_raw_os_error(-e)),
            None => Err(std::io::Error::other("short sock_diag error")),
        },
        // nlmsghdr (16), then inet_diag_msg: 4 bytes, the sockid (48), expires, rqueue,
        // wqueue, uid, inode.
        Some(SOCK_DIAG_BY_FAMILY) => match u32_at(16 + 4 + 48 + 16) {
            Some(0) => Ok(None),
            Some(inode) => Ok(Some(u64::from(inode))),
            None => Err(std::io::Error::other("short sock_diag answer")),
        },
        _ => Err(std::io::Error::other("unexpected sock_diag answer")),
    }
}

/// Who holds the socket that connected from `peer` to our listener at `local`: its inode
/// (from sock_diag, or `/proc/net/tcp` where netlink is not allowed), looked up among
/// `/proc/self/fd`.
pub fn peer_of(local: SocketAddr, peer: SocketAddr) -> std::io::Result<Peer> {
    match diag_inode(peer, local) {
        Ok(None) => return Ok(Peer::Gone),
        Ok(Some(inode)) => {
            if holds_socket(inode)? {
                return Ok(Peer::ThisProcess);
            }
            // Closed by this process a moment ago (a TCTI probing the port): its
            // descriptor leaves before the socket does.
            return Ok(match diag_inode(peer, local)? {
                Some(now) if now == inode => Peer::Other,
                _ => Peer::Gone,
            });
        }
        Err(e) => tracing::debug!(error = %e, "sock_diag unavailable; reading /proc/net/tcp"),
    }
    peer_of_by_table(local, peer)
}

/// Whether one of this process's descriptors is the socket `inode`. Each descriptor's
/// link is read relative to one open `/proc/self/fd` (a one-component lookup, not a walk
/// of `/proc/self/fd/N` through the `self` link): a TCTI connects once per command, and
/// an agent serving many pods holds hundreds of descriptors.
fn holds_socket(inode: u64) -> std::io::Result<bool> {
    use rustix::fs::{openat, readlinkat, Dir, Mode, OFlags, CWD};
    let want = format!("socket:[{inode}]");
    let fds = openat(
        CWD,
        "/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut dir = Dir::read_from(&fds)?;
    let mut link = Vec::with_capacity(32);
    while let Some(entry) = dir.read() {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        if !name.to_bytes().first().is_some_and(u8::is_ascii_digit) {
            continue;
        }
        link.clear();
        if let Ok(target) = readlinkat(&fds, name, std::mem::take(&mut link)) {
            if target.as_bytes() == want.as_bytes() {
                return Ok(true);
            }
            link = target.into_bytes();
        }
    }
    Ok(false)
}

/// [`peer_of`] from `/proc/net/tcp`.
fn peer_of_by_table(local: SocketAddr, peer: SocketAddr) -> std::io::Result<Peer> {
    let (Some(want_local), Some(want_remote)) = (proc_addr(peer), proc_addr(local)) else {
        return Ok(Peer::Other);
    };
    let inode_now = || -> std::io::Result<Option<String>> {
        let table = std::fs::read_to_string("/proc/net/tcp")?;
        Ok(table.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(1) == Some(&want_local.as_str()) && f.get(2) == Some(&want_remote.as_str()))
                .then(|| f.get(9).map(|s| (*s).to_string()))
                .flatten()
                .filter(|i| i != "0")
        }))
    };
    let Some(inode) = inode_now()? else {
        return Ok(Peer::Gone);
    };
    if inode
        .parse()
        .is_ok_and(|i| holds_socket(i).unwrap_or(false))
    {
        return Ok(Peer::ThisProcess);
    }
    // Not among our descriptors. A socket this process closed a moment ago (a TCTI probing
    // the port) leaves its descriptor before it leaves the table: if the socket is gone
    // now, it was no other process's.
    if inode_now()?.as_deref() != Some(inode.as_str()) {
        return Ok(Peer::Gone);
    }
    Ok(Peer::Other)
}

/// The size a TPM command or response header declares, checked.
pub fn message_size(header: &[u8; HEADER]) -> std::io::Result<usize> {
    let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    usize::try_from(size)
        .ok()
        .filter(|s| (HEADER..=MAX_MESSAGE).contains(s))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("TPM message size {size} is outside {HEADER}..={MAX_MESSAGE}"),
            )
        })
}

/// Reads one whole TPM message (header and body) from `r`, or `None` at a clean end.
pub fn read_message(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; HEADER];
    match r.read(&mut header[..1])? {
        0 => return Ok(None),
        _ => r.read_exact(&mut header[1..])?,
    }
    let size = message_size(&header)?;
    let mut msg = header.to_vec();
    msg.resize(size, 0);
    r.read_exact(&mut msg[HEADER..])?;
    Ok(Some(msg))
}

/// One command at a time: the client's command to the TPM, the TPM's response (within
/// [`RESPONSE_TIMEOUT`]) back.
fn forward_commands(mut client: TcpStream, mut tpm: UnixStream) -> std::io::Result<()> {
    tpm.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
    let result = (|| {
        while let Some(cmd) = read_message(&mut client)? {
            tpm.write_all(&cmd)?;
            let resp = read_message(&mut tpm)?.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the TPM closed the connection",
                )
            })?;
            client.write_all(&resp)?;
        }
        Ok(())
    })();
    let _ = client.shutdown(Shutdown::Both);
    result
}

/// The length of the request that follows a control command's code, for the commands a
/// TCTI sends (swtpm_ioctls(3)); `None` for any other command, which is refused.
pub fn ctrl_request_len(code: u32) -> Option<usize> {
    use crate::swtpm::ctrl;
    match code {
        ctrl::GET_CAPABILITY
        | ctrl::SHUTDOWN
        | ctrl::GET_TPMESTABLISHED
        | ctrl::STOP
        | ctrl::GET_CONFIG
        | ctrl::CANCEL_TPM_CMD => Some(0),
        ctrl::SET_LOCALITY | ctrl::RESET_TPMESTABLISHED => Some(1),
        ctrl::INIT | ctrl::SET_BUFFERSIZE => Some(4),
        _ => None,
    }
}

/// Reads one control command a TCTI sends: its code and its request (of the length
/// [`ctrl_request_len`] gives), or `None` at a clean end. A command a TCTI does not send
/// (state-blob transfer, data-fd hand-over) is an error.
pub fn read_ctrl_command(r: &mut impl Read) -> std::io::Result<Option<(u32, Vec<u8>)>> {
    let mut code = [0u8; 4];
    match r.read(&mut code[..1])? {
        0 => return Ok(None),
        _ => r.read_exact(&mut code[1..])?,
    }
    let c = u32::from_be_bytes(code);
    let (Some(req), Some(_)) = (ctrl_request_len(c), crate::swtpm::ctrl::response_len(c)) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("control command {c} is not forwarded"),
        ));
    };
    let mut request = vec![0u8; req];
    r.read_exact(&mut request)?;
    Ok(Some((c, request)))
}

/// The control channel, one command at a time: code and request to the swtpm, its
/// fixed-size response (within [`RESPONSE_TIMEOUT`]) back. Commands a TCTI does not send
/// end the connection.
fn forward_ctrl(mut client: TcpStream, mut tpm: UnixStream) -> std::io::Result<()> {
    tpm.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
    let result = (|| {
        while let Some((code, request)) = read_ctrl_command(&mut client)? {
            let answer = crate::swtpm::ctrl_command(&mut tpm, code, &request)?;
            client.write_all(&answer)?;
        }
        Ok(())
    })();
    let _ = client.shutdown(Shutdown::Both);
    result
}

/// Fuzz entry: the command framing never panics, never accepts a message whose declared
/// size is out of bounds, and reads exactly the declared size.
pub fn fuzz(data: &[u8]) {
    let mut r = data;
    while let Ok(Some(msg)) = read_message(&mut r) {
        let header: [u8; HEADER] = msg
            .get(..HEADER)
            .and_then(|h| h.try_into().ok())
            .unwrap_or([0; HEADER]);
        assert_eq!(message_size(&header).ok(), Some(msg.len()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn framing_reads_whole_messages_and_refuses_bad_sizes() {
        let mut cmd = vec![0x80, 0x01, 0, 0, 0, 12, 0, 0, 1, 0x44, 7, 8];
        cmd.extend_from_slice(&[0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x45]);
        let mut r = cmd.as_slice();
        assert_eq!(read_message(&mut r).unwrap().unwrap().len(), 12);
        assert_eq!(read_message(&mut r).unwrap().unwrap().len(), 10);
        assert!(read_message(&mut r).unwrap().is_none());
        let huge = [0x80, 0x01, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0x44];
        assert!(read_message(&mut huge.as_slice()).is_err());
        let tiny = [0x80, 0x01, 0, 0, 0, 3, 0, 0, 1, 0x44];
        assert!(read_message(&mut tiny.as_slice()).is_err());
    }

    #[test]
    fn only_this_process_gets_through() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let local = l.local_addr().unwrap();
        let ours = TcpStream::connect(local).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, ours.local_addr().unwrap());
        assert!(peer_is_this_process(local, peer).unwrap());
        // A connection from a child process (another process, even of the same user).
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import socket,time; s=socket.create_connection(('127.0.0.1',{})); time.sleep(5)",
                local.port()
            ))
            .spawn()
            .unwrap();
        let (_s2, peer2) = l.accept().unwrap();
        assert!(!peer_is_this_process(local, peer2).unwrap());
        let _ = child.kill();
        let _ = child.wait();
    }
}
