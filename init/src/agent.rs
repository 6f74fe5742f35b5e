//! The guest's end of a pod sandbox's agent channel ([`jek_pod::agent`]): after boot, the
//! init serves the host's requests on the virtio-serial port named
//! [`PORT_NAME`](jek_pod::agent::PORT_NAME) until the host shuts the pod down or the
//! channel ends.
//!
//! One thread reads requests and answers them; another reaps processes and reports each
//! container's exit (after the last of its output) as an `Exited` event and a `JEK-EXIT`
//! console line. Writers share the port through one lock, a frame per write.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jek_pod::agent::{
    read_frame, write_frame, Done, Exited, Failed, Frame, HelloReply, Signal, ToGuest, ToHost,
    PORT_NAME, VERSION,
};
use nix::sys::signal::Signal as Sig;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::container::Running;
use crate::{exit_line, status_code, Failure};

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
}

impl Pod {
    fn send(&self, id: u32, message: ToHost) {
        // A host that went away is noticed by the reader (end of file).
        let _ = write_frame(&mut *lock(&self.out), &Frame { id, message });
    }

    fn failed(&self, id: u32, reason: impl Into<String>) {
        let mut reason: String = reason.into();
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
        let r = running
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| format!("no running container {name}"))?;
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

/// Serves the channel for pod `pod_name` whose boot containers are `running`; returns the
/// status to power off with: 0 after the host's Shutdown.
pub fn serve(pod_name: &str, kernel: &str, running: Vec<Running>) -> Result<i32, Failure> {
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
        running: Mutex::new(running),
    });
    let reaper = Arc::clone(&pod);
    std::thread::spawn(move || reap(&reaper));
    let mut input = std::io::BufReader::with_capacity(64 * 1024, port);
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
            Err(e) => return Err(crate::fail("agent channel", jek_error_line(&e))),
        };
        let id = frame.id;
        match frame.message {
            ToGuest::Hello(h) if h.version == VERSION => pod.send(
                id,
                ToHost::HelloReply(HelloReply {
                    version: VERSION,
                    pod: pod_name.to_string(),
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
            ToGuest::AddContainer(a) => {
                refused_add = Some(id);
                pod.failed(
                    id,
                    format!(
                        "container {}: this init does not yet take containers while the pod runs",
                        a.name
                    ),
                );
            }
            ToGuest::Chunk(_) if refused_add == Some(id) => {}
            ToGuest::Chunk(_) => pod.failed(id, "a segment chunk without an AddContainer"),
            ToGuest::Start(c) | ToGuest::Remove(c) => {
                pod.failed(id, format!("no container {} was added", c.name));
            }
        }
    }
}

/// An error with its causes, on one line.
fn jek_error_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
