//! Pods that run OCI container images (issue 16), end to end with no internet: a busybox
//! image made here from Debian's busybox-static (two layers, the second deleting a file of
//! the first), written as an OCI layout and pushed to a local docker-registry with skopeo.
//! `jek boot` runs two containers at once (one from the registry, one from the layout)
//! under QEMU, each in its own root with its image config and the pod's overrides; the pod
//! attests with the image digests in the EAR; a pinned digest that does not match starts
//! no VM and no TPM, and the same policy at attestation time contraindicates `images`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_exit, default_build, jek, start_registry, test_key, Workspace};
use serde_json::Value;

fn skopeo(args: &[&str]) -> std::process::Output {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo must be installed (ci/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn policy(key: &Path, allow: &str) -> String {
    format!(
        "trusted_keys: [{}]\nmin_security_version: 1\nattestation:\n  ek_ca: ca/swtpm-localca-rootca-cert.pem\nimages:\n  allow:\n{allow}",
        key.with_extension("pub").display()
    )
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: imgpod
spec:
  containers:
    - name: web
      image: REGISTRY/jek/busybox:jek-test
      args: ['echo \"id=$(id -u):$(id -g) cwd=$(pwd) host=$(hostname) greet=$GREETING pod=$POD\"; test -e /etc/removed && echo removed-present; cat /etc/motd; exit 3']
      env: [{name: POD, value: from-pod}]
    - name: side
      image: oci:layout:jek-test
";

#[test]
fn a_pod_runs_measures_and_attests_container_images() {
    let built = default_build();
    let ws = Workspace::new();
    let registry = start_registry();
    let digest = jek_image::build::busybox_layout(&ws.path("layout"), Path::new("/bin/busybox"))
        .unwrap_or_else(|e| panic!("/bin/busybox: {e} (apt install busybox-static)"));
    let target = format!("docker://{}/jek/busybox:jek-test", registry.addr);
    let layout = format!("oci:{}:jek-test", ws.path("layout").display());
    skopeo(&["copy", "--dest-tls-verify=false", &layout, &target]);
    let inspected = skopeo(&["inspect", "--tls-verify=false", "--raw", &target]);
    let pushed = jek_oci::artifact::digest(&inspected.stdout);
    assert_eq!(pushed, digest, "skopeo keeps the manifest as it is");

    let key = test_key();
    let key_path = key.clone();
    let repo = format!("{}/jek/busybox", registry.addr);
    let layout_repo = format!("oci:{}", ws.path("layout").display());
    ws.policy(
        "policy.yaml",
        &policy(
            &key,
            &format!("    - repository: {repo}\n      digests: [{digest}]\n    - repository: {layout_repo}\n"),
        ),
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    ws.policy(
        "pinned-elsewhere.yaml",
        &policy(
            &key,
            &format!("    - repository: {repo}\n      digests: [{wrong}]\n    - repository: {layout_repo}\n"),
        ),
    );
    ws.write(
        "pod.yaml",
        POD.replace("REGISTRY", &registry.addr).as_bytes(),
    );
    let boot = |policy: &str, run: &str| {
        jek()
            .current_dir(ws.path(""))
            .env("XDG_CACHE_HOME", ws.path("cache"))
            .arg("boot")
            .arg(&built.bundle)
            .args(["--policy", policy, "--pod", "pod.yaml", "--plain-http"])
            .args(["--vmm", "qemu", "--keep-tpm", "--tpm-ca", "ca", "--json"])
            .args(["--run-dir", run])
            .output()
            .unwrap()
    };

    // A pin that does not match: refused before any VM or TPM, nothing left behind.
    let out = boot("pinned-elsewhere.yaml", "runs/refused");
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"web\"") && stderr.contains("not one of the digests the policy pins"),
        "{stderr}"
    );
    assert!(
        !ws.path("runs/refused").exists(),
        "no run directory for a refused image"
    );

    // The pod: both containers run at once, each in its own root, prefixed; the pod's
    // status is the first non-zero one.
    let out = boot("policy.yaml", "runs/ok");
    let record: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let kept = common::kept_swtpm(&record);
    let _stop = Stop(kept);
    assert_exit(&out, 4);
    let console = std::fs::read_to_string(ws.path("runs/ok/console.log")).unwrap();
    assert!(
        console.contains("[web] id=1000:50 cwd=/srv host=imgpod greet=from-image pod=from-pod"),
        "user, group, working directory, hostname and env: {console}"
    );
    assert!(
        console.contains("[web] motd from the top layer"),
        "{console}"
    );
    assert!(
        !console.contains("removed-present"),
        "the whiteout applied: {console}"
    );
    assert!(console.contains("[side] side: app in /srv"), "{console}");
    let exits: Vec<&str> = console
        .lines()
        .filter(|l| l.starts_with("JEK-EXIT"))
        .collect();
    assert_eq!(exits.len(), 2, "{console}");
    assert!(console.contains("JEK-POWEROFF {\"status\":3}"), "{console}");

    // The images are measured (predict agrees with the TPM) and attested.
    let predicted = jek()
        .current_dir(ws.path(""))
        .env("XDG_CACHE_HOME", ws.path("cache"))
        .arg("predict")
        .arg(&built.bundle)
        .args([
            "--policy",
            "policy.yaml",
            "--pod",
            "pod.yaml",
            "--plain-http",
            "--json",
        ])
        .output()
        .unwrap();
    assert_exit(&predicted, 0);
    let predicted: Value = serde_json::from_slice(&predicted.stdout).unwrap();
    assert_eq!(
        predicted["pcrs"]["13"], record["pcrs"]["13"],
        "{predicted}\n{record}"
    );
    let containers: Vec<&Value> = predicted["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["pcr"] == 13)
        .collect();
    assert_eq!(containers.len(), 3, "two containers and the count");
    assert!(containers[0]["data"].as_str().unwrap().contains(&digest));

    let attest = |policy: &str, pod: &str| {
        let out = jek()
            .current_dir(ws.path(""))
            .arg("attest")
            .arg("runs/ok")
            .arg("--bundle")
            .arg(&built.bundle)
            .args(["--policy", policy, "--pod", pod, "--plain-http", "--json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, v)
    };
    let (out, v) = attest("policy.yaml", "pod.yaml");
    assert_exit(&out, 0);
    let sub = &v["results"][0]["result"]["submods"]["imgpod"];
    assert_eq!(sub["ear.status"], "affirming", "{v}");
    assert_eq!(sub["jek.claims"]["images"]["status"], "affirming", "{v}");
    let images = sub["jek.images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{v}");
    assert_eq!(images[0]["container"], "web");
    assert_eq!(images[0]["manifestDigest"], digest.as_str());
    assert_eq!(images[1]["reference"], "oci:layout:jek-test");

    // The pin moved: the same pod is contraindicated on images at the next appraisal.
    let (out, v) = attest("pinned-elsewhere.yaml", "pod.yaml");
    assert_exit(&out, 1);
    let c = &v["results"][0]["result"]["submods"]["imgpod"]["jek.claims"]["images"];
    assert_eq!(c["status"], "contraindicated", "{v}");
    assert!(
        c["reason"]
            .as_str()
            .unwrap()
            .contains("not one of the digests"),
        "{c}"
    );

    // A policy that requires a cosign signature: refused while there is none, accepted with
    // a signature by the policy's key, refused under another key.
    let cosign = |args: &[&str]| {
        let out = jek()
            .current_dir(ws.path(""))
            .env("COSIGN_PASSWORD", "pw")
            .args(args)
            .output()
            .unwrap();
        assert_exit(&out, 0);
    };
    cosign(&["keygen", "--cosign", "--out", "cosign"]);
    cosign(&["keygen", "--cosign", "--out", "other-cosign"]);
    for (name, key) in [
        ("signed.yaml", "cosign.pub"),
        ("signed-other.yaml", "other-cosign.pub"),
    ] {
        ws.policy(
            name,
            &policy(
                &key_path,
                &format!("    - repository: {repo}\n      digests: [{digest}]\n      cosign_key: {key}\n    - repository: {layout_repo}\n"),
            ),
        );
    }
    let predict_with = |policy: &str| {
        jek()
            .current_dir(ws.path(""))
            .env("XDG_CACHE_HOME", ws.path("cache"))
            .arg("predict")
            .arg(&built.bundle)
            .args(["--policy", policy, "--pod", "pod.yaml", "--plain-http"])
            .output()
            .unwrap()
    };
    let out = predict_with("signed.yaml");
    assert_exit(&out, 1);
    let tag = jek_image::signature::signature_tag(&digest);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "requires a cosign signature, and {tag} holds none"
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signer =
        jek_builder::cosign::CosignKey::from_encrypted_pem(&ws.read("cosign.key"), b"pw").unwrap();
    let payload = jek_image::signature::payload(&repo, &digest);
    let sig = signer.sign_blob(&payload).unwrap();
    jek_image::build::write_signature_layout(&ws.path("sig"), &payload, &sig, &tag).unwrap();
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:{tag}", ws.path("sig").display()),
        &format!("docker://{repo}:{tag}"),
    ]);
    assert_exit(&predict_with("signed.yaml"), 0);
    let out = predict_with("signed-other.yaml");
    assert_exit(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("none of the 1 cosign signatures"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The tag now points at another image (same repository, still allowed): the pod that
    // ran the old one is contraindicated on images.
    let moved = ws.path("moved");
    let other_digest =
        jek_image::build::sized_layout(&moved, Path::new("/bin/busybox"), 2, 10).unwrap();
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:jek-test", moved.display()),
        &target,
    ]);
    ws.policy(
        "both.yaml",
        &policy(
            &key,
            &format!("    - repository: {repo}\n      digests: [{digest}, {other_digest}]\n    - repository: {layout_repo}\n"),
        ),
    );
    let (out, v) = attest("both.yaml", "pod.yaml");
    assert_exit(&out, 1);
    let c = &v["results"][0]["result"]["submods"]["imgpod"]["jek.claims"]["images"];
    assert_eq!(c["status"], "contraindicated", "{v}");
    assert!(
        c["reason"]
            .as_str()
            .unwrap()
            .contains("now names another image"),
        "{c}"
    );
    assert_eq!(c["expected"], other_digest.as_str(), "{c}");
    assert_eq!(c["actual"], digest.as_str(), "{c}");

    // A layer tampered in the registry's storage: refused before any VM, with a cold cache.
    let layer_blob = find_blob(&registry.storage, &largest_layer(&ws.path("layout")));
    let mut bytes = std::fs::read(&layer_blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&layer_blob, bytes).unwrap();
    let old = POD
        .replace("REGISTRY", &registry.addr)
        .replace(":jek-test", &format!("@{digest}"));
    ws.write("by-digest.yaml", old.as_bytes());
    let out = jek()
        .current_dir(ws.path(""))
        .env("XDG_CACHE_HOME", ws.path("cold-cache"))
        .arg("boot")
        .arg(&built.bundle)
        .args([
            "--policy",
            "policy.yaml",
            "--pod",
            "by-digest.yaml",
            "--plain-http",
        ])
        .args(["--vmm", "qemu", "--run-dir", "runs/tampered"])
        .output()
        .unwrap();
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("a layer from") && stderr.contains("the registry served bytes with digest"),
        "{stderr}"
    );
    assert!(!ws.path("runs/tampered").exists());

    // A pod file naming another image than the one that ran.
    ws.write(
        "other.yaml",
        POD.replace("REGISTRY", &registry.addr)
            .replace("busybox:jek-test", "busybox:other")
            .as_bytes(),
    );
    let (out, v) = attest("policy.yaml", "other.yaml");
    assert_exit(&out, 1);
    let c = &v["results"][0]["result"]["submods"]["imgpod"]["jek.claims"]["images"];
    assert_eq!(c["status"], "contraindicated", "{v}");
    assert!(
        c["reason"]
            .as_str()
            .unwrap()
            .contains("not the ones the pod file names"),
        "{c}"
    );

    // The pod's swtpm stopped: said plainly, without the TCTI's own log lines.
    jek_tpm::swtpm::stop_kept(_stop.0.as_ref().unwrap()).unwrap();
    let (out, v) = attest("policy.yaml", "pod.yaml");
    assert_exit(&out, 3);
    let error = v["results"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("is not running"), "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("WARNING") && !stderr.contains("tcti"),
        "{stderr}"
    );
}

/// The digest of the largest blob of an OCI layout (the busybox layer).
fn largest_layer(layout: &Path) -> String {
    let blobs = layout.join("blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    biggest.file_name().unwrap().to_string_lossy().into_owned()
}

/// The file docker-registry keeps blob `hex` in.
fn find_blob(storage: &Path, hex: &str) -> std::path::PathBuf {
    let p = storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    assert!(p.is_file(), "{}", p.display());
    p
}

/// Stops a kept swtpm when the test ends, pass or fail.
struct Stop(Option<jek_tpm::swtpm::KeptSwtpm>);

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(k) = &self.0 {
            let _ = jek_tpm::swtpm::stop_kept(k);
        }
    }
}

#[test]
fn hostile_and_oversized_images_are_refused_by_name() {
    use jek_image::build::{layer_tar, write_layout, Item, Process};
    use jek_image::manifest::Compression;
    let built = default_build();
    let ws = Workspace::new();
    // A layer that plants a symbolic link to the guest's /etc, then writes through it.
    let layer = layer_tar(&[
        Item::Symlink("etc".into(), "/etc".into()),
        Item::File("etc/jek/pod.json".into(), 0o644, b"{}".to_vec()),
    ])
    .unwrap();
    write_layout(
        &ws.path("evil"),
        &[(layer, Compression::Gzip)],
        &Process {
            cmd: vec!["/bin/sh".into()],
            ..Process::default()
        },
        "t",
    )
    .unwrap();
    jek_image::build::busybox_layout(&ws.path("layout"), Path::new("/bin/busybox")).unwrap();
    let key = test_key();
    let allow = format!(
        "    - repository: oci:{}\n    - repository: oci:{}\n",
        ws.path("evil").display(),
        ws.path("layout").display()
    );
    ws.policy("policy.yaml", &policy(&key, &allow));
    ws.policy(
        "small.yaml",
        &policy(&key, &allow).replace("images:\n", "images:\n  max_rootfs_bytes: 100000\n"),
    );
    let pod = |image: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n    - name: c\n      image: {image}\n")
    };
    ws.write("evil.yaml", pod("oci:evil:t").as_bytes());
    ws.write("busybox.yaml", pod("oci:layout:jek-test").as_bytes());
    let predict = |policy: &str, pod: &str| {
        jek()
            .current_dir(ws.path(""))
            .env("XDG_CACHE_HOME", ws.path("cache"))
            .arg("predict")
            .arg(&built.bundle)
            .args(["--policy", policy, "--pod", pod])
            .output()
            .unwrap()
    };
    let out = predict("policy.yaml", "evil.yaml");
    assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "\"etc/jek/pod.json\" lies beneath \"etc\", which is not a directory (a symbolic link)"
        ),
        "{err}"
    );
    let out = predict("small.yaml", "busybox.yaml");
    assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceed the cap of 100000 bytes"), "{err}");
    // Without an images: section, no image is allowed at all.
    ws.policy(
        "none.yaml",
        &policy(&key, "").replace("images:\n  allow:\n", ""),
    );
    let out = predict("none.yaml", "busybox.yaml");
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("allows no images"));
}
