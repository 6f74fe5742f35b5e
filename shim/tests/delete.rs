//! `containerd-shim-jek-v2 delete`: what containerd runs in a bundle directory after a
//! shim died. The record the shim left there names the pod's run directory, which goes
//! with the kept TPMs registered for it;
//! the answer on stdout is a `DeleteResponse`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use containerd_shim::protos::protobuf::Message as _;
use containerd_shim::protos::shim::shim::DeleteResponse;
use jek_shim::task::{ShimRecord, RECORD_FILE};

fn delete_in(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_containerd-shim-jek-v2"))
        .args([
            "-namespace",
            "default",
            "-address",
            "/nonexistent/containerd.sock",
        ])
        .args(["-id", "t1", "delete"])
        // containerd sets it for every shim action.
        .env("TTRPC_ADDRESS", "/nonexistent/containerd.sock.ttrpc")
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn delete_after_a_dead_shim_removes_the_run_directory_its_record_names() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let run = tmp.path().join("run/default/t1");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::create_dir_all(run.join("tpm")).unwrap();
    std::fs::write(run.join("console.log"), b"hi\n").unwrap();
    // Two kept TPMs registered: this pod's (killed while it booted, so the shim never
    // learnt its id) and another pod's.
    let registry =
        jek_host_attest::registrations::RegistrationStore::open(&tmp.path().join("registry"))
            .unwrap();
    let reg = |run_dir: &std::path::Path, sockets: &str| {
        let r = jek_host_attest::registrations::HostRegistration {
            registration: jek_attest::registration::Registration {
                id: jek_host_attest::registrations::new_id(),
                pod: "t1".into(),
                ak_name: jek_attest::AkName(vec![0, 0x0b, 1]),
                ek_cert_sha256: jek_verifier::Sha256Digest::of(b"ek"),
                epoch: jek_attest::Epoch {
                    reset_count: 1,
                    restart_count: 0,
                    clock: 9,
                },
                last_clock: 9,
            },
            tpm: jek_host_attest::registrations::TpmLocation {
                pid: 0,
                socket_dir: tmp.path().join(sockets),
                run_dir: Some(run_dir.to_path_buf()),
            },
        };
        std::fs::create_dir_all(tmp.path().join(sockets)).unwrap();
        registry.put(&r).unwrap();
        r.registration.id
    };
    let ours = reg(&run, "sockets-ours");
    let other = reg(&tmp.path().join("run/default/t2"), "sockets-other");
    ShimRecord {
        run_dir: run.clone(),
        registry: Some(tmp.path().join("registry")),
        runtime_file: None,
    }
    .write(&bundle)
    .unwrap();

    let out = delete_in(&bundle);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp = DeleteResponse::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(resp.exit_status, 137, "a dead shim's container was killed");
    assert!(resp.exited_at.is_some());
    assert!(!run.exists(), "the run directory is gone");
    assert!(!bundle.join(RECORD_FILE).exists(), "and the record with it");
    assert!(tmp.path().join("run/default").exists(), "nothing above it");
    assert_eq!(
        registry.get(&ours).unwrap(),
        None,
        "its registration is gone"
    );
    assert!(!tmp.path().join("sockets-ours").exists());
    assert!(
        registry.get(&other).unwrap().is_some(),
        "another pod's stays"
    );
    assert!(tmp.path().join("sockets-other").exists());
}

#[test]
fn delete_without_a_record_removes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = tmp.path().join("keep");
    std::fs::create_dir_all(&keep).unwrap();
    // A record that does not parse names nothing.
    std::fs::write(tmp.path().join(RECORD_FILE), b"{\"runDir\": 1}").unwrap();
    let out = delete_in(tmp.path());
    assert!(out.status.success());
    assert!(keep.exists());
}
