//! `jek-agent`: the host's attestation agent (see the `jek_agent` library). Parses arguments,
//! serves until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use jek_service_server::auth::{Clients, PeerUids, Role};
use jek_service_server::http::{Endpoint, Listener, TlsFiles};

/// The host agent: serves the host's pod TPMs to jek verifiers, and to nobody else
/// (docs/service.md).
#[derive(Debug, Parser)]
#[command(name = "jek-agent", version)]
struct Args {
    /// Where to listen: `unix:PATH`, a Unix socket for a verifier on this host (default:
    /// `agent.sock` in $XDG_DATA_HOME/jek, else ~/.local/share/jek); or ADDRESS:PORT, with
    /// --tls-cert, --tls-key and --client-ca (mutual TLS, for a verifier elsewhere).
    #[arg(long, value_name = "ENDPOINT")]
    listen: Option<Endpoint>,
    /// The host's registration store, where `jek boot --keep-tpm` registers pods; default
    /// $XDG_DATA_HOME/jek/registry, else ~/.local/share/jek/registry.
    #[arg(long, value_name = "DIR")]
    registry: Option<PathBuf>,
    /// On a Unix socket: the uid of a verifier that may call (repeat). Default: this
    /// process's own uid. Every other uid is refused, root's too.
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uids: Vec<u32>,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) that issues verifiers' client certificates: only a certificate naming
    /// `O=jek:verifier` may call.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// How long one pod's TPM work may take, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Log each request's TPM work.
    #[arg(short, long)]
    verbose: bool,
}

fn fail(code: u8, what: impl std::fmt::Display) -> ExitCode {
    eprintln!("jek-agent: {what}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args = Args::parse();
    jek_service_server::http::init_logging(args.verbose);
    let endpoint = args
        .listen
        .clone()
        .unwrap_or_else(|| Endpoint::Unix(jek_config::paths::default_agent_socket()));
    let me = rustix::process::geteuid().as_raw();
    // Who may call: the verifier alone, known by its certificate or by its uid.
    let (clients, unix_mode) = match &endpoint {
        Endpoint::Tcp(_) => {
            if args.client_ca.is_none() {
                return fail(
                    2,
                    "the agent serves only the verifier: on TCP give --tls-cert, --tls-key and \
                     --client-ca (mutual TLS), or listen on a Unix socket (--listen unix:PATH)",
                );
            }
            if !args.allow_uids.is_empty() {
                return fail(2, "--allow-uid is for a Unix socket (--listen unix:PATH)");
            }
            let clients = Clients {
                certificates: true,
                ..Clients::default()
            };
            (clients, 0)
        }
        Endpoint::Unix(_) => {
            if args.client_ca.is_some() {
                return fail(2, "--client-ca is for TCP: on a Unix socket, callers are known by their uid (--allow-uid)");
            }
            let uids = if args.allow_uids.is_empty() {
                vec![me]
            } else {
                args.allow_uids.clone()
            };
            // Only this user can connect unless other uids are allowed; the uid check
            // decides either way.
            let mode = if uids.iter().all(|u| *u == me) {
                0o600
            } else {
                0o666
            };
            let clients = Clients {
                peers: Some(PeerUids {
                    uids,
                    role: Role::Verifier,
                }),
                ..Clients::default()
            };
            (clients, mode)
        }
    };
    let tls = args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles {
        cert,
        key,
        client_ca: args.client_ca.clone(),
    });
    let config = jek_agent::AgentConfig {
        registry: args
            .registry
            .unwrap_or_else(jek_config::paths::default_registry),
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(3, format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let listener = match Listener::bind_endpoint(&endpoint, tls.as_ref(), unix_mode).await {
            Ok(l) => l,
            Err(e) => return fail(2, jek_errors::chain_line(&e)),
        };
        jek_service_server::http::announce("jek-agent", &listener);
        listener
            .serve(
                jek_agent::router(config, clients),
                jek_service_server::http::terminated(),
            )
            .await;
        ExitCode::SUCCESS
    })
}
