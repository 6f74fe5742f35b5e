//! # jek-attestation-verifier: the attestation service's verifier
//!
//! `jek-attestation-verifier` (also installed as `jek-verifier`, its earlier name) registers
//! pods through their hosts' agents (EK chain and credential activation once), attests
//! every pod continuously with fresh nonces, signs each result as an EAR JWT (ES256) and
//! serves it, the JWKS, the policy reload and the fleet page. It talks HTTP and SQL only:
//! no KVM, no TPM stack, no loader and no builder are linked (the agent, `jek-agent`, is
//! the one process on a host that talks to its pods' TPMs).
//!
//! - [`service`], [`rounds`], [`api`]: registration, the continuous rounds and the routes;
//!   [`page`]: the fleet page;
//! - [`remote`]: a pod's TPM as the agent serves it, behind `jek_attest::AttestationTpm`;
//! - [`store`]: SQLite (default) or PostgreSQL (replicas with leases);
//! - [`webhook`]: status changes delivered from a transactional outbox.
//!
//! Who may call which route, TLS and listening are `jek-service-server`'s; the records on
//! the wire and the clients are `jek-service-client`'s.
#![forbid(unsafe_code)]

pub mod api;
pub mod page;
pub mod remote;
pub mod rounds;
pub mod service;
pub mod store;
pub mod webhook;
