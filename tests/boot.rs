//! `jek boot` and `jek predict` end to end with the real default bundle: measured boot into
//! a per-pod swtpm, the QEMU pre-boot hook (TCG) to the init's ready line, the KVM backend's
//! early boot, and every refusal happening before any VM or swtpm exists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{assert_exit, default_build, jek, test_key, Workspace};
use jek_measure::EventLog;

struct Env {
    ws: Workspace,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// One VM scenario at a time: TCG guests on two shared cores keep time by calibrating
/// against emulated timers, and several at once plus the emulated KVM guest starve them.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Env {
    fn new() -> Self {
        let serial = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ws = Workspace::new();
        let key = test_key();
        ws.policy(
            "policy.yaml",
            &format!(
                "trusted_keys: [{}]\nmin_security_version: 1\n",
                key.with_extension("pub").display()
            ),
        );
        for name in ["a", "b"] {
            ws.write(&format!("{name}.yaml"), common::pod_yaml(name).as_bytes());
        }
        Env {
            ws,
            _serial: serial,
        }
    }

    fn p(&self, name: &str) -> String {
        self.ws.path(name).display().to_string()
    }

    /// A shell script standing in for a program: it records that it ran, then runs `body`.
    fn recorder(&self, name: &str, body: &str) -> PathBuf {
        let path = self.ws.path(name);
        let marker = self.ws.path(&format!("{name}.ran"));
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho ran > {}\n{body}\n", marker.display()),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn ran(&self, name: &str) -> bool {
        self.ws.path(&format!("{name}.ran")).exists()
    }
}

fn boot_json(env: &Env, bundle: &Path, run: &str, extra: &[&str]) -> serde_json::Value {
    let out = jek()
        .arg("boot")
        .arg(bundle)
        .args([
            "--policy",
            &env.p("policy.yaml"),
            "--run-dir",
            &env.p(run),
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert_exit(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn predict(env: &Env, bundle: &Path, pod: &str, log_out: &str) -> serde_json::Value {
    let out = jek()
        .arg("predict")
        .arg(bundle)
        .args([
            "--policy",
            &env.p("policy.yaml"),
            "--pod",
            &env.p(pod),
            "--json",
        ])
        .args(["--log-out", &env.p(log_out)])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tpm_pcrs(record: &serde_json::Value) -> serde_json::Value {
    let mut tpm = common::connect_kept(record);
    let pcrs = tpm.read_pcrs(&jek_measure::plan::PCRS).unwrap();
    serde_json::to_value(&pcrs).unwrap()
}

fn stop_kept(record: &serde_json::Value) {
    jek_tpm::swtpm::stop_kept(&common::kept_swtpm(record).unwrap()).unwrap();
}

#[test]
fn qemu_boot_log_tpm_and_predict_agree_byte_for_byte() {
    let env = Env::new();
    // The pod file names the guest's host name (issue 33: it was always the pod's name).
    let with_host = common::pod_yaml("a").replace("spec:\n", "spec:\n  hostname: web-0.shop\n");
    env.ws.write("a.yaml", with_host.as_bytes());
    let bundle = &default_build().bundle;
    let record = boot_json(
        &env,
        bundle,
        "run",
        &["--vmm", "qemu", "--pod", &env.p("a.yaml"), "--keep-tpm"],
    );
    assert_eq!(record["status"], 0);
    assert_eq!(
        record["ready"]["pod"], "a",
        "the pod segment reached the init"
    );
    let in_tpm = tpm_pcrs(&record);
    stop_kept(&record);

    let log_bytes = std::fs::read(env.ws.path("run/binary_bios_measurements")).unwrap();
    let log = EventLog::from_bytes(&log_bytes).unwrap();
    let replay = serde_json::to_value(log.replay()).unwrap();
    let predicted = predict(&env, bundle, "a.yaml", "predicted.log");

    assert_eq!(replay, record["pcrs"]);
    assert_eq!(in_tpm, replay, "the swtpm holds what the log replays to");
    assert_eq!(predicted["pcrs"], replay, "jek predict matches the boot");
    assert_eq!(
        env.ws.read("predicted.log"),
        log_bytes,
        "predicted log is byte-identical"
    );
    let console = std::fs::read_to_string(env.ws.path("run/console.log")).unwrap();
    assert!(
        console.contains("tpm_tis"),
        "the guest sees a TPM: {console}"
    );
    assert!(
        console.contains("host=web-0.shop"),
        "the guest took the pod file's host name: {console}"
    );
    assert!(
        !console.contains("starting up the TPM manually"),
        "the VMM reset the measured TPM"
    );
}

#[test]
fn two_pods_at_once_have_separate_vtpms() {
    let env = Env::new();
    let bundle = default_build().bundle.clone();
    let boots: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let (env_pod, env_run, policy) = (
                env.p(&format!("{name}.yaml")),
                env.p(&format!("run-{name}")),
                env.p("policy.yaml"),
            );
            // Made here: the test's state home is its own thread's.
            let mut boot = jek();
            boot.arg("boot").arg(&bundle);
            std::thread::spawn(move || {
                let out = boot
                    .args([
                        "--policy",
                        &policy,
                        "--run-dir",
                        &env_run,
                        "--json",
                        "--vmm",
                        "qemu",
                    ])
                    .args(["--pod", &env_pod, "--keep-tpm"])
                    .output()
                    .unwrap();
                assert_exit(&out, 0);
                serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
            })
        })
        .collect();
    let records: Vec<serde_json::Value> = boots.into_iter().map(|h| h.join().unwrap()).collect();
    let (a, b) = (&records[0], &records[1]);
    assert_ne!(a["tpm"]["kept"]["socketDir"], b["tpm"]["kept"]["socketDir"]);
    let pa = tpm_pcrs(a);
    let pb = tpm_pcrs(b);
    records.iter().for_each(stop_kept);
    assert_eq!(pa, a["pcrs"]);
    assert_eq!(pb, b["pcrs"]);
    assert_ne!(pa["12"], pb["12"], "pod configs are measured per pod");
    assert_eq!(pa["4"], pb["4"], "same kernel");
    assert_eq!(predict(&env, &bundle, "b.yaml", "b.log")["pcrs"], pb);
}

#[test]
fn swapping_the_bundle_on_disk_after_verification_changes_nothing() {
    let env = Env::new();
    let copy = env.ws.path("bundle.jek");
    std::fs::copy(&default_build().bundle, &copy).unwrap();
    // The wrapper runs as the pod's own uid, which must be able to write its marker and
    // the bundle file.
    for (p, mode) in [(env.ws.path(""), 0o777), (copy.clone(), 0o666)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // QEMU starts after verification and measurement: replace the file right then.
    let qemu = env.recorder(
        "qemu",
        &format!(
            "printf 'swapped' > {}\nexec qemu-system-x86_64 \"$@\"",
            copy.display()
        ),
    );
    let record = boot_json(
        &env,
        &copy,
        "run",
        &["--vmm", "qemu", "--qemu", qemu.to_str().unwrap()],
    );
    assert!(env.ran("qemu"));
    assert_eq!(env.ws.read("bundle.jek"), b"swapped");
    assert_eq!(record["status"], 0);
    assert_eq!(record["ready"]["pod"], "demo", "the verified bundle booted");
}

#[test]
fn rejected_bundles_never_start_a_vm_or_a_swtpm() {
    let env = Env::new();
    let good = default_build().bundle.clone();
    let bytes = std::fs::read(&good).unwrap();
    let mut tampered = bytes.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x40;
    env.ws.write("tampered.jek", &tampered);
    env.ws.keygen("other");
    env.ws.policy(
        "other.yaml",
        "trusted_keys: [other.pub]\nmin_security_version: 1\n",
    );
    env.ws.policy(
        "floor.yaml",
        &format!(
            "trusted_keys: [{}]\nmin_security_version: 2\n",
            test_key().with_extension("pub").display()
        ),
    );
    let qemu = env.recorder("qemu", "exit 99");
    let swtpm = env.recorder("swtpm", "exit 99");
    let cases = [
        ("tampered", env.p("tampered.jek"), "policy.yaml", "digest"),
        (
            "wrong key",
            good.display().to_string(),
            "other.yaml",
            "trusted",
        ),
        (
            "rolled back",
            good.display().to_string(),
            "floor.yaml",
            "security version",
        ),
    ];
    for vmm in ["kvm", "qemu"] {
        for (what, bundle, policy, reason) in &cases {
            let run = env
                .ws
                .path(&format!("run-{vmm}-{}", what.replace(' ', "-")));
            let out = jek()
                .env("JEK_SWTPM", &swtpm)
                .args(["boot", bundle, "--policy", &env.p(policy), "--vmm", vmm])
                .args(["--qemu", qemu.to_str().unwrap(), "--run-dir"])
                .arg(&run)
                .output()
                .unwrap();
            assert_exit(&out, 1);
            let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
            assert!(err.contains(reason), "{vmm}/{what}: {err}");
            assert!(!run.exists(), "{vmm}/{what}: run directory created");
            assert!(
                !env.ran("qemu") && !env.ran("swtpm"),
                "{vmm}/{what}: something started"
            );
        }
    }
}

#[test]
fn an_unreachable_tpm_fails_the_boot_before_the_vm() {
    let env = Env::new();
    let qemu = env.recorder("qemu", "exit 99");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = jek()
        .arg("boot")
        .arg(&default_build().bundle)
        .args([
            "--policy",
            &env.p("policy.yaml"),
            "--vmm",
            "qemu",
            "--run-dir",
            &env.p("run"),
        ])
        .args([
            "--qemu",
            qemu.to_str().unwrap(),
            "--tpm",
            &format!("swtpm:host=127.0.0.1,port={port}"),
        ])
        .output()
        .unwrap();
    assert_exit(&out, 3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TPM"), "{err}");
    assert!(!env.ran("qemu"));
    assert!(!env.ws.path("run/binary_bios_measurements").exists());
}

#[test]
fn kvm_backend_starts_the_real_kernel_with_our_command_line() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: this test needs KVM"
    );
    let env = Env::new();
    let built = default_build();
    let out = jek()
        .arg("boot")
        .arg(&built.bundle)
        .args([
            "--policy",
            &env.p("policy.yaml"),
            "--vmm",
            "kvm",
            "--kernel",
            "vmlinux",
            "-q",
        ])
        .args(["--run-dir", &env.p("run")])
        .output()
        .unwrap();
    let console = std::fs::read_to_string(env.ws.path("run/console.log")).unwrap();
    let release = built.json["kernelRelease"].as_str().unwrap_or("6.1");
    assert!(
        console.contains(&format!("Linux version {release}")),
        "{console}"
    );
    assert!(console.contains("Command line: console=ttyS0"), "{console}");
    assert!(env.ws.path("run/binary_bios_measurements").exists());
    // On hosts with hardware virtualization the pod runs to completion; on software KVM
    // (PVM, see shared/FACTS.md) the kernel stops in early boot with a KVM internal error.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(0) || err.contains("KVM internal error"),
        "exit {:?}: {err}",
        out.status.code()
    );
}

/// The whole KVM path on any host with /dev/kvm: a signed bundle whose kernel is the test
/// kernel boots under `jek boot --vmm kvm` to a clean exit, and the guest reports exactly
/// the signed command line and the initramfs with the pod segment appended.
#[test]
fn kvm_backend_boots_a_signed_test_kernel_bundle_to_a_clean_exit() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: this test needs KVM"
    );
    let env = Env::new();
    let ws = &env.ws;
    ws.write("testkernel.bzImage", jek_testkernel::BZIMAGE);
    let entries = [jek_pod::cpio::Entry {
        path: "etc/hello".into(),
        perm: 0o644,
        kind: jek_pod::cpio::Kind::File(b"hello from the bundle\n".to_vec()),
    }];
    let initramfs = jek_pod::cpio::write(&entries, 0).unwrap();
    ws.write("initrd.cpio", &initramfs);
    let cmdline = "console=ttyS0 jek.test=kvm-e2e";
    let out = ws.jek(&[
        "pack",
        "--kernel",
        "testkernel.bzImage",
        "--initramfs",
        "initrd.cpio",
        "--cmdline",
        cmdline,
        "--name",
        "testkernel",
        "--version",
        "1",
        "--security-version",
        "1",
        "--kernel-release",
        "jek-test",
        "--key",
        &test_key().display().to_string(),
        "--out",
        "test.jek",
    ]);
    assert_exit(&out, 0);
    // Without --emulated-kvm, a host without VT-x/AMD-V is refused at once, before any
    // TPM or run directory; a host with it boots as below.
    let out = jek()
        .env_remove("JEK_EMULATED_KVM")
        .arg("boot")
        .arg(ws.path("test.jek"))
        .args(["--policy", &env.p("policy.yaml"), "--vmm", "kvm"])
        .args(["--run-dir", &env.p("no-emulation")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if jek_loader::kvm::hardware_virtualization() {
        assert_exit(&out, 0);
    } else {
        assert_exit(&out, 3);
        assert!(
            stderr.contains("no hardware virtualization") && stderr.contains("--vmm qemu"),
            "{stderr}"
        );
        assert!(!ws.path("no-emulation").exists());
    }
    let record = boot_json(
        &env,
        &ws.path("test.jek"),
        "run",
        &["--vmm", "kvm", "--pod", &env.p("a.yaml")],
    );
    assert_eq!(record["status"], 0, "{record}");
    assert_eq!(record["vmm"], "kvm");

    let console = std::fs::read_to_string(ws.path("run/console.log")).unwrap();
    let report = jek_testkernel::Report::parse(&console);
    assert!(report.done, "{console}");
    assert_eq!(report.cmdline, cmdline);
    let spec = jek_pod::spec::PodSpec {
        agent: false,
        name: "a".into(),
        hostname: None,
        containers: vec![jek_pod::spec::Container {
            name: "app".into(),
            command: vec!["/bin/jek-sample-app".into()],
            args: vec!["--exit-code".into(), "0".into()],
            env: vec![jek_pod::spec::EnvVar {
                name: "POD".into(),
                value: "a".into(),
            }],
            image: None,
            working_dir: None,
        }],
    };
    let mut expected = initramfs.clone();
    expected.extend(jek_pod::segment(&spec).unwrap());
    assert_eq!(report.initrd_size, expected.len() as u64);
    assert_eq!(report.initrd_fnv1a, jek_testkernel::fnv1a(&expected));

    // Measured before the guest ran: the log replays to the reported PCRs, which predict
    // derives offline.
    let log = EventLog::from_bytes(&ws.read("run/binary_bios_measurements")).unwrap();
    assert_eq!(
        serde_json::to_value(log.replay()).unwrap(),
        record["pcrs"],
        "{record}"
    );
    let predicted = predict(&env, &ws.path("test.jek"), "a.yaml", "predicted.log");
    assert_eq!(predicted["pcrs"], record["pcrs"]);
    assert_eq!(
        ws.read("predicted.log"),
        ws.read("run/binary_bios_measurements")
    );

    // The loader's own figures are reported (ci/bench.sh collects them).
    let t = &record["timingsMs"];
    for k in [
        "verify",
        "measure",
        "vmSetup",
        "startToGuest",
        "cpuAtGuestEntry",
    ] {
        assert!(t[k].as_f64().is_some_and(|v| v >= 0.0), "{k}: {record}");
    }
    let mem = &record["memoryKib"];
    assert!(mem["guestRss"].as_u64().unwrap() > 0, "{record}");
    assert!(
        mem["peakRss"].as_u64().unwrap() > mem["guestRss"].as_u64().unwrap(),
        "{record}"
    );
}

/// Starts `jek boot` of a pod that sleeps and waits until its application printed.
fn start_sleeper(env: &Env, run: &str, extra: &[&str]) -> std::process::Child {
    use std::io::BufRead as _;
    env.ws.write(
        "sleeper.yaml",
        common::pod_yaml("sleeper")
            .replace(
                "args: [--exit-code, \"0\"]",
                "args: [--sleep-ms, \"120000\"]",
            )
            .as_bytes(),
    );
    let mut child = jek()
        .arg("boot")
        .arg(&default_build().bundle)
        .args([
            "--policy",
            &env.p("policy.yaml"),
            "--pod",
            &env.p("sleeper.yaml"),
        ])
        .args(["--vmm", "qemu", "--run-dir", &env.p(run)])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if line.contains("jek-sample-app:") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .expect("the sleeping pod's application started");
    child
}

/// Starts `jek boot` of a pod that sleeps, waits until its application printed, then sends
/// SIGTERM; returns the exit status and the processes naming the run directory just before
/// the signal.
fn boot_then_sigterm(env: &Env, run: &str, extra: &[&str]) -> (std::process::ExitStatus, Vec<u32>) {
    let mut child = start_sleeper(env, run, extra);
    let running = common::processes_naming(&env.p(run));
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    (child.wait().unwrap(), running)
}

/// The pod's QEMU: the process whose `-name` is its run directory.
fn qemu_of(run: &str) -> u32 {
    let found: Vec<u32> = common::processes_naming(run)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("qemu-system-x86_64"))
        })
        .collect();
    assert_eq!(found.len(), 1, "one QEMU for {run}: {found:?}");
    found[0]
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Issue 39: every QEMU ran as the shared user nobody, so anything running as nobody could
/// stop (or ptrace) every pod, and a killed `jek` left its QEMU running. Now each pod's
/// QEMU has a uid of its own from the pod range, which neither nobody nor the other pod can
/// signal or read, and it dies with the process that started it, SIGKILL included.
#[test]
fn each_pods_qemu_runs_as_a_uid_of_its_own_and_dies_with_jek() {
    use std::os::unix::process::CommandExt as _;
    let env = Env::new();
    let mut a = start_sleeper(&env, "run-uid-a", &[]);
    let mut b = start_sleeper(&env, "run-uid-b", &[]);
    let (qa, qb) = (qemu_of(&env.p("run-uid-a")), qemu_of(&env.p("run-uid-b")));
    let (ua, ub) = (uid_of(qa), uid_of(qb));
    let pods = jek_loader::pod_user::DEFAULT_UIDS;
    for u in [ua, ub] {
        assert!(
            (pods.first()..=pods.last()).contains(&u),
            "uid {u} outside {pods}"
        );
    }
    assert_ne!(ua, ub, "two pods, two uids");
    let as_user = |uid: u32, program: &str, args: &[String]| {
        std::process::Command::new(program)
            .args(args)
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap()
    };
    for (attacker, target) in [(65534, qa), (65534, qb), (ua, qb), (ub, qa)] {
        let out = as_user(attacker, "kill", &["-KILL".into(), target.to_string()]);
        assert!(!out.status.success(), "uid {attacker} killed {target}");
        let out = as_user(attacker, "cat", &[format!("/proc/{target}/environ")]);
        assert!(
            !out.status.success(),
            "uid {attacker} read {target}'s environment"
        );
    }
    assert!(
        !common::gone_within(qa, 0) && !common::gone_within(qb, 0),
        "both pods still run"
    );
    // SIGKILL: jek cannot clean up, yet its QEMU goes with it; the other pod runs on.
    a.kill().unwrap();
    a.wait().unwrap();
    assert!(common::gone_within(qa, 10), "pod a's QEMU outlived its jek");
    assert!(
        !common::gone_within(qb, 0),
        "pod b's QEMU was stopped with a's jek"
    );
    assert!(
        common::processes_naming(&env.p("run-uid-a")).is_empty(),
        "pod a's swtpm outlived its jek: {:?}",
        common::processes_naming(&env.p("run-uid-a"))
    );
    let pid = rustix::process::Pid::from_child(&b);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert_eq!(b.wait().unwrap().code(), Some(143));
    assert!(common::gone_within(qb, 10));
}

#[test]
fn sigterm_stops_the_pod_and_its_tpm_and_a_kept_tpm_is_listed_and_stopped() {
    use std::os::unix::process::ExitStatusExt as _;
    let env = Env::new();
    let (status, running) = boot_then_sigterm(&env, "run-sigterm", &[]);
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    assert!(
        running.len() >= 2,
        "QEMU and the swtpm were running: {running:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        common::processes_naming(&env.p("run-sigterm")),
        Vec::<u32>::new()
    );
    assert!(
        status.signal().is_none(),
        "jek exited by itself after cleaning up"
    );

    // Kept for attestation, the TPM outlives the interrupted boot; jek tpm lists and stops it.
    let registry = env.p("registry");
    let (status, _) = boot_then_sigterm(
        &env,
        "run-kept",
        &[
            "--keep-tpm",
            "--tpm-ca",
            &env.p("ca"),
            "--registry",
            &registry,
        ],
    );
    assert_eq!(status.code(), Some(143));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let left = common::processes_naming(&env.p("run-kept"));
    assert_eq!(left.len(), 1, "only the kept swtpm: {left:?}");
    let out = jek()
        .args(["tpm", "list", "--registry", &registry, "--json"])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let kept: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(kept[0]["running"], true, "{kept}");
    assert_eq!(kept[0]["registration"]["pod"], "sleeper");
    assert_eq!(kept[0]["registration"]["tpm"]["pid"], left[0]);
    let out = jek()
        .args(["tpm", "stop", "--all", "--registry", &registry])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        common::processes_naming(&env.p("run-kept")),
        Vec::<u32>::new()
    );
    let out = jek()
        .args(["tpm", "list", "--registry", &registry, "--json"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// A pod sandbox of the default bundle, `containers` started at boot, with its agent
/// channel handed to `converse` on a thread of its own once the VM runs.
fn boot_sandbox<T: Send + 'static>(
    env: &Env,
    run: &str,
    backend: jek_loader::Backend,
    containers: Vec<jek_pod::spec::Container>,
    converse: impl FnOnce(std::os::unix::net::UnixStream, jek_loader::Running) -> T
        + Send
        + Sync
        + 'static,
) -> (
    Result<jek_loader::BootReport, jek_loader::BootError>,
    Option<T>,
) {
    let policy = jek_config::policy::load(&env.ws.path("policy.yaml")).unwrap();
    let bundle = jek_config::signatures::verify_file(
        &policy.policy,
        &default_build().bundle,
        None,
        jek_verifier::UnixTime::now(),
    )
    .unwrap();
    let spec = jek_loader::VmSpec {
        kernel: None,
        pod: Some(jek_pod::spec::PodSpec {
            agent: true,
            name: "sandbox".into(),
            hostname: None,
            containers,
        }),
        containers: Vec::new(),
        machine: jek_loader::Machine {
            memory_mib: 256,
            vcpus: 1,
        },
        backend,
        run_dir: env.ws.path(run),
        users: jek_loader::pod_user::PodUsers::default(),
    };
    let tpm = jek_host_attest::identity::pod_tpm(
        PathBuf::from(jek_tpm::swtpm::DEFAULT_PROGRAM),
        Path::new("swtpm_setup"),
        None,
    );
    let converse = std::sync::Mutex::new(Some(converse));
    let talk: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<T>>>> =
        std::sync::Arc::default();
    let handle = std::sync::Arc::clone(&talk);
    let sink = jek_loader::BootSink {
        quiet: true,
        on_running: Some(jek_loader::RunningHook::new(move |running| {
            let stream = running
                .agent
                .take()
                .expect("a sandbox's VM has an agent channel");
            if let Some(f) = converse.lock().unwrap().take() {
                let running = running.clone();
                *handle.lock().unwrap() = Some(std::thread::spawn(move || f(stream, running)));
            }
        })),
        ..jek_loader::BootSink::new(std::time::Instant::now())
    };
    let report = jek_loader::boot(&bundle, &spec, &tpm, &sink);
    let answer = talk.lock().unwrap().take().map(|t| t.join().unwrap());
    (report, answer)
}

/// The segment of container `web`: the static sample app as `/bin/app`, run with an
/// argument that also writes to standard error.
fn web_segment() -> Vec<u8> {
    let app = std::fs::read(
        common::repo_root().join("target/x86_64-unknown-linux-gnu/guest/jek-sample-app"),
    )
    .unwrap();
    let image = jek_pod::image::ContainerImage {
        container: "web".into(),
        reference: "localhost/web@sha256:00".into(),
        manifest: format!("sha256:{}", "0".repeat(64)),
        config_digest: format!("sha256:{}", "1".repeat(64)),
        config: jek_pod::image::ImageConfig {
            entrypoint: vec![
                "/bin/app".into(),
                "--stderr".into(),
                "late and apart".into(),
            ],
            ..Default::default()
        },
    };
    let members = [jek_pod::cpio::Member {
        path: "bin/app".into(),
        perm: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        kind: jek_pod::cpio::Kind::File(app),
        links: Vec::new(),
    }];
    jek_pod::image::container_segment(&image, &members).unwrap()
}

/// Issue 33 item 2: a pod sandbox (annotation `jek.dev/agent`) keeps its init up after
/// boot and serves the agent channel on a virtio-serial port: the host's Hello is answered
/// with the protocol version and the pod's name; a signal reaches a container's process,
/// whose exit comes back as an event (and a signal for a container that does not run is
/// refused, with the reason); the pod outlives its containers and powers off with status
/// 0 only when the host says Shutdown. The same pod on jek's KVM VMM, which has no virtio
/// devices, is refused before anything starts.
#[test]
fn a_pod_sandbox_serves_the_agent_channel_until_the_host_shuts_it_down() {
    use jek_pod::agent::{
        read_frame, write_frame, AddContainer, Chunk, ContainerRef, Frame, Hello, Shutdown, Signal,
        ToGuest, ToHost,
    };
    use sha2::Digest as _;
    let env = Env::new();
    let sleeper = jek_pod::spec::Container {
        name: "app".into(),
        command: vec!["/bin/jek-sample-app".into()],
        args: vec!["--sleep-ms".into(), "600000".into()],
        env: Vec::new(),
        image: None,
        working_dir: None,
    };
    let (report, answers) = boot_sandbox(
        &env,
        "sandbox",
        jek_loader::Backend::Qemu(jek_loader::qemu::QemuOptions::default()),
        vec![sleeper.clone()],
        |stream, running| {
            let mut reader = stream.try_clone().unwrap();
            let mut writer = stream;
            let mut ask = |id: u32, message: ToGuest| {
                write_frame(&mut writer, &Frame { id, message }).unwrap();
            };
            // The boot container's output comes over the channel too; it is not what
            // these requests are answered with.
            let mut next = || loop {
                let f = read_frame::<ToHost>(&mut reader).unwrap().unwrap();
                if !matches!(&f.message, ToHost::Output(o) if o.name == "app") {
                    return f;
                }
            };
            let mut seen = Vec::new();
            ask(1, ToGuest::Hello(Hello { version: 1 }));
            seen.push(next());
            ask(
                2,
                ToGuest::Signal(Signal {
                    name: "nope".into(),
                    signal: 15,
                }),
            );
            seen.push(next());
            // The sample app has no handler: TERM ends it (143), and its exit is an event.
            ask(
                3,
                ToGuest::Signal(Signal {
                    name: "app".into(),
                    signal: 15,
                }),
            );
            seen.push(next());
            seen.push(next());
            ask(
                4,
                ToGuest::Start(ContainerRef {
                    name: "app2".into(),
                }),
            );
            seen.push(next());
            // A container added while the pod runs: its segment in chunks, checked
            // against the digest, unpacked, started; its two streams come back apart,
            // then its exit.
            let segment = web_segment();
            let add = |name: &str, sha256: Vec<u8>| {
                ToGuest::AddContainer(AddContainer {
                    name: name.into(),
                    image: "localhost/web@sha256:00".into(),
                    size: segment.len() as u64,
                    sha256,
                })
            };
            let digest = sha2::Sha256::digest(&segment).to_vec();
            // Measured by the host first: PCR 13 and the log, through the proxy's side
            // sockets while the guest runs.
            let event = jek_measure::plan::ContainerEvent {
                container: "web".into(),
                manifest: format!("sha256:{}", "0".repeat(64)),
                config: format!("sha256:{}", "1".repeat(64)),
                reference: "localhost/web@sha256:00".into(),
            };
            let run = jek_loader::run_dir::RunDir::new(&running.run_dir);
            let swtpm = running.tpm.clone().expect("the pod's swtpm");
            jek_loader::late::measure_added(
                &run,
                &swtpm,
                &event,
                jek_verifier::Sha256Digest(digest.clone().try_into().unwrap()),
            )
            .unwrap();
            let log = EventLog::from_bytes(&std::fs::read(run.event_log()).unwrap()).unwrap();
            let mut tpm =
                jek_tpm::Tpm::connect_swtpm(&jek_loader::tpm_proxy::side_sockets(&swtpm)).unwrap();
            let pcr13 = tpm.read_pcrs(&[13]).unwrap();
            let measured = (log, pcr13);
            ask(6, add("web", digest.clone()));
            for piece in segment.chunks(jek_pod::agent::MAX_CHUNK) {
                ask(
                    6,
                    ToGuest::Chunk(Chunk {
                        data: piece.to_vec(),
                    }),
                );
            }
            seen.push(next());
            ask(7, ToGuest::Start(ContainerRef { name: "web".into() }));
            let mut web = Vec::new();
            loop {
                let f = next();
                let end = matches!(&f.message, ToHost::Exited(e) if e.name == "web");
                web.push(f);
                if end {
                    break;
                }
            }
            ask(8, ToGuest::Remove(ContainerRef { name: "web".into() }));
            seen.push(next());
            // A segment that is not what the host measured is refused, and nothing of it
            // is unpacked (the name is free again after the remove).
            let mut wrong = digest;
            wrong[0] ^= 1;
            ask(9, add("web", wrong));
            for piece in segment.chunks(jek_pod::agent::MAX_CHUNK) {
                ask(
                    9,
                    ToGuest::Chunk(Chunk {
                        data: piece.to_vec(),
                    }),
                );
            }
            seen.push(next());
            ask(10, ToGuest::Start(ContainerRef { name: "web".into() }));
            seen.push(next());
            ask(5, ToGuest::Shutdown(Shutdown { grace_seconds: 1 }));
            seen.push(next());
            (seen, web, measured)
        },
    );
    let report = report.unwrap();
    let (seen, web, (log, pcr13)) = answers.expect("the running hook was called");
    // The added container's event ends the log, and the TPM holds what the log replays to.
    let last = log.events.last().unwrap();
    assert_eq!(
        jek_measure::plan::added_container(last).map(|c| c.container),
        Some("web".to_string())
    );
    assert_eq!(log.replay().get(&13), pcr13.get(&13));
    assert_eq!(
        jek_measure::plan::containers_in_log(&log)
            .iter()
            .map(|(c, _)| c.container.clone())
            .collect::<Vec<_>>(),
        ["web"]
    );
    assert!(
        matches!(&seen[0], Frame { id: 1, message: ToHost::HelloReply(h) } if h.version == 1 && h.pod == "sandbox" && h.kernel.starts_with("6.1")),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[1], Frame { id: 2, message: ToHost::Failed(f) } if f.reason.contains("no running container nope")),
        "{seen:?}"
    );
    // Done and the exit event, in either order.
    let mut third: Vec<&Frame<ToHost>> = seen[2..4].iter().collect();
    third.sort_by_key(|f| f.id);
    assert!(
        matches!(third[0], Frame { id: 0, message: ToHost::Exited(e) } if e.name == "app" && e.status == 143),
        "{seen:?}"
    );
    assert!(
        matches!(
            third[1],
            Frame {
                id: 3,
                message: ToHost::Done(_)
            }
        ),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[4], Frame { id: 4, message: ToHost::Failed(f) } if f.reason.contains("app2")),
        "{seen:?}"
    );
    assert!(
        matches!(
            &seen[5],
            Frame {
                id: 6,
                message: ToHost::Done(_)
            }
        ),
        "{seen:?}"
    );
    assert!(
        matches!(&web[0], Frame { id: 7, message: ToHost::Started(s) } if s.name == "web" && s.pid > 1),
        "{web:?}"
    );
    let stream = |which: jek_pod::agent::Stream| -> String {
        web.iter()
            .filter_map(|f| match &f.message {
                ToHost::Output(o) if o.name == "web" && o.stream == which as i32 => {
                    Some(String::from_utf8_lossy(&o.data).into_owned())
                }
                _ => None,
            })
            .collect()
    };
    let out = stream(jek_pod::agent::Stream::Stdout);
    assert!(
        out.starts_with("jek-sample-app: hello from pid") && out.contains("host=sandbox"),
        "{web:?}"
    );
    assert_eq!(
        stream(jek_pod::agent::Stream::Stderr),
        "late and apart\n",
        "{web:?}"
    );
    assert!(
        matches!(web.last(), Some(Frame { id: 0, message: ToHost::Exited(e) }) if e.status == 0),
        "{web:?}"
    );
    assert!(
        matches!(
            &seen[6],
            Frame {
                id: 8,
                message: ToHost::Done(_)
            }
        ),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[7], Frame { id: 9, message: ToHost::Failed(f) } if f.reason.contains("SHA-256")),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[8], Frame { id: 10, message: ToHost::Failed(f) } if f.reason.contains("no container web")),
        "{seen:?}"
    );
    assert!(
        matches!(
            &seen[9],
            Frame {
                id: 5,
                message: ToHost::Done(_)
            }
        ),
        "{seen:?}"
    );
    assert_eq!(report.status, 0, "{:?}", report.console);
    let console = std::fs::read_to_string(env.ws.path("sandbox/console.log")).unwrap();
    assert!(
        console.contains("JEK-EXIT {\"container\":\"app\",\"status\":143}"),
        "{console}"
    );

    // jek's KVM VMM has no virtio devices: refused before any TPM or run directory.
    let (refused, talked) = boot_sandbox(
        &env,
        "on-kvm",
        jek_loader::Backend::Kvm(jek_loader::kvm::KvmOptions { emulated: true }),
        vec![sleeper],
        |_, _| (),
    );
    let e = refused.unwrap_err();
    assert!(
        matches!(&e, jek_loader::BootError::SandboxNeedsQemu(pod) if pod == "sandbox"),
        "{e}"
    );
    assert!(e.to_string().contains("--vmm qemu"), "{e}");
    assert!(talked.is_none());
    assert!(!env.ws.path("on-kvm").exists());
}
