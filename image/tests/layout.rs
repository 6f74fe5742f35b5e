//! Preparing container images from OCI layouts: layers, whiteouts, compression, the cache,
//! the image policy and every digest check. Images are made here (jek_image::build).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use jek_image::build::{layer_tar, write_layout, Item, Process};
use jek_image::manifest::Compression;
use jek_image::policy::{AllowRule, ImagePolicy, DEFAULT_MAX_ROOTFS_BYTES};
use jek_image::{prepare, Cache, Cause, Options};
use jek_pod::cpio::{self, Kind};
use jek_pod::spec::{Container, PodSpec};

fn image(dir: &Path) -> String {
    let base = layer_tar(&[
        Item::Dir("bin", 0o755),
        Item::File("bin/busybox".into(), 0o755, b"BUSYBOX".to_vec()),
        Item::HardLink("bin/sh".into(), "bin/busybox".into()),
        Item::Symlink("bin/ls".into(), "busybox".into()),
        Item::File(
            "etc/passwd".into(),
            0o644,
            b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n".to_vec(),
        ),
        Item::File("etc/removed".into(), 0o644, b"gone".to_vec()),
    ])
    .unwrap();
    let top = layer_tar(&[
        Item::Whiteout("etc/removed".into()),
        Item::File("etc/motd".into(), 0o644, b"hi".to_vec()),
    ])
    .unwrap();
    write_layout(
        dir,
        &[(base, Compression::Gzip), (top, Compression::Zstd)],
        &Process {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
            env: vec!["PATH=/bin".into()],
            working_dir: Some("/tmp".into()),
            user: Some("app".into()),
        },
        "v1",
    )
    .unwrap()
}

fn pod(reference: &str) -> PodSpec {
    PodSpec {
        agent: false,
        name: "p".into(),
        hostname: None,
        containers: vec![Container {
            name: "web".into(),
            image: Some(reference.into()),
            command: vec![],
            args: vec![],
            env: vec![],
            working_dir: None,
        }],
    }
}

fn policy(repository: &str, digests: Vec<String>) -> ImagePolicy {
    ImagePolicy {
        allow: vec![AllowRule {
            repository: repository.into(),
            digests,
            cosign_key: None,
        }],
        max_rootfs_bytes: DEFAULT_MAX_ROOTFS_BYTES,
    }
}

fn opts(cache: &Path, base: &Path) -> Options {
    Options::layouts_only(Cache::new(cache), base)
}

#[test]
fn a_layout_becomes_a_measurable_container_segment_and_is_cached() {
    let t = tempfile::tempdir().unwrap();
    let digest = image(&t.path().join("img"));
    let repo = format!("oci:{}", t.path().join("img").display());
    let p = policy(&repo, vec![digest.clone()]);
    let o = opts(&t.path().join("cache"), t.path());
    let first = prepare(&pod("oci:img:v1"), Some(&p), &o).unwrap();
    assert_eq!(first.len(), 1);
    let prepared = &first[0];
    assert!(!prepared.cached);
    assert_eq!(prepared.segment.image.manifest, digest);
    assert_eq!(prepared.segment.image.config.user.as_deref(), Some("app"));
    let entries = cpio::read(&prepared.segment.bytes).unwrap();
    let find = |p: &str| entries.iter().find(|e| e.path == p);
    assert!(find("run/containers/web/etc/motd").is_some());
    assert!(
        find("run/containers/web/etc/removed").is_none(),
        "the whiteout applies"
    );
    assert_eq!(
        find("run/containers/web/bin/ls").unwrap().kind,
        Kind::Symlink("busybox".into())
    );
    assert!(find("etc/jek/containers/web.json").is_some());
    // The same image again: from the cache, the same bytes.
    let again = prepare(&pod("oci:img:v1"), Some(&p), &o).unwrap();
    assert!(again[0].cached);
    assert_eq!(again[0].segment.bytes, prepared.segment.bytes);
    // A corrupted cache entry is not used.
    let seg_dir = t.path().join("cache/segments");
    for e in std::fs::read_dir(&seg_dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "cpio") {
            let mut b = std::fs::read(&path).unwrap();
            let n = b.len();
            b[n - 200] ^= 1;
            std::fs::write(&path, b).unwrap();
        }
    }
    let third = prepare(&pod("oci:img:v1"), Some(&p), &o).unwrap();
    assert!(!third[0].cached);
    assert_eq!(third[0].segment.bytes, prepared.segment.bytes);
}

#[test]
fn the_policy_decides_before_layers_are_read() {
    let t = tempfile::tempdir().unwrap();
    let digest = image(&t.path().join("img"));
    let repo = format!("oci:{}", t.path().join("img").display());
    let o = opts(&t.path().join("cache"), t.path());
    // Remove the layers: a refusal must come before any is needed.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            t.path()
                .join("img/blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    for l in &layers {
        std::fs::remove_file(
            t.path()
                .join("img/blobs/sha256")
                .join(l.trim_start_matches("sha256:")),
        )
        .unwrap();
    }
    for (policy, want) in [
        (None, "allows no images"),
        (
            Some(policy("oci:/elsewhere", vec![])),
            "is not in the policy's images.allow",
        ),
        (
            Some(policy(&repo, vec![format!("sha256:{}", "0".repeat(64))])),
            "not one of the digests the policy pins",
        ),
    ] {
        let err = prepare(&pod("oci:img:v1"), policy.as_ref(), &o).unwrap_err();
        assert!(matches!(*err.cause, Cause::Policy(_)), "{err:?}");
        let text = jek_errors::chain_line(&err);
        assert!(text.contains(want) && text.contains("\"web\""), "{text}");
    }
}

#[test]
fn tampered_blobs_oversized_images_and_unusable_configs_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let digest = image(&t.path().join("img"));
    let repo = format!("oci:{}", t.path().join("img").display());
    let o = opts(&t.path().join("cache"), t.path());
    let chain = |e: &jek_image::ImageError| jek_errors::chain_line(e);
    // The cap: the image's layers are a few KiB.
    let mut small = policy(&repo, vec![]);
    small.max_rootfs_bytes = 1024;
    let err = prepare(&pod("oci:img:v1"), Some(&small), &o).unwrap_err();
    assert!(
        chain(&err).contains("exceed the cap of 1024 bytes"),
        "{}",
        chain(&err)
    );
    // A command given by the pod runs under the same policy.
    let mut p = pod("oci:img:v1");
    p.containers[0].command = vec!["/bin/sh".into()];
    let ok = policy(&repo, vec![]);
    prepare(&p, Some(&ok), &o).unwrap();
    // A tampered manifest blob.
    let path = t
        .path()
        .join("img/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut m = std::fs::read(&path).unwrap();
    m.push(b' ');
    std::fs::write(&path, m).unwrap();
    let o2 = opts(&t.path().join("cache2"), t.path());
    let err = prepare(&pod("oci:img:v1"), Some(&ok), &o2).unwrap_err();
    assert!(
        chain(&err).contains(&format!("the manifest {digest} has digest")),
        "{}",
        chain(&err)
    );
}
