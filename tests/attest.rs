//! `jek attest` against real swtpms: a clean boot of the default bundle (QEMU backend, real
//! kernel) attests as affirming, every kind of tampering is contraindicated with the right
//! claim, exported quotes satisfy `tpm2_checkquote`, and 16 pods attest concurrently.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{assert_exit, default_build, jek, test_key, Workspace};
use jek_measure::EventLog;
use serde_json::Value;

/// One VM scenario at a time (TCG guests on two shared cores, see tests/boot.rs).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Env {
    ws: Workspace,
    kept: Vec<Value>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for k in self.kept.iter().filter_map(common::kept_swtpm) {
            let _ = jek_tpm::swtpm::stop_kept(&k);
        }
    }
}

impl Env {
    fn new() -> Self {
        let ws = Workspace::new();
        let key = test_key();
        ws.policy(
            "policy.yaml",
            &format!(
                "trusted_keys: [{}]\nmin_security_version: 1\nattestation:\n  ek_ca: ca/swtpm-localca-rootca-cert.pem\n",
                key.with_extension("pub").display()
            ),
        );
        for name in ["a", "b"] {
            ws.write(&format!("{name}.yaml"), common::pod_yaml(name).as_bytes());
        }
        Env {
            ws,
            kept: Vec::new(),
        }
    }

    fn p(&self, name: &str) -> String {
        self.ws.path(name).display().to_string()
    }

    fn boot(&mut self, bundle: &Path, pod: &str, run: &str, vmm: &str) -> Value {
        let out = jek()
            .arg("boot")
            .arg(bundle)
            .args([
                "--policy",
                &self.p("policy.yaml"),
                "--pod",
                &self.p(&format!("{pod}.yaml")),
            ])
            .args([
                "--vmm",
                vmm,
                "--keep-tpm",
                "--tpm-ca",
                &self.p("ca"),
                "--json",
            ])
            .args(["--run-dir", &self.p(run)])
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let record: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(record["tpm"]["attestable"], true);
        self.kept.push(record.clone());
        record
    }

    fn attest(&self, args: &[&str]) -> (Output, Value) {
        let out = jek()
            .current_dir(self.ws.path(""))
            .arg("attest")
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, v)
    }
}

/// The claims of the first result.
fn claims(v: &Value) -> &Value {
    let r = &v["results"][0]["result"];
    let pod = r["submods"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    &r["submods"][pod.as_str()]["jek.claims"]
}

fn status(v: &Value) -> &str {
    let r = &v["results"][0]["result"];
    let pod = r["submods"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    r["submods"][pod.as_str()]["ear.status"].as_str().unwrap()
}

/// Asserts exit 1, contraindicated overall and for `claim`, with `reason` in its reason.
fn contraindicated(out: &Output, v: &Value, claim: &str, reason: &str) {
    assert_exit(out, 1);
    assert_eq!(status(v), "contraindicated", "{v}");
    let c = &claims(v)[claim];
    assert_eq!(c["status"], "contraindicated", "{claim}: {v}");
    let text = c["reason"].as_str().unwrap_or("").to_string() + &c["more"].to_string();
    assert!(text.contains(reason), "{claim}: {reason:?} not in {c}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("tpm")).unwrap();
    for f in ["pod.json", "binary_bios_measurements"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    for f in ["ak.tpmt", "ak.priv", "ek-chain.pem"] {
        std::fs::copy(from.join("tpm").join(f), to.join("tpm").join(f)).unwrap();
    }
}

fn edit_log(dir: &Path, edit: impl FnOnce(&mut Vec<jek_measure::Event>)) {
    let path = dir.join("binary_bios_measurements");
    let mut log = EventLog::from_bytes(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut log.events);
    std::fs::write(&path, log.to_bytes()).unwrap();
}

#[test]
fn a_clean_pod_attests_and_every_tampering_is_contraindicated() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let built = default_build();
    let mut env = Env::new();
    let bundle = built.bundle.display().to_string();
    env.boot(&built.bundle, "a", "runs/a", "qemu");
    let rec_b = env.boot(&built.bundle, "b", "runs/b", "qemu");
    let base = ["--bundle", &bundle, "--policy", "policy.yaml"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| (*s).to_string()).collect()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        env.attest(&refs)
    };

    // The run directory and the TPM files in it are the pod owner's alone.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &str| {
        std::fs::metadata(env.ws.path(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("runs/a"), 0o700);
    for f in [
        "tpm",
        "tpm/ak.priv",
        "tpm/ak.tpmt",
        "pod.json",
        "binary_bios_measurements",
    ] {
        assert_eq!(mode(&format!("runs/a/{f}")) & 0o077, 0, "runs/a/{f}");
    }

    // Clean: affirming on every claim, exported evidence included.
    let (out, v) = run(with(&["runs/a", "--pod", "a.yaml", "--export", "ev-a"]));
    assert_exit(&out, 0);
    assert_eq!(status(&v), "affirming", "{v}");
    for (name, c) in claims(&v).as_object().unwrap() {
        assert_eq!(c["status"], "affirming", "{name}: {v}");
    }
    let ak_a = v["results"][0]["result"]["submods"]["a"]["jek.ak-name"]
        .as_str()
        .unwrap()
        .to_string();
    let (out, v_b) = run(with(&["runs/b", "--pod", "b.yaml", "--export", "ev-b"]));
    assert_exit(&out, 0);
    let ak_b = v_b["results"][0]["result"]["submods"]["b"]["jek.ak-name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(ak_a, ak_b);

    // tpm2_checkquote accepts our export, and refuses it under another nonce.
    let meta: Value = serde_json::from_slice(&env.ws.read("ev-a/evidence.json")).unwrap();
    let nonce = meta["nonce"].as_str().unwrap().to_string();
    let check = |n: &str| {
        std::process::Command::new("tpm2_checkquote")
            .current_dir(env.ws.path("ev-a"))
            .args([
                "-u",
                "ak.pem",
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-f",
                "pcrs.ser",
                "-g",
                "sha256",
                "-q",
                n,
            ])
            .output()
            .unwrap()
    };
    assert_exit(&check(&nonce), 0);
    assert!(!check(&"11".repeat(32)).status.success());

    // Evidence mode: affirming with the activated AK pinned; a stale nonce is a replay.
    let (out, _) = run(with(&[
        "--evidence",
        "ev-a",
        "--nonce",
        &nonce,
        "--ak-name",
        &ak_a,
        "--pod",
        "a.yaml",
    ]));
    assert_exit(&out, 0);
    let (out, v) = run(with(&[
        "--evidence",
        "ev-a",
        "--nonce",
        &"22".repeat(32),
        "--ak-name",
        &ak_a,
        "--pod",
        "a.yaml",
    ]));
    contraindicated(&out, &v, "freshness", "nonce");
    // Without a pinned AK nothing proves the TPM.
    let (out, v) = run(with(&[
        "--evidence",
        "ev-a",
        "--nonce",
        &nonce,
        "--pod",
        "a.yaml",
    ]));
    contraindicated(&out, &v, "tpm-identity", "not proven");
    // Pod A's evidence presented as pod B (B's AK pinned).
    let (out, v) = run(with(&[
        "--evidence",
        "ev-a",
        "--nonce",
        &nonce,
        "--ak-name",
        &ak_b,
        "--pod",
        "a.yaml",
    ]));
    contraindicated(&out, &v, "tpm-identity", "not the AK proven");
    // A quote signed by another pod's AK.
    for f in ["quote.msg", "quote.sig"] {
        std::fs::copy(env.ws.path("ev-b").join(f), env.ws.path("ev-a").join(f)).unwrap();
    }
    let (out, v) = run(with(&[
        "--evidence",
        "ev-a",
        "--nonce",
        &nonce,
        "--ak-name",
        &ak_a,
        "--pod",
        "a.yaml",
    ]));
    contraindicated(&out, &v, "tpm-identity", "does not verify under the AK");

    // An AK that is not in the pod's certified TPM: B's AK files next to A's TPM.
    copy_dir(&env.ws.path("runs/a"), &env.ws.path("x/foreign-ak"));
    for f in ["ak.tpmt", "ak.priv"] {
        std::fs::copy(
            env.ws.path("runs/b/tpm").join(f),
            env.ws.path("x/foreign-ak/tpm").join(f),
        )
        .unwrap();
    }
    let (out, v) = run(with(&["x/foreign-ak", "--pod", "a.yaml"]));
    contraindicated(&out, &v, "tpm-identity", "");

    // Event logs edited, truncated, reordered, extended.
    type Edit = fn(&mut Vec<jek_measure::Event>);
    let cases: [(&str, Edit, &str, &str); 4] = [
        (
            "edited",
            |e| e[0].digest.0[0] ^= 1,
            "kernel",
            "differs from the reference",
        ),
        (
            "truncated",
            |e| {
                e.pop();
            },
            // The last event is PCR 13's container count.
            "images",
            "replays",
        ),
        (
            "reordered",
            |e| e.swap(3, 4),
            "cmdline",
            "differs from the reference",
        ),
        (
            "extended",
            |e| {
                let mut x = e[3].clone();
                x.digest.0[1] ^= 1;
                e.push(x);
            },
            "cmdline",
            "",
        ),
    ];
    for (name, edit, claim, reason) in cases {
        let dir = env.ws.path(&format!("x/{name}"));
        copy_dir(&env.ws.path("runs/a"), &dir);
        edit_log(&dir, edit);
        let (out, v) = run(with(&[&format!("x/{name}"), "--pod", "a.yaml"]));
        contraindicated(&out, &v, claim, reason);
    }

    // The bundle under policies that no longer accept it.
    env.ws.keygen("other");
    let policies = [
        (
            "untrusted.yaml",
            "trusted_keys: [other.pub]\nmin_security_version: 1\n".to_string(),
            "signer",
            "no signature is by a trusted key",
        ),
        (
            "revoked.yaml",
            format!(
                "trusted_keys: [{}]\nmin_security_version: 1\nrevoked_keys: [{}]\n",
                test_key().with_extension("pub").display(),
                rec_b["bundle"]["signers"][0].as_str().unwrap()
            ),
            "signer",
            "revoked",
        ),
        (
            "floor.yaml",
            format!(
                "trusted_keys: [{}]\nmin_security_version: 99\n",
                test_key().with_extension("pub").display()
            ),
            "security-version",
            "rollback",
        ),
    ];
    for (file, yaml, claim, reason) in policies {
        env.ws.policy(
            file,
            &format!("{yaml}attestation:\n  ek_ca: ca/swtpm-localca-rootca-cert.pem\n"),
        );
        let (out, v) = env.attest(&[
            "runs/a", "--pod", "a.yaml", "--bundle", &bundle, "--policy", file,
        ]);
        contraindicated(&out, &v, claim, reason);
    }

    // A command line other than the signed one: the same components signed with another.
    let bytes = std::fs::read(&built.bundle).unwrap();
    let verified =
        jek_verifier::verify(bytes, &load_policy(&env), jek_verifier::UnixTime::now()).unwrap();
    use jek_verifier::format::Role;
    std::fs::create_dir_all(env.ws.path("c")).unwrap();
    env.ws
        .write("c/bzImage", verified.component(Role::BzImage).unwrap());
    env.ws
        .write("c/initramfs", verified.component(Role::Initramfs).unwrap());
    let out = env.ws.jek(&[
        "pack",
        "--kernel",
        "c/bzImage",
        "--initramfs",
        "c/initramfs",
        "--cmdline",
        &format!("{} jek.extra=1", verified.cmdline()),
        "--name",
        "demo",
        "--version",
        "1.0.0",
        "--security-version",
        "1",
        "--key",
        &test_key().display().to_string(),
        "--out",
        "c/other.jek",
    ]);
    assert_exit(&out, 0);
    let (out, v) = env.attest(&[
        "runs/a",
        "--pod",
        "a.yaml",
        "--bundle",
        "c/other.jek",
        "--policy",
        "policy.yaml",
    ]);
    contraindicated(&out, &v, "cmdline", "differs from the reference");

    // A pod configuration other than the one given.
    env.ws.write(
        "a2.yaml",
        common::pod_yaml("a").replace("\"0\"", "\"3\"").as_bytes(),
    );
    let (out, v) = run(with(&["runs/a", "--pod", "a2.yaml"]));
    contraindicated(&out, &v, "pod-config", "differs from the reference");

    // A PCR extended after boot (B's TPM, PCR 8).
    let mut tpm = common::connect_kept(&rec_b);
    tpm.extend(8, &jek_verifier::Sha256Digest([0x42; 32]))
        .unwrap();
    drop(tpm);
    let (out, v) = run(with(&["runs/b", "--pod", "b.yaml"]));
    contraindicated(&out, &v, "cmdline", "PCR 8");

    // A run directory pointed at another pod's kept TPM, with that pod's AK and log: the
    // verifier binds the pod to the TPM it registered, not to what the run directory says.
    let rec_a = env.kept[0].clone();
    copy_dir(&env.ws.path("runs/b"), &env.ws.path("x/evil"));
    for f in ["tpm/ak.tpmt", "tpm/ak.priv", "binary_bios_measurements"] {
        std::fs::copy(env.ws.path("runs/a").join(f), env.ws.path("x/evil").join(f)).unwrap();
    }
    let mut evil = rec_b.clone();
    evil["tpm"]["kept"] = rec_a["tpm"]["kept"].clone();
    env.ws.write("x/evil/pod.json", evil.to_string().as_bytes());
    let (out, v) = run(with(&["x/evil", "--pod", "b.yaml"]));
    contraindicated(&out, &v, "tpm-identity", "not created in this TPM");
    assert_eq!(
        v["results"][0]["pod"], "b",
        "reported as the pod it is registered as"
    );

    // Files in a run directory are not followed through symlinks.
    copy_dir(&env.ws.path("runs/a"), &env.ws.path("x/linked"));
    let log = env.ws.path("x/linked/binary_bios_measurements");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(env.ws.path("runs/a/binary_bios_measurements"), &log).unwrap();
    let (out, v) = run(with(&["x/linked", "--pod", "a.yaml"]));
    assert_exit(&out, 3);
    assert!(
        v["results"][0]["error"]
            .as_str()
            .unwrap()
            .contains("event log"),
        "{v}"
    );

    // Evidence mode refuses a nonce that a quote without qualifying data could match.
    for short in ["", "00112233"] {
        let (out, _) = run(with(&[
            "--evidence",
            "ev-b",
            "--nonce",
            short,
            "--ak-name",
            &ak_b,
        ]));
        assert_exit(&out, 2);
        assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
    }

    // The TPM reset (power-cycled over its control socket, started up again) and the boot
    // replayed from the pod's own log: every PCR is right, the epoch is not.
    let replay_log = EventLog::from_bytes(&env.ws.read("runs/a/binary_bios_measurements")).unwrap();
    power_cycle(&rec_a, tss_esapi::constants::StartupType::Clear, None);
    let mut tpm = common::connect_kept(&rec_a);
    for e in &replay_log.events {
        tpm.extend(e.pcr, &e.digest).unwrap();
    }
    drop(tpm);
    let (out, v) = run(with(&["runs/a", "--pod", "a.yaml"]));
    contraindicated(&out, &v, "boot-epoch", "reset since the pod registered");
    for (name, c) in claims(&v).as_object().unwrap() {
        if name != "boot-epoch" {
            assert_eq!(
                c["status"], "affirming",
                "only the epoch gives the replay away: {v}"
            );
        }
    }

    // Restarted instead (TPM2_Shutdown(STATE), power cycle, TPM2_Startup(STATE)): the PCRs
    // survive, the restart count does not.
    power_cycle(
        &rec_b,
        tss_esapi::constants::StartupType::State,
        Some(tss_esapi::constants::StartupType::State),
    );
    let (out, v) = run(with(&["runs/b", "--pod", "b.yaml"]));
    contraindicated(&out, &v, "boot-epoch", "restarted since the pod registered");
}

/// What an attacker with the TPM's control channel would do: optionally TPM2_Shutdown,
/// then CMD_INIT (a power cycle), then TPM2_Startup.
fn power_cycle(
    record: &Value,
    startup: tss_esapi::constants::StartupType,
    shutdown_first: Option<tss_esapi::constants::StartupType>,
) {
    let kept = common::kept_swtpm(record).unwrap();
    if let Some(kind) = shutdown_first {
        let mut tpm = common::connect_kept(record);
        tpm.context().shutdown(kind).unwrap();
    }
    let mut ctrl = kept.sockets.connect_ctrl().unwrap();
    let resp =
        jek_tpm::swtpm::ctrl_command(&mut ctrl, jek_tpm::swtpm::ctrl::INIT, &0u32.to_be_bytes())
            .unwrap();
    assert_eq!(resp, [0; 4], "CMD_INIT");
    drop(ctrl);
    let mut tpm = common::connect_kept(record);
    tpm.context().startup(startup).unwrap();
}

fn load_policy(env: &Env) -> jek_verifier::Policy {
    let pem = std::fs::read_to_string(test_key().with_extension("pub")).unwrap();
    let _ = env;
    jek_verifier::Policy::new(
        vec![jek_verifier::TrustedKey {
            key: jek_verifier::PublicKey::from_spki_pem(&pem).unwrap(),
            not_before: None,
            not_after: None,
        }],
        None,
        1,
        Default::default(),
    )
    .unwrap()
}

/// 16 pods (KVM backend, test-kernel bundle) booted at once attest concurrently, each with
/// its own correct result; a bad pod among them does not hide the others.
#[test]
fn sixteen_pods_attest_concurrently() {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: this test needs KVM"
    );
    let mut env = Env::new();
    env.ws.write("testkernel.bzImage", jek_testkernel::BZIMAGE);
    let out = env.ws.jek(&[
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
        &test_key().display().to_string(),
        "--out",
        "tk.jek",
    ]);
    assert_exit(&out, 0);
    let mut pod_args = Vec::new();
    for i in 0..16 {
        let name = format!("p{i:02}");
        env.ws
            .write(&format!("{name}.yaml"), common::pod_yaml(&name).as_bytes());
        pod_args.push("--pod".to_string());
        pod_args.push(format!("{name}.yaml"));
    }
    let bundle = env.ws.path("tk.jek");
    let children: Vec<_> = (0..16)
        .map(|i| {
            let name = format!("p{i:02}");
            jek()
                .arg("boot")
                .arg(&bundle)
                .args([
                    "--policy",
                    &env.p("policy.yaml"),
                    "--pod",
                    &env.p(&format!("{name}.yaml")),
                ])
                .args([
                    "--vmm",
                    "kvm",
                    "--keep-tpm",
                    "--tpm-ca",
                    &env.p("ca"),
                    "--json",
                    "-q",
                ])
                .args(["--run-dir", &env.p(&format!("pods/{name}"))])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_exit(&out, 0);
        env.kept.push(serde_json::from_slice(&out.stdout).unwrap());
    }
    // One pod's log edited: it alone is contraindicated.
    edit_log(&env.ws.path("pods/p07"), |e| e[0].digest.0[0] ^= 1);
    let mut args = vec![
        "pods".to_string(),
        "--bundle".into(),
        "tk.jek".into(),
        "--policy".into(),
        "policy.yaml".into(),
    ];
    args.extend(pod_args);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, v) = env.attest(&refs);
    assert_exit(&out, 1);
    assert_eq!(v["summary"]["pods"], 16, "{v}");
    assert_eq!(v["summary"]["affirming"], 15, "{v}");
    assert_eq!(v["summary"]["contraindicated"], 1, "{v}");
    let mut seen_ak = std::collections::BTreeSet::new();
    for r in v["results"].as_array().unwrap() {
        let pod = r["pod"].as_str().unwrap();
        let sub = &r["result"]["submods"][pod];
        let want = if pod == "p07" {
            "contraindicated"
        } else {
            "affirming"
        };
        assert_eq!(sub["ear.status"], want, "{pod}: {sub}");
        assert!(seen_ak.insert(sub["jek.ak-name"].as_str().unwrap().to_string()));
    }
}
