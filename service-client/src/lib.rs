//! # jek-service-client: talking to jek's attestation service
//!
//! What the `jek` CLI, the containerd shim and relying parties need of the service, without
//! the server (axum, SQLite, PostgreSQL, the TPM access of the agent):
//!
//! - [`wire`]: the records both APIs exchange, as serde types;
//! - [`client`]: a pod's signed result fetched and checked against the verifier's JWKS, a
//!   token checked on its own, and pods registered and removed (the shim's
//!   self-registration);
//! - [`tls`]: the HTTP client (rustls, a private CA, a client certificate, bounded bodies).
#![forbid(unsafe_code)]

pub mod client;
pub mod tls;
pub mod wire;

/// Whether `id` is a pod identifier as agents and the verifier name registrations: 32
/// lowercase hex digits.
pub fn valid_pod_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Now, in Unix seconds.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
