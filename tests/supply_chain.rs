//! Sigstore and cosign through the `jek` binary: policies that require a Sigstore bundle
//! (keyless, against a private trust root built here) or a managed cosign key, and
//! `jek sign --cosign-key` output that OpenSSL verifies as `cosign verify-blob --key` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_exit, Workspace};
use jek_sigstore_testroot::{Faults, Identity, TestRoot};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn keyless_policy(ws: &Workspace, name: &str, trusted_keys: bool, id: &Identity) {
    ws.policy(
        name,
        &format!(
            "{}min_security_version: 3\nsigstore:\n  trusted_root: trusted_root.json\n  identities:\n    - issuer: {}\n      subject: {}\n",
            if trusted_keys { "trusted_keys: [dev.pub]\n" } else { "" },
            id.issuer,
            id.subject
        ),
    );
}

#[test]
fn keyless_sigstore_policy_accepts_the_ci_identity_and_names_each_failed_step() {
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    let bundle = ws.read("demo.jek");
    let root = TestRoot::new("cli");
    let id = Identity::default();
    ws.write("trusted_root.json", root.trusted_root_json().as_bytes());
    keyless_policy(&ws, "both.yaml", true, &id);
    keyless_policy(&ws, "sigstore-only.yaml", false, &id);

    // No signature next to the bundle: a policy that requires one rejects it.
    let out = ws.jek(&["verify", "demo.jek", "--policy", "both.yaml", "--json"]);
    assert_exit(&out, 1);
    assert_eq!(json(&out)["code"], "sigstore_signature_missing");

    // BUNDLE.sigstore.json is found by default; both the Ed25519 key and the identity count.
    ws.write(
        "demo.jek.sigstore.json",
        root.sign(&bundle, &id, Faults::None).as_bytes(),
    );
    for policy in ["both.yaml", "sigstore-only.yaml"] {
        let out = ws.jek(&["verify", "demo.jek", "--policy", policy, "--json"]);
        assert_exit(&out, 0);
        let j = json(&out);
        assert!(
            j["bundle"]["approvedBy"]
                .as_str()
                .unwrap()
                .contains(&id.subject),
            "{j}"
        );
        let signers = j["bundle"]["signers"].as_array().unwrap().len();
        assert_eq!(signers, usize::from(policy == "both.yaml"), "{policy}");
    }

    // Each defect: exit 1, the step in the JSON code and on stderr.
    let other_id = Identity {
        subject: "https://ci.example.invalid/fork/.github/workflows/kernel.yml@refs/heads/main"
            .into(),
        ..id.clone()
    };
    let other_issuer = Identity {
        issuer: "https://accounts.example.invalid".into(),
        ..id.clone()
    };
    let rogue = TestRoot::with_ca_seed("cli", "rogue");
    let cases = [
        (
            "wrong identity",
            root.sign(&bundle, &other_id, Faults::None),
            "identity_subject",
        ),
        (
            "wrong issuer",
            root.sign(&bundle, &other_issuer, Faults::None),
            "identity_issuer",
        ),
        (
            "signed after the certificate expired",
            root.sign(&bundle, &id, Faults::SignedAfterExpiry),
            "certificate_validity",
        ),
        (
            "entry not in the tree",
            root.sign(&bundle, &id, Faults::EntryNotInTree),
            "tlog_inclusion_proof",
        ),
        (
            "bad checkpoint signature",
            root.sign(&bundle, &id, Faults::BadCheckpointSignature),
            "tlog_checkpoint",
        ),
        (
            "for another artifact",
            root.sign(b"another bundle", &id, Faults::None),
            "artifact",
        ),
        (
            "untrusted root",
            rogue.sign(&bundle, &id, Faults::None),
            "certificate_chain",
        ),
    ];
    for (what, sig, code) in cases {
        ws.write("bad.sigstore.json", sig.as_bytes());
        let out = ws.jek(&[
            "verify",
            "demo.jek",
            "--policy",
            "sigstore-only.yaml",
            "--sigstore",
            "bad.sigstore.json",
            "--json",
        ]);
        assert_exit(&out, 1);
        assert_eq!(json(&out)["code"], format!("sigstore_{code}"), "{what}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("sigstore {}", code.replace('_', "-"))),
            "{what}: {stderr}"
        );
    }

    // A tampered bundle no longer matches the signed digest.
    let mut tampered = bundle.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    ws.write("demo.jek", &tampered);
    let out = ws.jek(&[
        "verify",
        "demo.jek",
        "--policy",
        "sigstore-only.yaml",
        "--json",
    ]);
    assert_exit(&out, 1);
    assert_eq!(json(&out)["code"], "sigstore_artifact");
}

#[test]
fn cosign_keys_sign_bundles_that_openssl_and_the_policy_verify() {
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    let mut keygen = common::jek();
    keygen
        .current_dir(ws.dir.path())
        .args(["keygen", "--cosign", "--out", "cosign"])
        .env("COSIGN_PASSWORD", "correct horse");
    let out = keygen.output().unwrap();
    assert_exit(&out, 0);
    let key = String::from_utf8(ws.read("cosign.key")).unwrap();
    assert!(
        key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"),
        "{key}"
    );

    // Without the password variable, and with a wrong one: usage errors, nothing written.
    let out = ws.jek(&["sign", "demo.jek", "--cosign-key", "cosign.key"]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("COSIGN_PASSWORD"));
    let sign = |password: &str| {
        let mut c = common::jek();
        c.current_dir(ws.dir.path())
            .args(["sign", "demo.jek", "--cosign-key", "cosign.key", "--json"])
            .env("COSIGN_PASSWORD", password);
        c.output().unwrap()
    };
    // A wrong password and a wrong file are told apart.
    let out = sign("wrong");
    assert_exit(&out, 2);
    assert!(
        json(&out)["reason"]
            .as_str()
            .unwrap()
            .contains("the password in COSIGN_PASSWORD does not decrypt this cosign key"),
        "{}",
        json(&out)
    );
    let out = ws.jek_cosign(
        "correct horse",
        &["sign", "demo.jek", "--cosign-key", "cosign.pub"],
    );
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an encrypted cosign private key"), "{err}");
    assert!(!ws.path("demo.jek.sig").exists());
    let before = ws.read("demo.jek");
    let out = sign("correct horse");
    assert_exit(&out, 0);
    assert_eq!(
        ws.read("demo.jek"),
        before,
        "cosign signing leaves the bundle as it was"
    );
    let j = json(&out);
    assert_eq!(
        j["cosign"]["signature"],
        ws.path("demo.jek.sig")
            .to_str()
            .unwrap()
            .replace(&format!("{}/", ws.dir.path().display()), "")
    );

    // What cosign verify-blob --key checks offline: ECDSA-SHA256 over the file, base64 DER.
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8(ws.read("demo.jek.sig")).unwrap().trim())
        .unwrap();
    ws.write("demo.jek.sig.der", &sig);
    let openssl = std::process::Command::new("openssl")
        .current_dir(ws.dir.path())
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "cosign.pub",
            "-signature",
            "demo.jek.sig.der",
            "demo.jek",
        ])
        .output()
        .expect("openssl is installed");
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );

    ws.policy(
        "cosign.yaml",
        "min_security_version: 3\nsigstore:\n  public_key: cosign.pub\n",
    );
    let out = ws.jek(&["verify", "demo.jek", "--policy", "cosign.yaml", "--json"]);
    assert_exit(&out, 0);
    assert!(json(&out)["bundle"]["approvedBy"]
        .as_str()
        .unwrap()
        .starts_with("cosign key sha256:"));

    // Another cosign key's signature is rejected at the signature step.
    assert_exit(
        &ws.jek_cosign("", &["keygen", "--cosign", "--out", "other"]),
        0,
    );
    let sign_other = [
        "sign",
        "demo.jek",
        "--cosign-key",
        "other.key",
        "--signature",
        "other.sig",
    ];
    assert_exit(&ws.jek_cosign("", &sign_other), 0);
    let out = ws.jek(&[
        "verify",
        "demo.jek",
        "--policy",
        "cosign.yaml",
        "--sigstore",
        "other.sig",
        "--json",
    ]);
    assert_exit(&out, 1);
    assert_eq!(json(&out)["code"], "sigstore_signature");

    // `sign --key` after `--cosign-key` would leave demo.jek.sig stale: refused, and the
    // bundle is left as it was; signed with both at once, the new cosign signature
    // verifies; --force removes the stale file.
    for k in ["dev2", "dev3"] {
        assert_exit(&ws.jek(&["keygen", "--out", k]), 0);
    }
    let before = ws.read("demo.jek");
    let out = ws.jek(&["sign", "demo.jek", "--key", "dev2.key"]);
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("demo.jek.sig is a detached signature over demo.jek") && err.contains("stale"),
        "{err}"
    );
    assert_eq!(ws.read("demo.jek"), before);
    assert_exit(
        &ws.jek_cosign(
            "correct horse",
            &[
                "sign",
                "demo.jek",
                "--key",
                "dev2.key",
                "--cosign-key",
                "cosign.key",
            ],
        ),
        0,
    );
    assert_ne!(ws.read("demo.jek"), before);
    let verify = ws.jek(&["verify", "demo.jek", "--policy", "cosign.yaml"]);
    assert_exit(&verify, 0);
    assert_exit(
        &ws.jek(&["sign", "demo.jek", "--key", "dev3.key", "--force"]),
        0,
    );
    assert!(!ws.path("demo.jek.sig").exists());
    assert_exit(&sign("correct horse"), 0);
    // --signature names a new file: an existing one is kept unless --force.
    let out = ws.jek_cosign("", &sign_other);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force replaces it"));

    // A managed key with a trusted root requires a logged Sigstore bundle, not a bare signature.
    let root = TestRoot::new("cosign");
    ws.write("trusted_root.json", root.trusted_root_json().as_bytes());
    ws.policy(
        "logged.yaml",
        "min_security_version: 3\nsigstore:\n  public_key: cosign.pub\n  trusted_root: trusted_root.json\n",
    );
    let out = ws.jek(&["verify", "demo.jek", "--policy", "logged.yaml", "--json"]);
    assert_exit(&out, 1);
    assert_eq!(json(&out)["code"], "sigstore_bundle_format");
}

#[test]
fn sigstore_policy_sections_are_validated() {
    let ws = Workspace::new();
    let cases = [
        ("min_security_version: 1\nsigstore: {}\n", "sigstore needs exactly one of"),
        (
            "min_security_version: 1\nsigstore:\n  identities: [{issuer: a, subject: b}]\n",
            "sigstore needs exactly one of",
        ),
        (
            "min_security_version: 1\nsigstore:\n  trusted_root: missing.json\n  identities: [{issuer: a, subject: b}]\n",
            "sigstore.trusted_root: cannot read",
        ),
        ("min_security_version: 1\n", "the policy trusts no key"),
    ];
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    for (yaml, want) in cases {
        ws.policy("p.yaml", yaml);
        let out = ws.jek(&["verify", "demo.jek", "--policy", "p.yaml"]);
        assert_exit(&out, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{yaml}: {stderr}");
    }
}
