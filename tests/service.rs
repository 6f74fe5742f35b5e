//! The attestation service end to end: `jek-agent` on this host, `jek-attestation-verifier` with SQLite
//! or PostgreSQL, pods booted with `jek boot --keep-tpm`. Registration through the agent,
//! continuous signed results (checked by PyJWT against the JWKS), a QEMU pod quoted while
//! its application sleeps, a revoked signer flipping every pod with webhooks delivered,
//! bad requests, an agent that stops answering, a database that goes away, two replicas
//! sharing one PostgreSQL fleet, and the fleet page in headless Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::service::{
    bin, get_json, http, http_as, post_json, wait_for, Postgres, Proxy, Service, Webhook,
    ADMIN_TOKEN, READER_TOKEN,
};
use common::{assert_exit, jek, test_key, Workspace};
use serde_json::{json, Value};

/// One scenario at a time: each boots pods and runs servers on two shared cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A host: pods booted into one registration store, and its agent.
struct Host {
    ws: Workspace,
    kept: Vec<Value>,
    agent: Option<Service>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.agent.take();
        for k in self.kept.iter().filter_map(common::kept_swtpm) {
            let _ = jek_tpm::swtpm::stop_kept(&k);
        }
        // Pods still registered (a QEMU pod's TPM outlives a killed boot).
        if let Ok(store) =
            jek_host_attest::registrations::RegistrationStore::open(&self.ws.path("reg"))
        {
            for r in store.list().unwrap_or_default() {
                let _ = jek_host_attest::kept::stop(&store, r.id());
            }
        }
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

impl Host {
    fn new() -> Host {
        let ws = Workspace::new();
        let key = test_key();
        ws.policy("policy.yaml", &policy(&key, false));
        ws.write("testkernel.bzImage", jek_testkernel::BZIMAGE);
        let out = ws.jek(&[
            "pack",
            "--kernel",
            "testkernel.bzImage",
            "--cmdline",
            "console=ttyS0",
            "--name",
            "tk",
            "--version",
            "1",
            "--security-version",
            "1",
            "--kernel-release",
            "jek-test",
            "--key",
            &s(&key),
            "--out",
            "tk.jek",
        ]);
        assert_exit(&out, 0);
        Host {
            ws,
            kept: Vec::new(),
            agent: None,
        }
    }

    fn boot_args(&self, bundle: &Path, name: &str, vmm: &str) -> Vec<String> {
        self.ws
            .write(&format!("{name}.yaml"), common::pod_yaml(name).as_bytes());
        [
            "boot",
            &s(bundle),
            "--policy",
            &s(&self.ws.path("policy.yaml")),
            "--pod",
            &s(&self.ws.path(&format!("{name}.yaml"))),
            "--vmm",
            vmm,
            "--keep-tpm",
            "--tpm-ca",
            &s(&self.ws.path("ca")),
            "--registry",
            &s(&self.ws.path("reg")),
            "--json",
            "-q",
            "--run-dir",
            &s(&self.ws.path(&format!("pods/{name}"))),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    }

    /// Boots `n` test-kernel pods under KVM at once; their names are `p00`...
    fn boot_kvm(&mut self, n: usize) {
        let bundle = self.ws.path("tk.jek");
        let children: Vec<_> = (0..n)
            .map(|i| {
                jek()
                    .args(self.boot_args(&bundle, &format!("p{i:02}"), "kvm"))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert_exit(&out, 0);
            self.kept.push(serde_json::from_slice(&out.stdout).unwrap());
        }
    }

    /// Starts the host's agent on a Unix socket in the host's directory (this process's
    /// uid, the verifier's too, is the one it serves); returns its `unix:` URL.
    fn start_agent(&mut self) -> String {
        let args = vec![
            "--listen".to_string(),
            format!("unix:{}", self.ws.path("agent.sock").display()),
            "--registry".into(),
            s(&self.ws.path("reg")),
        ];
        let agent = Service::start(&bin("jek-agent"), &args, &self.ws.path("agent.log"));
        let url = agent.url.clone();
        self.agent = Some(agent);
        url
    }

    fn bundle_digest(&self, file: &Path) -> String {
        use sha2::Digest as _;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(std::fs::read(file).unwrap()))
        )
    }
}

fn policy(key: &Path, revoked: bool) -> String {
    let revoked = if revoked {
        format!(
            "revoked_keys: [{{file: {}}}]\n",
            key.with_extension("pub").display()
        )
    } else {
        String::new()
    };
    format!(
        "trusted_keys: [{}]\n{revoked}min_security_version: 1\nattestation:\n  ek_ca: ca/swtpm-localca-rootca-cert.pem\n",
        key.with_extension("pub").display()
    )
}

fn start_verifier(
    host: &Host,
    store: &str,
    bundles: &[&Path],
    extra: &[&str],
    log: &str,
) -> Service {
    let mut args = vec![
        "--listen".to_string(),
        "127.0.0.1:0".into(),
        "--policy".into(),
        s(&host.ws.path("policy.yaml")),
        "--store".into(),
        store.to_string(),
        "--interval".into(),
        "1s".into(),
        "--agent-timeout".into(),
        "2s".into(),
        "--tokens".into(),
        s(&common::service::tokens_file(&host.ws.path(""))),
    ];
    for b in bundles {
        args.push("--bundle".into());
        args.push(s(b));
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    Service::start(&bin("jek-attestation-verifier"), &args, &host.ws.path(log))
}

/// The test reader's token ([`READER_TOKEN`]) in a file of the host's, for `--token-file`.
fn reader_token(host: &Host) -> String {
    common::service::token_file(&host.ws.path("reader.token"), READER_TOKEN)
}

/// `jek boot` running a pod, stopped with SIGTERM (which stops its QEMU and swtpm) and
/// waited for when dropped, so a test that fails halfway leaves no pod behind.
struct Booting(std::process::Child);

impl Drop for Booting {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            if let Some(pid) = i32::try_from(self.0.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let _ = self.0.wait();
    }
}

/// A pod as the agent lists it: identifier, name, running.
type AgentPod = (String, String, bool);

/// The agent's pods.
fn agent_pods(agent: &str) -> Vec<AgentPod> {
    let (status, v) = get_json(&format!("{agent}/v1/pods"));
    assert_eq!(status, 200, "{v}");
    v["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["pod"].as_str().unwrap().to_string(),
                p["running"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn register(
    verifier: &str,
    agent: &str,
    id: &str,
    bundle: &str,
    pod_yaml: Option<&str>,
) -> (u16, Value) {
    let mut body = json!({"agent": agent, "podId": id, "bundle": bundle});
    if let Some(y) = pod_yaml {
        body["podYaml"] = json!(y);
    }
    post_json(&format!("{verifier}/v1/pods"), &body)
}

fn pods(verifier: &str) -> Vec<Value> {
    let (status, v) = get_json(&format!("{verifier}/v1/pods"));
    assert_eq!(status, 200, "{v}");
    v["pods"].as_array().unwrap().clone()
}

fn statuses(verifier: &str) -> std::collections::BTreeMap<String, String> {
    pods(verifier)
        .iter()
        .map(|p| {
            (
                p["pod"].as_str().unwrap().to_string(),
                p["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pyjwt_verifies(dir: &Path, token: &str, jwks: &Value) -> String {
    std::fs::write(dir.join("token.jwt"), token).unwrap();
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(common::repo_root().join("tests/interop/verify_ear_jwt.py"))
        .arg(dir.join("jwks.json"))
        .arg(dir.join("token.jwt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Registers every pod the agent lists, against `bundle` unless the pod is `q` (the
/// default bundle); pod files from the host.
fn register_all(host: &Host, verifier: &str, agent: &str, tk: &str, default: Option<&str>) {
    for (id, pod, _) in agent_pods(agent) {
        let yaml = String::from_utf8(host.ws.read(&format!("{pod}.yaml"))).unwrap();
        let bundle = if pod == "q" { default.unwrap() } else { tk };
        let (status, v) = register(verifier, agent, &id, bundle, Some(&yaml));
        assert_eq!(status, 201, "registering {pod}: {v}");
        assert_eq!(v["pod"], pod.as_str());
        assert_eq!(v["akName"].as_str().unwrap().len(), 68, "{v}");
    }
}

/// The scenario: 16 KVM test-kernel pods and one QEMU pod whose application sleeps
/// are registered and attested continuously with signed affirming results (one checked by
/// PyJWT); the QEMU pod is quoted while its guest runs; revoking the signer flips every pod
/// to contraindicated within two intervals, and each change reaches the webhook, which
/// failed its first delivery.
#[test]
fn sixteen_pods_and_a_running_qemu_pod_attest_continuously_and_flip_on_revocation() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: this test needs KVM"
    );
    let built = common::default_build();
    let mut host = Host::new();
    host.boot_kvm(16);

    // The QEMU pod: its application sleeps 45 s while the service attests it.
    let mut args = host.boot_args(&built.bundle, "q", "qemu");
    args.retain(|a| a != "-q");
    host.ws.write(
        "q.yaml",
        b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: q\nspec:\n  containers:\n    - name: app\n      command: [/bin/jek-sample-app]\n      args: [--sleep-ms, \"45000\"]\n",
    );
    let mut qemu_pod = Booting(
        jek()
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(host.ws.path("qemu-pod.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    let agent = host.start_agent();
    let running = wait_for(
        "the QEMU pod to run with its TPM served beside the guest",
        120,
        || agent_pods(&agent).into_iter().find(|p| p.1 == "q" && p.2),
    );
    assert_eq!(agent_pods(&agent).len(), 17);

    let hook = Webhook::start(1);
    let key_file = host.ws.path("result-key.pem");
    let verifier = start_verifier(
        &host,
        &s(&host.ws.path("verifier.db")),
        &[&host.ws.path("tk.jek"), &built.bundle],
        &["--webhook", &hook.url, "--result-key", &s(&key_file)],
        "verifier.log",
    );
    let v = verifier.url.clone();
    let reader = reader_token(&host);
    let tk = host.bundle_digest(&host.ws.path("tk.jek"));
    let default = host.bundle_digest(&built.bundle);
    register_all(&host, &v, &agent, &tk, Some(&default));

    let all = |want: &str| {
        let st = statuses(&v);
        (st.len() == 17 && st.values().all(|s| s == want)).then_some(st)
    };
    wait_for("17 affirming results", 60, || all("affirming"));
    // The QEMU pod's guest is still running (its application sleeps), and was quoted.
    assert!(
        qemu_pod.0.try_wait().unwrap().is_none(),
        "the QEMU pod ended before it was attested"
    );
    assert!(agent_pods(&agent).iter().any(|p| p.0 == running.0 && p.2));

    // Signed: the result verifies under the JWKS with PyJWT, and names the pod.
    let (status, jwks) = get_json(&format!("{v}/v1/jwks"));
    assert_eq!(status, 200);
    let (status, res) = get_json(&format!("{v}/v1/pods/{}/result", running.0));
    assert_eq!(status, 200, "{res}");
    let printed = pyjwt_verifies(
        host.ws.path("").as_path(),
        res["token"].as_str().unwrap(),
        &jwks,
    );
    assert!(
        printed.contains("q affirming") && printed.contains("valid"),
        "{printed}"
    );
    assert_eq!(res["ear"]["submods"]["q"]["ear.status"], "affirming");
    // The CLI asks the verifier, and checks a token against a JWKS file or URL.
    let out = jek()
        .args([
            "attest",
            "--token-file",
            &reader,
            "--verifier",
            &v,
            &running.0,
            "--json",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["results"][0]["pod"], "q", "{report}");
    assert_eq!(report["summary"]["affirming"], 1, "{report}");
    let token_file = host.ws.path("token.jwt");
    let jwks_url = format!("{v}/v1/jwks");
    let out = jek()
        .args(["result", "verify", &s(&token_file), "--jwks", &jwks_url])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("affirming"));
    // Under another verifier's key: rejected, exit 1.
    let other = json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
        "kid": jwks["keys"][0]["kid"], "x": "czUTln4ZfSkzBVRmIxgB8rMzG4V58rmPhi3RYU9vvvI",
        "y": "V-Bym6VryCX3I5rIQ0ZuBY-q1RGe516EyQgvHiKuxeU"}]});
    host.ws
        .write("other-jwks.json", other.to_string().as_bytes());
    let out = jek()
        .args([
            "result",
            "verify",
            &s(&token_file),
            "--jwks",
            &s(&host.ws.path("other-jwks.json")),
        ])
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not valid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Fresh nonces: two results of one pod carry different nonces.
    let nonce1 = res["ear"]["eat_nonce"].clone();
    let nonce2 = wait_for("a second result", 10, || {
        let (_, r) = get_json(&format!("{v}/v1/pods/{}/result", running.0));
        (r["ear"]["eat_nonce"] != nonce1).then(|| r["ear"]["eat_nonce"].clone())
    });
    assert_ne!(nonce1, nonce2);

    // Revoke the signer and reload: every pod flips at its next round.
    host.ws.policy("policy.yaml", &policy(&test_key(), true));
    let reloaded_at = common::service::now_s();
    let (status, r) = post_json(&format!("{v}/v1/policy/reload"), &json!({}));
    assert_eq!(status, 200, "{r}");
    assert!(
        r["bundles"][0]["verdict"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{r}"
    );
    wait_for("17 contraindicated results", 20, || all("contraindicated"));
    let out = jek()
        .args([
            "attest",
            "--token-file",
            &reader,
            "--verifier",
            &v,
            &running.0,
        ])
        .output()
        .unwrap();
    assert_exit(&out, 1);
    for p in pods(&v) {
        assert_eq!(p["claims"]["signer"]["status"], "contraindicated", "{p}");
        let at = p["history"][0]["at"].as_u64().unwrap();
        assert!(
            at <= reloaded_at + 3,
            "{} flipped {} s after the reload: {p}",
            p["pod"],
            at - reloaded_at
        );
    }
    if let Some(status) = qemu_pod.0.try_wait().unwrap() {
        let mut out = String::new();
        if let Some(mut stdout) = qemu_pod.0.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        }
        panic!("the QEMU pod ended too soon: {status}\n{out}");
    }

    // Every change reached the webhook, after the first delivery failed and was retried.
    let bodies = wait_for("34 webhook deliveries", 30, || {
        let b = hook.bodies();
        let flips = b.iter().filter(|x| x["to"] == "contraindicated").count();
        (flips == 17).then_some(b)
    });
    assert_eq!(hook.failed.load(std::sync::atomic::Ordering::SeqCst), 1);
    for b in bodies.iter().filter(|b| b["to"] == "contraindicated") {
        assert_eq!(b["from"], "affirming", "{b}");
        assert!(
            b["failing"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["claim"] == "signer"),
            "{b}"
        );
        assert!(
            b["token"]
                .as_str()
                .is_some_and(|t| t.split('.').count() == 3),
            "{b}"
        );
    }
    assert!(bodies.iter().filter(|b| b["to"] == "affirming").count() >= 16);

    // A removal is announced: the webhook hears it with the pod's last status.
    let gone = agent_pods(&agent)
        .into_iter()
        .find(|p| p.1 == "p00")
        .unwrap();
    let (status, _) = http("DELETE", &format!("{v}/v1/pods/{}", gone.0), None);
    assert_eq!(status, 204);
    let removed = wait_for("the removal at the webhook", 30, || {
        hook.bodies()
            .into_iter()
            .find(|b| b["to"] == "removed" && b["id"] == gone.0.as_str())
    });
    assert_eq!(removed["from"], "contraindicated", "{removed}");
    assert_eq!(removed["pod"], "p00", "{removed}");
    assert_eq!(removed["by"], "test-admin (token)", "{removed}");
    // The webhook also heard every registration and the reload, each naming the client.
    let bodies = hook.bodies();
    let registered = bodies
        .iter()
        .filter(|b| b["action"] == "registered" && b["by"] == "test-admin (token)")
        .count();
    assert_eq!(registered, 17, "{bodies:?}");
    assert!(
        bodies
            .iter()
            .any(|b| b["action"] == "policy-reloaded" && b["by"] == "test-admin (token)"),
        "{bodies:?}"
    );
    // The audit, for a reader: newest first, the removal with the last status.
    let (status, audit) = http_as(Some(READER_TOKEN), "GET", &format!("{v}/v1/audit"), None);
    assert_eq!(status, 200);
    let audit: Value = serde_json::from_slice(&audit).unwrap();
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events[0]["action"], "removed", "{audit}");
    assert_eq!(events[0]["id"], gone.0.as_str(), "{audit}");
    assert_eq!(
        events[0]["detail"], "last status contraindicated",
        "{audit}"
    );
    assert_eq!(events[1]["action"], "policy-reloaded", "{audit}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["action"] == "registered")
            .count(),
        17,
        "{audit}"
    );

    // Stopped: `jek boot` stops its QEMU on SIGTERM.
    drop(qemu_pod);
    drop(verifier);
}

/// `n` test-kernel pods on one host with its agent, and a verifier on SQLite: the host,
/// the agent's URL, the verifier, the bundle's digest and the agent's pods.
fn one_host(n: usize) -> (Host, String, Service, String, Vec<AgentPod>) {
    let mut host = Host::new();
    host.boot_kvm(n);
    let agent = host.start_agent();
    let verifier = start_verifier(
        &host,
        &s(&host.ws.path("v.db")),
        &[&host.ws.path("tk.jek")],
        &[],
        "verifier.log",
    );
    let tk = host.bundle_digest(&host.ws.path("tk.jek"));
    let ids = agent_pods(&agent);
    (host, agent, verifier, tk, ids)
}

/// Issue 39 item 6: `jek boot --keep-tpm --register-with` registers its pod with the
/// verifier once the VM runs, as the Kubernetes pod given, under the admin's token; the
/// verifier attests it and shows the identity; `jek tpm stop --verifier` removes it. A
/// credential the verifier does not know fails the boot with the verifier's answer, and a
/// malformed Kubernetes identity is refused before anything starts.
#[test]
fn jek_boot_registers_its_pod_and_tpm_stop_removes_it() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (host, agent, verifier, _tk, _) = one_host(1);
    let v = verifier.url.clone();
    let admin = common::service::token_file(&host.ws.path("admin.token"), ADMIN_TOKEN);
    let uid = "3f1c6a2e-9b7d-4c55-8e21-0a4b6c8d9e0f";
    let boot = |name: &str, token: &str, kubernetes: &str| {
        let mut args = host.boot_args(&host.ws.path("tk.jek"), name, "kvm");
        args.extend(
            [
                "--register-with",
                &v,
                "--agent",
                &agent,
                "--token-file",
                token,
                "--kubernetes",
                kubernetes,
            ]
            .map(String::from),
        );
        jek().args(args).output().unwrap()
    };
    let out = boot("k8", &admin, &format!("shop/web-0/{uid}"));
    assert_exit(&out, 0);
    // Host's drop stops every TPM its store still holds.
    let id = agent_pods(&agent)
        .into_iter()
        .find(|p| p.1 == "k8")
        .unwrap()
        .0;
    let state = wait_for("k8's first result", 30, || {
        let (status, v) = get_json(&format!("{v}/v1/pods/{id}"));
        (status == 200 && v["status"] != "none").then_some(v)
    });
    assert_eq!(state["status"], "affirming", "{state}");
    assert_eq!(
        state["kubernetes"],
        json!({"namespace": "shop", "name": "web-0", "uid": uid}),
        "{state}"
    );
    let (_, result) = get_json(&format!("{v}/v1/pods/{id}/result"));
    assert_eq!(
        result["ear"]["submods"]["k8"]["jek.kubernetes"]["name"], "web-0",
        "{result}"
    );

    // Removed from the verifier, then the TPM stopped.
    let out = jek()
        .args(["tpm", "stop", &id, "--verifier", &v, "--token-file", &admin])
        .arg("--registry")
        .arg(host.ws.path("reg"))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let (status, _) = get_json(&format!("{v}/v1/pods/{id}"));
    assert_eq!(status, 404);
    assert!(!agent_pods(&agent).iter().any(|p| p.0 == id));

    // A token the verifier does not know: the boot fails with its answer.
    let stranger = common::service::token_file(
        &host.ws.path("stranger.token"),
        "jek-test-unknown-token-0123456789abcdef01234567",
    );
    let out = boot("k9", &stranger, &format!("shop/web-1/{uid}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert_exit(&out, 3);
    // Not a Kubernetes identity: refused before anything boots.
    let out = boot("k10", &admin, &format!("Shop/web-0/{uid}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kubernetes.namespace"), "{stderr}");
    assert_exit(&out, 2);
    assert!(!agent_pods(&agent).iter().any(|p| p.1 == "k10"));
}

/// Bounded work per agent must not cap an agent's pods at `--agent-concurrency` rounds a
/// tick: 24 pods behind one agent, at most 2 rounds at once and a 1 s interval (a tick of
/// 250 ms, so 8 rounds a second if pods waited for the next tick), are each attested every
/// interval: a pod whose agent was busy starts as soon as one of its rounds ends.
#[test]
fn an_agents_pods_are_all_attested_every_interval_at_its_concurrency_limit() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut host = Host::new();
    host.boot_kvm(24);
    let agent = host.start_agent();
    let tk = host.bundle_digest(&host.ws.path("tk.jek"));
    let verifier = start_verifier(
        &host,
        &s(&host.ws.path("v.db")),
        &[&host.ws.path("tk.jek")],
        &["--agent-concurrency", "2"],
        "verifier.log",
    );
    let v = verifier.url.clone();
    register_all(&host, &v, &agent, &tk, None);
    wait_for("every pod's first result", 30, || {
        pods(&v)
            .iter()
            .all(|p| p["status"] == "affirming")
            .then_some(())
    });
    // Rounds counted over 5 s: 24 pods at 1 s is 120; waiting for ticks would give 40.
    let rounds = || {
        get_json(&format!("{v}/v1/health")).1["rounds"]
            .as_u64()
            .unwrap()
    };
    let before = rounds();
    std::thread::sleep(Duration::from_secs(5));
    let done = rounds() - before;
    assert!(
        done >= 96,
        "{done} rounds in 5 s for 24 pods at a 1 s interval"
    );
    let now = common::service::now_s();
    for p in pods(&v) {
        let age = now.saturating_sub(p["lastResultAt"].as_u64().unwrap());
        assert!(age <= 3, "{}: last result {age} s old", p["pod"]);
        assert_eq!(p["status"], "affirming", "{p}");
    }
}

/// Who may do what: every route of the verifier asked anonymously, with bad tokens (one
/// made up, one that is the admin's digest as the tokens file lists it), as a reader and
/// as an admin (bearer tokens over loopback HTTP; certificates are in the TLS test). A
/// token made by `jek-attestation-verifier add-token` works; a verifier without client authentication,
/// or with a tokens file others could rewrite, does not start.
#[test]
fn every_route_answers_by_role_and_the_verifier_needs_client_authentication() {
    use sha2::Digest as _;
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let host = Host::new();
    // No pod boots here, so no swtpm CA exists: the policy's EK CA is a stand-in.
    common::test_ca(&host.ws, "ekca", "/CN=stand-in EK CA");
    std::fs::create_dir_all(host.ws.path("ca")).unwrap();
    std::fs::copy(
        host.ws.path("ekca.pem"),
        host.ws.path("ca/swtpm-localca-rootca-cert.pem"),
    )
    .unwrap();
    let verifier = start_verifier(
        &host,
        &s(&host.ws.path("v.db")),
        &[&host.ws.path("tk.jek")],
        &[],
        "verifier.log",
    );
    let v = verifier.url.clone();
    let id = "a".repeat(32);
    let made_up = "x".repeat(48);
    let digest = hex::encode(sha2::Sha256::digest(ADMIN_TOKEN.as_bytes()));
    // (method, path, body, [anonymous, made-up token, digest as token, reader, admin])
    type Route<'a> = (&'a str, String, Option<&'a [u8]>, [u16; 5]);
    let routes: Vec<Route> = vec![
        ("GET", "/".into(), None, [200; 5]),
        ("GET", "/v1/health".into(), None, [200; 5]),
        ("GET", "/v1/jwks".into(), None, [200; 5]),
        ("GET", "/.well-known/jwks.json".into(), None, [200; 5]),
        ("GET", "/v1/pods".into(), None, [401, 401, 401, 200, 200]),
        (
            "GET",
            format!("/v1/pods/{id}"),
            None,
            [401, 401, 401, 404, 404],
        ),
        (
            "GET",
            format!("/v1/pods/{id}/result"),
            None,
            [401, 401, 401, 404, 404],
        ),
        ("GET", "/v1/bundles".into(), None, [401, 401, 401, 200, 200]),
        ("GET", "/v1/audit".into(), None, [401, 401, 401, 200, 200]),
        (
            "POST",
            "/v1/pods".into(),
            Some(b"{}"),
            [401, 401, 401, 403, 400],
        ),
        (
            "DELETE",
            format!("/v1/pods/{id}"),
            None,
            [401, 401, 401, 403, 404],
        ),
        (
            "POST",
            "/v1/policy/reload".into(),
            Some(b"{}"),
            [401, 401, 401, 403, 200],
        ),
    ];
    let clients = [
        None,
        Some(made_up.as_str()),
        Some(digest.as_str()),
        Some(READER_TOKEN),
        Some(ADMIN_TOKEN),
    ];
    for (method, path, body, expected) in &routes {
        for (client, want) in clients.iter().zip(expected) {
            let (status, answer) = http_as(*client, method, &format!("{v}{path}"), *body);
            let answer = String::from_utf8_lossy(&answer);
            assert_eq!(status, *want, "{method} {path} as {client:?}: {answer}");
            match status {
                401 => assert!(answer.contains("\"unauthenticated\""), "{answer}"),
                403 => assert!(
                    answer.contains("\"forbidden\"")
                        && answer.contains("test-reader (token) holds the role reader")
                        && answer.contains("needs the admin role"),
                    "{answer}"
                ),
                _ => {}
            }
        }
    }
    let log = std::fs::read_to_string(&verifier.log).unwrap();
    assert!(
        log.contains("policy reloaded") && log.contains("test-admin (token)"),
        "{log}"
    );
    drop(verifier);

    // Starting: no client authentication, or a tokens file others could rewrite, is
    // refused by name (exit 2) before anything listens.
    let start = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(bin("jek-attestation-verifier"));
        common::isolate(&mut cmd)
            .args(["--listen", "127.0.0.1:0", "--policy"])
            .arg(host.ws.path("policy.yaml"))
            .arg("--bundle")
            .arg(host.ws.path("tk.jek"))
            .arg("--store")
            .arg(host.ws.path("v2.db"))
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = start(&[]);
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no client authentication"), "{err}");

    // add-token: the token printed once, only its digest in the file (mode 0600).
    let tokens = host.ws.path("ci-tokens");
    let add = |name: &str| {
        std::process::Command::new(bin("jek-attestation-verifier"))
            .args([
                "add-token",
                "--tokens",
                &s(&tokens),
                "--role",
                "reader",
                name,
            ])
            .output()
            .unwrap()
    };
    let out = add("ci");
    assert_exit(&out, 0);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.len(), 64, "{token}");
    let text = std::fs::read_to_string(&tokens).unwrap();
    assert!(
        !text.contains(&token) && text.contains("reader ci sha256:"),
        "{text}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&tokens).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let out = add("ci");
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listed"));

    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let out = start(&["--tokens", &s(&tokens)]);
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ci-tokens") && err.contains("0666"), "{err}");
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--policy",
        &s(&host.ws.path("policy.yaml")),
        "--bundle",
        &s(&host.ws.path("tk.jek")),
        "--store",
        &s(&host.ws.path("v3.db")),
        "--tokens",
        &s(&tokens),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let ci = Service::start(
        &bin("jek-attestation-verifier"),
        &args,
        &host.ws.path("verifier-ci.log"),
    );
    let (status, _) = http_as(Some(&token), "GET", &format!("{}/v1/pods", ci.url), None);
    assert_eq!(status, 200);
    let (status, _) = http_as(
        Some(ADMIN_TOKEN),
        "GET",
        &format!("{}/v1/pods", ci.url),
        None,
    );
    assert_eq!(status, 401, "a token of another file");
}

/// The agent serves the verifier alone. Tried as the unprivileged user `nobody` on this
/// host, against a booted pod: its identity, a quote and a credential activation are
/// refused, on the agent's default socket (only its owner may connect) and on a socket
/// open to every user (the peer's uid decides: 403 naming uid 65534); the uid the agent
/// allows gets the identity. Listening on TCP without mutual TLS, or on a socket another
/// agent serves, is refused by name before anything listens.
#[test]
fn the_agent_serves_the_verifier_alone_and_nobody_else() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    assert!(
        rustix::process::geteuid().is_root(),
        "this test acts as the user nobody, so it runs as root (as the service tests do)"
    );
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut host = Host::new();
    host.boot_kvm(1);
    // nobody may walk into the host's directory, as into /run.
    std::fs::set_permissions(host.ws.path(""), std::fs::Permissions::from_mode(0o711)).unwrap();
    let agent = host.start_agent();
    let ids = agent_pods(&agent);
    let id = ids[0].0.clone();
    let sock = agent.strip_prefix("unix:").unwrap().to_string();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the default socket is its owner's");
    let quote =
        json!({"ak": {"public": "AA==", "private": "AA=="}, "nonce": "A".repeat(44), "pcrs": [8]});
    let activate = json!({"ak": {"public": "AA==", "private": "AA=="}, "idObject": "AA==", "encryptedSecret": "AA=="});
    // curl as nobody on `sock`: curl's exit code, the HTTP status and the body.
    let as_nobody = |sock: &str, method: &str, path: &str, body: Option<&Value>| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args([
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
            sock,
            "-X",
            method,
        ]);
        if let Some(b) = body {
            cmd.args(["-H", "content-type: application/json", "-d", &b.to_string()]);
        }
        let out = cmd
            .arg(format!("http://localhost{path}"))
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (
            out.status.code(),
            code.trim().parse::<u16>().unwrap_or(0),
            body.to_string(),
        )
    };
    let attacks = [
        ("GET", format!("/v1/pods/{id}/identity"), None),
        ("POST", format!("/v1/pods/{id}/quote"), Some(&quote)),
        ("POST", format!("/v1/pods/{id}/activate"), Some(&activate)),
        ("GET", "/v1/pods".to_string(), None),
    ];
    // The default socket: nobody cannot even connect (curl's 7: failed to connect).
    for (method, path, body) in &attacks {
        let (code, status, text) = as_nobody(&sock, method, path, *body);
        assert_eq!((code, status), (Some(7), 0), "{method} {path}: {text}");
    }
    // A socket every user may connect to: the peer's uid is refused by name.
    let open = host.ws.path("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let me = rustix::process::geteuid().as_raw().to_string();
    let open_sock = s(&open.join("agent.sock"));
    let args: Vec<String> = [
        "--listen",
        &format!("unix:{open_sock}"),
        "--registry",
        &s(&host.ws.path("reg")),
        "--allow-uid",
        &me,
        "--allow-uid",
        "4242",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let shared = Service::start(&bin("jek-agent"), &args, &host.ws.path("agent-open.log"));
    let mode = std::fs::metadata(&open_sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o666);
    for (method, path, body) in &attacks {
        let (_, status, text) = as_nobody(&open_sock, method, path, *body);
        assert_eq!(status, 403, "{method} {path}: {text}");
        assert!(
            text.contains("uid 65534") && text.contains("needs the verifier role"),
            "{text}"
        );
    }
    let (_, status, _) = as_nobody(&open_sock, "GET", "/v1/health", None);
    assert_eq!(status, 200, "the health check is public");
    let (status, identity) = get_json(&format!("{}/v1/pods/{id}/identity", shared.url));
    assert_eq!(status, 200, "{identity}");
    assert!(identity["ekCert"].is_string(), "{identity}");
    let log = std::fs::read_to_string(&shared.log).unwrap();
    assert!(log.contains("uid 65534"), "{log}");

    // Starting: TCP without mutual TLS, and a socket another agent serves, are refused.
    let start = |listen: &str| {
        let mut cmd = std::process::Command::new(bin("jek-agent"));
        common::isolate(&mut cmd)
            .args(["--listen", listen, "--registry"])
            .arg(host.ws.path("reg"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = start("127.0.0.1:0");
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--client-ca") && err.contains("unix:"),
        "{err}"
    );
    let out = start(&format!("unix:{open_sock}"));
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another server listens on it") && err.contains(&open_sock),
        "{err}"
    );
    // A killed agent's socket is left behind; the next agent replaces it. An agent that
    // stops (SIGTERM) removes its socket.
    let mut shared = shared;
    shared.signal("KILL");
    let _ = shared.child.wait();
    assert!(Path::new(&open_sock).exists());
    let mut again = Service::start(&bin("jek-agent"), &args, &host.ws.path("agent-open2.log"));
    let (status, _) = get_json(&format!("{}/v1/pods", again.url));
    assert_eq!(status, 200);
    again.signal("TERM");
    let _ = again.child.wait();
    assert!(
        !Path::new(&open_sock).exists(),
        "the socket is removed at exit"
    );
}

/// Bad input and faults: malformed requests, unknown pods and bundles, bodies over the
/// limit, an agent that stops answering (its pod turns unreachable, the others go on),
/// and a registration against a refusing TPM identity.
#[test]
fn bad_requests_and_a_silent_agent_are_answered_cleanly() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (host, agent, verifier, tk, ids) = one_host(3);
    let v = verifier.url.clone();
    let reader = reader_token(&host);

    // Malformed JSON, unknown fields, wrong types: 400 with a JSON error naming the field.
    let (status, body) = http("POST", &format!("{v}/v1/pods"), Some(b"{not json"));
    assert_eq!(status, 400);
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["code"], "bad_request", "{err}");
    let (status, err) = post_json(
        &format!("{v}/v1/pods"),
        &json!({"agent": agent, "podId": ids[0].0, "bundle": tk, "extra": 1}),
    );
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("extra"), "{err}");
    // An identifier that is not one, a plain-http agent off loopback, an unknown bundle.
    let (status, err) = register(&v, &agent, "../../etc/passwd", &tk, None);
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("podId"), "{err}");
    let (status, err) = register(&v, "http://192.0.2.1:7070", &ids[0].0, &tk, None);
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("loopback"), "{err}");
    let (status, err) = register(&v, &agent, &ids[0].0, "sha256:00", None);
    assert_eq!(
        (status, err["code"].as_str().unwrap()),
        (422, "unknown_bundle"),
        "{err}"
    );
    // A pod the agent does not have.
    let (status, err) = register(&v, &agent, &"a".repeat(32), &tk, None);
    assert_eq!(
        (status, err["code"].as_str().unwrap()),
        (422, "unknown_pod"),
        "{err}"
    );
    // A pod file naming another pod.
    let (status, err) = register(&v, &agent, &ids[0].0, &tk, Some(&common::pod_yaml("other")));
    assert_eq!(status, 400, "{err}");
    // Unknown pods on the verifier.
    let (status, err) = get_json(&format!("{v}/v1/pods/{}", "b".repeat(32)));
    assert_eq!((status, err["code"].as_str().unwrap()), (404, "not_found"));
    let (status, _) = get_json(&format!("{v}/v1/pods/nope/result"));
    assert_eq!(status, 404);
    // A body over the limit, to both servers.
    let big = vec![b'x'; 300 << 10];
    let (status, body) = http("POST", &format!("{v}/v1/pods"), Some(&big));
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["code"], "too_large");
    let (status, _) = http(
        "POST",
        &format!("{agent}/v1/pods/{}/quote", ids[0].0),
        Some(&big),
    );
    assert_eq!(status, 413);
    // The agent refuses a nonce too short to be fresh.
    let (status, err) = post_json(
        &format!("{agent}/v1/pods/{}/quote", ids[0].0),
        &json!({"ak": {"public": "", "private": ""}, "nonce": "AAAA", "pcrs": [8]}),
    );
    assert_eq!(status, 400, "{err}");

    // Pod 0 registered through a proxy that will stop answering; 1 and 2 directly.
    let proxy = Proxy::start(&agent);
    let (status, r) = register(&v, &proxy.url, &ids[0].0, &tk, None);
    assert_eq!(status, 201, "{r}");
    for (id, _, _) in &ids[1..] {
        let (status, r) = register(&v, &agent, id, &tk, None);
        assert_eq!(status, 201, "{r}");
    }
    // Registrations are never replaced: pod 1 again (as after a TPM reset, whose new epoch
    // would become the baseline) is refused, and so is pod 1's TPM under another
    // identifier, served by a man in the middle in front of the agent.
    let (status, err) = register(&v, &agent, &ids[1].0, &tk, None);
    assert_eq!(
        (status, err["code"].as_str().unwrap()),
        (409, "already_registered"),
        "{err}"
    );
    let fake = "e".repeat(32);
    let hijacker = Proxy::rewriting(
        &agent,
        &format!("/v1/pods/{fake}"),
        &format!("/v1/pods/{}", ids[1].0),
    );
    let (status, err) = register(&v, &hijacker.url, &fake, &tk, None);
    assert_eq!(
        (status, err["code"].as_str().unwrap()),
        (409, "ak_in_use"),
        "{err}"
    );
    assert!(err["error"].as_str().unwrap().contains(&ids[1].0), "{err}");
    let (status, _) = get_json(&format!("{v}/v1/pods/{fake}"));
    assert_eq!(status, 404);

    // Pods registered without their pod file: pod-config is contraindicated for all, the
    // same for each; what matters here is that each gets results.
    wait_for("results for all three", 30, || {
        let p = pods(&v);
        p.iter().all(|p| p["lastResultAt"].is_u64()).then_some(())
    });
    // A man in the middle serves pod 1's signed result as pod 2's: the CLI refuses it,
    // because the token names the registration it speaks for.
    let mitm = Proxy::rewriting(
        &v,
        &format!("/v1/pods/{}/result", ids[2].0),
        &format!("/v1/pods/{}/result", ids[1].0),
    );
    let (status, moved) = get_json(&format!("{}/v1/pods/{}/result", mitm.url, ids[2].0));
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        moved["ear"]["submods"][&ids[1].1]["jek.registration"],
        ids[1].0.as_str()
    );
    let out = jek()
        .args([
            "attest",
            "--token-file",
            &reader,
            "--verifier",
            &mitm.url,
            &ids[2].0,
        ])
        .output()
        .unwrap();
    assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("not pod {}", ids[2].0)) && err.contains(&ids[1].0),
        "{err}"
    );
    // Verified offline for pod 2, the same; for pod 1, it verifies.
    host.ws
        .write("moved.jwt", moved["token"].as_str().unwrap().as_bytes());
    let token = s(&host.ws.path("moved.jwt"));
    let jwks = format!("{v}/v1/jwks");
    let out = jek()
        .args([
            "result", "verify", &token, "--jwks", &jwks, "--pod", &ids[2].0,
        ])
        .output()
        .unwrap();
    assert_exit(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("not pod {}", ids[2].0)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = jek()
        .args([
            "result", "verify", &token, "--jwks", &jwks, "--pod", &ids[1].0,
        ])
        .output()
        .unwrap();
    // Its own pod: the token verifies (the pods here are contraindicated: no pod file).
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{}: contraindicated", ids[1].1)),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not pod"));

    proxy.hang();
    let silent = ids[0].1.clone();
    let st = wait_for("the silent agent's pod to turn unreachable", 30, || {
        let st = statuses(&v);
        (st[&silent] == "unreachable").then_some(st)
    });
    // The others keep getting fresh results.
    let before: Vec<u64> = pods(&v)
        .iter()
        .filter(|p| p["pod"] != silent.as_str())
        .map(|p| p["lastResultAt"].as_u64().unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    let after: Vec<u64> = pods(&v)
        .iter()
        .filter(|p| p["pod"] != silent.as_str())
        .map(|p| p["lastResultAt"].as_u64().unwrap())
        .collect();
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "{before:?} {after:?} {st:?}"
    );
    let p = pods(&v)
        .into_iter()
        .find(|p| p["pod"] == silent.as_str())
        .unwrap();
    assert!(
        p["error"].as_str().unwrap().contains("no answer")
            || p["error"].as_str().unwrap().contains("timed out"),
        "{p}"
    );

    // An unreachable pod has no result to show: the verifier answers 502 with the reason,
    // and the CLI reports it as not attested (exit 3), never its last affirming token.
    let (status, err) = get_json(&format!("{v}/v1/pods/{}/result", ids[0].0));
    assert_eq!(
        (status, err["code"].as_str().unwrap()),
        (502, "pod_unreachable"),
        "{err}"
    );
    let out = jek()
        .args([
            "attest",
            "--token-file",
            &reader,
            "--verifier",
            &v,
            &ids[0].0,
        ])
        .output()
        .unwrap();
    assert_exit(&out, 3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not attested now"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("affirming"));

    // Deleting a pod: gone, and 404 the second time.
    let (status, _) = http("DELETE", &format!("{v}/v1/pods/{}", ids[0].0), None);
    assert_eq!(status, 204);
    let (status, _) = http("DELETE", &format!("{v}/v1/pods/{}", ids[0].0), None);
    assert_eq!(status, 404);
    drop(verifier);
}

/// Bounded work per agent: 1,000 registrations behind an agent that accepts connections
/// and never answers (a dead node's, seeded straight into the store) do not keep an honest
/// pod's result from staying fresh: it stays affirming, its last result never more than
/// two intervals old (plus the second the API's timestamps round to). One agent gets at
/// most `--agent-concurrency` rounds at once and is left alone longer each time it stays
/// silent; its pods turn unreachable. And an agent with `--max-pods-per-agent` pods takes
/// no more registrations (409 `agent_full`, refused before the agent is asked).
#[test]
fn a_silent_agent_with_a_thousand_pods_does_not_starve_an_honest_one() {
    use jek_attestation_verifier::store::{PodRow, StoredIdentity, StoredResult};
    use jek_service_client::wire::{AuditAction, AuditEvent, B64};
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut host = Host::new();
    host.boot_kvm(1);
    let agent = host.start_agent();
    let ids = agent_pods(&agent);
    let silent = Proxy::start(&agent);
    silent.hang();
    let db = host.ws.path("v.db");
    let tk = host.bundle_digest(&host.ws.path("tk.jek"));
    {
        let store = jek_attestation_verifier::store::open(Some(&s(&db))).unwrap();
        for n in 0..1000u32 {
            let id = format!("{n:032x}");
            let row = PodRow {
                id: id.clone(),
                pod: format!("dead-{n}"),
                agent: silent.url.clone(),
                bundle: tk.clone(),
                pod_yaml: None,
                kubernetes: None,
                identity: StoredIdentity {
                    ak_name: jek_attest::AkName(format!("000b{id}").into_bytes()),
                    ak_public: B64(vec![1]),
                    ak_private: B64(vec![2]),
                    ek_cert: B64(format!("ek-{id}").into_bytes()),
                    ek_chain_pem: String::new(),
                },
                epoch: jek_attest::Epoch {
                    reset_count: 1,
                    restart_count: 0,
                    clock: 10,
                },
                last_clock: 10,
                result: StoredResult::default(),
                owner: None,
                history: Vec::new(),
            };
            let event = AuditEvent {
                at: 1,
                by: "seed".into(),
                action: AuditAction::Registered,
                id: Some(id),
                pod: Some(row.pod.clone()),
                detail: None,
            };
            store.register(&row, "seed", 0, 0, &event, false).unwrap();
        }
    }
    let verifier = start_verifier(
        &host,
        &s(&db),
        &[&host.ws.path("tk.jek")],
        &["--max-pods-per-agent", "1000"],
        "verifier.log",
    );
    let v = verifier.url.clone();
    let (id, pod, _) = ids[0].clone();
    let yaml = String::from_utf8(host.ws.read(&format!("{pod}.yaml"))).unwrap();
    // The full agent takes no more: refused at once, without asking it.
    let (status, err) = register(&v, &silent.url, &id, &tk, Some(&yaml));
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("agent_full")),
        "{err}"
    );
    let (status, r) = register(&v, &agent, &id, &tk, Some(&yaml));
    assert_eq!(status, 201, "{r}");
    let state = |id: &str| {
        let (status, p) = get_json(&format!("{v}/v1/pods/{id}"));
        assert_eq!(status, 200, "{p}");
        p
    };
    wait_for("the honest pod's first result", 30, || {
        (state(&id)["status"] == "affirming").then_some(())
    });
    // Ten seconds of rounds (ten intervals): the honest pod's result stays fresh.
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        let p = state(&id);
        assert_eq!(p["status"], "affirming", "{p}");
        let age = common::service::now_s().saturating_sub(p["lastResultAt"].as_u64().unwrap());
        assert!(age <= 3, "the honest pod's last result is {age} s old: {p}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The dead agent's pods are reported unreachable, not left as they were.
    let unreachable = pods(&v)
        .iter()
        .filter(|p| p["status"] == "unreachable")
        .count();
    assert!(
        unreachable >= 4,
        "{unreachable} of the dead agent's pods are unreachable"
    );
}

/// Two replicas share one PostgreSQL fleet: each pod is attested by one replica at a time;
/// when one replica dies its pods move to the other within two intervals. The database
/// going away makes the verifier unhealthy without half-written rows, and it resumes when
/// the database returns.
#[test]
fn two_replicas_share_a_postgresql_fleet_and_survive_a_database_outage() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut host = Host::new();
    host.boot_kvm(6);
    let agent = host.start_agent();
    let pg = Postgres::start();
    let tk_path = host.ws.path("tk.jek");
    let a = start_verifier(&host, &pg.url(), &[&tk_path], &["--replica", "a"], "a.log");
    let b = start_verifier(&host, &pg.url(), &[&tk_path], &["--replica", "b"], "b.log");
    let tk = host.bundle_digest(&tk_path);
    let ids = agent_pods(&agent);
    for (i, (id, pod, _)) in ids.iter().enumerate() {
        let yaml = String::from_utf8(host.ws.read(&format!("{pod}.yaml"))).unwrap();
        let via = if i % 2 == 0 { &a.url } else { &b.url };
        let (status, r) = register(via, &agent, id, &tk, Some(&yaml));
        assert_eq!(status, 201, "{r}");
    }
    // Both replicas see one fleet, all affirming; each pod has exactly one owner.
    wait_for("6 affirming pods", 30, || {
        let st = statuses(&a.url);
        (st.len() == 6 && st.values().all(|s| s == "affirming")).then_some(())
    });
    assert_eq!(statuses(&b.url), statuses(&a.url));
    let owners: Vec<String> = pods(&a.url)
        .iter()
        .map(|p| p["owner"].as_str().unwrap().to_string())
        .collect();
    assert!(owners.iter().all(|o| o == "a" || o == "b"), "{owners:?}");
    // Results signed by either replica verify against either replica's JWKS.
    let (_, jwks) = get_json(&format!("{}/v1/jwks", b.url));
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    for id in ids.iter().map(|i| &i.0) {
        let (status, r) = get_json(&format!("{}/v1/pods/{id}/result", a.url));
        assert_eq!(status, 200, "{r} {:?}", pods(&a.url));
        pyjwt_verifies(
            host.ws.path("").as_path(),
            r["token"].as_str().unwrap(),
            &jwks,
        );
    }

    // Replica a dies (SIGKILL: no clean hand-over): its pods move to b within two intervals.
    let mut a = a;
    let _ = a.child.kill();
    let _ = a.child.wait();
    let killed = Instant::now();
    wait_for("b to own every pod", 10, || {
        pods(&b.url).iter().all(|p| p["owner"] == "b").then_some(())
    });
    let moved = killed.elapsed();
    // Two intervals (1 s each), and a second for a loaded machine.
    assert!(
        moved <= Duration::from_secs(3),
        "failover took {} ms",
        moved.as_millis()
    );
    let stamp = |url: &str| -> Vec<u64> {
        pods(url)
            .iter()
            .map(|p| p["lastResultAt"].as_u64().unwrap())
            .collect()
    };
    let t0 = stamp(&b.url);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        stamp(&b.url).iter().zip(&t0).all(|(x, y)| x > y),
        "b does not attest the moved pods"
    );

    // The database goes away: b reports unhealthy; nothing half-written; it resumes.
    let rows_before = pg.psql("SELECT count(*) FROM pods");
    pg.down();
    let (status, h) = get_json(&format!("{}/v1/health", b.url));
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["status"], "unhealthy");
    let (status, _) = get_json(&format!("{}/v1/pods", b.url));
    assert_eq!(status, 503);
    std::thread::sleep(Duration::from_millis(1500));
    pg.up();
    wait_for("b to be healthy again", 20, || {
        (get_json(&format!("{}/v1/health", b.url)).0 == 200).then_some(())
    });
    assert_eq!(pg.psql("SELECT count(*) FROM pods"), rows_before);
    assert_eq!(
        pg.psql("SELECT count(*) FROM pods WHERE result = '' OR identity = ''"),
        "0\n"
    );
    let t1 = stamp(&b.url);
    wait_for("fresh results after the outage", 20, || {
        stamp(&b.url)
            .iter()
            .zip(&t1)
            .all(|(x, y)| x > y)
            .then_some(())
    });

    // The per-agent store queries on PostgreSQL (the 1,000-pod test runs them on
    // SQLite), with b stopped so that nothing else writes: the agent's count, and a
    // deferral that moves only the named pods the replica owns.
    let mut b = b;
    let _ = b.child.kill();
    let _ = b.child.wait();
    let store = jek_attestation_verifier::store::open(Some(&pg.url())).unwrap();
    assert_eq!(store.agent_pods(&agent).unwrap(), 6);
    assert_eq!(store.agent_pods("unix:/nowhere.sock").unwrap(), 0);
    let due = |id: &str| {
        pg.psql(&format!("SELECT next_due FROM pods WHERE id = '{id}'"))
            .trim()
            .to_string()
    };
    let until = (common::service::now_s() + 3600) * 1000;
    let two = [ids[0].0.clone(), ids[1].0.clone()];
    store.defer("a", &two, until).unwrap();
    assert_ne!(due(&ids[0].0), until.to_string(), "a does not own it");
    store.defer("b", &two, until).unwrap();
    assert_eq!(due(&ids[0].0), until.to_string());
    assert_eq!(due(&ids[1].0), until.to_string());
    assert_ne!(due(&ids[2].0), until.to_string());
}

/// The fleet page in headless Chromium: a person sees each pod, and a contraindicated pod
/// shown as such with its failing claim.
#[test]
fn the_fleet_page_shows_a_contraindicated_pod_with_its_failing_claim() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (host, agent, verifier, tk, ids) = one_host(2);
    let v = verifier.url.clone();
    // p00 with its own pod file: affirming; p01 with another pod's configuration.
    for (id, pod, _) in &ids {
        let yaml = String::from_utf8(host.ws.read(&format!("{pod}.yaml"))).unwrap();
        let yaml = if pod == "p01" {
            yaml.replace("value: p01", "value: tampered")
        } else {
            yaml
        };
        let (status, r) = register(&v, &agent, id, &tk, Some(&yaml));
        assert_eq!(status, 201, "{r}");
    }
    wait_for("both results", 30, || {
        let st = statuses(&v);
        (st.get("p00").map(String::as_str) == Some("affirming")
            && st.get("p01").map(String::as_str) == Some("contraindicated"))
        .then_some(())
    });
    // Without a credential the page loads but shows no pod, only why.
    let dom = chromium_dom(&format!("{v}/"), &host.ws.path("chromium0"));
    assert!(
        dom.contains("the verifier refused this page (401)") && !dom.contains("data-pod="),
        "{dom}"
    );
    // A reader's token in the fragment: the pods, and the token is not left in the page.
    let dom = chromium_dom(
        &format!("{v}/#token={READER_TOKEN}"),
        &host.ws.path("chromium"),
    );
    assert!(!dom.contains(READER_TOKEN), "{dom}");
    let row = |pod: &str| -> String {
        let start = dom
            .find(&format!("data-pod=\"{pod}\""))
            .unwrap_or_else(|| panic!("no row for {pod}: {dom}"));
        let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
        dom[start..end].to_string()
    };
    let bad = row("p01");
    assert!(
        bad.contains("status contraindicated\">contraindicated<"),
        "{bad}"
    );
    assert!(bad.contains("pod-config: contraindicated"), "{bad}");
    let good = row("p00");
    assert!(good.contains("status affirming\">affirming<"), "{good}");
    assert!(!good.contains("pod-config: contraindicated"), "{good}");
    assert!(
        dom.contains("2 pods: 1 affirming, 1 contraindicated"),
        "{dom}"
    );

    // A removal shows under the pods, with who removed it and the pod's last status.
    let p01 = ids.iter().find(|p| p.1 == "p01").unwrap().0.clone();
    let (status, _) = http("DELETE", &format!("{v}/v1/pods/{p01}"), None);
    assert_eq!(status, 204);

    // SIGHUP reloads the policy: a security-version floor above the bundle's turns the
    // affirming pod contraindicated on security-version, and the page shows it.
    host.ws.policy(
        "policy.yaml",
        &policy(&test_key(), false).replace("min_security_version: 1", "min_security_version: 2"),
    );
    verifier.signal("HUP");
    wait_for("p00 contraindicated after SIGHUP", 20, || {
        let p = pods(&v).into_iter().find(|p| p["pod"] == "p00")?;
        (p["status"] == "contraindicated").then_some(p)
    });
    let dom = chromium_dom(
        &format!("{v}/#token={READER_TOKEN}"),
        &host.ws.path("chromium2"),
    );
    let row = dom
        .find("data-pod=\"p00\"")
        .map(|i| &dom[i..dom[i..].find("</tr>").map_or(dom.len(), |e| i + e)])
        .unwrap_or_else(|| panic!("no row for p00: {dom}"));
    assert!(row.contains("security-version: contraindicated"), "{row}");
    assert!(
        dom.contains("1 pods: 0 affirming, 1 contraindicated"),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(
            "p01 ({p01}) removed by test-admin (token), last status contraindicated"
        )),
        "{dom}"
    );
    drop(verifier);
}

/// The DOM headless Chromium renders for `url` after its scripts ran.
fn chromium_dom(url: &str, profile: &Path) -> String {
    let program = std::env::var("JEK_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let out = std::process::Command::new(&program)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            PathBuf::from(profile).display()
        ))
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (apt install chromium): {e}"));
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// TLS end to end: the agent and the verifier serve HTTPS with a certificate from a private
/// CA; the verifier reaches the agent, and `jek attest --verifier` the verifier, trusting
/// that CA (`--ca-file`), and refuses the verifier without it. Clients authenticate with
/// certificates from the CA given as `--client-ca` (mutual TLS), their role in the subject's
/// O: an admin registers, a reader reads and may not register, a certificate without a jek
/// role (or with the agent-side `jek:verifier` role) reads nothing, and one naming
/// `O=jek:admin` from another CA does not get through the handshake. The agent serves the
/// verifier's certificate (`O=jek:verifier`, `--agent-cert`) and nobody else's.
#[test]
fn agent_verifier_and_cli_talk_tls_with_a_private_ca() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut host = Host::new();
    host.boot_kvm(1);
    common::tls_files(&host.ws);
    let agent_args: Vec<String> = [
        "--tls-cert",
        &s(&host.ws.path("server.pem")),
        "--tls-key",
        &s(&host.ws.path("server.key")),
        "--client-ca",
        &s(&host.ws.path("ca.pem")),
        "--listen",
        "127.0.0.1:0",
        "--registry",
        &s(&host.ws.path("reg")),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let agent = Service::start(&bin("jek-agent"), &agent_args, &host.ws.path("agent.log"));
    assert!(agent.url.starts_with("https://127.0.0.1:"), "{}", agent.url);
    let ca = s(&host.ws.path("ca.pem"));
    let verifier = start_verifier(
        &host,
        &s(&host.ws.path("v.db")),
        &[&host.ws.path("tk.jek")],
        &[
            "--ca-file",
            &ca,
            "--tls-cert",
            &s(&host.ws.path("server.pem")),
            "--tls-key",
            &s(&host.ws.path("server.key")),
            "--client-ca",
            &ca,
            "--agent-cert",
            &s(&host.ws.path("verifier.pem")),
            "--agent-key",
            &s(&host.ws.path("verifier.key")),
        ],
        "verifier.log",
    );
    assert!(verifier.url.starts_with("https://"), "{}", verifier.url);
    let reader = reader_token(&host);
    // curl as a client: `cert` is a name of tls_files' (or none); the HTTP status, 0 when
    // the handshake failed.
    let curl_out = |cert: Option<&str>, method: &str, url: &str, data: &str| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}", "--cacert", &ca]);
        if let Some(c) = cert {
            cmd.args([
                "--cert",
                &s(&host.ws.path(&format!("{c}.pem"))),
                "--key",
                &s(&host.ws.path(&format!("{c}.key"))),
            ]);
        }
        if method == "POST" {
            cmd.args([
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                data,
            ]);
        }
        let out = cmd.arg(url).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse::<u16>().unwrap_or(0), body.to_string())
    };
    let curl = |cert: Option<&str>, method: &str, url: &str, data: &str| -> u16 {
        curl_out(cert, method, url, data).0
    };
    // The agent over mutual TLS serves the verifier's certificate only: not an admin's,
    // not a reader's, not another CA's, not an anonymous client (but for its health).
    let agent_pods = format!("{}/v1/pods", agent.url);
    assert_eq!(
        curl(None, "GET", &agent_pods, ""),
        401,
        "anonymous, to the agent"
    );
    assert_eq!(
        curl(None, "GET", &format!("{}/v1/health", agent.url), ""),
        200
    );
    assert_eq!(curl(Some("admin"), "GET", &agent_pods, ""), 403);
    assert_eq!(curl(Some("reader"), "GET", &agent_pods, ""), 403);
    assert_eq!(curl(Some("stranger"), "GET", &agent_pods, ""), 0);
    let (status, listed) = curl_out(Some("verifier"), "GET", &agent_pods, "");
    assert_eq!(status, 200, "{listed}");
    let (id, pod) = {
        let v: Value = serde_json::from_str(&listed).unwrap();
        let p = &v["pods"][0];
        (
            p["id"].as_str().unwrap().to_string(),
            p["pod"].as_str().unwrap().to_string(),
        )
    };
    let yaml = String::from_utf8(host.ws.read(&format!("{pod}.yaml"))).unwrap();
    let body = json!({"agent": agent.url, "podId": id, "bundle": host.bundle_digest(&host.ws.path("tk.jek")), "podYaml": yaml});
    let pods = format!("{}/v1/pods", verifier.url);
    assert_eq!(curl(None, "GET", &pods, ""), 401, "anonymous");
    assert_eq!(
        curl(None, "GET", &format!("{}/v1/health", verifier.url), ""),
        200
    );
    assert_eq!(curl(Some("reader"), "GET", &pods, ""), 200);
    assert_eq!(curl(Some("norole"), "GET", &pods, ""), 403);
    assert_eq!(curl(Some("verifier"), "GET", &pods, ""), 403);
    assert_eq!(
        curl(Some("stranger"), "GET", &pods, ""),
        0,
        "another CA's certificate"
    );
    assert_eq!(
        curl(Some("reader"), "POST", &pods, &body.to_string()),
        403,
        "a reader registering"
    );
    assert_eq!(
        curl(Some("admin"), "POST", &pods, &body.to_string()),
        201,
        "registration over TLS by the admin's certificate"
    );
    let log = std::fs::read_to_string(&verifier.log).unwrap();
    assert!(
        log.contains("pod registered") && log.contains("test-admin-cert (certificate)"),
        "{log}"
    );
    let cert_args = [
        "--client-cert".to_string(),
        s(&host.ws.path("reader.pem")),
        "--client-key".to_string(),
        s(&host.ws.path("reader.key")),
    ];
    wait_for("an affirming result over TLS", 30, || {
        let out = jek()
            .args(["attest", "--verifier", &verifier.url, &id, "--ca-file", &ca])
            .args(&cert_args)
            .output()
            .unwrap();
        out.status.success().then_some(())
    });
    // The bearer token works over TLS too.
    let out = jek()
        .args([
            "attest",
            "--token-file",
            &reader,
            "--verifier",
            &verifier.url,
            &id,
            "--ca-file",
            &ca,
        ])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    // No credential: refused (exit 3: the verifier answered, the pod is not attested here).
    let out = jek()
        .args(["attest", "--verifier", &verifier.url, &id, "--ca-file", &ca])
        .output()
        .unwrap();
    assert_exit(&out, 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A client key others can read is refused before anything is sent.
    let key = host.ws.path("reader.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = jek()
        .args(["attest", "--verifier", &verifier.url, &id, "--ca-file", &ca])
        .args(&cert_args)
        .output()
        .unwrap();
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reader.key") && err.contains("0644"), "{err}");
    // Without the CA, the verifier's certificate is not trusted: exit 3, naming the verifier.
    let out = jek()
        .args([
            "attest",
            "--token-file",
            &reader,
            "--verifier",
            &verifier.url,
            &id,
        ])
        .output()
        .unwrap();
    assert_exit(&out, 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&verifier.url),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
