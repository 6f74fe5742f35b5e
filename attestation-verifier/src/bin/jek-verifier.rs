//! `jek-verifier`: the attestation verifier under its earlier name, kept for the
//! deployments, scripts and docs that call it. The same program as
//! `jek-attestation-verifier`, whose name cannot be read as the bundle verifier's
//! (`jek verify`, the `jek-verifier` crate).

#[path = "jek-attestation-verifier.rs"]
mod program;

fn main() -> std::process::ExitCode {
    program::main()
}
