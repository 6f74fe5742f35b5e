//! The agent channel: what the host asks a pod sandbox's init while the pod runs, and
//! what the init answers.
//!
//! A pod whose file says `agent: true` keeps its init up after boot, serving this
//! channel on a virtio-serial port named [`PORT_NAME`]. The host asks (add a container,
//! start it, signal it, remove it, shut the pod down); the guest answers each request by
//! its id and sends events of its own (a container's output, its exit).
//!
//! ## Frames
//!
//! Every message is one frame; integers are big-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | body length `n` (bytes after this 12-byte header) |
//! | 4 | 2 | kind ([`Kind`]): `0x00xx` host to guest, `0x80xx` guest to host |
//! | 6 | 2 | flags: 0 (any other value is refused) |
//! | 8 | 4 | request id: chosen by the host per request, echoed by the answer; 0 on events |
//! | 12 | `n` | body: the kind's protobuf message (proto3, field numbers below) |
//!
//! Each kind has its own size limit ([`Kind::limit`]), checked on the header before a
//! body byte is read; a reader accepts only the kinds of its direction. So a hostile guest
//! can make the host read at most one output chunk's worth (64 KiB) per frame, never a
//! length it chose.
//!
//! Why not ttrpc, which containerd's shim API uses: its synchronous transport reads and
//! writes with `recv`/`send`, which fail on the guest's virtio-serial character device, and
//! it bounds messages only by one global limit (4 MiB), where this channel needs a small
//! limit per message kind in each direction. The bodies are protobuf (prost) all the same,
//! so fields can be added without breaking older readers.
#![allow(clippy::derive_partial_eq_without_eq)]

use std::io::{Read, Write};

use prost::Message as _;

/// The protocol version both sides say in [`Hello`] and [`HelloReply`].
pub const VERSION: u32 = 1;

/// The virtio-serial port's name (`-device virtserialport,name=...`): the guest finds
/// its `/dev/vportNpM` by this name in `/sys/class/virtio-ports/*/name`.
pub const PORT_NAME: &str = "jek.agent";

/// The frame header's size.
pub const HEADER_LEN: usize = 12;

/// The most bytes of a container segment one [`Chunk`] carries.
pub const MAX_CHUNK: usize = 256 * 1024;

/// The most bytes of a container's output one [`Output`] carries.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// The largest container segment the host may announce (the guest holds it in memory).
pub const MAX_SEGMENT: u64 = 4 << 30;

/// The longest image reference, failure reason or kernel release carried.
pub const MAX_TEXT: usize = 4096;

/// A message kind: its number on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// Host to guest: the first message, [`Hello`].
    Hello = 0x0001,
    /// Host to guest: a container's segment follows, [`AddContainer`].
    AddContainer = 0x0002,
    /// Host to guest: the next piece of the segment, [`Chunk`].
    Chunk = 0x0003,
    /// Host to guest: start a container added before, [`ContainerRef`].
    Start = 0x0004,
    /// Host to guest: signal a container's process, [`Signal`].
    Signal = 0x0005,
    /// Host to guest: remove a stopped container, [`ContainerRef`].
    Remove = 0x0006,
    /// Host to guest: stop every container and power off, [`Shutdown`].
    Shutdown = 0x0007,
    /// Guest to host: the answer to [`Kind::Hello`], [`HelloReply`].
    HelloReply = 0x8001,
    /// Guest to host: a request succeeded, [`Done`].
    Done = 0x8002,
    /// Guest to host: a request failed, [`Failed`].
    Failed = 0x8003,
    /// Guest to host: a container started, [`Started`].
    Started = 0x8004,
    /// Guest to host (event): a container wrote, [`Output`].
    Output = 0x8005,
    /// Guest to host (event): a container's process ended, [`Exited`].
    Exited = 0x8006,
}

impl Kind {
    const ALL: [Kind; 13] = [
        Kind::Hello,
        Kind::AddContainer,
        Kind::Chunk,
        Kind::Start,
        Kind::Signal,
        Kind::Remove,
        Kind::Shutdown,
        Kind::HelloReply,
        Kind::Done,
        Kind::Failed,
        Kind::Started,
        Kind::Output,
        Kind::Exited,
    ];

    /// The kind numbered `n`, if any.
    pub fn from_u16(n: u16) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u16 == n)
    }

    /// Whether the guest sends it.
    pub fn to_host(self) -> bool {
        (self as u16) & 0x8000 != 0
    }

    /// The largest body of this kind.
    pub fn limit(self) -> usize {
        // A label (63) or a short integer field costs at most a few bytes of framing.
        const NAME: usize = 64 + 8;
        match self {
            Kind::Hello | Kind::Shutdown | Kind::Done => 16,
            Kind::AddContainer => NAME + MAX_TEXT + 16 + 40,
            Kind::Chunk => MAX_CHUNK + 8,
            Kind::Start | Kind::Remove => NAME,
            Kind::Signal | Kind::Started | Kind::Exited => NAME + 16,
            Kind::HelloReply => NAME + MAX_TEXT + 16,
            Kind::Failed => MAX_TEXT + 8,
            Kind::Output => NAME + MAX_OUTPUT + 16,
        }
    }
}

/// Host to guest, first: the host's protocol version.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    /// [`VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
}

/// Guest to host: the guest's protocol version, the pod it runs and its kernel.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// [`VERSION`]: the host refuses any other.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The pod's name (a DNS label).
    #[prost(string, tag = "2")]
    pub pod: String,
    /// The guest kernel's release.
    #[prost(string, tag = "3")]
    pub kernel: String,
}

/// Host to guest: container `name`'s segment (a `newc` archive, as appended at boot)
/// follows in [`Chunk`]s of the same request id, `size` bytes whose SHA-256 is `sha256`:
/// the digest the host measured into the pod's TPM before sending a byte. The guest
/// unpacks nothing that does not match it, and answers [`Done`] or [`Failed`] once the
/// last chunk is in.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddContainer {
    /// The container's name (a DNS label, unique in the pod).
    #[prost(string, tag = "1")]
    pub name: String,
    /// The image reference its record names.
    #[prost(string, tag = "2")]
    pub image: String,
    /// The segment's size in bytes.
    #[prost(uint64, tag = "3")]
    pub size: u64,
    /// The segment's SHA-256 (32 bytes).
    #[prost(bytes = "vec", tag = "4")]
    pub sha256: Vec<u8>,
}

/// Host to guest: the next bytes of the segment an [`AddContainer`] announced.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    /// At most [`MAX_CHUNK`] bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

/// Host to guest: a container, by name (start it, remove it).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerRef {
    /// The container's name.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// Host to guest: send `signal` to container `name`'s process.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Signal {
    /// The container's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The signal's number (1 to 64).
    #[prost(uint32, tag = "2")]
    pub signal: u32,
}

/// Host to guest: stop every container (TERM, then KILL after the grace period) and power
/// off with status 0.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Shutdown {
    /// Seconds between TERM and KILL.
    #[prost(uint32, tag = "1")]
    pub grace_seconds: u32,
}

/// Guest to host: the request with this frame's id succeeded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Done {}

/// Guest to host: the request with this frame's id failed, and why.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Failed {
    /// Why (at most [`MAX_TEXT`] bytes).
    #[prost(string, tag = "1")]
    pub reason: String,
}

/// Guest to host: container `name` started as process `pid` (the answer to a start).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Started {
    /// The container's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its process id in the guest.
    #[prost(uint32, tag = "2")]
    pub pid: u32,
}

/// Which of a container's streams [`Output`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Stream {
    /// Standard output.
    Stdout = 0,
    /// Standard error.
    Stderr = 1,
}

/// Guest to host (event): bytes container `name` wrote to one of its streams.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Output {
    /// The container's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Which stream.
    #[prost(enumeration = "Stream", tag = "2")]
    pub stream: i32,
    /// At most [`MAX_OUTPUT`] bytes, as written (not lines).
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// Guest to host (event): container `name`'s process ended with `status` (128 + the
/// signal when a signal ended it), after the last of its output.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exited {
    /// The container's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its exit status (0 to 255).
    #[prost(int32, tag = "2")]
    pub status: i32,
}

/// What the host sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ToGuest {
    /// The first message.
    Hello(Hello),
    /// A container's segment follows.
    AddContainer(AddContainer),
    /// A piece of it.
    Chunk(Chunk),
    /// Start a container.
    Start(ContainerRef),
    /// Signal a container.
    Signal(Signal),
    /// Remove a container.
    Remove(ContainerRef),
    /// Power off.
    Shutdown(Shutdown),
}

/// What the guest sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ToHost {
    /// The answer to Hello.
    HelloReply(HelloReply),
    /// A request succeeded.
    Done(Done),
    /// A request failed.
    Failed(Failed),
    /// A container started.
    Started(Started),
    /// Output.
    Output(Output),
    /// An exit.
    Exited(Exited),
}

/// One frame: a message and its request id.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<M> {
    /// The request id (0 on events).
    pub id: u32,
    /// The message.
    pub message: M,
}

/// Why a frame cannot be read (or written).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The channel failed.
    #[error("the agent channel failed")]
    Io(#[source] std::io::Error),
    /// The channel ended inside a frame.
    #[error("the agent channel ended inside a frame (after {read} of {expected} bytes)")]
    Truncated {
        /// Bytes of the frame read.
        read: usize,
        /// Bytes the frame needed.
        expected: usize,
    },
    /// A kind that does not exist, or is not sent in this direction.
    #[error("message kind {kind:#06x} is not one the {reader} reads")]
    Kind {
        /// The number.
        kind: u16,
        /// "host" or "guest".
        reader: &'static str,
    },
    /// Flags other than 0.
    #[error("{kind:?} frame with flags {flags:#06x} (only 0 is defined)")]
    Flags {
        /// The kind.
        kind: Kind,
        /// The flags.
        flags: u16,
    },
    /// A body longer than its kind's limit.
    #[error("{kind:?} frame of {len} bytes (at most {limit})")]
    TooLong {
        /// The kind.
        kind: Kind,
        /// The length the header says.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// The body is not the kind's protobuf message.
    #[error("{kind:?} frame body")]
    Body {
        /// The kind.
        kind: Kind,
        /// Why.
        #[source]
        source: prost::DecodeError,
    },
    /// The message decodes but says something not allowed.
    #[error("{kind:?} frame: {reason}")]
    Invalid {
        /// The kind.
        kind: Kind,
        /// What is wrong.
        reason: String,
    },
}

/// A direction's messages: how each is framed and checked.
pub trait Wire: Sized {
    /// Who reads these ("host" or "guest"), for errors.
    const READER: &'static str;
    /// Whether `kind` travels in this direction.
    fn accepts(kind: Kind) -> bool;
    /// The message's kind.
    fn kind(&self) -> Kind;
    /// The message's body.
    fn body(&self) -> Vec<u8>;
    /// Decodes and checks a body of `kind` (one `accepts`).
    fn decode(kind: Kind, body: &[u8]) -> Result<Self, FrameError>;
}

fn body<M: prost::Message + Default>(kind: Kind, bytes: &[u8]) -> Result<M, FrameError> {
    M::decode(bytes).map_err(|source| FrameError::Body { kind, source })
}

fn invalid(kind: Kind, reason: impl Into<String>) -> FrameError {
    FrameError::Invalid {
        kind,
        reason: reason.into(),
    }
}

/// A container name: a DNS label (it names a directory in the guest).
fn check_name(kind: Kind, name: &str) -> Result<(), FrameError> {
    crate::spec::check_label(name)
        .map_err(|e| invalid(kind, format!("container name {name:?}: {e}")))
}

fn check_text(kind: Kind, what: &str, text: &str) -> Result<(), FrameError> {
    if text.len() > MAX_TEXT {
        return Err(invalid(
            kind,
            format!("{what} of {} bytes (at most {MAX_TEXT})", text.len()),
        ));
    }
    Ok(())
}

impl Wire for ToGuest {
    const READER: &'static str = "guest";

    fn accepts(kind: Kind) -> bool {
        !kind.to_host()
    }

    fn kind(&self) -> Kind {
        match self {
            ToGuest::Hello(_) => Kind::Hello,
            ToGuest::AddContainer(_) => Kind::AddContainer,
            ToGuest::Chunk(_) => Kind::Chunk,
            ToGuest::Start(_) => Kind::Start,
            ToGuest::Signal(_) => Kind::Signal,
            ToGuest::Remove(_) => Kind::Remove,
            ToGuest::Shutdown(_) => Kind::Shutdown,
        }
    }

    fn body(&self) -> Vec<u8> {
        match self {
            ToGuest::Hello(m) => m.encode_to_vec(),
            ToGuest::AddContainer(m) => m.encode_to_vec(),
            ToGuest::Chunk(m) => m.encode_to_vec(),
            ToGuest::Start(m) | ToGuest::Remove(m) => m.encode_to_vec(),
            ToGuest::Signal(m) => m.encode_to_vec(),
            ToGuest::Shutdown(m) => m.encode_to_vec(),
        }
    }

    fn decode(kind: Kind, bytes: &[u8]) -> Result<Self, FrameError> {
        Ok(match kind {
            Kind::Hello => ToGuest::Hello(body(kind, bytes)?),
            Kind::AddContainer => {
                let m: AddContainer = body(kind, bytes)?;
                check_name(kind, &m.name)?;
                check_text(kind, "the image reference", &m.image)?;
                if m.image.is_empty() {
                    return Err(invalid(kind, "no image reference"));
                }
                if m.sha256.len() != 32 {
                    return Err(invalid(
                        kind,
                        format!("a SHA-256 of {} bytes", m.sha256.len()),
                    ));
                }
                if m.size > MAX_SEGMENT {
                    return Err(invalid(
                        kind,
                        format!("a segment of {} bytes (at most {MAX_SEGMENT})", m.size),
                    ));
                }
                ToGuest::AddContainer(m)
            }
            Kind::Chunk => ToGuest::Chunk(body(kind, bytes)?),
            Kind::Start | Kind::Remove => {
                let m: ContainerRef = body(kind, bytes)?;
                check_name(kind, &m.name)?;
                if kind == Kind::Start {
                    ToGuest::Start(m)
                } else {
                    ToGuest::Remove(m)
                }
            }
            Kind::Signal => {
                let m: Signal = body(kind, bytes)?;
                check_name(kind, &m.name)?;
                if !(1..=64).contains(&m.signal) {
                    return Err(invalid(kind, format!("signal {}", m.signal)));
                }
                ToGuest::Signal(m)
            }
            Kind::Shutdown => ToGuest::Shutdown(body(kind, bytes)?),
            _ => {
                return Err(FrameError::Kind {
                    kind: kind as u16,
                    reader: Self::READER,
                })
            }
        })
    }
}

impl Wire for ToHost {
    const READER: &'static str = "host";

    fn accepts(kind: Kind) -> bool {
        kind.to_host()
    }

    fn kind(&self) -> Kind {
        match self {
            ToHost::HelloReply(_) => Kind::HelloReply,
            ToHost::Done(_) => Kind::Done,
            ToHost::Failed(_) => Kind::Failed,
            ToHost::Started(_) => Kind::Started,
            ToHost::Output(_) => Kind::Output,
            ToHost::Exited(_) => Kind::Exited,
        }
    }

    fn body(&self) -> Vec<u8> {
        match self {
            ToHost::HelloReply(m) => m.encode_to_vec(),
            ToHost::Done(m) => m.encode_to_vec(),
            ToHost::Failed(m) => m.encode_to_vec(),
            ToHost::Started(m) => m.encode_to_vec(),
            ToHost::Output(m) => m.encode_to_vec(),
            ToHost::Exited(m) => m.encode_to_vec(),
        }
    }

    fn decode(kind: Kind, bytes: &[u8]) -> Result<Self, FrameError> {
        Ok(match kind {
            Kind::HelloReply => {
                let m: HelloReply = body(kind, bytes)?;
                crate::spec::check_label(&m.pod)
                    .map_err(|e| invalid(kind, format!("pod name {:?}: {e}", m.pod)))?;
                check_text(kind, "the kernel release", &m.kernel)?;
                if m.kernel.chars().any(char::is_control) {
                    return Err(invalid(kind, "a kernel release with control characters"));
                }
                ToHost::HelloReply(m)
            }
            Kind::Done => ToHost::Done(body(kind, bytes)?),
            Kind::Failed => {
                let m: Failed = body(kind, bytes)?;
                check_text(kind, "the reason", &m.reason)?;
                ToHost::Failed(m)
            }
            Kind::Started => {
                let m: Started = body(kind, bytes)?;
                check_name(kind, &m.name)?;
                ToHost::Started(m)
            }
            Kind::Output => {
                let m: Output = body(kind, bytes)?;
                check_name(kind, &m.name)?;
                if Stream::try_from(m.stream).is_err() {
                    return Err(invalid(kind, format!("stream {}", m.stream)));
                }
                if m.data.len() > MAX_OUTPUT {
                    return Err(invalid(kind, format!("{} bytes of output", m.data.len())));
                }
                ToHost::Output(m)
            }
            Kind::Exited => {
                let m: Exited = body(kind, bytes)?;
                check_name(kind, &m.name)?;
                if !(0..=255).contains(&m.status) {
                    return Err(invalid(kind, format!("exit status {}", m.status)));
                }
                ToHost::Exited(m)
            }
            _ => {
                return Err(FrameError::Kind {
                    kind: kind as u16,
                    reader: Self::READER,
                })
            }
        })
    }
}

/// The frame's bytes. A body over its kind's limit is refused: the other side would
/// refuse it too.
pub fn encode<M: Wire>(frame: &Frame<M>) -> Result<Vec<u8>, FrameError> {
    let kind = frame.message.kind();
    let body = frame.message.body();
    if body.len() > kind.limit() {
        return Err(FrameError::TooLong {
            kind,
            len: body.len() as u64,
            limit: kind.limit(),
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&(kind as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&frame.id.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Writes one frame in a single `write_all` (so frames from several threads sharing a
/// locked writer never interleave).
pub fn write_frame<M: Wire>(w: &mut impl Write, frame: &Frame<M>) -> Result<(), FrameError> {
    let bytes = encode(frame)?;
    w.write_all(&bytes).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

/// Reads up to `buf.len()` bytes; how many (fewer only at end of file).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(got)
}

/// Checks a header: the kind (of this direction), the flags and the body's length
/// against the kind's limit. Returns the kind, the body length and the request id.
pub fn check_header<M: Wire>(h: &[u8; HEADER_LEN]) -> Result<(Kind, usize, u32), FrameError> {
    let [l0, l1, l2, l3, k0, k1, f0, f1, i0, i1, i2, i3] = *h;
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    let number = u16::from_be_bytes([k0, k1]);
    let kind = Kind::from_u16(number)
        .filter(|k| M::accepts(*k))
        .ok_or(FrameError::Kind {
            kind: number,
            reader: M::READER,
        })?;
    let flags = u16::from_be_bytes([f0, f1]);
    if flags != 0 {
        return Err(FrameError::Flags { kind, flags });
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > kind.limit() {
        return Err(FrameError::TooLong {
            kind,
            len: len as u64,
            limit: kind.limit(),
        });
    }
    Ok((kind, len, u32::from_be_bytes([i0, i1, i2, i3])))
}

/// Reads the next frame: `None` when the channel ended between frames. The header is
/// checked before any of the body is read, so no more than the kind's limit is ever
/// buffered.
pub fn read_frame<M: Wire>(r: &mut impl Read) -> Result<Option<Frame<M>>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    match read_full(r, &mut header)? {
        0 => return Ok(None),
        HEADER_LEN => {}
        n => {
            return Err(FrameError::Truncated {
                read: n,
                expected: HEADER_LEN,
            })
        }
    }
    let (kind, len, id) = check_header::<M>(&header)?;
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(FrameError::Truncated {
            read: HEADER_LEN + got,
            expected: HEADER_LEN + len,
        });
    }
    Ok(Some(Frame {
        id,
        message: M::decode(kind, &body)?,
    }))
}

fn fuzz_reader<M: Wire + std::fmt::Debug + PartialEq>(data: &[u8]) {
    let mut r = data;
    while let Ok(Some(frame)) = read_frame::<M>(&mut r) {
        // What was accepted encodes within its limit and reads back the same.
        let bytes = match encode(&frame) {
            Ok(b) => b,
            Err(e) => panic!("an accepted frame does not encode: {e}"),
        };
        match read_frame::<M>(&mut bytes.as_slice()) {
            Ok(Some(back)) => assert_eq!(back, frame, "a frame changed on the way through"),
            other => panic!("an encoded frame does not read back: {other:?}"),
        }
    }
}

/// Fuzz entry: the host reading what a (hostile) guest sends.
pub fn fuzz_host(data: &[u8]) {
    fuzz_reader::<ToHost>(data);
}

/// Fuzz entry: the guest's init reading what the host sends.
pub fn fuzz_guest(data: &[u8]) {
    fuzz_reader::<ToGuest>(data);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn frame<M: Wire>(id: u32, message: M) -> Vec<u8> {
        encode(&Frame { id, message }).unwrap()
    }

    #[test]
    fn frames_are_laid_out_as_documented() {
        let bytes = frame(7, ToGuest::Hello(Hello { version: 1 }));
        // length 2 (field 1 varint 1), kind 0x0001, flags 0, id 7, body 08 01.
        assert_eq!(
            bytes,
            [0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 0, 7, 0x08, 0x01],
            "{bytes:02x?}"
        );
        let back = read_frame::<ToGuest>(&mut bytes.as_slice()).unwrap();
        assert_eq!(
            back,
            Some(Frame {
                id: 7,
                message: ToGuest::Hello(Hello { version: 1 })
            })
        );
    }

    #[test]
    fn every_message_round_trips() {
        let guest = [
            ToGuest::Hello(Hello { version: VERSION }),
            ToGuest::AddContainer(AddContainer {
                name: "app".into(),
                image: "docker.io/library/busybox@sha256:00".into(),
                size: 1 << 20,
                sha256: vec![7; 32],
            }),
            ToGuest::Chunk(Chunk {
                data: vec![1; MAX_CHUNK],
            }),
            ToGuest::Start(ContainerRef { name: "app".into() }),
            ToGuest::Signal(Signal {
                name: "app".into(),
                signal: 15,
            }),
            ToGuest::Remove(ContainerRef { name: "app".into() }),
            ToGuest::Shutdown(Shutdown { grace_seconds: 30 }),
        ];
        let host = [
            ToHost::HelloReply(HelloReply {
                version: VERSION,
                pod: "web-0".into(),
                kernel: "6.1.192-jek".into(),
            }),
            ToHost::Done(Done {}),
            ToHost::Failed(Failed {
                reason: "x".repeat(MAX_TEXT),
            }),
            ToHost::Started(Started {
                name: "a".repeat(63),
                pid: u32::MAX,
            }),
            ToHost::Output(Output {
                name: "a".repeat(63),
                stream: Stream::Stderr as i32,
                data: vec![0xff; MAX_OUTPUT],
            }),
            ToHost::Exited(Exited {
                name: "app".into(),
                status: 255,
            }),
        ];
        let mut stream = Vec::new();
        for (i, m) in guest.iter().enumerate() {
            stream.extend(frame(u32::try_from(i).unwrap(), m.clone()));
        }
        let mut r = stream.as_slice();
        for (i, m) in guest.iter().enumerate() {
            let f = read_frame::<ToGuest>(&mut r).unwrap().unwrap();
            assert_eq!((f.id, &f.message), (u32::try_from(i).unwrap(), m));
        }
        assert!(read_frame::<ToGuest>(&mut r).unwrap().is_none());
        for m in host {
            let bytes = frame(u32::MAX, m.clone());
            let f = read_frame::<ToHost>(&mut bytes.as_slice())
                .unwrap()
                .unwrap();
            assert_eq!(f.message, m);
        }
    }

    #[test]
    fn a_reader_refuses_the_other_directions_kinds() {
        let to_guest = frame(1, ToGuest::Shutdown(Shutdown { grace_seconds: 1 }));
        let e = read_frame::<ToHost>(&mut to_guest.as_slice()).unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::Kind {
                    kind: 7,
                    reader: "host"
                }
            ),
            "{e}"
        );
        let to_host = frame(1, ToHost::Done(Done {}));
        let e = read_frame::<ToGuest>(&mut to_host.as_slice()).unwrap_err();
        assert!(matches!(e, FrameError::Kind { kind: 0x8002, .. }), "{e}");
        let mut unknown = to_host.clone();
        unknown[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        let e = read_frame::<ToHost>(&mut unknown.as_slice()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "message kind 0x1234 is not one the host reads"
        );
    }

    #[test]
    fn a_length_over_the_kinds_limit_is_refused_before_the_body_is_read() {
        // A guest claims a 4 GiB exit event: refused on the header alone (the reader
        // below would fail on any read past the header).
        struct HeaderOnly<'a>(&'a [u8]);
        impl Read for HeaderOnly<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("read past the header"));
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut header = frame(0, ToHost::Exited(Exited::default()))[..HEADER_LEN].to_vec();
        header[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = read_frame::<ToHost>(&mut HeaderOnly(&header)).unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::TooLong {
                    kind: Kind::Exited,
                    len: 0xffff_ffff,
                    ..
                }
            ),
            "{e}"
        );
        // Output is the largest a guest may send.
        let over = ToHost::Output(Output {
            name: "a".into(),
            stream: 0,
            data: vec![0; Kind::Output.limit()],
        });
        assert!(matches!(
            encode(&Frame {
                id: 0,
                message: over
            }),
            Err(FrameError::TooLong {
                kind: Kind::Output,
                ..
            })
        ));
    }

    #[test]
    fn flags_truncation_and_bad_bodies_are_named() {
        let mut flagged = frame(1, ToHost::Done(Done {}));
        flagged[7] = 1;
        assert!(matches!(
            read_frame::<ToHost>(&mut flagged.as_slice()),
            Err(FrameError::Flags {
                kind: Kind::Done,
                flags: 1
            })
        ));
        let whole = frame(
            1,
            ToHost::Exited(Exited {
                name: "app".into(),
                status: 1,
            }),
        );
        for cut in 1..whole.len() {
            let e = read_frame::<ToHost>(&mut &whole[..cut]).unwrap_err();
            assert!(matches!(e, FrameError::Truncated { .. }), "{cut}: {e}");
        }
        // A field of the wrong wire type.
        let mut bad = frame(1, ToHost::Exited(Exited::default()))[..HEADER_LEN].to_vec();
        bad[0..4].copy_from_slice(&2u32.to_be_bytes());
        bad.extend_from_slice(&[0x0a, 0xff]);
        assert!(matches!(
            read_frame::<ToHost>(&mut bad.as_slice()),
            Err(FrameError::Body {
                kind: Kind::Exited,
                ..
            })
        ));
    }

    #[test]
    fn a_guest_cannot_name_a_path_or_an_impossible_status() {
        for (message, what) in [
            (
                ToHost::Output(Output {
                    name: "../etc".into(),
                    stream: 0,
                    data: vec![],
                }),
                "container name",
            ),
            (
                ToHost::Output(Output {
                    name: "app".into(),
                    stream: 2,
                    data: vec![],
                }),
                "stream 2",
            ),
            (
                ToHost::Exited(Exited {
                    name: "app".into(),
                    status: -1,
                }),
                "exit status -1",
            ),
            (
                ToHost::HelloReply(HelloReply {
                    version: 1,
                    pod: "web".into(),
                    kernel: "6.1\u{1b}[2J".into(),
                }),
                "control characters",
            ),
        ] {
            // Encoded by hand: encode() checks limits, not content.
            let bytes = frame(0, message);
            let e = read_frame::<ToHost>(&mut bytes.as_slice()).unwrap_err();
            assert!(
                matches!(e, FrameError::Invalid { .. }) && e.to_string().contains(what),
                "{what}: {e}"
            );
        }
        for (message, what) in [
            (
                ToGuest::AddContainer(AddContainer {
                    name: "app".into(),
                    image: "i".into(),
                    size: 1,
                    sha256: vec![0; 31],
                }),
                "SHA-256 of 31 bytes",
            ),
            (
                ToGuest::AddContainer(AddContainer {
                    name: "app".into(),
                    image: "i".into(),
                    size: MAX_SEGMENT + 1,
                    sha256: vec![0; 32],
                }),
                "segment of",
            ),
            (
                ToGuest::Signal(Signal {
                    name: "app".into(),
                    signal: 0,
                }),
                "signal 0",
            ),
            (
                ToGuest::Start(ContainerRef {
                    name: String::new(),
                }),
                "container name",
            ),
        ] {
            let bytes = frame(0, message);
            let e = read_frame::<ToGuest>(&mut bytes.as_slice()).unwrap_err();
            assert!(e.to_string().contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn the_fuzz_entries_hold_on_samples() {
        let mut all = Vec::new();
        all.extend(frame(1, ToHost::Done(Done {})));
        all.extend(frame(
            0,
            ToHost::Output(Output {
                name: "a".into(),
                stream: 1,
                data: b"x".to_vec(),
            }),
        ));
        all.extend_from_slice(&[0, 0]);
        fuzz_host(&all);
        fuzz_guest(&all);
        fuzz_guest(&frame(3, ToGuest::Chunk(Chunk { data: vec![9; 10] })));
    }

    #[test]
    fn the_documented_kinds_and_limits_are_the_codes() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bundle-format.md"),
        )
        .unwrap();
        let mut seen = 0;
        for row in doc.lines().filter(|l| l.starts_with("| 0x")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let number = u16::from_str_radix(cells[1].trim_start_matches("0x"), 16).unwrap();
            let kind = Kind::from_u16(number).unwrap();
            let name = cells[2].split(' ').next().unwrap();
            assert_eq!(format!("{kind:?}"), name, "{row}");
            let limit: usize = cells[4].replace(',', "").parse().unwrap();
            assert_eq!(kind.limit(), limit, "{row}");
            seen += 1;
        }
        assert_eq!(seen, Kind::ALL.len());
    }

    #[test]
    fn the_fuzz_seeds_are_whole_sessions() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        let host = std::fs::read(dir.join("agent_host/session")).unwrap();
        let mut r = host.as_slice();
        let mut kinds = Vec::new();
        while let Some(f) = read_frame::<ToHost>(&mut r).unwrap() {
            kinds.push(f.message.kind());
        }
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        let guest = std::fs::read(dir.join("agent_guest/session")).unwrap();
        let mut r = guest.as_slice();
        let mut kinds = Vec::new();
        while let Some(f) = read_frame::<ToGuest>(&mut r).unwrap() {
            kinds.push(f.message.kind());
        }
        assert_eq!(kinds.len(), 7, "{kinds:?}");
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics_either_reader(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            fuzz_host(&data);
            fuzz_guest(&data);
        }
    }
}
