//! The measurement plan and event log against an independent reader: tpm2-tools'
//! `tpm2_eventlog` parses the log jek writes for a real packed bundle, checks the command
//! line event, and computes the same PCR values as jek's replay.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{assert_exit, Workspace};
use jek_measure::{plan, EventLog};
use jek_verifier::format::Role;
use jek_verifier::{verify, Policy, PublicKey, TrustedKey, UnixTime};

/// Parses the `pcrs: sha256:` section of `tpm2_eventlog` output.
fn tpm2_pcrs(yaml: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut in_sha256 = false;
    for line in yaml.lines() {
        let t = line.trim();
        if t == "sha256:" {
            in_sha256 = true;
            continue;
        }
        if in_sha256 {
            let Some((pcr, value)) = t.split_once(':') else {
                break;
            };
            let Ok(pcr) = pcr.trim().parse() else { break };
            out.push((pcr, value.trim().trim_start_matches("0x").to_lowercase()));
        }
    }
    out
}

#[test]
fn tpm2_eventlog_reads_our_log_and_replays_to_our_pcrs() {
    let ws = Workspace::new();
    assert_exit(&ws.pack("demo.jek", 3, &["dev.key"]), 0);
    let key = PublicKey::from_spki_pem(&String::from_utf8(ws.read("dev.pub")).unwrap()).unwrap();
    let policy = Policy::new(vec![TrustedKey::new(key)], None, 3, Default::default()).unwrap();
    let bundle = verify(ws.read("demo.jek"), &policy, UnixTime::now()).unwrap();
    let events = plan(&bundle, Role::BzImage, b"pod segment bytes", &[]).unwrap();
    let log = EventLog {
        events: events.into_iter().map(|e| e.event).collect(),
    };
    ws.write("log.bin", &log.to_bytes());
    let out = std::process::Command::new("tpm2_eventlog")
        .arg(ws.path("log.bin"))
        .output()
        .expect("tpm2_eventlog must be installed (tpm2-tools; ci/install-deps.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tpm2_eventlog failed: {stderr}");
    assert!(!stderr.contains("WARN"), "tpm2_eventlog warned: {stderr}");
    let theirs = tpm2_pcrs(&stdout);
    let ours: Vec<(u32, String)> = log
        .replay()
        .into_iter()
        .map(|(p, v)| (p, v.to_hex()))
        .collect();
    assert_eq!(theirs, ours, "{stdout}");
    assert_eq!(ours.len(), jek_measure::plan::PCRS.len());
    // Our own reader agrees with our writer.
    assert_eq!(EventLog::from_bytes(&ws.read("log.bin")).unwrap(), log);
}
