//! The guest's end of a pod sandbox's agent channel ([`jek_pod::agent`]): after boot, the
//! init serves the host's requests on the virtio-serial port named
//! [`PORT_NAME`](jek_pod::agent::PORT_NAME) until the host shuts the pod down or the
//! channel ends.
//!
//! One thread reads requests and answers them; another reaps processes and reports each
//! container's exit (after the last of its output) as an `Exited` event and a `JEK-EXIT`
//! console line. Writers share the port through one lock, a frame per write.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jek_pod::agent::{
    read_frame, write_frame, AddContainer, Done, Exited, Failed, Frame, HelloReply, Output, Signal,
    Started, Stream, ToGuest, ToHost, MAX_OUTPUT, PORT_NAME, VERSION,
};
use jek_pod::spec::{Container, PodSpec};
use nix::sys::signal::Signal as Sig;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use sha2::Digest as _;

use crate::container::{OutputSink, Running};
use crate::{error_line, exit_line, status_code, Failure};

/// How long the init looks for the port (the virtio driver may still be probing).
const FIND_PORT: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The port's device: the `/dev/vportNpM` whose sysfs name is [`PORT_NAME`].
fn find_port() -> Result<PathBuf, Failure> {
    let deadline = Instant::now() + FIND_PORT;
    loop {
        if let Ok(dir) = std::fs::read_dir("/sys/class/virtio-ports") {
            for entry in dir.flatten() {
                let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if name.trim_end() == PORT_NAME {
                    return Ok(PathBuf::from("/dev").join(entry.file_name()));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(crate::fail(
                "agent channel",
                format!(
                    "no virtio-serial port named {PORT_NAME} within {} s",
                    FIND_PORT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the reader and the reaper share.
struct Pod {
    out: Mutex<File>,
    running: Mutex<Vec<Running>>,
    /// Every container of the pod (the pod file's and those added), and whether it was
    /// started.
    containers: Mutex<HashMap<String, (Container, bool)>>,
}

/// A segment being received.
struct Receiving {
    id: u32,
    add: AddContainer,
    bytes: Vec<u8>,
    /// Hashed as it arrives, while the host sends the rest.
    hash: sha2::Sha256,
}

impl Pod {
    fn send(&self, id: u32, message: ToHost) {
        // A host that went away is noticed by the reader (end of file).
        let _ = write_frame(&mut *lock(&self.out), &Frame { id, message });
    }

    fn failed(&self, id: u32, reason: impl Into<String>) {
        let mut reason: String = reason
            .into()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if reason.len() > jek_pod::agent::MAX_TEXT {
            let mut end = jek_pod::agent::MAX_TEXT;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        self.send(id, ToHost::Failed(Failed { reason }));
    }

    fn signal(&self, name: &str, signal: u32) -> Result<(), String> {
        let sig = i32::try_from(signal)
            .ok()
            .and_then(|s| Sig::try_from(s).ok())
            .ok_or_else(|| format!("signal {signal} is not one this kernel knows"))?;
        let running = lock(&self.running);
        let Some(r) = running.iter().find(|r| r.name == name) else {
            // A container that has ended (its exit may still be on the way to the host):
            // nothing to signal, as a signal to a process that has exited.
            if lock(&self.containers).contains_key(name) {
                return Ok(());
            }
            return Err(format!("no running container {name}"));
        };
        let pid = Pid::from_raw(i32::try_from(r.child.id()).unwrap_or(i32::MAX));
        nix::sys::signal::kill(pid, sig).map_err(|e| format!("signal {sig} to {name}: {e}"))
    }

    /// TERM to every container, KILL to those still running after `grace`.
    fn stop_all(&self, grace: Duration) {
        let names: Vec<String> = lock(&self.running).iter().map(|r| r.name.clone()).collect();
        for n in &names {
            let _ = self.signal(n, Sig::SIGTERM as u32);
        }
        let deadline = Instant::now() + grace;
        while !lock(&self.running).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let names: Vec<String> = lock(&self.running).iter().map(|r| r.name.clone()).collect();
        for n in &names {
            let _ = self.signal(n, Sig::SIGKILL as u32);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !lock(&self.running).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reaps every child (orphans re-parented to PID 1 included); reports a container's exit
/// once its output is in.
fn reap(pod: &Pod) {
    loop {
        let ws = match waitpid(Pid::from_raw(-1), None) {
            Ok(ws) => ws,
            Err(nix::errno::Errno::EINTR) => continue,
            // No children yet: containers may be added later.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let (Some(pid), Some(code)) = (ws.pid(), status_code(ws)) else {
            continue;
        };
        let found = {
            let mut running = lock(&pod.running);
            running
                .iter()
                .position(|r| r.child.id() == pid.as_raw().unsigned_abs())
                .map(|i| running.swap_remove(i))
        };
        if let Some(r) = found {
            for _ in 0..2 {
                if r.done.recv_timeout(Duration::from_secs(2)).is_err() {
                    break;
                }
            }
            exit_line(&r.name, code);
            pod.send(
                0,
                ToHost::Exited(Exited {
                    name: r.name.clone(),
                    status: code.clamp(0, 255),
                }),
            );
        }
    }
}

/// Serves the channel for `spec`'s pod: starts the pod file's containers (their output
/// over the channel), then answers the host until it says Shutdown; returns the status
/// to power off with (0).
pub fn serve(spec: &PodSpec, kernel: &str) -> Result<i32, Failure> {
    let path = find_port()?;
    let port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| crate::fail(format!("open {}", path.display()), e))?;
    let out = port
        .try_clone()
        .map_err(|e| crate::fail("agent channel", e))?;
    let pod = Arc::new(Pod {
        out: Mutex::new(out),
        running: Mutex::new(Vec::new()),
        containers: Mutex::new(HashMap::new()),
    });
    let weak = Arc::downgrade(&pod);
    let sink = OutputSink::Channel(Arc::new(move |name: &str, stream: Stream, data: &[u8]| {
        if let Some(pod) = weak.upgrade() {
            for piece in data.chunks(MAX_OUTPUT) {
                pod.send(
                    0,
                    ToHost::Output(Output {
                        name: name.to_string(),
                        stream: stream as i32,
                        data: piece.to_vec(),
                    }),
                );
            }
        }
    }));
    let reaper = Arc::clone(&pod);
    std::thread::spawn(move || reap(&reaper));
    for c in &spec.containers {
        lock(&pod.containers).insert(c.name.clone(), (c.clone(), true));
        if let Err(e) = pod.start(c, &sink) {
            error_line(format!("start container {}", c.name), e);
            exit_line(&c.name, 127);
            pod.send(
                0,
                ToHost::Exited(Exited {
                    name: c.name.clone(),
                    status: 127,
                }),
            );
        }
    }
    let mut input = std::io::BufReader::with_capacity(256 * 1024, port);
    let mut receiving: Option<Receiving> = None;
    // The id of an AddContainer refused: its chunks are read and dropped.
    let mut refused_add: Option<u32> = None;
    loop {
        let frame = match read_frame::<ToGuest>(&mut input) {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(crate::fail(
                    "agent channel",
                    "the host closed the channel without a shutdown",
                ))
            }
            // A frame the init cannot read leaves the stream out of step: nothing after
            // it can be trusted to be a frame.
            Err(e) => return Err(crate::fail("agent channel", jek_errors::chain_line(&e))),
        };
        let id = frame.id;
        match frame.message {
            ToGuest::Hello(h) if h.version == VERSION => pod.send(
                id,
                ToHost::HelloReply(HelloReply {
                    version: VERSION,
                    pod: spec.name.clone(),
                    kernel: kernel.to_string(),
                }),
            ),
            ToGuest::Hello(h) => pod.failed(
                id,
                format!(
                    "agent protocol version {} is not served (this init speaks {VERSION})",
                    h.version
                ),
            ),
            ToGuest::Signal(Signal { name, signal }) => match pod.signal(&name, signal) {
                Ok(()) => pod.send(id, ToHost::Done(Done {})),
                Err(reason) => pod.failed(id, reason),
            },
            ToGuest::Shutdown(s) => {
                pod.stop_all(Duration::from_secs(u64::from(s.grace_seconds)));
                pod.send(id, ToHost::Done(Done {}));
                return Ok(0);
            }
            ToGuest::AddContainer(add) => {
                if let Some(r) = receiving.take() {
                    pod.failed(
                        r.id,
                        format!(
                            "container {}: another AddContainer came before the last chunk",
                            r.add.name
                        ),
                    );
                }
                match pod.can_add(&add) {
                    Ok(()) if add.size == 0 => {
                        pod.failed(id, format!("container {}: an empty segment", add.name))
                    }
                    Ok(()) => {
                        receiving = Some(Receiving {
                            id,
                            bytes: Vec::with_capacity(usize::try_from(add.size).unwrap_or(0)),
                            hash: sha2::Sha256::new(),
                            add,
                        });
                    }
                    Err(reason) => {
                        refused_add = Some(id);
                        pod.failed(id, reason);
                    }
                }
            }
            ToGuest::Chunk(chunk) => match receiving.take() {
                Some(mut r) if r.id == id => {
                    r.bytes.extend_from_slice(&chunk.data);
                    r.hash.update(&chunk.data);
                    let (got, size) = (r.bytes.len() as u64, r.add.size);
                    if got > size {
                        refused_add = Some(id);
                        pod.failed(
                            id,
                            format!(
                                "container {}: {got} bytes of a {size}-byte segment",
                                r.add.name
                            ),
                        );
                    } else if got == size {
                        let digest: [u8; 32] = r.hash.finalize().into();
                        match pod.add(&r.add, &r.bytes, &digest) {
                            Ok(()) => pod.send(id, ToHost::Done(Done {})),
                            Err(reason) => pod.failed(id, reason),
                        }
                    } else {
                        receiving = Some(r);
                    }
                }
                other => {
                    receiving = other;
                    if refused_add != Some(id) {
                        pod.failed(id, "a segment chunk without an AddContainer");
                    }
                }
            },
            ToGuest::Start(c) => match pod.start_added(&c.name, &sink) {
                Ok(pid) => pod.send(id, ToHost::Started(Started { name: c.name, pid })),
                Err(reason) => pod.failed(id, reason),
            },
            ToGuest::Remove(c) => match pod.remove(&c.name) {
                Ok(()) => pod.send(id, ToHost::Done(Done {})),
                Err(reason) => pod.failed(id, reason),
            },
        }
    }
}

/// The guest's available memory in bytes (`MemAvailable`), if the kernel says.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

impl Pod {
    /// Whether container `add.name` may be added: a new name, and room for the segment
    /// (held in memory, its files copied out of it, then unpacked into memory: at most a
    /// third of what is available).
    fn can_add(&self, add: &AddContainer) -> Result<(), String> {
        if lock(&self.containers).contains_key(&add.name) {
            return Err(format!("container {} exists in this pod", add.name));
        }
        if let Some(avail) = available_memory() {
            if add.size > avail / 3 {
                return Err(format!(
                    "container {}: a {}-byte segment does not fit in the pod's memory ({avail} bytes available)",
                    add.name, add.size
                ));
            }
        }
        Ok(())
    }

    /// Checks the segment (whose SHA-256 is `digest`) against the digest the host
    /// measured, and unpacks it.
    fn add(&self, add: &AddContainer, bytes: &[u8], digest: &[u8; 32]) -> Result<(), String> {
        if digest.as_slice() != add.sha256.as_slice() {
            return Err(format!(
                "container {}: the segment's SHA-256 is {}, not the {} the host measured",
                add.name,
                hex(digest),
                hex(&add.sha256)
            ));
        }
        let members =
            jek_pod::cpio::read_tree(bytes).map_err(|e| format!("container {}: {e}", add.name))?;
        crate::unpack::unpack(Path::new("/"), &add.name, &members)?;
        lock(&self.containers).insert(
            add.name.clone(),
            (
                Container {
                    name: add.name.clone(),
                    image: Some(add.image.clone()),
                    command: Vec::new(),
                    args: Vec::new(),
                    env: Vec::new(),
                    working_dir: None,
                },
                false,
            ),
        );
        Ok(())
    }

    fn start(&self, c: &Container, sink: &OutputSink) -> Result<u32, String> {
        // The lock is held across the spawn: the reaper cannot see the process end
        // before it is in the list.
        let mut running = lock(&self.running);
        let r = crate::container::start(c, sink)?;
        let pid = r.child.id();
        running.push(r);
        Ok(pid)
    }

    /// Starts an added container, once.
    fn start_added(&self, name: &str, sink: &OutputSink) -> Result<u32, String> {
        let c = {
            let mut containers = lock(&self.containers);
            let (c, started) = containers
                .get_mut(name)
                .ok_or_else(|| format!("no container {name} was added"))?;
            if *started {
                return Err(format!("container {name} was started before"));
            }
            *started = true;
            c.clone()
        };
        self.start(&c, sink)
    }

    /// Removes a container that does not run: its root (and what the init mounted in
    /// it) and its record.
    fn remove(&self, name: &str) -> Result<(), String> {
        if lock(&self.running).iter().any(|r| r.name == name) {
            return Err(format!("container {name} is running: signal it first"));
        }
        let (c, _) = lock(&self.containers)
            .remove(name)
            .ok_or_else(|| format!("no container {name} in this pod"))?;
        if c.image.is_some() {
            let root = PathBuf::from(jek_pod::image::root_path(name));
            for m in ["tmp", "dev", "sys", "proc"] {
                let _ = nix::mount::umount2(&root.join(m), nix::mount::MntFlags::MNT_DETACH);
            }
            std::fs::remove_dir_all(&root)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| format!("remove {}: {e}", root.display()))?;
            let _ = std::fs::remove_file(jek_pod::image::record_path(name));
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
