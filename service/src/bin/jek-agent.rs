//! `jek-agent`: the host's attestation agent (see `jek_service::agent`). Parses arguments,
//! serves until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use jek_service::http::{Listener, TlsFiles};

/// The host agent: serves the host's pod TPMs to jek verifiers (docs/service.md).
#[derive(Debug, Parser)]
#[command(name = "jek-agent", version)]
struct Args {
    /// Address to listen on (plain HTTP only on loopback).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// The host's registration store, where `jek boot --keep-tpm` registers pods; default
    /// $XDG_DATA_HOME/jek/registry, else ~/.local/share/jek/registry.
    #[arg(long, value_name = "DIR")]
    registry: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long one pod's TPM work may take, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Log each request's TPM work.
    #[arg(short, long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    jek_service::http::init_logging(args.verbose);
    let tls = args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles {
        cert,
        key,
        client_ca: None,
    });
    let config = jek_service::agent::AgentConfig {
        registry: args
            .registry
            .unwrap_or_else(jek_loader::paths::default_registry),
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jek-agent: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(async move {
        let listener = match Listener::bind(args.listen, tls.as_ref()).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("jek-agent: {}", jek_fsio::chain_line(&e));
                return ExitCode::from(2);
            }
        };
        jek_service::http::announce("jek-agent", &listener);
        listener
            .serve(
                jek_service::agent::router(config),
                jek_service::http::terminated(),
            )
            .await;
        ExitCode::SUCCESS
    })
}
