//! Pod uid leases (`jek_loader::pod_user`) as root, with processes really running under the
//! leased uids: two pods never share a uid, a uid that still has a process is not handed
//! out, a lease directory others can write is refused, and a VMM left behind by a loader
//! that died is stopped from its run directory, never one whose loader is alive. The user
//! `nobody` cannot signal a pod's process (the attack of issue 39 on a shared VMM user).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command};

use jek_loader::pod_user::{PodUserError, PodUsers, UidRange};

/// One test at a time: a process another test forks holds every open lease file (and its
/// lock) until it execs, so a lease this test just dropped can look held to its clean-up
/// (seen once in CI: `stop_left_by` found the dead loader's lease locked and stopped 0).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn root() -> std::sync::MutexGuard<'static, ()> {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests lease uids and run processes as them: run as root, as ci/test.sh does"
    );
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A range no other test uses (each test its own, so they can run at once).
fn users(dir: &Path, first: u32, count: u32) -> PodUsers {
    PodUsers {
        range: UidRange::new(first, first + count - 1).unwrap(),
        dir: dir.join("leases"),
    }
}

fn sleep_as(uid: u32) -> Child {
    Command::new("sleep")
        .arg("600")
        .uid(uid)
        .gid(uid)
        .spawn()
        .unwrap()
}

fn alive(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

#[test]
fn two_pods_never_share_a_uid_and_a_released_uid_is_leased_again() {
    let _serial = root();
    let dir = tempfile::tempdir().unwrap();
    let u = users(dir.path(), 1_879_100_000, 2);
    let a = u.lease(Path::new("/run/pod-a")).unwrap().unwrap();
    let b = u.lease(Path::new("/run/pod-b")).unwrap().unwrap();
    assert_ne!(a.uid(), b.uid());
    for p in [&a, &b] {
        assert!((1_879_100_000..=1_879_100_001).contains(&p.uid()));
    }
    let e = u.lease(Path::new("/run/pod-c")).unwrap_err();
    assert!(matches!(e, PodUserError::Exhausted { count: 2, .. }), "{e}");
    assert!(e.to_string().contains("1879100000-1879100001"), "{e}");
    let freed = a.uid();
    drop(a);
    let c = u.lease(Path::new("/run/pod-c")).unwrap().unwrap();
    assert_eq!(c.uid(), freed);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(format!("leases/{freed}.lock"))).unwrap(),
        "/run/pod-c"
    );
}

#[test]
fn a_uid_that_still_runs_a_process_is_not_leased() {
    let _serial = root();
    let dir = tempfile::tempdir().unwrap();
    let u = users(dir.path(), 1_879_100_010, 1);
    let mut left = sleep_as(1_879_100_010);
    let e = u.lease(Path::new("/run/pod-a")).unwrap_err();
    assert!(matches!(e, PodUserError::Exhausted { .. }), "{e}");
    left.kill().unwrap();
    left.wait().unwrap();
    assert_eq!(
        u.lease(Path::new("/run/pod-a")).unwrap().unwrap().uid(),
        1_879_100_010
    );
}

#[test]
fn a_vmm_left_by_a_dead_loader_is_stopped_and_a_live_loaders_never() {
    let _serial = root();
    let dir = tempfile::tempdir().unwrap();
    let u = users(dir.path(), 1_879_100_020, 4);
    let lease = u.lease(Path::new("/run/pod-a")).unwrap().unwrap();
    let mut vmm = sleep_as(lease.uid());
    // Outside the range: never touched.
    let mut other = sleep_as(1_879_100_019);
    // The loader lives: nothing is stopped, even when asked by its run directory.
    assert_eq!(u.stop_left_by(Path::new("/run/pod-a")).unwrap(), 0);
    assert!(alive(&mut vmm));
    // The loader died (its lease went with it): the VMM under its uid is stopped, found
    // from the run directory alone; another run directory's clean-up stops nothing.
    drop(lease);
    assert_eq!(u.stop_left_by(Path::new("/run/pod-b")).unwrap(), 0);
    assert!(alive(&mut vmm));
    assert_eq!(u.stop_left_by(Path::new("/run/pod-a")).unwrap(), 1);
    let status = vmm.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(alive(&mut other));
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn nobody_cannot_signal_a_pods_process_but_could_signal_a_shared_nobody() {
    let _serial = root();
    let dir = tempfile::tempdir().unwrap();
    let u = users(dir.path(), 1_879_100_030, 1);
    let lease = u.lease(Path::new("/run/pod-a")).unwrap().unwrap();
    let kill_as_nobody = |pid: u32| {
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let mut pod = sleep_as(lease.uid());
    let out = kill_as_nobody(pod.id());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    assert!(alive(&mut pod));
    // The attack this stops: a VMM running as the shared user nobody.
    let mut shared = sleep_as(65534);
    assert!(kill_as_nobody(shared.id()).status.success());
    shared.wait().unwrap();
    pod.kill().unwrap();
    pod.wait().unwrap();
}

#[test]
fn a_lease_directory_others_can_write_is_refused() {
    let _serial = root();
    let dir = tempfile::tempdir().unwrap();
    let u = users(dir.path(), 1_879_100_040, 1);
    std::fs::create_dir(&u.dir).unwrap();
    std::fs::set_permissions(&u.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = u.lease(Path::new("/run/pod-a")).unwrap_err();
    assert!(matches!(e, PodUserError::UnsafeDir { .. }), "{e}");
    assert!(e.to_string().contains("others can write"), "{e}");
    std::fs::remove_dir(&u.dir).unwrap();
    std::os::unix::fs::symlink(dir.path(), &u.dir).unwrap();
    let e = u.lease(Path::new("/run/pod-a")).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
}
