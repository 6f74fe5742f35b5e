//! The containerd runtime (issue 17), end to end with Debian's containerd 1.6 and ctr: each
//! test starts its own containerd (its own root, state and socket directories) with
//! `containerd-shim-jek-v2` on its PATH, imports the busybox image the container-image tests
//! make with `ctr image import`, and runs containers with `--runtime io.containerd.jek.v2`.
//! Every container runs in its own QEMU pod with its own swtpm, its image measured into
//! PCR 13; a kept TPM lets the pod attest after it exited, with the image digest in the EAR.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_exit, default_build, jek, processes_naming, test_key};
use serde_json::Value;

const RUNTIME: &str = "io.containerd.jek.v2";
const IMAGE: &str = "docker.io/library/busybox:jek-test";

/// A containerd of the test's own, killed (with what it started) when dropped.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    /// The busybox image's manifest digest.
    digest: String,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Shims outlive their containerd by design (it reconnects after a restart): a
        // failed test's shims, and the pods they run, go with the test.
        let address = format!("-address {}", self.path("containerd.sock").display());
        for pid in processes_naming(&address) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        common::kill_left_behind(self.dir.path());
    }
}

impl Containerd {
    /// Starts containerd with a runtime file (`runtime.yaml`: the default bundle under
    /// `policy`, pods kept for attestation) and imports the busybox image.
    fn start(policy: impl Fn(&Path) -> String) -> Containerd {
        Containerd::start_with(policy, true, &[])
    }

    /// [`Containerd::start`], with pods kept for attestation or not (`attest`), and `env`
    /// in the shims' environment.
    fn start_with(
        policy: impl Fn(&Path) -> String,
        attest: bool,
        env: &[(&str, &str)],
    ) -> Containerd {
        let built = default_build();
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let shim = common::service::bin("containerd-shim-jek-v2");
        std::fs::create_dir_all(p("bin")).unwrap();
        std::os::unix::fs::symlink(&shim, p("bin/containerd-shim-jek-v2")).unwrap();
        std::fs::write(p("policy.yaml"), policy(&test_key().with_extension("pub"))).unwrap();
        std::fs::write(
            p("runtime.yaml"),
            format!(
                "bundle: {}\npolicy: policy.yaml\nrunRoot: run\n{}",
                built.bundle.display(),
                if attest {
                    "attestation:\n  tpmCa: ca\n  registry: registry\n"
                } else {
                    ""
                }
            ),
        )
        .unwrap();
        let d = dir.path().display();
        std::fs::write(
            p("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n"
            ),
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            p("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(p("containerd.log")).unwrap();
        // The shims containerd starts inherit its environment: their state is the test's.
        let child = common::isolate(&mut Command::new("containerd"))
            .arg("--config")
            .arg(p("config.toml"))
            .env("PATH", path)
            .env("JEK_RUNTIME_CONFIG", p("runtime.yaml"))
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd must be installed (ci/install-deps.sh installs it)");
        let mut c = Containerd {
            child,
            dir,
            digest: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.ctr(&["version"]).status.code() != Some(0) {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The busybox image of the container-image tests, as a tar of its OCI layout.
        let layout = c.path("layout");
        c.digest = jek_image::build::busybox_layout(&layout, Path::new("/bin/busybox"))
            .unwrap_or_else(|e| panic!("/bin/busybox: {e} (apt install busybox-static)"));
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(c.path("busybox.tar"))
            .arg(".")
            .status()
            .unwrap();
        assert!(tar.success());
        let import = c.path("busybox.tar");
        let out = c.ctr(&[
            "image",
            "import",
            "--base-name",
            "docker.io/library/busybox",
            import.to_str().unwrap(),
        ]);
        assert_exit(&out, 0);
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("containerd.log")).unwrap_or_default()
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.path("containerd.sock"))
            .args(args);
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args)
            .output()
            .expect("ctr (package containerd)")
    }

    /// A copy of the runtime file that names `policy` (a file beside it), as
    /// `POLICY-runtime.yaml`.
    fn runtime_with_policy(&self, policy: &str) -> PathBuf {
        let runtime = std::fs::read_to_string(self.path("runtime.yaml"))
            .unwrap()
            .replace("policy: policy.yaml", &format!("policy: {policy}"));
        let path = self.path(&format!("{policy}-runtime.yaml"));
        std::fs::write(&path, runtime).unwrap();
        path
    }

    /// `ctr run` of container `id` with the runtime file `config` (containerd's runtime
    /// options, ConfigPath), which must be refused: exit 1, nothing run. Its stderr.
    fn refused(&self, config: &Path, id: &str) -> String {
        let out = self.run(
            &["--rm", "--runtime-config-path", config.to_str().unwrap()],
            id,
            "echo should-not-run",
        );
        assert_exit(&out, 1);
        assert!(!String::from_utf8_lossy(&out.stdout).contains("should-not-run"));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `ctr run --runtime io.containerd.jek.v2 [extra] IMAGE ID sh -c SCRIPT`.
    fn run(&self, extra: &[&str], id: &str, script: &str) -> Output {
        let mut args = vec!["run", "--runtime", RUNTIME];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, id, "sh", "-c", script]);
        self.ctr(&args)
    }

    /// `jek attest --json` of the pod in `run` (its kept TPM, the pod file the shim wrote)
    /// with the test's policy and registration store; it must exit 0.
    fn attest(&self, run: &Path) -> Value {
        let attest = jek()
            .current_dir(self.dir.path())
            .arg("attest")
            .arg(run)
            .arg("--bundle")
            .arg(&default_build().bundle)
            .args([
                "--policy",
                "policy.yaml",
                "--registry",
                "registry",
                "--json",
            ])
            .arg("--pod")
            .arg(run.join("pod.yaml"))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&attest.stdout).unwrap_or(Value::Null);
        assert_exit(&attest, 0);
        v
    }

    /// The pods' run directories.
    fn run_root(&self) -> PathBuf {
        self.path("run/default")
    }

    /// Asserts that nothing of container `id` is left: no run directory, no QEMU or swtpm
    /// naming the run root, no registration, no container, no shim socket of its own.
    fn assert_nothing_left(&self) {
        let root = self.path("run");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = processes_naming(&root.display().to_string());
            let dirs: Vec<_> = std::fs::read_dir(self.run_root())
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            let regs: Vec<_> = std::fs::read_dir(self.path("registry"))
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            let shims = processes_naming(&format!(
                "-address {}",
                self.path("containerd.sock").display()
            ));
            if procs.is_empty() && dirs.is_empty() && regs.is_empty() && shims.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: processes {procs:?}, run directories {dirs:?}, registrations {regs:?}, shims {shims:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let containers = self.ctr(&["containers", "list", "--quiet"]);
        assert_eq!(String::from_utf8_lossy(&containers.stdout).trim(), "");
    }
}

fn policy_allowing_busybox(key: &Path) -> String {
    format!(
        "trusted_keys: [{}]\nmin_security_version: 1\nattestation:\n  ek_ca: ca/swtpm-localca-rootca-cert.pem\nimages:\n  allow:\n    - repository: docker.io/library/busybox\n",
        key.display()
    )
}

#[test]
fn ctr_runs_a_container_in_a_measured_pod_that_attests_with_its_image() {
    let c = Containerd::start(policy_allowing_busybox);

    // The command: the container's output, its exit status, nothing left after.
    let out = c.run(&["--rm"], "t1", "echo hi; exit 3");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{}", c.log());
    assert_exit(&out, 3);
    c.assert_nothing_left();

    // Detached: the task stays (stopped) until `ctr task rm`, and its kept TPM with it.
    let out = c.run(&["-d"], "t2", "echo attest-me; exit 3");
    assert_exit(&out, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = String::from_utf8_lossy(&c.ctr(&["task", "list"]).stdout).into_owned();
        if tasks
            .lines()
            .any(|l| l.starts_with("t2") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "t2 did not stop: {tasks}\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = c.run_root().join("t2");
    let console = std::fs::read_to_string(run.join("console.log"))
        .unwrap_or_else(|e| panic!("t2's console: {e}\n{}", c.log()));
    assert!(console.contains("[t2] attest-me"), "{console}");
    // The pod file the shim made names the image by the manifest that ran.
    let pod = std::fs::read_to_string(run.join("pod.yaml")).unwrap();
    assert!(pod.contains(&format!("{IMAGE}@{}", c.digest)), "{pod}");

    let v = c.attest(&run);
    let sub = &v["results"][0]["result"]["submods"]["t2"];
    assert_eq!(sub["ear.status"], "affirming", "{v}");
    assert_eq!(sub["jek.claims"]["images"]["status"], "affirming", "{v}");
    assert_eq!(
        sub["jek.images"][0]["manifestDigest"],
        c.digest.as_str(),
        "{v}"
    );

    assert_exit(&c.ctr(&["task", "delete", "t2"]), 0);
    assert_exit(&c.ctr(&["containers", "delete", "t2"]), 0);
    c.assert_nothing_left();
}

/// Starts `ctr run --rm` of a container that prints `up` and sleeps; returns it once `up`
/// arrived on its stdout.
fn start_sleeper(c: &Containerd, id: &str) -> Child {
    let mut child = c
        .ctr_command(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            IMAGE,
            id,
            "sh",
            "-c",
            "echo up; sleep 600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "up\n", "{id}: {}", c.log());
    child
}

#[test]
fn two_containers_run_at_once_in_two_pods_and_kill_stops_each() {
    let c = Containerd::start(policy_allowing_busybox);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| start_sleeper(&c, "k1"));
        let b = s.spawn(|| start_sleeper(&c, "k2"));
        (a.join().unwrap(), b.join().unwrap())
    });
    // Two VMs, each with a swtpm of its own on its own state.
    for id in ["k1", "k2"] {
        let dir = c.run_root().join(id);
        let tpm = processes_naming(&format!("dir={}", dir.join("tpm").display()));
        assert_eq!(tpm.len(), 1, "{id}: one swtpm on its own state");
        let all = processes_naming(&dir.display().to_string());
        assert!(all.len() >= 2, "{id}: its swtpm and its QEMU: {all:?}");
    }
    // SIGTERM (ctr's default) and SIGKILL: the VM stops, ctr reports the signal.
    assert_exit(&c.ctr(&["task", "kill", "k1"]), 0);
    assert_exit(&c.ctr(&["task", "kill", "--signal", "SIGKILL", "k2"]), 0);
    let a = a.wait_with_output().unwrap();
    let b = b.wait_with_output().unwrap();
    assert_exit(&a, 128 + 15);
    assert_exit(&b, 128 + 9);
    c.assert_nothing_left();
}

/// Issue 33: a pod whose TPM is not kept for attestation, killed with `ctr task kill`,
/// stopped its VM but never reported its exit: containerd's clean-up removed the swtpm's
/// socket directory, and the loader waited for ever to wake its TPM listeners by
/// connecting to paths that were gone. So `ctr run` never returned, `ctr task ls` said
/// RUNNING and `ctr task rm -f` hung. Now the exit reaches containerd.
#[test]
fn a_killed_pod_without_a_kept_tpm_reports_its_exit() {
    let c = Containerd::start_with(policy_allowing_busybox, false, &[]);
    let mut a = start_sleeper(&c, "n1");
    assert_exit(&c.ctr(&["task", "kill", "n1"]), 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = a.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit reached ctr run 60 s after the kill; ctr task ls: {}; {}",
            String::from_utf8_lossy(&c.ctr(&["task", "ls"]).stdout),
            c.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(128 + 15), "{}", c.log());
    c.assert_nothing_left();
}

/// Issue 33: a pod whose boot failed was reported started, and its failure came later as
/// an exit status (255). A VM that fails must fail the call that started it: Start now
/// answers once the guest's init is up, or with the boot's reason.
#[test]
fn a_pod_whose_boot_fails_fails_its_start_with_the_reason() {
    let c = Containerd::start_with(
        policy_allowing_busybox,
        false,
        &[("JEK_SWTPM", "/nonexistent/swtpm")],
    );
    let out = c.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        IMAGE,
        "f1",
        "sh",
        "-c",
        "echo up",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "ctr's own failure, not the task's exit: {stderr}"
    );
    assert!(
        stderr.contains("cannot start the pod's TPM"),
        "the boot's reason: {stderr}"
    );
    c.assert_nothing_left();
}

/// Issue 39: killing the shim with SIGKILL left its QEMU running, orphaned, after
/// containerd had forgotten the task. Now the VMM (and a swtpm that is not kept) dies with
/// the shim, and containerd's clean-up of the dead shim (`containerd-shim-jek-v2 delete`)
/// leaves nothing behind. The VMM runs as a uid of the pod range, not as nobody.
#[test]
fn a_shim_killed_with_sigkill_takes_its_vm_with_it() {
    let c = Containerd::start(policy_allowing_busybox);
    let ctr = start_sleeper(&c, "sk1");
    let dir = c.run_root().join("sk1");
    let qemu: Vec<u32> = processes_naming(&dir.display().to_string())
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("qemu-system-x86_64"))
        })
        .collect();
    assert_eq!(qemu.len(), 1, "one QEMU: {qemu:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", qemu[0])).unwrap();
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let pods = jek_loader::pod_user::DEFAULT_UIDS;
    assert!(
        (pods.first()..=pods.last()).contains(&uid),
        "QEMU runs as {uid}, not a pod uid"
    );
    let shims: Vec<u32> =
        processes_naming(&format!("-address {}", c.path("containerd.sock").display()))
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.starts_with("containerd-shim"))
            })
            .collect();
    assert_eq!(shims.len(), 1, "one shim: {shims:?}");
    let shim = rustix::process::Pid::from_raw(i32::try_from(shims[0]).unwrap()).unwrap();
    rustix::process::kill_process(shim, rustix::process::Signal::KILL).unwrap();
    // ctr learns that the task is gone; what it prints is containerd's business.
    let _ = ctr.wait_with_output().unwrap();
    assert!(
        common::gone_within(qemu[0], 10),
        "QEMU {} outlived its shim",
        qemu[0]
    );
    let _ = c.ctr(&["task", "delete", "sk1"]);
    let _ = c.ctr(&["containers", "delete", "sk1"]);
    c.assert_nothing_left();
}

#[test]
fn a_refused_bundle_fails_ctr_run_with_the_verifiers_reason_and_starts_nothing() {
    let c = Containerd::start(policy_allowing_busybox);
    // A runtime file of its own through containerd's runtime options (ConfigPath): the
    // same bundle under a policy whose security-version floor is above it.
    let strict = policy_allowing_busybox(&test_key().with_extension("pub"))
        .replace("min_security_version: 1", "min_security_version: 99");
    std::fs::write(c.path("strict.yaml"), strict).unwrap();
    let stderr = c.refused(&c.runtime_with_policy("strict.yaml"), "r1");
    assert!(
        stderr.contains("jek: the kernel bundle is refused")
            && stderr.contains("security version 1 is below the minimum 99"),
        "{stderr}"
    );
    assert!(
        !c.run_root().join("r1").exists(),
        "no run directory for a refused bundle"
    );
    assert!(
        !c.log().contains("registered the pod's TPM"),
        "no TPM: {}",
        c.log()
    );

    // What decides trust must be the host's own (sshd's StrictModes): a runtime file any
    // user can write is refused by name and mode, and so is a policy whose trusted key
    // another user (nobody) owns, though it is the right key.
    use std::os::unix::fs::PermissionsExt as _;
    let good = c.runtime_with_policy("policy.yaml");
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o666)).unwrap();
    let stderr = c.refused(&good, "r2");
    assert!(
        stderr.contains("the runtime file is refused")
            && stderr.contains("mode 0666: writable by every user"),
        "{stderr}"
    );
    let theirs = c.path("nobody.pub");
    std::fs::copy(test_key().with_extension("pub"), &theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    std::fs::write(c.path("theirs.yaml"), policy_allowing_busybox(&theirs)).unwrap();
    let stderr = c.refused(&c.runtime_with_policy("theirs.yaml"), "r3");
    assert!(
        stderr.contains("trusted_keys[0]") && stderr.contains("owned by uid 65534"),
        "{stderr}"
    );
    c.assert_nothing_left();
}

/// Issue 39 item 6: with a verifier in the runtime file, a pod started through the shim
/// registers itself (the shim's admin token), as the Kubernetes pod CRI's annotations name,
/// is attested affirming with that identity in its signed result, and is removed from the
/// verifier when containerd deletes the container, every step in the verifier's audit
/// log. A registration the verifier refuses (a token it does not know) stops the pod with
/// the reason; a token file other users can read is refused at Create, by name.
#[test]
fn a_pod_registers_itself_with_the_verifier_and_leaves_it_when_deleted() {
    use common::service::{
        bin, get_json, http_as, token_file, tokens_file, wait_for, Service, ADMIN_TOKEN,
        READER_TOKEN,
    };
    use std::os::unix::fs::PermissionsExt as _;
    let c = Containerd::start(policy_allowing_busybox);
    // The pods' EK CA exists before the verifier that trusts it starts.
    let scratch = tempfile::tempdir().unwrap();
    jek_tpm::identity::LocalCa::new(&c.path("ca"))
        .manufacture(scratch.path())
        .unwrap();
    let agent = Service::start(
        &bin("jek-agent"),
        &[
            "--listen".into(),
            format!("unix:{}", c.path("agent.sock").display()),
            "--registry".into(),
            c.path("registry").display().to_string(),
        ],
        &c.path("agent.log"),
    );
    let verifier = Service::start(
        &bin("jek-attestation-verifier"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--policy",
            c.path("policy.yaml").to_str().unwrap(),
            "--store",
            c.path("verifier.db").to_str().unwrap(),
            "--bundle",
            default_build().bundle.to_str().unwrap(),
            "--interval",
            "1s",
            "--tokens",
            tokens_file(c.dir.path()).to_str().unwrap(),
        ]
        .map(String::from),
        &c.path("verifier.log"),
    );
    let runtime_with_token = |name: &str, token: &str, mode: u32| {
        let file = c.path(&format!("{name}.token"));
        token_file(&file, token);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let text = format!(
            "{}  verifier:\n    url: {}\n    agent: {}\n    token: {}\n",
            std::fs::read_to_string(c.path("runtime.yaml")).unwrap(),
            verifier.url,
            agent.url,
            file.display()
        );
        let path = c.path(&format!("{name}-runtime.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let as_reader = |path: &str| {
        let (status, body) = http_as(
            Some(READER_TOKEN),
            "GET",
            &format!("{}{path}", verifier.url),
            None,
        );
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Value>(&body).unwrap()
    };
    let uid = "3f1c6a2e-9b7d-4c55-8e21-0a4b6c8d9e0f";
    let annotations = [
        "--annotation",
        "io.kubernetes.cri.sandbox-namespace=shop",
        "--annotation",
        "io.kubernetes.cri.sandbox-name=web-0",
        "--annotation",
        &format!("io.kubernetes.cri.sandbox-uid={uid}"),
    ];

    // Registered without a manual POST, affirming, as the Kubernetes pod.
    let good = runtime_with_token("admin", ADMIN_TOKEN, 0o600);
    let mut args = vec!["-d", "--runtime-config-path", good.to_str().unwrap()];
    args.extend_from_slice(&annotations);
    assert_exit(&c.run(&args, "reg1", "echo up; sleep 600"), 0);
    let pod = wait_for("the pod's affirming result at the verifier", 90, || {
        as_reader("/v1/pods")["pods"]
            .as_array()
            .and_then(|p| p.first().cloned())
            .filter(|p| p["status"] == "affirming")
    });
    // Named in the guest (and at the verifier) as the Kubernetes pod, not by containerd's id.
    assert_eq!(pod["pod"], "web-0", "{pod}");
    assert_eq!(
        pod["kubernetes"],
        serde_json::json!({"namespace": "shop", "name": "web-0", "uid": uid}),
        "{pod}"
    );
    let id = pod["id"].as_str().unwrap().to_string();
    let result = as_reader(&format!("/v1/pods/{id}/result"));
    let sub = &result["ear"]["submods"]["web-0"];
    assert_eq!(sub["jek.kubernetes"]["uid"], uid, "{result}");
    assert_eq!(sub["jek.registration"], id.as_str(), "{result}");
    // What the verifier's audit log says the shim's token did to this pod.
    let audited_by_the_shim = |action: &str| {
        let audit = get_json(&format!("{}/v1/audit", verifier.url)).1;
        assert!(
            audit["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == action
                    && e["id"] == id.as_str()
                    && e["by"].as_str().unwrap().starts_with("test-admin")),
            "no {action} event: {audit}"
        );
    };
    audited_by_the_shim("registered");

    // Deleted through containerd: gone from the verifier too, by the shim's hand.
    assert_exit(&c.ctr(&["task", "kill", "--signal", "SIGKILL", "reg1"]), 0);
    wait_for("reg1 to stop", 30, || {
        String::from_utf8_lossy(&c.ctr(&["task", "list"]).stdout)
            .lines()
            .any(|l| l.starts_with("reg1") && l.contains("STOPPED"))
            .then_some(())
    });
    assert_exit(&c.ctr(&["task", "delete", "reg1"]), 0);
    assert_exit(&c.ctr(&["containers", "delete", "reg1"]), 0);
    assert_eq!(as_reader("/v1/pods")["pods"], serde_json::json!([]));
    audited_by_the_shim("removed");
    c.assert_nothing_left();

    // A credential the verifier does not know: the pod is stopped, and says why.
    let stranger = runtime_with_token(
        "stranger",
        "jek-test-unknown-token-0123456789abcdef01234567",
        0o600,
    );
    let out = c.run(
        &["--rm", "--runtime-config-path", stranger.to_str().unwrap()],
        "reg2",
        "echo up; sleep 600",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("could not be registered with its verifier") && stderr.contains("401"),
        "{stderr}\n{}",
        c.log()
    );
    // The registration runs beside the guest's boot: refused before the init is up, the
    // Start fails with the reason (ctr exits 1); after, the running pod is stopped (255).
    assert!(
        matches!(out.status.code(), Some(1 | 255)),
        "{:?}: {stderr}",
        out.status
    );
    c.assert_nothing_left();

    // A token file other users can read: refused before anything starts.
    let open = runtime_with_token("open", ADMIN_TOKEN, 0o644);
    let stderr = c.refused(&open, "reg3");
    assert!(stderr.contains("attestation.verifier.token"), "{stderr}");
    c.assert_nothing_left();
}

/// Issue 33 items 1, 2 and 5: containers grouped by the CRI's sandbox id share one shim
/// and one VM. The sandbox container boots a pod sandbox (no pause image, no container);
/// each container of the pod then joins the running VM, measured into the pod's TPM
/// before the guest gets it, its stdout and stderr to containerd's two FIFOs apart, its
/// exit status to `ctr`. The pod attests affirming with its containers in the order they
/// joined. A graceful stop of the sandbox stops the VM, and nothing is left. `ctr` stands
/// in for the CRI here with the annotations the CRI plugin writes.
#[test]
fn the_containers_of_a_pod_sandbox_share_its_vm_and_are_measured_as_they_join() {
    let c = Containerd::start(policy_allowing_busybox);
    let uid = "7d3c1a2e-9b7d-4c55-8e21-0a4b6c8d9e0f";
    let sandbox = [
        "-d",
        "--annotation",
        "io.kubernetes.cri.container-type=sandbox",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=sbx1",
        "--annotation",
        "io.kubernetes.cri.sandbox-namespace=shop",
        "--annotation",
        "io.kubernetes.cri.sandbox-name=web-0",
        "--annotation",
        &format!("io.kubernetes.cri.sandbox-uid={uid}"),
    ];
    // Detached: Start answered once the pod's init was up.
    assert_exit(&c.run(&sandbox, "sbx1", "sleep 600"), 0);
    let member = |id: &str, name: &str, script: &str| {
        let name = format!("io.kubernetes.cri.container-name={name}");
        c.run(
            &[
                "--rm",
                "--annotation",
                "io.kubernetes.cri.container-type=container",
                "--annotation",
                "io.kubernetes.cri.sandbox-id=sbx1",
                "--annotation",
                &name,
            ],
            id,
            script,
        )
    };
    // A pod on the host's network (hostNetwork: true) cannot be a VM: refused at Create,
    // by name, before anything boots.
    let mut host = sandbox.to_vec();
    host[4] = "io.kubernetes.cri.sandbox-id=sbxhost";
    host.push("--net-host");
    let out = c.run(&host, "sbxhost", "sleep 600");
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hostNetwork: true") && stderr.contains("network namespace"),
        "{stderr}"
    );
    assert!(!c.run_root().join("sbxhost").exists());
    let _ = c.ctr(&["containers", "delete", "sbxhost"]);
    let out = member("c1", "app", "echo out; echo err >&2; exit 3");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n", "{}", c.log());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n", "{}", c.log());
    assert_exit(&out, 3);
    let out = member("c2", "sidecar", "echo second; hostname");
    assert_exit(&out, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "second\nweb-0\n",
        "{}",
        c.log()
    );
    // One VM and one shim for the pod and its containers.
    let run = c.run_root().join("sbx1");
    let qemus = processes_naming(&format!("guest=jek:{}", run.display()));
    assert_eq!(qemus.len(), 1, "{qemus:?}");
    let shims = processes_naming(&format!("-address {}", c.path("containerd.sock").display()));
    assert_eq!(shims.len(), 1, "{shims:?}");
    // A graceful stop of the sandbox: the VM powers off, nothing is left after removal.
    assert_exit(&c.ctr(&["task", "kill", "sbx1"]), 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = String::from_utf8_lossy(&c.ctr(&["task", "list"]).stdout).into_owned();
        if tasks
            .lines()
            .any(|l| l.starts_with("sbx1") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sbx1 did not stop: {tasks}\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two containers joined: both measured, both in the pod's attestation (its TPM kept
    // after the VM stopped), in the order they joined.
    let v = c.attest(&run);
    let sub = &v["results"][0]["result"]["submods"]["web-0"];
    assert_eq!(sub["ear.status"], "affirming", "{v}");
    let none = Vec::new();
    let images: Vec<&str> = sub["jek.images"]
        .as_array()
        .unwrap_or(&none)
        .iter()
        .filter_map(|i| i["container"].as_str())
        .collect();
    assert_eq!(images, ["app", "sidecar"], "{v}");

    assert_exit(&c.ctr(&["task", "delete", "sbx1"]), 0);
    assert_exit(&c.ctr(&["containers", "delete", "sbx1"]), 0);
    c.assert_nothing_left();
}

/// Issue 33 item 5: a pod sandbox's shim killed with SIGKILL takes the pod's VM with it,
/// and containerd's clean-up of the dead shim (`containerd-shim-jek-v2 delete`, run in
/// each container's bundle) leaves nothing behind: the sandbox's record names the pod's
/// run directory and kept TPM; its containers, which live in that VM, have nothing of
/// their own on the host.
#[test]
fn a_pod_sandboxs_shim_killed_with_sigkill_takes_the_pods_vm_with_it() {
    let c = Containerd::start(policy_allowing_busybox);
    let sandbox = [
        "-d",
        "--annotation",
        "io.kubernetes.cri.container-type=sandbox",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=sbx2",
    ];
    assert_exit(&c.run(&sandbox, "sbx2", "sleep 600"), 0);
    let member = [
        "-d",
        "--annotation",
        "io.kubernetes.cri.container-type=container",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=sbx2",
        "--annotation",
        "io.kubernetes.cri.container-name=app",
    ];
    assert_exit(&c.run(&member, "m1", "echo up; sleep 600"), 0);
    let run = c.run_root().join("sbx2");
    let qemu: Vec<u32> = processes_naming(&format!("guest=jek:{}", run.display()));
    assert_eq!(qemu.len(), 1, "one QEMU: {qemu:?}");
    let shims: Vec<u32> =
        processes_naming(&format!("-address {}", c.path("containerd.sock").display()))
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.starts_with("containerd-shim"))
            })
            .collect();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");
    let shim = rustix::process::Pid::from_raw(i32::try_from(shims[0]).unwrap()).unwrap();
    rustix::process::kill_process(shim, rustix::process::Signal::KILL).unwrap();
    assert!(
        common::gone_within(qemu[0], 10),
        "QEMU {} outlived its shim",
        qemu[0]
    );
    for id in ["m1", "sbx2"] {
        let _ = c.ctr(&["task", "delete", id]);
        let _ = c.ctr(&["containers", "delete", id]);
    }
    c.assert_nothing_left();
}
