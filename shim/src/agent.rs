//! The host's end of a pod sandbox's agent channel ([`jek_pod::agent`]): requests by id,
//! answered on a reader thread of their own, and the guest's events handed to a callback.
//!
//! Everything the guest sends is hostile input: frames are read with their kind's limit
//! (`jek_pod::agent::read_frame`), an answer must be of a kind the request allows and to a
//! request that is waiting, and every request has a deadline. A guest that breaks the
//! protocol ends the channel; the requests waiting then fail with the reason.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::lock;
use std::time::Duration;

use jek_pod::agent::{
    read_frame, write_frame, AddContainer, Chunk, ContainerRef, Exited, Frame, FrameError, Hello,
    HelloReply, Kind, Output, Shutdown, Signal, ToGuest, ToHost, MAX_CHUNK, VERSION,
};
use sha2::Digest as _;

/// How long a request waits for its answer, unless it says otherwise.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the first Hello waits: it is said at the running moment, and the guest answers
/// once its kernel has booted and its init is up (seconds under TCG on a loaded host).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one frame may take to be written: a guest that stops reading fails the
/// request, instead of holding the channel (and every other request) for ever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request could not be sent.
    #[error("cannot send {what} to the pod's agent")]
    Send {
        /// The request.
        what: &'static str,
        /// Why.
        #[source]
        source: FrameError,
    },
    /// The guest answered with a failure.
    #[error("the pod's agent refused {what}: {reason}")]
    Refused {
        /// The request.
        what: &'static str,
        /// The guest's reason.
        reason: String,
    },
    /// No answer in time.
    #[error("the pod's agent did not answer {what} within {secs} s")]
    Timeout {
        /// The request.
        what: &'static str,
        /// The deadline.
        secs: u64,
    },
    /// The channel ended (or was ended for a protocol violation) before the answer.
    #[error("the pod's agent channel ended before it answered {what}: {reason}")]
    Closed {
        /// The request.
        what: &'static str,
        /// Why the channel ended.
        reason: String,
    },
    /// An answer of a kind the request does not allow.
    #[error("the pod's agent answered {what} with {kind:?}")]
    Unexpected {
        /// The request.
        what: &'static str,
        /// What came.
        kind: Kind,
    },
    /// The guest speaks another protocol version.
    #[error("the pod's agent speaks protocol version {0} (this shim speaks {VERSION})")]
    Version(u32),
}

/// What the guest reports of its own accord.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A container wrote.
    Output(Output),
    /// A container's process ended.
    Exited(Exited),
    /// The channel ended: the guest powered off, or broke the protocol (the reason).
    Closed(String),
}

type Pending = Arc<Mutex<HashMap<u32, mpsc::Sender<ToHost>>>>;

/// The reason the channel ended, once it has.
type Ended = Arc<Mutex<Option<String>>>;

/// A connected agent.
pub struct AgentClient {
    writer: Mutex<UnixStream>,
    pending: Pending,
    ended: Ended,
    next_id: AtomicU32,
    /// What the guest said in its HelloReply.
    pub hello: HelloReply,
}

impl AgentClient {
    /// Says Hello on `stream` and starts reading; `on_event` is called on the reader's
    /// thread for each event, and once with [`Event::Closed`] when the channel ends.
    pub fn connect(
        stream: UnixStream,
        on_event: impl Fn(Event) + Send + 'static,
    ) -> Result<AgentClient, AgentError> {
        let io = |e| AgentError::Send {
            what: "Hello",
            source: FrameError::Io(e),
        };
        stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(io)?;
        let reader = stream.try_clone().map_err(io)?;
        let pending: Pending = Arc::default();
        let ended: Ended = Arc::default();
        let mut client = AgentClient {
            writer: Mutex::new(stream),
            pending: Arc::clone(&pending),
            ended: Arc::clone(&ended),
            next_id: AtomicU32::new(1),
            hello: HelloReply::default(),
        };
        std::thread::Builder::new()
            .name("jek-agent-reader".into())
            .spawn(move || read_loop(reader, &pending, &ended, &on_event))
            .map_err(|e| AgentError::Send {
                what: "Hello",
                source: FrameError::Io(e),
            })?;
        let answer = client.request(
            "Hello",
            ToGuest::Hello(Hello { version: VERSION }),
            HELLO_TIMEOUT,
        )?;
        match answer {
            ToHost::HelloReply(h) if h.version == VERSION => client.hello = h,
            ToHost::HelloReply(h) => return Err(AgentError::Version(h.version)),
            other => {
                return Err(AgentError::Unexpected {
                    what: "Hello",
                    kind: jek_pod::agent::Wire::kind(&other),
                })
            }
        }
        Ok(client)
    }

    fn send(&self, what: &'static str, id: u32, message: ToGuest) -> Result<(), AgentError> {
        write_frame(&mut *lock(&self.writer), &Frame { id, message })
            .map_err(|source| AgentError::Send { what, source })
    }

    fn closed(&self, what: &'static str) -> AgentError {
        AgentError::Closed {
            what,
            reason: lock(&self.ended)
                .clone()
                .unwrap_or_else(|| "the channel ended".into()),
        }
    }

    /// Sends `message` (and `more` after it, under the same id) and waits for its answer.
    fn exchange(
        &self,
        what: &'static str,
        message: ToGuest,
        more: &mut dyn Iterator<Item = ToGuest>,
        timeout: Duration,
    ) -> Result<ToHost, AgentError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).max(1);
        let (tx, rx) = mpsc::channel();
        {
            // Registered under the lock the reader ends the channel with: a request is
            // either refused as closed here or sees its sender dropped.
            let mut pending = lock(&self.pending);
            if lock(&self.ended).is_some() {
                return Err(self.closed(what));
            }
            pending.insert(id, tx);
        }
        let sent = self.send(what, id, message).and_then(|()| {
            for m in more {
                self.send(what, id, m)?;
            }
            Ok(())
        });
        if let Err(e) = sent {
            lock(&self.pending).remove(&id);
            return Err(e);
        }
        let answer = rx.recv_timeout(timeout);
        lock(&self.pending).remove(&id);
        match answer {
            // The guest's words reach containerd's errors and the shim's log: no control
            // characters.
            Ok(ToHost::Failed(f)) => Err(AgentError::Refused {
                what,
                reason: f
                    .reason
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect(),
            }),
            Ok(a) => Ok(a),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(AgentError::Timeout {
                what,
                secs: timeout.as_secs(),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.closed(what)),
        }
    }

    fn request(
        &self,
        what: &'static str,
        message: ToGuest,
        timeout: Duration,
    ) -> Result<ToHost, AgentError> {
        self.exchange(what, message, &mut std::iter::empty(), timeout)
    }

    fn done(
        &self,
        what: &'static str,
        message: ToGuest,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        match self.request(what, message, timeout)? {
            ToHost::Done(_) => Ok(()),
            other => Err(AgentError::Unexpected {
                what,
                kind: jek_pod::agent::Wire::kind(&other),
            }),
        }
    }

    /// Sends container `name`'s segment (`segment`, whose SHA-256 the guest checks before
    /// it unpacks anything) in chunks.
    pub fn add_container(&self, name: &str, image: &str, segment: &[u8]) -> Result<(), AgentError> {
        let add = ToGuest::AddContainer(AddContainer {
            name: name.to_string(),
            image: image.to_string(),
            size: segment.len() as u64,
            sha256: sha2::Sha256::digest(segment).to_vec(),
        });
        let mut chunks = segment
            .chunks(MAX_CHUNK)
            .map(|c| ToGuest::Chunk(Chunk { data: c.to_vec() }));
        // A minute per 64 MiB on top of the usual deadline: the guest hashes and unpacks.
        let timeout = ANSWER_TIMEOUT + Duration::from_secs(segment.len() as u64 >> 20);
        match self.exchange("AddContainer", add, &mut chunks, timeout)? {
            ToHost::Done(_) => Ok(()),
            other => Err(AgentError::Unexpected {
                what: "AddContainer",
                kind: jek_pod::agent::Wire::kind(&other),
            }),
        }
    }

    /// Starts container `name`; its process id in the guest.
    pub fn start(&self, name: &str) -> Result<u32, AgentError> {
        let message = ToGuest::Start(ContainerRef {
            name: name.to_string(),
        });
        match self.request("Start", message, ANSWER_TIMEOUT)? {
            ToHost::Started(s) if s.name == name => Ok(s.pid),
            other => Err(AgentError::Unexpected {
                what: "Start",
                kind: jek_pod::agent::Wire::kind(&other),
            }),
        }
    }

    /// Sends `signal` to container `name`'s process.
    pub fn signal(&self, name: &str, signal: u32) -> Result<(), AgentError> {
        let message = ToGuest::Signal(Signal {
            name: name.to_string(),
            signal,
        });
        self.done("Signal", message, ANSWER_TIMEOUT)
    }

    /// Removes stopped container `name` from the guest.
    pub fn remove(&self, name: &str) -> Result<(), AgentError> {
        let message = ToGuest::Remove(ContainerRef {
            name: name.to_string(),
        });
        self.done("Remove", message, ANSWER_TIMEOUT)
    }

    /// Stops every container (TERM, KILL after `grace`) and powers the pod off.
    pub fn shutdown(&self, grace: Duration) -> Result<(), AgentError> {
        let message = ToGuest::Shutdown(Shutdown {
            grace_seconds: u32::try_from(grace.as_secs()).unwrap_or(u32::MAX),
        });
        self.done("Shutdown", message, ANSWER_TIMEOUT + grace)
    }
}

impl Drop for AgentClient {
    /// Ends the channel both ways: the reader thread (and the guest) see it end.
    fn drop(&mut self) {
        let _ = lock(&self.writer).shutdown(std::net::Shutdown::Both);
    }
}

/// Reads until the channel ends or the guest breaks the protocol.
fn read_loop(mut reader: UnixStream, pending: &Pending, ended: &Ended, on_event: &dyn Fn(Event)) {
    let reason = loop {
        match read_frame::<ToHost>(&mut reader) {
            Ok(None) => break "the guest closed the channel".to_string(),
            Err(e) => break jek_errors::chain_line(&e),
            Ok(Some(Frame { id: 0, message })) => match message {
                ToHost::Output(o) => on_event(Event::Output(o)),
                ToHost::Exited(e) => on_event(Event::Exited(e)),
                other => {
                    break format!(
                        "the guest sent {:?} without a request",
                        jek_pod::agent::Wire::kind(&other)
                    )
                }
            },
            Ok(Some(Frame { id, message })) => {
                if matches!(message, ToHost::Output(_) | ToHost::Exited(_)) {
                    break format!("the guest sent an event under request id {id}");
                }
                let waiting = lock(pending).remove(&id);
                match waiting {
                    Some(tx) => {
                        let _ = tx.send(message);
                    }
                    // An answer nobody waits for: a request that timed out, or a forgery.
                    None => {
                        tracing::warn!(id, "the pod's agent answered a request nobody waits for")
                    }
                }
            }
        }
    };
    tracing::info!(%reason, "the pod's agent channel ended");
    {
        let mut waiting = lock(pending);
        *lock(ended) = Some(reason.clone());
        waiting.clear();
    }
    let _ = reader.shutdown(std::net::Shutdown::Both);
    on_event(Event::Closed(reason));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use jek_pod::agent::{Done, Failed, Started};

    /// A guest that answers what `answer` says, and records what it was sent.
    fn guest(
        answer: impl Fn(&Frame<ToGuest>) -> Vec<Frame<ToHost>> + Send + 'static,
    ) -> (UnixStream, std::thread::JoinHandle<Vec<Frame<ToGuest>>>) {
        let (host, mut g) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Ok(Some(f)) = read_frame::<ToGuest>(&mut g) {
                for a in answer(&f) {
                    if write_frame(&mut g, &a).is_err() {
                        return seen;
                    }
                }
                seen.push(f);
            }
            seen
        });
        (host, t)
    }

    fn hello(f: &Frame<ToGuest>, version: u32) -> Vec<Frame<ToHost>> {
        vec![Frame {
            id: f.id,
            message: ToHost::HelloReply(HelloReply {
                version,
                pod: "web".into(),
                kernel: "6.1".into(),
            }),
        }]
    }

    #[test]
    fn requests_are_answered_by_id_and_events_reach_the_callback() {
        let (host, g) = guest(|f| match &f.message {
            ToGuest::Hello(_) => hello(f, VERSION),
            ToGuest::Start(c) => vec![
                Frame {
                    id: 0,
                    message: ToHost::Output(Output {
                        name: c.name.clone(),
                        stream: 1,
                        data: b"err\n".to_vec(),
                    }),
                },
                Frame {
                    id: f.id,
                    message: ToHost::Started(Started {
                        name: c.name.clone(),
                        pid: 42,
                    }),
                },
            ],
            ToGuest::Chunk(_) => Vec::new(),
            ToGuest::AddContainer(_) | ToGuest::Remove(_) => vec![Frame {
                id: f.id,
                message: ToHost::Done(Done {}),
            }],
            _ => vec![Frame {
                id: f.id,
                message: ToHost::Failed(Failed {
                    reason: "no running container x".into(),
                }),
            }],
        });
        let (tx, events) = mpsc::channel();
        let c = AgentClient::connect(host, move |e| {
            let _ = tx.send(e);
        })
        .unwrap();
        assert_eq!(c.hello.pod, "web");
        assert_eq!(c.start("app").unwrap(), 42);
        let e = c.signal("x", 15).unwrap_err();
        assert!(e.to_string().contains("no running container x"), "{e}");
        // Three chunks under the AddContainer's id, whose digest is the segment's.
        let segment = vec![7u8; 2 * MAX_CHUNK + 1];
        c.add_container("app", "img", &segment).unwrap();
        c.remove("app").unwrap();
        drop(c);
        let seen = g.join().unwrap();
        let add = seen
            .iter()
            .find_map(|f| match &f.message {
                ToGuest::AddContainer(a) => Some((f.id, a.clone())),
                _ => None,
            })
            .unwrap();
        assert_eq!(add.1.sha256, sha2::Sha256::digest(&segment).to_vec());
        let chunks: Vec<usize> = seen
            .iter()
            .filter_map(|f| match &f.message {
                ToGuest::Chunk(c) if f.id == add.0 => Some(c.data.len()),
                _ => None,
            })
            .collect();
        assert_eq!(chunks, [MAX_CHUNK, MAX_CHUNK, 1]);
        assert_eq!(
            events.recv().unwrap(),
            Event::Output(Output {
                name: "app".into(),
                stream: 1,
                data: b"err\n".to_vec()
            })
        );
        assert!(matches!(events.recv().unwrap(), Event::Closed(_)));
    }

    #[test]
    fn another_version_is_refused() {
        let (host, _g) = guest(|f| hello(f, 2));
        let e = AgentClient::connect(host, |_| {}).err().unwrap();
        assert!(matches!(e, AgentError::Version(2)), "{e}");
    }

    #[test]
    fn a_guest_breaking_the_protocol_ends_the_channel_and_fails_the_waiting_request() {
        // An unsolicited answer under id 0 (not an event).
        let (host, _g) = guest(|f| match &f.message {
            ToGuest::Hello(_) => hello(f, VERSION),
            _ => vec![Frame {
                id: 0,
                message: ToHost::Done(Done {}),
            }],
        });
        let (tx, events) = mpsc::channel();
        let c = AgentClient::connect(host, move |e| {
            let _ = tx.send(e);
        })
        .unwrap();
        let e = c.signal("app", 9).unwrap_err();
        assert!(
            matches!(&e, AgentError::Closed { reason, .. } if reason.contains("without a request")),
            "{e}"
        );
        assert!(matches!(events.recv().unwrap(), Event::Closed(r) if r.contains("Done")));
        // Later requests fail at once, with the same reason.
        let e = c.remove("app").unwrap_err();
        assert!(e.to_string().contains("without a request"), "{e}");
    }

    #[test]
    fn a_wrong_kind_of_answer_is_refused() {
        let (host, _g) = guest(|f| match &f.message {
            ToGuest::Hello(_) => hello(f, VERSION),
            _ => vec![Frame {
                id: f.id,
                message: ToHost::Started(Started {
                    name: "other".into(),
                    pid: 1,
                }),
            }],
        });
        let c = AgentClient::connect(host, |_| {}).unwrap();
        assert!(matches!(
            c.signal("app", 9),
            Err(AgentError::Unexpected {
                kind: Kind::Started,
                ..
            })
        ));
        // Started for another container than the one asked for.
        assert!(matches!(
            c.start("app"),
            Err(AgentError::Unexpected {
                kind: Kind::Started,
                ..
            })
        ));
    }
}
