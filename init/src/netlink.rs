//! Bringing an interface up with one rtnetlink request (RTM_NEWLINK with IFF_UP), written
//! out byte by byte and sent through nix's safe socket API: no ioctl, no `unsafe`.

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;
const IFF_UP: u32 = 0x1;

/// The request: `struct nlmsghdr` (16 bytes) followed by `struct ifinfomsg` (16 bytes).
pub fn link_up_request(ifindex: i32, seq: u32) -> [u8; 32] {
    let mut m = [0u8; 32];
    let put = |m: &mut [u8; 32], at: usize, b: &[u8]| {
        if let Some(dst) = m.get_mut(at..at + b.len()) {
            dst.copy_from_slice(b);
        }
    };
    put(&mut m, 0, &32u32.to_ne_bytes()); // nlmsg_len
    put(&mut m, 4, &RTM_NEWLINK.to_ne_bytes()); // nlmsg_type
    put(&mut m, 6, &(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes()); // nlmsg_flags
    put(&mut m, 8, &seq.to_ne_bytes()); // nlmsg_seq
                                        // nlmsg_pid (12..16) = 0: the kernel.
                                        // ifinfomsg: family (16) AF_UNSPEC, pad (17), type (18..20) = 0.
    put(&mut m, 20, &ifindex.to_ne_bytes()); // ifi_index
    put(&mut m, 24, &IFF_UP.to_ne_bytes()); // ifi_flags
    put(&mut m, 28, &IFF_UP.to_ne_bytes()); // ifi_change
    m
}

/// Reads the errno from an NLMSG_ERROR acknowledgement (0 means success).
pub fn parse_ack(reply: &[u8]) -> Result<i32, &'static str> {
    let ty = reply.get(4..6).ok_or("short netlink reply")?;
    if u16::from_ne_bytes([ty[0], ty[1]]) != NLMSG_ERROR {
        return Err("netlink reply is not an acknowledgement");
    }
    let e = reply.get(16..20).ok_or("short netlink acknowledgement")?;
    Ok(-i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
}

/// Sets IFF_UP on interface `ifindex` (the loopback interface is always index 1).
pub fn set_link_up(ifindex: i32) -> Result<(), String> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| format!("netlink socket: {e}"))?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &NetlinkAddr::new(0, 0),
    )
    .map_err(|e| format!("netlink bind: {e}"))?;
    let req = link_up_request(ifindex, 1);
    send(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &req,
        MsgFlags::empty(),
    )
    .map_err(|e| format!("netlink send: {e}"))?;
    let mut buf = [0u8; 1024];
    let n = recv(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &mut buf,
        MsgFlags::empty(),
    )
    .map_err(|e| format!("netlink recv: {e}"))?;
    match parse_ack(buf.get(..n).unwrap_or(&[])) {
        Ok(0) => Ok(()),
        Ok(errno) => Err(format!(
            "RTM_NEWLINK failed: {}",
            nix::errno::Errno::from_raw(errno)
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let m = link_up_request(1, 7);
        assert_eq!(&m[0..4], &32u32.to_ne_bytes());
        assert_eq!(&m[4..6], &16u16.to_ne_bytes());
        assert_eq!(&m[8..12], &7u32.to_ne_bytes());
        assert_eq!(&m[20..24], &1i32.to_ne_bytes());
        assert_eq!(&m[24..28], &1u32.to_ne_bytes());
    }

    #[test]
    fn ack_parsing() {
        let mut r = [0u8; 36];
        r[4..6].copy_from_slice(&2u16.to_ne_bytes());
        r[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(parse_ack(&r), Ok(1));
        assert!(parse_ack(&r[..10]).is_err());
    }
}
