//! Against a real swtpm: measurement fails closed and the log explains the PCRs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jek_measure::eventlog::EV_EVENT_TAG;
use jek_measure::{Event, Measured, PlannedEvent};
use std::os::unix::fs::PermissionsExt;

use jek_tpm::{measure, measure_more, MeasureError, Swtpm};
use jek_verifier::Sha256Digest;

fn event(pcr: u32, text: &str) -> PlannedEvent {
    PlannedEvent {
        what: Measured::PodConfig,
        event: Event {
            pcr,
            event_type: EV_EVENT_TAG,
            digest: Sha256Digest::of(text.as_bytes()),
            data: text.as_bytes().to_vec(),
        },
    }
}

#[test]
fn measure_extends_and_log_replays_to_tpm() {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start(dir.path()).unwrap();
    let mut tpm = swtpm.connect().unwrap();
    let events = [event(9, "a"), event(12, "b"), event(9, "c")];
    let log = measure(&mut tpm, &events).unwrap();
    assert_eq!(log.events.len(), 3);
    let read = tpm.read_pcrs(&[9, 12]).unwrap();
    assert_eq!(read, log.replay());

    // A second measurement into the same TPM could not be explained by its own log.
    let err = measure(&mut tpm, &events).unwrap_err();
    assert!(
        matches!(err, MeasureError::NotFresh { pcr: 9, .. }),
        "{err}"
    );
    drop(tpm);
    swtpm.stop().unwrap();
}

/// Measuring into a running pod's TPM (a container joining a sandbox): the longer log
/// replays to the TPM, the PCRs the new events do not touch stay as they were; a TPM
/// ahead of its log (an extend the log does not record: a crash between the two, or a
/// hidden measurement) is refused, naming the PCR, and nothing more is extended.
#[test]
fn measure_more_extends_what_the_log_explains_and_refuses_what_it_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start(dir.path()).unwrap();
    let mut tpm = swtpm.connect().unwrap();
    let boot = measure(&mut tpm, &[event(4, "kernel"), event(13, "count")]).unwrap();
    let longer = measure_more(&mut tpm, &boot, &[event(13, "joined")]).unwrap();
    assert_eq!(longer.events.len(), 3);
    assert_eq!(tpm.read_pcrs(&[4, 13]).unwrap(), longer.replay());
    assert_eq!(longer.replay().get(&4), boot.replay().get(&4));

    // The old log no longer explains PCR 13.
    let err = measure_more(&mut tpm, &boot, &[event(13, "hidden")]).unwrap_err();
    assert!(
        matches!(err, MeasureError::Unexplained { pcr: 13, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("PCR 13"), "{err}");
    assert_eq!(
        tpm.read_pcrs(&[13]).unwrap(),
        longer
            .replay()
            .into_iter()
            .filter(|(p, _)| *p == 13)
            .collect()
    );
    drop(tpm);
    swtpm.stop().unwrap();
}

#[test]
fn two_tpms_do_not_share_pcrs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ta, tb) = (
        Swtpm::start(a.path()).unwrap(),
        Swtpm::start(b.path()).unwrap(),
    );
    assert_ne!(ta.sockets(), tb.sockets());
    let mut ca = ta.connect().unwrap();
    let mut cb = tb.connect().unwrap();
    measure(&mut ca, &[event(12, "pod a")]).unwrap();
    measure(&mut cb, &[event(12, "pod b")]).unwrap();
    let (pa, pb) = (ca.read_pcrs(&[12]).unwrap(), cb.read_pcrs(&[12]).unwrap());
    assert_ne!(pa, pb);
    assert_eq!(
        pa[&12],
        jek_measure::eventlog::extend(&Sha256Digest([0; 32]), &Sha256Digest::of(b"pod a"))
    );
}

#[test]
fn killed_swtpm_fails_measurement_naming_the_pcr() {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = Swtpm::start(dir.path()).unwrap();
    let mut tpm = swtpm.connect().unwrap();
    // Reachable for the freshness read, gone for the extend.
    tpm.read_pcrs(&[4]).unwrap();
    swtpm.stop().unwrap();
    let err = measure(&mut tpm, &[event(4, "kernel")]).unwrap_err();
    let text = format!("{err}");
    assert!(text.contains("PCR 4"), "{text}");
}

#[test]
fn missing_swtpm_program_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = Swtpm::start_program(
        "/nonexistent/swtpm".as_ref(),
        dir.path(),
        jek_tpm::swtpm::Lifetime::Kept,
    )
    .unwrap_err();
    assert!(format!("{err}").contains("install swtpm"), "{err}");
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// The inodes of the TCP sockets listening on this host (`/proc/net/tcp`, state 0A).
fn listening_inodes() -> Vec<String> {
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(3) == Some(&"0A")).then(|| f[9].to_string())
        })
        .collect()
}

/// The socket inodes a process holds.
fn socket_inodes(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect()
}

/// What another user of the host tried against a pod's TPM (issue: a user `nobody`
/// power-cycled it over its control port, replayed predicted values and quoted; read its
/// state blob). Each attempt runs as `nobody` and must be refused by the kernel.
const AS_NOBODY: &str = r#"
import socket, struct, sys, os
ctrl, data, state, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
refused = []
for path, msg in ((ctrl, struct.pack(">II", 2, 0)), (data, bytes.fromhex("80010000000c00000144 0000".replace(" ", "")))):
    try:
        s = socket.socket(socket.AF_UNIX); s.connect(path); s.sendall(msg)
        print("REACHED", path); sys.exit(1)
    except PermissionError:
        refused.append(path)
try:
    os.listdir(state); print("READ STATE"); sys.exit(1)
except PermissionError:
    refused.append(state)
# The loopback bridge of the process that holds a connection: accepted, then closed unread.
s = socket.create_connection(("127.0.0.1", port))
s.sendall(bytes.fromhex("80010000000c000001440000"))
s.settimeout(5)
if s.recv(10):
    print("ANSWERED ON THE BRIDGE"); sys.exit(1)
print("refused", len(refused))
"#;

#[test]
fn another_user_cannot_reach_the_tpm_its_sockets_or_its_state() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test switches to the user nobody with setpriv: run it as root"
    );
    let parent = tempfile::tempdir().unwrap();
    // The parent of a run directory is traversable by anyone, as jek-run/ usually is.
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = parent.path().join("tpm");
    let swtpm = Swtpm::start(&state).unwrap();
    let sockets = swtpm.sockets().clone();
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&sockets.dir), 0o700);
    assert_eq!(
        mode(&sockets.ctrl()) & 0o077,
        0,
        "ctrl.sock is the owner's only"
    );
    assert_eq!(
        mode(&sockets.data()) & 0o077,
        0,
        "data.sock is the owner's only"
    );
    // The swtpm listens on no TCP port at all.
    let listening = listening_inodes();
    assert!(
        socket_inodes(swtpm.pid())
            .iter()
            .all(|i| !listening.contains(i)),
        "the swtpm holds a listening TCP socket"
    );
    // While this process talks to the TPM, its bridge is the only TCP door, and only for it.
    let mut tpm = swtpm.connect().unwrap();
    let port: u16 = tpm
        .bridge_port()
        .expect("a swtpm connection goes through the bridge");
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(AS_NOBODY)
        .arg(sockets.ctrl())
        .arg(sockets.data())
        .arg(&state)
        .arg(port.to_string())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("refused 3"), "{text}");
    // The owner's connection still works, and the TPM was not reset.
    tpm.read_pcrs(&[4]).unwrap();
    drop(tpm);
    swtpm.stop().unwrap();
    assert!(
        !sockets.dir.exists(),
        "the socket directory is removed with the TPM"
    );
}

/// A TPM that accepts connections and never answers (a hung or malicious swtpm): the
/// command fails once the bridge's response timeout passes, instead of hanging the pod.
#[test]
fn a_tpm_that_never_answers_is_an_error_not_a_hang() {
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().unwrap();
    let sockets = jek_tpm::swtpm::Sockets {
        dir: dir.path().to_path_buf(),
    };
    let mut held = Vec::new();
    for path in [sockets.data(), sockets.ctrl()] {
        let l = UnixListener::bind(path).unwrap();
        held.push(std::thread::spawn(move || {
            // Accept and read, never write; keep the connections open for a while.
            let mut conns = Vec::new();
            for c in l.incoming().take(4).flatten() {
                conns.push(c);
            }
            std::thread::sleep(std::time::Duration::from_secs(30));
        }));
    }
    let result = jek_tpm::Tpm::connect_swtpm(&sockets).and_then(|mut t| t.read_pcrs(&[4]));
    assert!(result.is_err(), "a silent TPM must be an error");
}
