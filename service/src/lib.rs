//! # jek-service: the attestation service
//!
//! - [`agent`]: `jek-agent`, one per host, the only process that talks to the host's pod
//!   TPMs; a thin HTTP view of each pod's TPM (identity, activation, quote);
//! - [`verifier`], [`rounds`], [`api`]: `jek-verifier`, which registers pods through their
//!   agents (EK chain and credential activation once), attests every pod continuously with
//!   fresh nonces, signs each result as an EAR JWT (ES256) and serves it, the JWKS, the
//!   policy reload and the fleet page ([`page`]);
//! - [`store`]: SQLite (default) or PostgreSQL (replicas with leases);
//! - [`webhook`]: status changes delivered from a transactional outbox;
//! - [`auth`]: who may call the verifier (client certificates, bearer tokens, roles);
//! - [`wire`]: the records both APIs exchange; [`http`]: TLS, limits, JSON errors.
#![forbid(unsafe_code)]

// The wire records and the client side live in jek-service-client, which the CLI and the
// shim link without the server.
pub use jek_service_client::{client, wire};

pub mod agent;
pub mod api;
pub mod auth;
pub mod http;
pub mod page;
pub mod remote;
pub mod rounds;
pub mod store;
pub mod verifier;
pub mod webhook;
