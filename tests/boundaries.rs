//! Bounded reads at the input boundaries, measured: a registry that declares a 100-byte
//! layer and serves 1.5 GiB, a registry that serves a 512 MiB manifest, and a 2.5 GiB
//! bundle file each cost `jek` no more than a cap's worth of memory. Peak RSS is what the
//! kernel accounted for the `jek` process (GNU time's %M), not a wall-clock figure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

use common::{assert_exit, jek_peak_rss, Workspace};

/// Far above what a bounded pull or verify needs (~20 MiB), far below what an unbounded
/// one reaches (the 1.5 GiB blob, the 512 MiB manifest, the 2.5 GiB file).
const BOUND_KIB: u64 = 160 * 1024;

/// What the hostile registry serves.
#[derive(Clone, Copy)]
enum Evil {
    /// A valid bundle manifest declaring a 100-byte layer, whose blob is 1.5 GiB.
    OversizedBlob,
    /// A 512 MiB manifest, sent without a Content-Length.
    HugeManifest,
}

fn bundle_manifest() -> String {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let empty = format!(
        "sha256:{}",
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.jek.bundle.v1","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/vnd.jek.bundle.v1+binary","digest":"{digest}","size":100}}]}}"#
    )
}

fn respond(mut stream: TcpStream, evil: Evil) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    let zeros = vec![0u8; 64 << 10];
    let stream_zeros = |stream: &mut TcpStream, total: u64| {
        let mut sent = 0u64;
        while sent < total {
            if stream.write_all(&zeros).is_err() {
                return;
            }
            sent += zeros.len() as u64;
        }
    };
    if path == "/v2/" {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    } else if path.contains("/manifests/") {
        match evil {
            Evil::OversizedBlob => {
                let body = bundle_manifest();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            Evil::HugeManifest => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n{\"schemaVersion\":2,\"x\":\"");
                stream_zeros(&mut stream, 512 << 20);
            }
        }
    } else if path.contains("/blobs/") {
        let total: u64 = 3 << 29; // 1.5 GiB
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
        );
        stream_zeros(&mut stream, total);
    } else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
}

/// A registry on 127.0.0.1 that serves `evil` to every client; its address.
fn hostile_registry(evil: Evil) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || respond(stream, evil));
        }
    });
    addr
}

fn pull(evil: Evil) -> (std::process::Output, u64, Workspace) {
    let ws = Workspace::new();
    ws.policy(
        "policy.yaml",
        "trusted_keys: [dev.pub]\nmin_security_version: 1\n",
    );
    let reference = format!("{}/pods/kernel:evil", hostile_registry(evil));
    let (out, kib) = jek_peak_rss(
        &ws.path(""),
        &[
            "pull",
            &reference,
            "--policy",
            "policy.yaml",
            "--out",
            "pulled.jek",
            "--plain-http",
        ],
    );
    (out, kib, ws)
}

#[test]
fn a_blob_larger_than_its_manifest_declares_is_stopped_at_the_declared_size() {
    let (out, kib, ws) = pull(Evil::OversizedBlob);
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the registry served more than the 100 bytes the manifest declares"),
        "{stderr}"
    );
    assert!(!ws.path("pulled.jek").exists());
    assert!(kib < BOUND_KIB, "peak RSS {kib} KiB");
}

#[test]
fn a_manifest_larger_than_the_cap_is_stopped_at_the_cap() {
    let (out, kib, ws) = pull(Evil::HugeManifest);
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("more than the 4194304 bytes jek accepts"),
        "{stderr}"
    );
    assert!(!ws.path("pulled.jek").exists());
    assert!(kib < BOUND_KIB, "peak RSS {kib} KiB");
}

#[test]
fn a_bundle_file_larger_than_the_format_allows_is_refused_by_its_size() {
    let ws = Workspace::new();
    ws.policy(
        "policy.yaml",
        "trusted_keys: [dev.pub]\nmin_security_version: 1\n",
    );
    // Sparse: 2.5 GiB of apparent size, no disk used.
    let f = std::fs::File::create(ws.path("huge.jek")).unwrap();
    f.set_len(5 << 29).unwrap();
    let (out, kib) = jek_peak_rss(
        &ws.path(""),
        &["verify", "huge.jek", "--policy", "policy.yaml"],
    );
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("huge.jek"), "{stderr}");
    assert!(kib < BOUND_KIB, "peak RSS {kib} KiB");
}

#[test]
fn untrusted_strings_cannot_drive_the_terminal() {
    use jek_verifier::{dsse::Envelope, format};
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 1, &["dev.key"]), 0);
    ws.policy(
        "policy.yaml",
        "trusted_keys: [dev.pub]\nmin_security_version: 1\n",
    );
    // A keyid that clears the line and prints a green ACCEPTED.
    let bytes = ws.read("demo.jek");
    let raw = format::parse(&bytes).unwrap();
    let mut env = Envelope::from_json(raw.envelope).unwrap();
    let evil = "\u{1b}[2K\r\u{1b}[32mACCEPTED\u{1b}[0m \u{202e}";
    env.signatures[0].keyid = evil.to_string();
    let parts: Vec<_> = raw.sections.iter().map(|s| (s.role, s.data)).collect();
    ws.write("evil.jek", &format::encode(&parts, &env.to_json()).unwrap());
    for args in [
        &["inspect", "evil.jek"][..],
        &["verify", "evil.jek", "--policy", "policy.yaml"][..],
    ] {
        let out = ws.jek(args);
        for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(stream);
            assert!(
                !stream.contains(&0x1b),
                "{args:?} {name} has a raw ESC: {text}"
            );
            assert!(
                !text.contains('\u{202e}'),
                "{args:?} {name} has a raw bidi override"
            );
        }
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            all.contains("\\x1b[32mACCEPTED"),
            "{args:?}: the keyid is shown, escaped: {all}"
        );
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `jek inspect B | head -0`: the pipe's reading end is closed before jek writes.
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 1, &["dev.key"]), 0);
    let mut child = common::jek()
        .current_dir(ws.path(""))
        .args(["inspect", "demo.jek"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
