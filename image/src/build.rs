//! Writing OCI images: layer tar streams and an OCI image layout, deterministically (every
//! time 0 unless given, entries in the order given). The tests and benchmarks make their
//! images with it from Debian's busybox-static, with no network; `skopeo copy oci:DIR
//! docker://...` pushes such a layout to a registry.

use std::path::Path;

use jek_fsio::{write_atomic, Overwrite};
use serde_json::json;

use crate::manifest::Compression;
use crate::source::digest_of;

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum Item {
    /// A directory.
    Dir(&'static str, u32),
    /// A regular file: path, mode, content.
    File(String, u32, Vec<u8>),
    /// A symbolic link: path, target.
    Symlink(String, String),
    /// A hard link: path, target path.
    HardLink(String, String),
    /// A whiteout of this path.
    Whiteout(String),
}

/// A layer's tar stream (owner root, mtime 0).
pub fn layer_tar(items: &[Item]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match item {
            Item::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..])?;
            }
            Item::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..])?;
            }
            Item::Symlink(p, t) | Item::HardLink(p, t) => {
                h.set_entry_type(if matches!(item, Item::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, t)?;
            }
            Item::Whiteout(p) => {
                let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                let wh = if dir.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{dir}/.wh.{name}")
                };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_data(&mut h, wh, &[][..])?;
            }
        }
    }
    b.into_inner()
}

/// Compresses a tar stream.
pub fn compress(tar: &[u8], c: Compression) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    Ok(match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar)?;
            e.finish()?
        }
        Compression::Zstd => {
            ruzstd::encoding::compress_to_vec(tar, ruzstd::encoding::CompressionLevel::Fastest)
        }
    })
}

fn media_type(c: Compression) -> &'static str {
    match c {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// The process fields of the image config.
#[derive(Debug, Clone, Default)]
pub struct Process {
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Cmd.
    pub cmd: Vec<String>,
    /// Env (`NAME=value`).
    pub env: Vec<String>,
    /// WorkingDir.
    pub working_dir: Option<String>,
    /// User.
    pub user: Option<String>,
}

/// Stores `data` as a blob of the layout at `dir`; returns its digest.
fn put_blob(dir: &Path, data: &[u8]) -> std::io::Result<String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let d = digest_of(data);
    let path = blobs.join(d.trim_start_matches("sha256:"));
    write_atomic(&path, data, 0o644, Overwrite::Allow).map_err(std::io::Error::other)?;
    Ok(d)
}

/// Stores `manifest` and writes the layout's `index.json` (its one entry tagged `tag`,
/// with the linux/amd64 platform when `platform`) and `oci-layout`; returns the manifest's
/// digest.
fn finish_layout(
    dir: &Path,
    manifest: &[u8],
    tag: &str,
    platform: bool,
) -> std::io::Result<String> {
    let manifest_digest = put_blob(dir, manifest)?;
    let mut entry = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    });
    if platform {
        entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry],
    }))?;
    std::fs::write(dir.join("index.json"), index)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(manifest_digest)
}

/// Writes an OCI image layout at `dir` with these layers (tar streams and how to compress
/// each) under `tag`; returns the image manifest's digest.
pub fn write_layout(
    dir: &Path,
    layers: &[(Vec<u8>, Compression)],
    process: &Process,
    tag: &str,
) -> std::io::Result<String> {
    let put = |data: &[u8]| put_blob(dir, data);
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, c) in layers {
        diff_ids.push(digest_of(tar));
        let blob = compress(tar, *c)?;
        let d = put(&blob)?;
        layer_descs.push(json!({"mediaType": media_type(*c), "digest": d, "size": blob.len()}));
    }
    let mut config = json!({
        "Entrypoint": process.entrypoint,
        "Cmd": process.cmd,
        "Env": process.env,
    });
    if let Some(w) = &process.working_dir {
        config["WorkingDir"] = json!(w);
    }
    if let Some(u) = &process.user {
        config["User"] = json!(u);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let config_digest = put(&config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layer_descs,
    }))?;
    finish_layout(dir, &manifest, tag, true)
}

/// The busybox applets the test image links.
pub const APPLETS: [&str; 10] = [
    "sh", "echo", "id", "pwd", "hostname", "cat", "test", "sleep", "env", "ls",
];

/// The layers of the busybox test image: `busybox` (a static binary, Debian's
/// busybox-static) with its applets as hard links, `/etc/passwd` and `/etc/group` naming
/// `app` (1000) and `staff` (50), `/etc/removed`; then a layer that whites out
/// `/etc/removed` and adds `/etc/motd`.
fn busybox_layers(busybox: &Path) -> std::io::Result<Vec<(Vec<u8>, Compression)>> {
    let binary = std::fs::read(busybox)?;
    let mut base = vec![
        Item::Dir("bin", 0o755),
        Item::Dir("etc", 0o755),
        Item::File("bin/busybox".into(), 0o755, binary),
    ];
    for a in APPLETS {
        base.push(Item::HardLink(format!("bin/{a}"), "bin/busybox".into()));
    }
    base.extend([
        Item::Symlink("usr/bin/env".into(), "../../bin/busybox".into()),
        Item::File(
            "etc/passwd".into(),
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n".to_vec(),
        ),
        Item::File(
            "etc/group".into(),
            0o644,
            b"root:x:0:\nstaff:x:50:app\n".to_vec(),
        ),
        Item::File("etc/removed".into(), 0o644, b"lower layer\n".to_vec()),
    ]);
    let top = vec![
        Item::Whiteout("etc/removed".into()),
        Item::File(
            "etc/motd".into(),
            0o644,
            b"motd from the top layer\n".to_vec(),
        ),
    ];
    Ok(vec![
        (layer_tar(&base)?, Compression::Gzip),
        (layer_tar(&top)?, Compression::Zstd),
    ])
}

/// The test image's config: Entrypoint `/bin/sh -c`, a Cmd that prints who and where it
/// runs, `GREETING=from-image`, WorkingDir `/srv` (not in the image), User `app:staff`.
fn busybox_process() -> Process {
    Process {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo side: $(id -un) in $(pwd)".into()],
        env: vec!["PATH=/bin:/usr/bin".into(), "GREETING=from-image".into()],
        working_dir: Some("/srv".into()),
        user: Some("app:staff".into()),
    }
}

/// The image the tests, the main job and the benchmark run ([`busybox_layers`],
/// [`busybox_process`]), tag `jek-test`; returns the manifest digest.
pub fn busybox_layout(dir: &Path, busybox: &Path) -> std::io::Result<String> {
    write_layout(
        dir,
        &busybox_layers(busybox)?,
        &busybox_process(),
        "jek-test",
    )
}

/// A pod's pause image for the CRI tests and benchmark: the busybox image's layers, run as
/// `/bin/sleep 2147483647` (what a runc pod's sandbox process does: hold the pod's
/// namespaces), tag `jek-test`; returns the manifest digest.
pub fn pause_layout(dir: &Path, busybox: &Path) -> std::io::Result<String> {
    write_layout(
        dir,
        &busybox_layers(busybox)?,
        &Process {
            entrypoint: vec!["/bin/sleep".into(), "2147483647".into()],
            cmd: Vec::new(),
            env: vec!["PATH=/bin".into()],
            working_dir: None,
            user: None,
        },
        "jek-test",
    )
}

/// A larger image for the benchmark: the busybox image plus a third layer of `files` files
/// of `size` bytes each under `/usr/share/filler/` (deterministic, half words from a small
/// vocabulary and half pseudo-random bytes, so it compresses about as well as a
/// distribution's files). Tag `jek-test`; returns the manifest digest.
pub fn sized_layout(
    dir: &Path,
    busybox: &Path,
    files: usize,
    size: usize,
) -> std::io::Result<String> {
    let mut layers = busybox_layers(busybox)?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let words: [&[u8]; 4] = [b"lib ", b"config ", b"share ", b"usr "];
    let mut filler = Vec::with_capacity(files);
    for i in 0..files {
        let mut data = Vec::with_capacity(size + 8);
        while data.len() < size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state & 1 == 0 {
                data.extend_from_slice(&state.to_le_bytes());
            } else {
                data.extend_from_slice(words[usize::try_from(state >> 62).unwrap_or(0)]);
            }
        }
        data.truncate(size);
        filler.push(Item::File(format!("usr/share/filler/{i:05}"), 0o644, data));
    }
    layers.push((layer_tar(&filler)?, Compression::Gzip));
    write_layout(dir, &layers, &busybox_process(), "jek-test")
}

/// Writes a cosign signature image as an OCI layout under `tag` (cosign's
/// `sha256-<hex>.sig`): an empty config and one simple-signing payload layer carrying its
/// base64 signature in the `dev.cosignproject.cosign/signature` annotation. Returns the
/// signature manifest's digest.
pub fn write_signature_layout(
    dir: &Path,
    payload: &[u8],
    signature: &str,
    tag: &str,
) -> std::io::Result<String> {
    let put = |data: &[u8]| put_blob(dir, data);
    let config = jek_oci::cosign::config(payload);
    put(&config)?;
    put(payload)?;
    let manifest = jek_oci::cosign::signature_manifest(&config, payload, signature);
    finish_layout(dir, &manifest, tag, false)
}
