//! A Kubernetes pod through containerd's CRI (issue 33), as the kubelet drives it: the test
//! starts its own containerd 1.6 with the CRI plugin, the jek runtime handler and a CNI
//! bridge network, and speaks the CRI's runtime.v1 API to it (the `k8s-cri` crate's tonic
//! client) over its socket. One pod sandbox boots one VM; an init container runs to
//! completion, then two app containers join the same VM and reach each other on
//! localhost; logs are tagged by stream; a graceful stop and a forced one; an image the
//! policy refuses fails its own container only; the pod attests with its three
//! containers in order; and removing the pod leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::{assert_exit, default_build, processes_naming, test_key};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, PodSandboxConfig, PodSandboxMetadata,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use serde_json::Value;

const IMAGE: &str = "docker.io/library/busybox:jek-test";
/// The pods' sandbox image: what runc's pods run to hold their namespaces (jek's pods do
/// not run it).
const PAUSE: &str = "docker.io/library/pause:jek-test";
const NAMESPACE: &str = "k8s.io";
/// The test network's bridge on the host (removed at the end).
const BRIDGE: &str = "jekcri0";

/// A containerd with the CRI plugin, killed (with what it started) when dropped.
struct Cri {
    child: Child,
    /// The host's agent and the attestation verifier the pods register with, if any.
    _agent: Option<common::service::Service>,
    verifier: Option<common::service::Service>,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<tonic::transport::Channel>,
}

impl Drop for Cri {
    fn drop(&mut self) {
        // A failed test's pods: removed through the CRI (their network namespaces and
        // addresses with them), then whatever still runs is killed.
        let client = &mut self.client;
        if let Ok(list) = self
            .rt
            .block_on(client.list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest { filter: None }))
        {
            for pod in list.into_inner().items {
                let id = pod.id;
                let _ = self
                    .rt
                    .block_on(client.stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    }));
                let _ = self.rt.block_on(
                    client.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }),
                );
            }
        }
        let address = format!("-address {}", self.path("containerd.sock").display());
        for pid in processes_naming(&address) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        common::kill_left_behind(self.dir.path());
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
    }
}

fn policy(key: &Path) -> String {
    format!(
        "trusted_keys: [{}]\nmin_security_version: 1\nattestation:\n  ek_ca: ca/swtpm-localca-rootca-cert.pem\nimages:\n  allow:\n    - repository: docker.io/library/busybox\n",
        key.display()
    )
}

impl Cri {
    /// containerd with the CRI plugin; with `attest`, pods keep their TPM and register with
    /// an attestation verifier of the test's own.
    fn start(attest: bool) -> Cri {
        let built = default_build();
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let d = dir.path().display();
        std::fs::create_dir_all(p("bin")).unwrap();
        // The benchmark runs the release shim (`JEK_CRI_SHIM`).
        let shim = std::env::var_os("JEK_CRI_SHIM").map_or_else(
            || common::service::bin("containerd-shim-jek-v2"),
            PathBuf::from,
        );
        std::os::unix::fs::symlink(shim, p("bin/containerd-shim-jek-v2")).unwrap();
        std::fs::write(p("policy.yaml"), policy(&test_key().with_extension("pub"))).unwrap();
        let (agent, verifier) = if attest {
            // The pods' EK CA exists before the verifier that trusts it starts.
            let scratch = tempfile::tempdir().unwrap();
            jek_tpm::identity::LocalCa::new(&p("ca"))
                .manufacture(scratch.path())
                .unwrap();
            let agent = common::service::Service::start(
                &common::service::bin("jek-agent"),
                &[
                    "--listen".into(),
                    format!("unix:{}", p("agent.sock").display()),
                    "--registry".into(),
                    p("registry").display().to_string(),
                ],
                &p("agent.log"),
            );
            let verifier = common::service::Service::start(
                &common::service::bin("jek-attestation-verifier"),
                &[
                    "--listen",
                    "127.0.0.1:0",
                    "--policy",
                    p("policy.yaml").to_str().unwrap(),
                    "--store",
                    p("verifier.db").to_str().unwrap(),
                    "--bundle",
                    built.bundle.to_str().unwrap(),
                    "--interval",
                    "1s",
                    "--tokens",
                    common::service::tokens_file(dir.path()).to_str().unwrap(),
                ]
                .map(String::from),
                &p("verifier.log"),
            );
            common::service::token_file(&p("admin.token"), common::service::ADMIN_TOKEN);
            (Some(agent), Some(verifier))
        } else {
            (None, None)
        };
        let attestation = match (&agent, &verifier) {
            (Some(a), Some(v)) => format!(
                "attestation:\n  tpmCa: ca\n  registry: registry\n  verifier:\n    url: {}\n    agent: {}\n    token: admin.token\n",
                v.url, a.url
            ),
            _ => String::new(),
        };
        std::fs::write(
            p("runtime.yaml"),
            format!(
                "bundle: {}\npolicy: policy.yaml\nrunRoot: run\n{attestation}",
                built.bundle.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all(p("cni")).unwrap();
        std::fs::write(
            p("cni/10-jek-test.conflist"),
            format!(
                r#"{{"cniVersion":"0.4.0","name":"jek-test","plugins":[{{"type":"bridge","bridge":"{BRIDGE}","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","subnet":"10.251.0.0/24","dataDir":"{d}/cni-data"}}}},{{"type":"loopback"}}]}}"#
            ),
        )
        .unwrap();
        std::fs::write(
            p("config.toml"),
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # These machines refuse a lower oom_score_adj even to root (no CAP_SYS_RESOURCE): runc's
  # pods (the benchmark's peer) keep the parent's, as on rootless hosts.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.jek]
    runtime_type = "io.containerd.jek.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.jek.options]
      ConfigPath = "{d}/runtime.yaml"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
"#
            ),
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            p("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(p("containerd.log")).unwrap();
        let child = common::isolate(&mut Command::new("containerd"))
            .arg("--config")
            .arg(p("config.toml"))
            .env("PATH", path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd must be installed (ci/install-deps.sh installs it)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = p("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let channel = rt
            .block_on(
                tonic::transport::Endpoint::try_from("http://[::]")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                        let socket = socket.clone();
                        async move {
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(socket).await?,
                            ))
                        }
                    })),
            )
            .unwrap();
        let cri = Cri {
            child,
            _agent: agent,
            verifier,
            client: RuntimeServiceClient::new(channel),
            rt,
            dir,
        };
        // The busybox image, the pods' pause image, and another image (another busybox
        // binary: one byte more) under a repository the policy does not allow.
        let busybox = Path::new("/bin/busybox");
        let layout = cri.path("layout");
        jek_image::build::busybox_layout(&layout, busybox)
            .unwrap_or_else(|e| panic!("/bin/busybox: {e} (apt install busybox-static)"));
        cri.import(&layout, "docker.io/library/busybox");
        let layout = cri.path("layout-pause");
        jek_image::build::pause_layout(&layout, busybox).unwrap();
        cri.import(&layout, "docker.io/library/pause");
        let mut other = std::fs::read(busybox).unwrap();
        other.push(0);
        std::fs::write(cri.path("busybox-other"), other).unwrap();
        let layout = cri.path("layout-other");
        jek_image::build::busybox_layout(&layout, &cri.path("busybox-other")).unwrap();
        cri.import(&layout, "docker.io/library/other");
        cri
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ctr image import` of the OCI layout at `layout` (as a tar) under `name`.
    fn import(&self, layout: &Path, name: &str) {
        let tar = layout.with_extension("tar");
        let made = Command::new("tar")
            .arg("-C")
            .arg(layout)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(made.success());
        assert_exit(
            &self.ctr(&[
                "image",
                "import",
                "--base-name",
                name,
                tar.to_str().unwrap(),
            ]),
            0,
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.path("containerd.sock"))
            .args(["--namespace", NAMESPACE])
            .args(args)
            .output()
            .expect("ctr (package containerd)")
    }

    fn container_config(&self, name: &str, script: &str) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            log_path: format!("{name}.log"),
            ..Default::default()
        }
    }

    /// CreateContainer + StartContainer; the container's id.
    fn run(&mut self, pod: &str, sandbox: &PodSandboxConfig, config: ContainerConfig) -> String {
        let name = config.metadata.as_ref().unwrap().name.clone();
        let created = self
            .rt
            .block_on(self.client.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            }))
            .unwrap_or_else(|e| panic!("create {name}: {e}\n{}", self.log()))
            .into_inner()
            .container_id;
        self.rt
            .block_on(self.client.start_container(StartContainerRequest {
                container_id: created.clone(),
            }))
            .unwrap_or_else(|e| panic!("start {name}: {e}\n{}", self.log()));
        created
    }

    /// The container's state and exit code.
    fn status(&mut self, id: &str) -> (i32, i32) {
        let s = self
            .rt
            .block_on(self.client.container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }))
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        (s.state, s.exit_code)
    }

    fn wait_exited(&mut self, id: &str, secs: u64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (state, code) = self.status(id);
            if state == ContainerState::ContainerExited as i32 {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not exit\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The CRI log file's lines of container `name`, as `(stream, text)`.
    fn log_lines(&self, name: &str) -> Vec<(String, String)> {
        std::fs::read_to_string(self.path("logs").join(format!("{name}.log")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                // TIMESTAMP STREAM TAG TEXT
                let mut it = l.splitn(4, ' ');
                let (_, stream, _, text) = (it.next()?, it.next()?, it.next()?, it.next()?);
                Some((stream.to_string(), text.to_string()))
            })
            .collect()
    }
}

#[test]
fn a_kubernetes_pod_runs_in_one_vm_through_containerds_cri() {
    let mut cri = Cri::start(true);
    let sandbox = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web-0".into(),
            uid: "5e1c6a2e-9b7d-4c55-8e21-0a4b6c8d9e0f".into(),
            namespace: "shop".into(),
            attempt: 0,
        }),
        hostname: "web-0".into(),
        log_directory: cri.path("logs").display().to_string(),
        ..Default::default()
    };
    let pod = cri
        .rt
        .block_on(cri.client.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: "jek".into(),
        }))
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", cri.log()))
        .into_inner()
        .pod_sandbox_id;
    let run = cri.path("run").join(NAMESPACE).join(&pod);
    let vm = || processes_naming(&run.display().to_string());

    // An init container, run to completion before the app containers.
    let init = cri.container_config("init", "echo init-done; hostname");
    let init = cri.run(&pod, &sandbox, init);
    assert_eq!(cri.wait_exited(&init, 60), 0);
    assert_eq!(
        cri.log_lines("init"),
        [
            ("stdout".to_string(), "init-done".to_string()),
            ("stdout".to_string(), "web-0".to_string())
        ]
    );

    // Two app containers in the same VM: one serves on localhost, the other reaches it.
    let server = cri.container_config(
        "server",
        "trap 'exit 0' TERM; while :; do busybox nc -l -p 8080 -e /bin/echo pong & wait $!; done",
    );
    let server = cri.run(&pod, &sandbox, server);
    let client = cri.container_config(
        "client",
        "trap '' TERM; until busybox nc 127.0.0.1 8080 </dev/null; do sleep 0.2; done; echo to-stderr >&2; while :; do sleep 1; done",
    );
    let client = cri.run(&pod, &sandbox, client);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = cri.log_lines("client");
        if lines.contains(&("stderr".into(), "to-stderr".into())) {
            assert!(
                lines.contains(&("stdout".into(), "pong".into())),
                "{lines:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "client: {lines:?}\n{}",
            cri.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Exactly one QEMU and one swtpm for the pod and its three containers.
    assert_eq!(vm().len(), 2, "{:?}", vm());

    // An image the policy refuses fails its container, and only that: containerd's CRI
    // creates the shim's task at StartContainer, so that is the call that fails.
    let refused = ContainerConfig {
        image: Some(ImageSpec {
            image: "docker.io/library/other:jek-test".into(),
            ..Default::default()
        }),
        ..cri.container_config("refused", "echo should-not-run")
    };
    let refused = cri
        .rt
        .block_on(cri.client.create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(refused),
            sandbox_config: Some(sandbox.clone()),
        }))
        .unwrap()
        .into_inner()
        .container_id;
    let e = cri
        .rt
        .block_on(cri.client.start_container(StartContainerRequest {
            container_id: refused,
        }))
        .unwrap_err();
    assert!(
        e.message()
            .contains("image policy refuses docker.io/library/other"),
        "{e}"
    );
    assert_eq!(
        cri.status(&client).0,
        ContainerState::ContainerRunning as i32
    );

    // A graceful stop: the TERM-trapping server exits 0 within its grace period while its
    // sibling runs on; the client ignores TERM and is killed when the grace period ends.
    cri.rt
        .block_on(cri.client.stop_container(StopContainerRequest {
            container_id: server.clone(),
            timeout: 10,
        }))
        .unwrap();
    assert_eq!(cri.wait_exited(&server, 30), 0);
    assert_eq!(
        cri.status(&client).0,
        ContainerState::ContainerRunning as i32
    );
    cri.rt
        .block_on(cri.client.stop_container(StopContainerRequest {
            container_id: client.clone(),
            timeout: 2,
        }))
        .unwrap();
    assert_eq!(cri.wait_exited(&client, 30), 137);
    assert_eq!(vm().len(), 2, "the pod's VM stops only with the pod");

    // The pod registered itself with the verifier when its VM ran; the verifier attests
    // it affirming with its three containers, in the order they joined.
    let as_reader = |path: &str| {
        let (status, body) = common::service::http_as(
            Some(common::service::READER_TOKEN),
            "GET",
            &format!("{}{path}", cri.verifier.as_ref().unwrap().url),
            None,
        );
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Value>(&body).unwrap()
    };
    let result =
        common::service::wait_for("the pod's result with its three containers", 90, || {
            let pods = as_reader("/v1/pods");
            let id = pods["pods"][0]["id"].as_str()?.to_string();
            let result = as_reader(&format!("/v1/pods/{id}/result"));
            let sub = &result["ear"]["submods"]["web-0"];
            (sub["ear.status"] == "affirming" && sub["jek.images"].as_array()?.len() == 3)
                .then_some(result)
        });
    let sub = &result["ear"]["submods"]["web-0"];
    let images: Vec<&str> = sub["jek.images"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["container"].as_str())
        .collect();
    assert_eq!(images, ["init", "server", "client"], "{result}");
    assert_eq!(sub["jek.kubernetes"]["name"], "web-0", "{result}");

    cri.rt
        .block_on(cri.client.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", cri.log()));
    cri.rt
        .block_on(cri.client.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", cri.log()));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shims = processes_naming(&format!(
            "-address {}",
            cri.path("containerd.sock").display()
        ));
        let regs: Vec<_> = std::fs::read_dir(cri.path("registry"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        let registered = as_reader("/v1/pods")["pods"].as_array().map_or(0, Vec::len);
        if vm().is_empty()
            && !run.exists()
            && regs.is_empty()
            && shims.is_empty()
            && registered == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: processes {:?}, run directory {}, registrations {regs:?}, shims {shims:?}, at the verifier {registered}",
            vm(),
            run.exists()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The medians of `xs`.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Issue 33 item 7, the benchmark (`ci/bench.sh`; not part of the test run): the same CRI
/// scenario with runc and with jek, in the same containerd: RunPodSandbox, then
/// CreateContainer + StartContainer to the container's first log line, and the memory of
/// each pod's shim (and, for jek, its VM's QEMU and swtpm) while the container runs.
/// Prints a Markdown table of medians over `JEK_CRI_RUNS` pods per runtime (default 5).
#[test]
#[ignore = "a benchmark: ci/bench.sh runs it"]
fn cri_figures() {
    let runs: usize = std::env::var("JEK_CRI_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut cri = Cri::start(false);
    let mut rows = Vec::new();
    for handler in ["runc", "jek"] {
        let (mut sandbox_ms, mut first_ms) = (Vec::new(), Vec::new());
        let (mut shim_kib, mut vm_kib) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let name = format!("{handler}-{i}");
            let sandbox = PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: name.clone(),
                    uid: format!("00000000-0000-4000-8000-{i:012}"),
                    namespace: "bench".into(),
                    attempt: 0,
                }),
                hostname: name.clone(),
                log_directory: cri.path(&format!("logs-{name}")).display().to_string(),
                ..Default::default()
            };
            let t0 = Instant::now();
            let pod = cri
                .rt
                .block_on(cri.client.run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(sandbox.clone()),
                    runtime_handler: handler.into(),
                }))
                .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", cri.log()))
                .into_inner()
                .pod_sandbox_id;
            sandbox_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            let t1 = Instant::now();
            let config = cri.container_config("app", "echo first; sleep 1000");
            cri.run(&pod, &sandbox, config);
            let log = cri.path(&format!("logs-{name}")).join("app.log");
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(" stdout F first")
            {
                assert!(
                    t1.elapsed() < Duration::from_secs(120),
                    "{name}: no first line"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            first_ms.push(t1.elapsed().as_secs_f64() * 1000.0);
            let shim = processes_naming(&format!("-id {pod} -address"))
                .into_iter()
                .find(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("containerd-shim"))
                });
            shim_kib.push(shim.map_or(0, rss_kib) as f64);
            let run = cri.path("run").join(NAMESPACE).join(&pod);
            vm_kib.push(
                processes_naming(&run.display().to_string())
                    .into_iter()
                    .map(rss_kib)
                    .sum::<u64>() as f64,
            );
            cri.rt
                .block_on(cri.client.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                }))
                .unwrap();
            cri.rt
                .block_on(cri.client.remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod,
                }))
                .unwrap();
        }
        rows.push((
            handler,
            median(sandbox_ms),
            median(first_ms),
            median(shim_kib),
            median(vm_kib),
        ));
    }
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "| runtime handler | RunPodSandbox | CreateContainer + StartContainer to the first log line | the pod's shim RSS | its VM's QEMU and swtpm RSS |").unwrap();
    writeln!(out, "|---|---|---|---|---|").unwrap();
    for (handler, sandbox, first, shim, vm) in &rows {
        let vm = if *handler == "runc" {
            "(no VM)".to_string()
        } else {
            format!("{vm:.0} KiB")
        };
        writeln!(
            out,
            "| {handler} | {sandbox:.0} ms | {first:.0} ms | {shim:.0} KiB | {vm} |"
        )
        .unwrap();
    }
    // Where a joining container's time goes, from the shim's log lines (containerd's log).
    let log = cri.log();
    let field = |line: &str, key: &str| -> Option<f64> {
        let at = line.find(&format!("{key}="))? + key.len() + 1;
        line[at..].split([' ', '"', '\\']).next()?.parse().ok()
    };
    let steps: Vec<(&str, f64)> = ["create_ms", "measure_ms", "send_ms", "start_ms"]
        .iter()
        .map(|k| {
            let xs: Vec<f64> = log.lines().filter_map(|l| field(l, k)).collect();
            (*k, median(xs))
        })
        .collect();
    writeln!(out).unwrap();
    writeln!(
        out,
        "jek, a joining container's steps in its shim (medians): Create (root read, image looked up, segment packed) {:.0} ms, measured into the pod's TPM {:.0} ms, sent over the agent channel and unpacked by the guest {:.0} ms, started {:.0} ms.",
        steps[0].1, steps[1].1, steps[2].1, steps[3].1
    )
    .unwrap();
    let ratio = rows[1].2 / rows[0].2;
    writeln!(out).unwrap();
    writeln!(out, "RUNS={runs} RATIO_FIRST_LINE={ratio:.2}").unwrap();
}
