//! `jek push` / `jek pull` against a real registry: Debian's `docker-registry`, started on
//! 127.0.0.1 by the test with its storage in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_exit, start_registry, Workspace};
use jek_sigstore_testroot::{Faults, Identity, TestRoot};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn push_pull_verify_and_every_rejected_pull_writes_nothing() {
    let reg = start_registry();
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    let bundle = ws.read("demo.jek");
    let root = TestRoot::new("registry");
    let id = Identity::default();
    ws.write("trusted_root.json", root.trusted_root_json().as_bytes());
    ws.write(
        "demo.jek.sigstore.json",
        root.sign(&bundle, &id, Faults::None).as_bytes(),
    );
    ws.write(
        "prov.json",
        br#"{"_type":"https://in-toto.io/Statement/v1"}"#,
    );
    ws.policy(
        "policy.yaml",
        &format!(
            "trusted_keys: [dev.pub]\nmin_security_version: 3\nsigstore:\n  trusted_root: trusted_root.json\n  identities:\n    - issuer: {}\n      subject: {}\n",
            id.issuer, id.subject
        ),
    );
    ws.policy(
        "plain.yaml",
        "trusted_keys: [dev.pub]\nmin_security_version: 3\n",
    );

    let reference = format!("{}/pods/kernel:6.1", reg.addr);
    // HTTPS against a plain-HTTP registry: said plainly, with the flag to use.
    let out = ws.jek(&["push", "demo.jek", &reference]);
    assert_exit(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("answered in plain HTTP, not HTTPS") && stderr.contains("--plain-http"),
        "{stderr}"
    );
    let out = ws.jek(&[
        "pull",
        &reference,
        "--policy",
        "plain.yaml",
        "--out",
        "x.jek",
    ]);
    assert_exit(&out, 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--plain-http"));
    let out = ws.jek(&[
        "push",
        "demo.jek",
        &reference,
        "--provenance",
        "prov.json",
        "--plain-http",
        "--json",
    ]);
    assert_exit(&out, 0);
    let pushed = json(&out);
    // `jek inspect` and `jek extract` read a registry reference as they read a file.
    let out = ws.jek(&["inspect", &reference, "--plain-http", "--json"]);
    assert_exit(&out, 0);
    assert_eq!(json(&out)["cmdline"], "console=ttyS0 quiet");
    let out = ws.jek(&[
        "extract",
        &reference,
        "initramfs",
        "--out",
        "initrd.out",
        "--plain-http",
    ]);
    assert_exit(&out, 0);
    assert_eq!(ws.read("initrd.out"), ws.read("initrd.cpio"));
    assert_eq!(
        pushed["bundleDigest"],
        format!("sha256:{}", jek_verifier::Sha256Digest::of(&bundle))
    );
    assert_eq!(pushed["attachments"].as_array().unwrap().len(), 2);

    // Pull by tag and by digest: verified, then written with the accepted signature.
    let by_digest = format!(
        "{}/pods/kernel@{}",
        reg.addr,
        pushed["manifestDigest"].as_str().unwrap()
    );
    for (r, out_name) in [(&reference, "pulled.jek"), (&by_digest, "by-digest.jek")] {
        let out = ws.jek(&[
            "pull",
            r,
            "--policy",
            "policy.yaml",
            "--out",
            out_name,
            "--plain-http",
            "--json",
        ]);
        assert_exit(&out, 0);
        assert!(json(&out)["approvedBy"]
            .as_str()
            .unwrap()
            .contains(&id.subject));
        assert_eq!(ws.read(out_name), bundle);
        assert!(ws.path(&format!("{out_name}.sigstore.json")).is_file());
    }
    // What was pulled boots the same checks locally.
    let out = ws.jek(&["verify", "pulled.jek", "--policy", "policy.yaml"]);
    assert_exit(&out, 0);

    // A bundle pushed without a signature: a policy requiring one rejects it, nothing written;
    // a policy without a sigstore rule accepts it.
    assert_exit(&ws.pack("unsigned-sigstore.jek", 3, &["dev.key"]), 0);
    let bare = format!("{}/pods/kernel:bare", reg.addr);
    assert_exit(
        &ws.jek(&["push", "unsigned-sigstore.jek", &bare, "--plain-http"]),
        0,
    );
    let out = ws.jek(&[
        "pull",
        &bare,
        "--policy",
        "policy.yaml",
        "--out",
        "rejected.jek",
        "--plain-http",
    ]);
    assert_exit(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requires a Sigstore signature"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ws.path("rejected.jek").exists());
    let out = ws.jek(&[
        "pull",
        &bare,
        "--policy",
        "plain.yaml",
        "--out",
        "plain.jek",
        "--plain-http",
    ]);
    assert_exit(&out, 0);

    // A tag that does not exist: rejected (exit 1) and said plainly.
    let missing = format!("{}/pods/kernel:9.9.9", reg.addr);
    let out = ws.jek(&[
        "pull",
        &missing,
        "--policy",
        "plain.yaml",
        "--out",
        "none.jek",
        "--plain-http",
    ]);
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pods/kernel:9.9.9 not found"), "{stderr}");
    assert!(!ws.path("none.jek").exists());

    // Tamper with the bundle blob in the registry's storage: the pull is rejected.
    let hex = jek_verifier::Sha256Digest::of(&bundle).to_string();
    let blob = reg
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    let mut stored = std::fs::read(&blob).unwrap();
    assert_eq!(stored, bundle);
    let n = stored.len();
    stored[n / 2] ^= 0x40;
    std::fs::write(&blob, &stored).unwrap();
    let out = ws.jek(&[
        "pull",
        &reference,
        "--policy",
        "policy.yaml",
        "--out",
        "tampered.jek",
        "--plain-http",
    ]);
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the manifest says"), "{stderr}");
    assert!(!ws.path("tampered.jek").exists());
    assert!(!ws.path("tampered.jek.sigstore.json").exists());

    // Not a bundle at all, and an unreachable registry.
    let out = ws.jek(&[
        "pull",
        "not a reference!",
        "--policy",
        "policy.yaml",
        "--out",
        "x.jek",
    ]);
    assert_exit(&out, 2);
    drop(reg);
    let out = ws.jek(&[
        "pull",
        &reference,
        "--policy",
        "policy.yaml",
        "--out",
        "x.jek",
        "--plain-http",
    ]);
    assert_exit(&out, 3);
    assert!(!ws.path("x.jek").exists());
}

#[test]
fn a_tls_registry_with_a_private_ca_and_credentials_from_the_auth_files() {
    use base64::Engine as _;
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    ws.policy(
        "plain.yaml",
        "trusted_keys: [dev.pub]\nmin_security_version: 3\n",
    );
    common::tls_files(&ws);
    let hash = std::process::Command::new("python3")
        .args([
            "-c",
            "import crypt; print(crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH)))",
        ])
        .output()
        .unwrap();
    ws.write(
        "htpasswd",
        format!("pusher:{}", String::from_utf8(hash.stdout).unwrap()).as_bytes(),
    );
    let p = |f: &str| ws.path(f).display().to_string();
    let reg = common::start_registry_with(
        |_| {
            format!(
                "auth:\n  htpasswd:\n    realm: jek\n    path: {}\n",
                p("htpasswd")
            )
        },
        &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            p("server.pem"),
            p("server.key")
        ),
    );
    let reference = format!("{}/private/kernel:1", reg.addr);
    let push = |env: &[(&str, String)], extra: &[&str]| {
        let mut c = common::jek();
        c.current_dir(ws.dir.path())
            .args(["push", "demo.jek", &reference])
            .args(extra)
            .env_remove("JEK_REGISTRY_USERNAME")
            .env_remove("JEK_REGISTRY_PASSWORD")
            .env("HOME", ws.dir.path())
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // Without the CA, TLS fails and says the certificate is not trusted.
    let out = push(&[], &[]);
    assert_exit(&out, 3);
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("certificate"), "{err}");
    // With it but without credentials, the registry refuses.
    let out = push(&[], &["--ca-file", "ca.pem"]);
    assert_ne!(out.status.code(), Some(0));
    // A file that is not a certificate is named.
    let out = push(&[], &["--ca-file", "plain.yaml"]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("CA file plain.yaml"));
    // Credentials from a containers auth.json (REGISTRY_AUTH_FILE), keyed by registry.
    let auth = base64::engine::general_purpose::STANDARD.encode("pusher:s3cret");
    let entry =
        |key: &str, auth: &str| format!(r#"{{"auths": {{"{key}": {{"auth": "{auth}"}}}}}}"#);
    ws.write("auth.json", entry(&reg.addr, &auth).as_bytes());
    let out = push(
        &[("REGISTRY_AUTH_FILE", p("auth.json"))],
        &["--ca-file", "ca.pem"],
    );
    assert_exit(&out, 0);
    // A wrong password in docker's config.json (found through HOME) is refused; the right
    // one, keyed by the repository's namespace, is used.
    let wrong = base64::engine::general_purpose::STANDARD.encode("pusher:nope");
    std::fs::create_dir_all(ws.path(".docker")).unwrap();
    ws.write(".docker/config.json", entry(&reg.addr, &wrong).as_bytes());
    let out = push(&[], &["--ca-file", "ca.pem"]);
    assert_ne!(out.status.code(), Some(0));
    let both = format!(
        r#"{{"auths": {{"{}": {{"auth": "{wrong}"}}, "{}/private": {{"auth": "{auth}"}}}}}}"#,
        reg.addr, reg.addr
    );
    ws.write(".docker/config.json", both.as_bytes());
    let mut pull = common::jek();
    pull.current_dir(ws.dir.path())
        .args([
            "pull",
            &reference,
            "--policy",
            "plain.yaml",
            "--out",
            "pulled.jek",
        ])
        .args(["--ca-file", "ca.pem"])
        .env("HOME", ws.dir.path())
        .env_remove("JEK_REGISTRY_USERNAME")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG");
    assert_exit(&pull.output().unwrap(), 0);
    assert_eq!(ws.read("pulled.jek"), ws.read("demo.jek"));
    // A malformed auth file is an error naming it, not anonymous access.
    ws.write(
        ".docker/config.json",
        br#"{"auths": {"x": {"auth": "%%%"}}}"#,
    );
    let out = push(&[], &["--ca-file", "ca.pem"]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains(".docker/config.json"));
}

/// What the sigstore crate's cosign client finds at cosign's tag for `image`, checked
/// against `public_pem`: Ok when a signature layer verifies under the key.
fn sigstore_crate_verifies(image: &str, public_pem: &[u8]) -> Result<usize, String> {
    use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraintVec};
    use sigstore::cosign::{ClientBuilder, CosignCapabilities as _};
    use sigstore::crypto::SigningScheme;
    use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        };
        let mut client = ClientBuilder::default()
            .with_oci_client_config(config)
            .build()
            .map_err(|e| e.to_string())?;
        let image: OciReference = image
            .parse()
            .map_err(|e: sigstore::errors::SigstoreError| e.to_string())?;
        let layers = client
            .trusted_signature_layers(&Auth::Anonymous, &image)
            .await
            .map_err(|e| e.to_string())?;
        let verifier = PublicKeyVerifier::new(public_pem, &SigningScheme::ECDSA_P256_SHA256_ASN1)
            .map_err(|e| e.to_string())?;
        let constraints: VerificationConstraintVec = vec![Box::new(verifier)];
        sigstore::cosign::verify_constraints(&layers, constraints.iter())
            .map(|()| layers.len())
            .map_err(|e| format!("{e:?}"))
    })
}

#[test]
fn push_with_a_cosign_key_writes_the_signature_tag_cosign_and_the_sigstore_crate_read() {
    let reg = start_registry();
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    for name in ["cosign", "other"] {
        let mut k = common::jek();
        k.current_dir(ws.dir.path())
            .args(["keygen", "--cosign", "--out", name])
            .env("COSIGN_PASSWORD", "pw");
        assert_exit(&k.output().unwrap(), 0);
    }
    let reference = format!("{}/signed/kernel:1", reg.addr);
    let mut push = common::jek();
    push.current_dir(ws.dir.path())
        .args([
            "push",
            "demo.jek",
            &reference,
            "--plain-http",
            "--cosign-key",
            "cosign.key",
            "--json",
        ])
        .env("COSIGN_PASSWORD", "pw");
    let out = push.output().unwrap();
    assert_exit(&out, 0);
    let j = json(&out);
    let digest = j["manifestDigest"].as_str().unwrap().to_string();
    assert!(j["cosignSignature"]["manifestDigest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    // The layout is where cosign looks: the .sig tag of the bundle manifest's digest.
    let tag = format!("{}.sig", digest.replacen(':', "-", 1));
    assert!(reg
        .storage
        .join("docker/registry/v2/repositories/signed/kernel/_manifests/tags")
        .join(&tag)
        .exists());
    // The sigstore crate's cosign verification accepts it under cosign.pub, by tag and by
    // digest, and not under another key.
    let public = ws.read("cosign.pub");
    assert_eq!(sigstore_crate_verifies(&reference, &public), Ok(1));
    let by_digest = format!("{}/signed/kernel@{digest}", reg.addr);
    assert_eq!(sigstore_crate_verifies(&by_digest, &public), Ok(1));
    assert!(sigstore_crate_verifies(&reference, &ws.read("other.pub")).is_err());
    // A wrong password pushes nothing.
    let mut push = common::jek();
    push.current_dir(ws.dir.path())
        .args([
            "push",
            "demo.jek",
            &format!("{}/signed/other:1", reg.addr),
            "--plain-http",
        ])
        .args(["--cosign-key", "cosign.key"])
        .env("COSIGN_PASSWORD", "wrong");
    let out = push.output().unwrap();
    assert_exit(&out, 2);
    assert!(!reg
        .storage
        .join("docker/registry/v2/repositories/signed/other")
        .exists());
}
