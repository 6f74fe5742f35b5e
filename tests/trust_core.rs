//! End-to-end tests of the trust core through the `jek` binary: exit codes, interop with
//! OpenSSL and securesystemslib. The library-level tamper matrix and signer rules are in
//! `verifier/tests/trust_core.rs` (`cargo test -p jek-verifier`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cloned_ref_to_slice_refs
)]

mod common;

use common::{assert_exit, Workspace};
use jek_verifier::format::{self, Role};
use jek_verifier::{KeyId, PublicKey};

#[test]
fn cli_keygen_pack_sign_verify_and_exit_codes() {
    let ws = Workspace::new();
    let id = std::fs::read_to_string(ws.path("dev.pub")).unwrap();
    assert!(id.starts_with("-----BEGIN PUBLIC KEY-----"));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(ws.path("dev.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    ws.policy(
        "policy.yaml",
        "trusted_keys: [dev.pub]\nmin_security_version: 3\n",
    );
    let ok = ws.jek(&["verify", "demo.jek", "--policy", "policy.yaml"]);
    assert_exit(&ok, 0);
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("ACCEPTED demo 1.0.0"));

    // Rejections exit 1 and name the reason.
    ws.policy(
        "p4.yaml",
        "trusted_keys: [dev.pub]\nmin_security_version: 4\n",
    );
    let rb = ws.jek(&["verify", "demo.jek", "--policy", "p4.yaml", "--json"]);
    assert_exit(&rb, 1);
    let j: serde_json::Value = serde_json::from_slice(&rb.stdout).unwrap();
    assert_eq!(j["accepted"], false);
    assert_eq!(j["code"], "rollback");
    assert!(
        String::from_utf8_lossy(&rb.stderr).contains("security version 3 is below the minimum 4")
    );

    // Second signer, threshold 2.
    ws.keygen("ci");
    ws.policy(
        "p2.yaml",
        "trusted_keys: [dev.pub, ci.pub]\nthreshold: 2\nmin_security_version: 0\n",
    );
    assert_exit(&ws.jek(&["verify", "demo.jek", "--policy", "p2.yaml"]), 1);
    assert_exit(&ws.jek(&["sign", "demo.jek", "--key", "ci.key"]), 0);
    let two = ws.jek(&["verify", "demo.jek", "--policy", "p2.yaml", "--json"]);
    assert_exit(&two, 0);
    let j: serde_json::Value = serde_json::from_slice(&two.stdout).unwrap();
    assert_eq!(j["bundle"]["signers"].as_array().unwrap().len(), 2);

    // Bad usage and invalid input files exit 2; nothing is written on failure.
    assert_exit(
        &ws.jek(&["verify", "demo.jek", "--policy", "missing.yaml"]),
        2,
    );
    ws.policy(
        "bad.yaml",
        "trusted_keys: [dev.pub]\nmin_security_version: 1\ncolour: red\n",
    );
    let bad = ws.jek(&["verify", "demo.jek", "--policy", "bad.yaml"]);
    assert_exit(&bad, 2);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid policy file bad.yaml"));
    assert_exit(&ws.jek(&["verify"]), 2);
    ws.write("notakernel", b"hello");
    let nk = ws.jek(&[
        "pack",
        "--kernel",
        "notakernel",
        "--cmdline",
        "x",
        "--name",
        "n",
        "--version",
        "1",
        "--security-version",
        "1",
        "--key",
        "dev.key",
        "--out",
        "nk.jek",
    ]);
    assert_exit(&nk, 2);
    assert!(!ws.path("nk.jek").exists());
    assert!(String::from_utf8_lossy(&nk.stderr).contains("not a kernel image"));
    let keygen_again = ws.jek(&["keygen", "--out", "dev"]);
    assert_exit(&keygen_again, 2);
    assert!(String::from_utf8_lossy(&keygen_again.stderr).contains("already exists"));
    let leftovers: Vec<_> = std::fs::read_dir(ws.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".jek-tmp"))
        .collect();
    assert!(leftovers.is_empty());

    // A tampered file exits 1 with the component named.
    let mut bytes = ws.read("demo.jek");
    let at = format::parse(&bytes)
        .unwrap()
        .section(Role::Initramfs)
        .unwrap()
        .offset;
    bytes[at] ^= 0x20;
    ws.write("tampered.jek", &bytes);
    let t = ws.jek(&["verify", "tampered.jek", "--policy", "policy.yaml"]);
    assert_exit(&t, 1);
    assert!(String::from_utf8_lossy(&t.stderr).contains("digest mismatch for component initramfs"));
}

#[test]
fn cli_pack_is_byte_identical_under_source_date_epoch() {
    let ws = Workspace::new();
    for out in ["a.jek", "b.jek"] {
        let o = ws
            .pack_command(out, 3, &["dev.key"])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert_exit(&o, 0);
    }
    assert_eq!(ws.read("a.jek"), ws.read("b.jek"));
    let ins = ws.jek(&["inspect", "a.jek", "--json"]);
    assert_exit(&ins, 0);
    let j: serde_json::Value = serde_json::from_slice(&ins.stdout).unwrap();
    assert_eq!(j["manifest"]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(j["verified"], false);
    assert_eq!(j["components"][0]["role"], "bzimage");
    assert_eq!(j["components"][0]["matchesManifest"], true);
}

#[test]
fn interop_openssl_reads_keygen_keys_and_signs_what_we_verify() {
    let ws = Workspace::new();
    ws.write("msg", b"hello from openssl");
    let sign = std::process::Command::new("openssl")
        .current_dir(ws.dir.path())
        .args([
            "pkeyutl", "-sign", "-rawin", "-inkey", "dev.key", "-in", "msg", "-out", "msg.sig",
        ])
        .output()
        .expect("openssl must be installed (ci/test.sh installs it)");
    assert!(
        sign.status.success(),
        "{}",
        String::from_utf8_lossy(&sign.stderr)
    );
    let verify_out = std::process::Command::new("openssl")
        .current_dir(ws.dir.path())
        .args([
            "pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", "dev.pub", "-in", "msg",
            "-sigfile", "msg.sig",
        ])
        .output()
        .unwrap();
    assert!(
        verify_out.status.success(),
        "{}",
        String::from_utf8_lossy(&verify_out.stderr)
    );
    // The key ID is the SHA-256 of the SPKI DER that OpenSSL writes.
    let der = std::process::Command::new("openssl")
        .current_dir(ws.dir.path())
        .args(["pkey", "-pubin", "-in", "dev.pub", "-outform", "DER"])
        .output()
        .unwrap();
    let pem = std::fs::read_to_string(ws.path("dev.pub")).unwrap();
    let ours = PublicKey::from_spki_pem(&pem).unwrap();
    assert_eq!(
        ours.id(),
        KeyId(jek_verifier::Sha256Digest::of(&der.stdout))
    );
}

#[test]
fn interop_securesystemslib_verifies_our_dsse_envelope() {
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/interop/read_bundle.py"
    );
    let out = std::process::Command::new("python3")
        .args([
            script,
            ws.path("demo.jek").to_str().unwrap(),
            ws.path("dev.pub").to_str().unwrap(),
        ])
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "independent reader rejected our bundle: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["cmdline"], "console=ttyS0 quiet");
    assert_eq!(j["securityVersion"], 3);
    // And it rejects a tampered one.
    let mut bytes = ws.read("demo.jek");
    let at = format::parse(&bytes)
        .unwrap()
        .section(Role::Config)
        .unwrap()
        .offset;
    bytes[at] ^= 1;
    ws.write("t.jek", &bytes);
    let bad = std::process::Command::new("python3")
        .args([
            script,
            ws.path("t.jek").to_str().unwrap(),
            ws.path("dev.pub").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn version_names_the_format_and_completions_cover_every_command() {
    let ws = Workspace::new();
    let out = ws.jek(&["--version"]);
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("bundle format v1"));
    for shell in ["bash", "zsh", "fish"] {
        let out = ws.jek(&["completions", shell]);
        assert_exit(&out, 0);
        let text = String::from_utf8_lossy(&out.stdout);
        for cmd in [
            "keygen",
            "pack",
            "verify",
            "predict",
            "boot",
            "attest",
            "completions",
        ] {
            assert!(text.contains(cmd), "{shell}: {cmd} missing");
        }
    }
    let out = ws.jek(&["completions", "tcsh"]);
    assert_exit(&out, 2);

    // Man pages: one per command, each rendering with man(1)'s formatter and naming its
    // options.
    assert_exit(&ws.jek(&["man", "--out-dir", "man"]), 0);
    let help = ws.jek(&["--help"]);
    let commands: Vec<String> = String::from_utf8_lossy(&help.stdout)
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 15, "{commands:?}");
    for c in &commands {
        let page = ws.path(&format!("man/jek-{c}.1"));
        assert!(page.exists(), "no man page for {c}");
    }
    let page = ws.path("man/jek-pull.1");
    let out = std::process::Command::new("groff")
        .args(["-man", "-Tascii", "-P-bcou"])
        .arg(&page)
        .output()
        .expect("groff renders man pages");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--ca-file") && text.contains("--force"),
        "{text}"
    );
}

#[test]
fn inspect_shows_the_command_line_and_extract_writes_one_component() {
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    let out = ws.jek(&["inspect", "demo.jek"]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("command line     console=ttyS0 quiet"),
        "{text}"
    );
    let out = ws.jek(&["extract", "demo.jek", "bzimage", "--out", "k.out"]);
    assert_exit(&out, 0);
    assert_eq!(ws.read("k.out"), ws.read("bzImage"));
    // An existing output is kept unless --force.
    let out = ws.jek(&["extract", "demo.jek", "cmdline", "--out", "k.out"]);
    assert_exit(&out, 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ws.read("k.out"), ws.read("bzImage"));
    assert_exit(
        &ws.jek(&[
            "extract", "demo.jek", "cmdline", "--out", "k.out", "--force",
        ]),
        0,
    );
    assert_eq!(ws.read("k.out"), b"console=ttyS0 quiet");
    // No such role, no such component.
    assert_exit(&ws.jek(&["extract", "demo.jek", "kernel", "--out", "x"]), 2);
    let out = ws.jek(&["extract", "demo.jek", "vmlinux", "--out", "x"]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no vmlinux component"));
    assert!(!ws.path("x").exists());
}

#[test]
fn verify_with_a_key_and_no_policy_file() {
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    let out = ws.jek(&["verify", "demo.jek", "--key", "dev.pub"]);
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ACCEPTED demo 1.0.0"));
    ws.keygen("other");
    assert_exit(&ws.jek(&["verify", "demo.jek", "--key", "other.pub"]), 1);
    let out = ws.jek(&["verify", "demo.jek", "--key", "dev.key"]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid public key file dev.key"));
    // One of --policy and --key.
    assert_exit(&ws.jek(&["verify", "demo.jek"]), 2);
}

#[test]
fn with_json_every_failure_is_one_json_object_on_stdout() {
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    ws.keygen("other");
    ws.policy(
        "other.yaml",
        "trusted_keys: [other.pub]\nmin_security_version: 1\n",
    );
    let json = |args: &[&str], exit: i32| -> serde_json::Value {
        let out = ws.jek(args);
        assert_exit(&out, exit);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let v = json(&["inspect", "missing.jek", "--json"], 2);
    assert_eq!(
        (v["exit"].as_i64(), v["code"].as_str()),
        (Some(2), Some("usage")),
        "{v}"
    );
    assert!(v["reason"].as_str().unwrap().contains("missing.jek"), "{v}");
    let v = json(
        &["predict", "demo.jek", "--policy", "other.yaml", "--json"],
        1,
    );
    assert_eq!(v["accepted"], false, "{v}");
    assert_eq!(v["code"], "unknown_signer", "{v}");
    let v = json(
        &["verify", "demo.jek", "--policy", "other.yaml", "--json"],
        1,
    );
    assert_eq!(
        (v["accepted"].as_bool(), v["exit"].as_i64()),
        (Some(false), Some(1)),
        "{v}"
    );
    // A usage error clap finds, before any command runs.
    let v = json(&["verify", "demo.jek", "--json"], 2);
    assert_eq!(v["code"], "usage", "{v}");
}

#[test]
fn pack_and_sign_report_json() {
    let ws = Workspace::new();
    ws.keygen("a");
    ws.keygen("b");
    let out = ws
        .pack_command("demo.jek", 1, &["a.key"])
        .arg("--json")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = ws.read("demo.jek");
    assert_eq!(v["size"], bytes.len());
    assert_eq!(
        v["sha256"],
        jek_verifier::Sha256Digest::of(&bytes).to_string()
    );
    let out = ws.jek(&["sign", "demo.jek", "--key", "b.key", "--json"]);
    assert_exit(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["keyId"].as_str().unwrap().len(), 64);
    assert_eq!(
        v["sha256"],
        jek_verifier::Sha256Digest::of(&ws.read("demo.jek")).to_string()
    );
}

#[test]
fn a_file_that_is_not_a_bundle_is_rejected_alike_by_every_command() {
    let ws = Workspace::new();
    ws.policy(
        "p.yaml",
        "trusted_keys: [dev.pub]\nmin_security_version: 0\n",
    );
    ws.write("empty.jek", b"");
    ws.write("junk.jek", b"JEKB not really a bundle");
    for file in ["empty.jek", "junk.jek"] {
        for args in [
            vec!["verify", file, "--policy", "p.yaml", "--json"],
            vec!["inspect", file, "--json"],
            vec!["sign", file, "--key", "dev.key", "--json"],
        ] {
            let out = ws.jek(&args);
            assert_exit(&out, 1);
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(j["code"], "malformed_bundle", "{args:?}: {j}");
        }
        let out = ws.jek(&["extract", file, "bzimage", "--out", "k"]);
        assert_exit(&out, 1);
        assert!(String::from_utf8_lossy(&out.stderr).contains("malformed bundle"));
    }
    assert!(!ws.path("k").exists());
    assert_eq!(ws.read("empty.jek"), b"");
}

#[test]
fn an_existing_output_is_replaced_only_with_force() {
    let ws = Workspace::new();
    ws.write("demo.jek", b"precious");
    let out = ws.pack("demo.jek", 1, &["dev.key"]);
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("demo.jek already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(ws.read("demo.jek"), b"precious");
    let mut c = ws.pack_command("demo.jek", 1, &["dev.key"]);
    assert_exit(&c.arg("--force").output().unwrap(), 0);
    assert_ne!(ws.read("demo.jek"), b"precious");
    // sign --out follows the same rule; signing in place replaces the bundle.
    ws.write("copy.jek", b"precious");
    ws.keygen("ci");
    let out = ws.jek(&["sign", "demo.jek", "--key", "ci.key", "--out", "copy.jek"]);
    assert_exit(&out, 2);
    assert_eq!(ws.read("copy.jek"), b"precious");
    let forced = [
        "sign", "demo.jek", "--key", "ci.key", "--out", "copy.jek", "--force",
    ];
    assert_exit(&ws.jek(&forced), 0);
    assert_exit(&ws.jek(&["sign", "demo.jek", "--key", "ci.key"]), 0);
}

#[test]
fn verbose_logs_each_step_and_the_default_does_not() {
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    ws.policy(
        "p.yaml",
        "trusted_keys: [dev.pub]\nmin_security_version: 0\n",
    );
    let out = ws.jek(&["-v", "verify", "demo.jek", "--policy", "p.yaml"]);
    assert_exit(&out, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    for step in ["policy loaded", "verifying", "accepted demo 1.0.0"] {
        assert!(err.contains(step), "-v: no {step:?} in {err}");
    }
    assert!(!err.contains('\x1b'), "no colours into a pipe: {err:?}");
    let out = ws.jek(&["verify", "demo.jek", "--policy", "p.yaml"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("policy loaded"));
}
