//! `jek-agent`'s refusals at start, before it listens.
#![allow(clippy::unwrap_used)]

#[test]
fn the_agent_refuses_tcp_without_mutual_tls_and_a_relative_socket() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jek-agent"))
        .args(["--listen", "0.0.0.0:0", "--registry"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // The agent serves the verifier alone: never TCP without mutual TLS, loopback or not.
    assert!(
        err.contains("serves only the verifier") && err.contains("--client-ca"),
        "{err}"
    );
    // And a Unix socket path that is not absolute is refused by clap, naming it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jek-agent"))
        .args(["--listen", "unix:agent.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unix:agent.sock") && err.contains("absolute"),
        "{err}"
    );
}
