//! One VM per Kubernetes pod sandbox: the sandbox container boots a pod sandbox (a pod
//! whose init serves the agent channel, no containers at boot); each container of the pod
//! that containerd then creates in this shim is a [`Member`] of that VM, measured into the
//! pod's TPM (`jek_loader::late`) before its segment is sent over the channel, started by
//! the guest's init, its stdout and stderr to containerd's two FIFOs, its exit to Wait and
//! to a `/tasks/exit` event, its signals to its process in the guest.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jek_measure::plan::ContainerEvent;
use jek_pod::agent::Stream;
use jek_pod::image::ContainerSegment;
use jek_verifier::Sha256Digest;

use crate::agent::{AgentClient, AgentError, Event};
use crate::lock;
use crate::task::{open_fifo, Status};

/// How long a container's Start waits for the pod's agent to answer its Hello.
pub const AGENT_WAIT: Duration = Duration::from_secs(60);

/// Why a container cannot join its pod.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The pod's VM is not (or no longer) up.
    #[error("the pod's VM is not running: {0}")]
    NotRunning(String),
    /// Measuring the container into the pod's TPM failed: nothing was sent.
    #[error("container {container} was not measured, so it was not sent to the pod")]
    Measure {
        /// The container.
        container: String,
        /// Why.
        #[source]
        source: jek_loader::late::LateError,
    },
    /// The pod's agent refused or failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// The VM of a pod sandbox, as its containers see it.
pub struct PodVm {
    /// The pod's name in the guest.
    pub name: String,
    /// Its run directory.
    pub run_dir: PathBuf,
    state: Mutex<Agent>,
    ready: Condvar,
    members: Mutex<HashMap<String, Arc<Member>>>,
    /// Held while a container joins (measured, sent, started): one at a time, so the
    /// event log's order is the order containers joined, and the guest receives one
    /// segment at a time.
    joining: Mutex<()>,
}

/// Where the pod's agent is.
enum Agent {
    /// The VM is booting.
    Booting,
    /// Connected: the client, and the pod's swtpm (measured into before a container is
    /// sent).
    Up(Arc<AgentClient>, jek_tpm::swtpm::Sockets),
    /// Gone, and why.
    Gone(String),
}

impl PodVm {
    /// The VM of pod `name` booting in `run_dir`.
    pub fn new(name: String, run_dir: PathBuf) -> Arc<Self> {
        Arc::new(PodVm {
            name,
            run_dir,
            state: Mutex::new(Agent::Booting),
            ready: Condvar::new(),
            members: Mutex::new(HashMap::new()),
            joining: Mutex::new(()),
        })
    }

    fn set(&self, state: Agent) {
        *lock(&self.state) = state;
        self.ready.notify_all();
    }

    /// The running moment (the loader's hook): takes the agent channel and says Hello on
    /// a thread of its own (the guest answers once its init is up).
    pub fn attach(self: &Arc<Self>, running: &jek_loader::Running) {
        let (Some(stream), Some(tpm)) = (running.agent.take(), running.tpm.clone()) else {
            self.set(Agent::Gone(
                "the VM has no agent channel or no TPM".to_string(),
            ));
            return;
        };
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            let events = Arc::downgrade(&me);
            let connected = AgentClient::connect(stream, move |e| {
                if let Some(pod) = events.upgrade() {
                    pod.event(e);
                }
            });
            match connected {
                Ok(client) => {
                    tracing::info!(pod = %me.name, kernel = %client.hello.kernel, "the pod's agent answered");
                    me.set(Agent::Up(Arc::new(client), tpm));
                }
                Err(e) => {
                    let reason = jek_errors::chain_line(&e);
                    tracing::error!(pod = %me.name, %reason, "the pod's agent did not answer");
                    me.set(Agent::Gone(reason));
                }
            }
        });
    }

    /// The VM ended (its boot returned): no container of it runs any more.
    pub fn ended(&self, why: &str) {
        self.set(Agent::Gone(why.to_string()));
        let members: Vec<Arc<Member>> = lock(&self.members).values().cloned().collect();
        for m in members {
            m.stop(137);
        }
    }

    /// The connected agent and the TPM, waiting for the Hello while the VM boots.
    fn agent(&self) -> Result<(Arc<AgentClient>, jek_tpm::swtpm::Sockets), JoinError> {
        let deadline = Instant::now() + AGENT_WAIT;
        let mut g = lock(&self.state);
        loop {
            match &*g {
                Agent::Up(c, t) => return Ok((Arc::clone(c), t.clone())),
                Agent::Gone(why) => return Err(JoinError::NotRunning(why.clone())),
                Agent::Booting => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(JoinError::NotRunning(format!(
                    "its agent did not answer within {} s",
                    AGENT_WAIT.as_secs()
                )));
            }
            g = self
                .ready
                .wait_timeout(g, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// The connected agent, without waiting.
    fn current_agent(&self) -> Option<Arc<AgentClient>> {
        match &*lock(&self.state) {
            Agent::Up(c, _) => Some(Arc::clone(c)),
            _ => None,
        }
    }

    /// Stops the pod gracefully: every container TERM, then KILL after `grace`, then
    /// power-off. `false` when there is no agent to ask (the caller stops the VM).
    pub fn shutdown(&self, grace: Duration) -> bool {
        let Some(client) = self.current_agent() else {
            return false;
        };
        match client.shutdown(grace) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %jek_errors::chain_line(&e), "the pod's agent did not shut the pod down");
                false
            }
        }
    }

    /// A guest name for a container the pod spec calls `base`: `base` itself, or, while an
    /// earlier attempt of the same container is still there (stopped, kept by containerd
    /// until the kubelet deletes it), `base-2`, `base-3`, ... (a DNS label still).
    pub fn free_name(&self, base: &str) -> String {
        let members = lock(&self.members);
        if !members.contains_key(base) {
            return base.to_string();
        }
        (2u32..)
            .map(|n| {
                let suffix = format!("-{n}");
                let keep = base.len().min(63 - suffix.len());
                format!("{}{suffix}", base[..keep].trim_end_matches('-'))
            })
            .find(|name| !members.contains_key(name))
            .unwrap_or_else(|| base.to_string())
    }

    /// Adds `member` under its guest name; `false` if the pod has a container of that name.
    pub fn admit(&self, member: Arc<Member>) -> bool {
        let mut members = lock(&self.members);
        if members.contains_key(&member.name) {
            return false;
        }
        members.insert(member.name.clone(), member);
        true
    }

    /// Forgets the member named `name`.
    pub fn forget(&self, name: &str) {
        lock(&self.members).remove(name);
    }

    fn event(&self, e: Event) {
        match e {
            Event::Output(o) => {
                let member = lock(&self.members).get(&o.name).cloned();
                if let Some(m) = member {
                    let stream = Stream::try_from(o.stream).unwrap_or(Stream::Stdout);
                    m.output(stream, &o.data);
                }
            }
            Event::Exited(x) => {
                let member = lock(&self.members).get(&x.name).cloned();
                match member {
                    Some(m) => m.stop(u32::try_from(x.status).unwrap_or(255)),
                    None => {
                        tracing::warn!(pod = %self.name, container = %x.name, "an exit of a container this shim does not know")
                    }
                }
            }
            Event::Closed(why) => self.ended(&why),
        }
    }
}

/// The exit callback of a started member.
type Exited = Box<dyn FnOnce(u32) + Send>;

/// A container of a pod sandbox, run by the pod's VM.
pub struct Member {
    /// containerd's id.
    pub id: String,
    /// The OCI bundle directory.
    pub bundle_dir: PathBuf,
    /// containerd's stdout FIFO (may be empty).
    pub stdout: String,
    /// containerd's stderr FIFO (may be empty).
    pub stderr: String,
    /// Its name in the guest.
    pub name: String,
    pod: Arc<PodVm>,
    segment: Mutex<Option<ContainerSegment>>,
    status: Mutex<Status>,
    changed: Condvar,
    out: Mutex<Option<std::fs::File>>,
    err: Mutex<Option<std::fs::File>>,
    exited: Mutex<Option<Exited>>,
}

impl Member {
    /// A created container of `pod`, named `name` in the guest, whose segment is
    /// `segment`.
    pub fn new(
        id: String,
        bundle_dir: PathBuf,
        stdout: String,
        stderr: String,
        name: String,
        pod: Arc<PodVm>,
        segment: ContainerSegment,
    ) -> Self {
        Member {
            id,
            bundle_dir,
            stdout,
            stderr,
            name,
            pod,
            segment: Mutex::new(Some(segment)),
            status: Mutex::new(Status::Created),
            changed: Condvar::new(),
            out: Mutex::new(None),
            err: Mutex::new(None),
            exited: Mutex::new(None),
        }
    }

    /// Its status.
    pub fn status(&self) -> Status {
        *lock(&self.status)
    }

    /// Adds it to its pod; `false` if the pod has a container of its name.
    pub fn join_pod(self: &Arc<Self>) -> bool {
        self.pod.admit(Arc::clone(self))
    }

    /// Its pod's name.
    pub fn pod_name(&self) -> &str {
        &self.pod.name
    }

    /// Waits until it has stopped; its exit status and when.
    pub fn wait(&self) -> (u32, SystemTime) {
        let mut g = lock(&self.status);
        loop {
            if let Status::Stopped { code, at } = *g {
                return (code, at);
            }
            g = self
                .changed
                .wait(g)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn stop(&self, code: u32) {
        {
            let mut g = lock(&self.status);
            if matches!(*g, Status::Stopped { .. }) {
                return;
            }
            let was_running = *g == Status::Running;
            *g = Status::Stopped {
                code,
                at: SystemTime::now(),
            };
            self.changed.notify_all();
            if !was_running {
                return;
            }
        }
        // Its FIFOs close: containerd's readers see the end of its output.
        drop(lock(&self.out).take());
        drop(lock(&self.err).take());
        // Not on the caller's thread (the agent's reader): the callback waits until the
        // Start that armed it has published the start event.
        let callback = lock(&self.exited).take();
        if let Some(f) = callback {
            std::thread::spawn(move || f(code));
        }
    }

    /// Marks it stopped after a failed Start: Wait answers, no exit event is published
    /// (containerd learns of the failure from Start's error).
    fn failed_start(&self, code: u32) {
        drop(lock(&self.exited).take());
        let mut g = lock(&self.status);
        if !matches!(*g, Status::Stopped { .. }) {
            *g = Status::Stopped {
                code,
                at: SystemTime::now(),
            };
        }
        self.changed.notify_all();
        drop(g);
        drop(lock(&self.out).take());
        drop(lock(&self.err).take());
    }

    fn output(&self, stream: Stream, data: &[u8]) {
        let file = match stream {
            Stream::Stdout => &self.out,
            Stream::Stderr => &self.err,
        };
        if let Some(f) = lock(file).as_mut() {
            let _ = f.write_all(data);
        }
    }

    /// Joins the pod's VM: measured into its TPM, sent, started. `exited` is called with
    /// the exit status once it has ended (never before this returns `Ok`). `Ok(None)` if
    /// it was started (or stopped) before. A Start that fails leaves it stopped.
    pub fn start(
        &self,
        exited: impl FnOnce(u32) + Send + 'static,
    ) -> Result<Option<u32>, JoinError> {
        let Some(segment) = lock(&self.segment).take() else {
            return Ok(None);
        };
        let joined = self.join(&segment);
        let bytes = segment.bytes.len();
        drop(segment);
        let joined_at = Instant::now();
        let (agent, measured, sent) = match joined {
            Ok(j) => j,
            Err(e) => {
                self.failed_start(127);
                return Err(e);
            }
        };
        *lock(&self.out) = open_fifo(&self.stdout);
        *lock(&self.err) = open_fifo(&self.stderr);
        *lock(&self.exited) = Some(Box::new(exited));
        {
            // Killed while it joined: the guest has it, but it does not start.
            let mut g = lock(&self.status);
            if *g != Status::Created {
                drop(g);
                self.failed_start(137);
                if let Err(e) = agent.remove(&self.name) {
                    tracing::warn!(container = %self.name, error = %jek_errors::chain_line(&e), "removing a container killed while it joined");
                }
                return Ok(None);
            }
            *g = Status::Running;
        }
        match agent.start(&self.name) {
            Ok(pid) => {
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                tracing::info!(
                    container = %self.name,
                    bytes,
                    measure_ms = ms(measured),
                    send_ms = ms(sent),
                    start_ms = ms(joined_at.elapsed()),
                    "joined the pod"
                );
                Ok(Some(pid))
            }
            Err(e) => {
                // It may run in the guest all the same (an answer that came too late):
                // killed there, so nothing runs that the host has forgotten.
                let _ = agent.signal(&self.name, 9);
                self.failed_start(127);
                Err(e.into())
            }
        }
    }

    /// Measures the segment into the pod's TPM and sends it, one container at a time;
    /// the agent, and how long measuring and then sending took.
    fn join(
        &self,
        segment: &ContainerSegment,
    ) -> Result<(Arc<AgentClient>, Duration, Duration), JoinError> {
        let (agent, tpm) = self.pod.agent()?;
        let _one_at_a_time = lock(&self.pod.joining);
        let t0 = Instant::now();
        let event = ContainerEvent::of(segment);
        let digest = Sha256Digest::of(&segment.bytes);
        jek_loader::late::measure_added(
            &jek_loader::run_dir::RunDir::new(&self.pod.run_dir),
            &tpm,
            &event,
            digest,
        )
        .map_err(|source| JoinError::Measure {
            container: self.name.clone(),
            source,
        })?;
        let measured = t0.elapsed();
        agent.add_container(&self.name, &segment.image.reference, &segment.bytes)?;
        Ok((agent, measured, t0.elapsed().saturating_sub(measured)))
    }

    /// Sends `signal` to its process (before Start: it stops without running).
    pub fn kill(&self, signal: u32) -> Result<(), JoinError> {
        match self.status() {
            Status::Created => {
                drop(lock(&self.segment).take());
                self.stop(128u32.saturating_add(signal));
                Ok(())
            }
            Status::Running => {
                let (agent, _) = self.pod.agent()?;
                agent.signal(&self.name, signal)?;
                Ok(())
            }
            Status::Stopped { .. } => Ok(()),
        }
    }

    /// Removes it from the guest and from the pod (it must have stopped).
    pub fn remove(&self) {
        if let Some(agent) = self.pod.current_agent() {
            if let Err(e) = agent.remove(&self.name) {
                tracing::warn!(container = %self.name, error = %jek_errors::chain_line(&e), "removing the container from the pod");
            }
        }
        self.pod.forget(&self.name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn member(pod: &Arc<PodVm>, name: &str) -> Arc<Member> {
        let image = jek_pod::image::ContainerImage {
            container: name.into(),
            reference: "r".into(),
            manifest: "m".into(),
            config_digest: "c".into(),
            config: jek_pod::image::ImageConfig::default(),
        };
        Arc::new(Member::new(
            format!("id-{name}"),
            PathBuf::from("/nonexistent"),
            String::new(),
            String::new(),
            name.into(),
            Arc::clone(pod),
            ContainerSegment {
                image,
                bytes: Vec::new(),
            },
        ))
    }

    #[test]
    fn a_restarted_container_gets_a_guest_name_of_its_own() {
        let pod = PodVm::new("web".into(), PathBuf::from("/nonexistent"));
        assert_eq!(pod.free_name("app"), "app");
        assert!(member(&pod, "app").join_pod());
        assert!(!member(&pod, "app").join_pod(), "one name, one container");
        assert_eq!(pod.free_name("app"), "app-2");
        assert!(member(&pod, "app-2").join_pod());
        assert_eq!(pod.free_name("app"), "app-3");
        // Still a DNS label at the limit.
        let long = "a".repeat(63);
        assert!(member(&pod, &long).join_pod());
        let next = pod.free_name(&long);
        assert_eq!(next.len(), 63);
        assert!(jek_pod::spec::check_label(&next).is_ok(), "{next}");
        pod.forget("app");
        assert_eq!(pod.free_name("app"), "app");
    }

    #[test]
    fn a_member_killed_before_it_started_stops_and_its_start_does_nothing() {
        let pod = PodVm::new("web".into(), PathBuf::from("/nonexistent"));
        let m = member(&pod, "app");
        m.kill(15).unwrap();
        assert!(matches!(m.status(), Status::Stopped { code: 143, .. }));
        assert!(m
            .start(|_| panic!("no exit for a container that never ran"))
            .unwrap()
            .is_none());
        // The pod's VM went away: joining fails with the reason, and the member stops.
        let n = member(&pod, "late");
        pod.ended("the pod's VM ended");
        let e = n.start(|_| {}).unwrap_err();
        assert!(e.to_string().contains("the pod's VM ended"), "{e}");
        assert!(matches!(n.status(), Status::Stopped { code: 127, .. }));
    }
}
