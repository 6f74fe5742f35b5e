//! # jek-service-server: what jek's two HTTP servers share
//!
//! The host agent (`jek-agent`) and the attestation verifier (`jek-attestation-verifier`)
//! are separate crates with separate jobs; both serve HTTP/1.1 and JSON under `/v1/` and
//! must refuse every caller without the credential its route needs. That part is here,
//! once:
//!
//! - [`auth`]: who may call the verifier and the agent (client certificates, bearer tokens,
//!   peer uids on a Unix socket), the roles, and the table of routes each server allows;
//! - [`http`]: listening on TCP with or without TLS (rustls) or on a Unix socket, the gate
//!   in front of every route, JSON error answers and the body-size limit.
//!
//! The records the servers exchange, and their clients, are in `jek-service-client`, which
//! the CLI and the shim link without any server.
#![forbid(unsafe_code)]

pub mod auth;
pub mod http;
