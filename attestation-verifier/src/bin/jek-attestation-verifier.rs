//! `jek-attestation-verifier`: the attestation verifier (see the `jek_attestation_verifier`
//! library). Parses arguments, opens the store, serves until SIGINT or SIGTERM; SIGHUP
//! reloads the policy. `jek-verifier` is the same program under its earlier name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use jek_attestation_verifier::service::{Judge, Service, VerifierConfig};
use jek_service_server::auth::{Clients, Role, TokenFile};
use jek_service_server::http::{Listener, TlsFiles};

/// The program's name in its help, messages and announcement.
const PROGRAM: &str = "jek-attestation-verifier";

/// The verifier: registers pods, attests them continuously and serves signed results
/// (docs/service.md).
#[derive(Debug, Parser)]
#[command(
    name = PROGRAM,
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (plain HTTP only on loopback).
    #[arg(long, default_value = "127.0.0.1:7080")]
    listen: SocketAddr,
    /// Policy file: trusted signers, floor, revocations, `attestation.ek_ca`, `images`.
    #[arg(long, required = true)]
    policy: Option<PathBuf>,
    /// Bearer tokens clients may present: lines of `ROLE NAME sha256:HEX` (make one with
    /// `jek-attestation-verifier add-token`). At least one of --tokens and --client-ca is needed.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// The CA (PEM) whose client certificates are accepted (mutual TLS; needs
    /// --tls-cert): the subject's CN names the client, `O=jek:admin` or `O=jek:reader`
    /// its role.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// A bundle file registrations may name by its SHA-256 (repeat).
    #[arg(long = "bundle", required = true)]
    bundles: Vec<PathBuf>,
    /// The store: a SQLite file (default $XDG_DATA_HOME/jek/verifier.db), or a
    /// `postgres://` URL shared by replicas.
    #[arg(long)]
    store: Option<String>,
    /// How often each pod is quoted (for example 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long an agent may take to answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    agent_timeout: Duration,
    /// How long a signed result stays valid (its `exp`); default three intervals plus the
    /// agent timeout, so that a pod that stops answering loses its result that soon.
    #[arg(long, value_parser = humantime::parse_duration)]
    result_ttl: Option<Duration>,
    /// At most this many pods are attested at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// At most this many rounds run at once for the pods behind one agent; an agent that
    /// stops answering is also left alone for one interval, then two, up to 16.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    agent_concurrency: usize,
    /// At most this many pods may be registered behind one agent.
    #[arg(long, default_value_t = 256)]
    max_pods_per_agent: usize,
    /// This replica's name (unique among replicas sharing a database); default host:pid.
    #[arg(long)]
    replica: Option<String>,
    /// Called with a JSON POST on every status change (retried with backoff).
    #[arg(long)]
    webhook: Option<String>,
    /// Extra trust roots (PEM) for agents, the webhook and image registries over HTTPS.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The client certificate (PEM chain, `O=jek:verifier`) presented to agents over
    /// HTTPS; agents on this host's Unix sockets know the verifier by its uid instead.
    #[arg(long, value_name = "FILE", requires = "agent_key")]
    agent_cert: Option<PathBuf>,
    /// The private key (PEM, mode 0600) of --agent-cert.
    #[arg(long, value_name = "FILE", requires = "agent_cert")]
    agent_key: Option<PathBuf>,
    /// The result-signing key (PKCS#8 PEM, ECDSA P-256); created if the file does not
    /// exist. Without it, a new key is made at every start.
    #[arg(long, value_name = "FILE")]
    result_key: Option<PathBuf>,
    /// Image registries in pod files are reached over plain HTTP (a local registry).
    #[arg(long)]
    plain_http: bool,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log every round.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Adds a client to a tokens file (created, mode 0600, if missing) and prints its new
    /// bearer token once: the file keeps only the token's SHA-256.
    AddToken {
        /// The tokens file.
        #[arg(long, value_name = "FILE")]
        tokens: PathBuf,
        /// The client's role.
        #[arg(long, value_parser = token_role)]
        role: Role,
        /// The client's name (in logs and audit records).
        name: String,
    },
}

/// A count of at least one.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

/// A role a token may carry: reader or admin.
fn token_role(name: &str) -> Result<Role, String> {
    match Role::from_name(name) {
        Some(r @ (Role::Reader | Role::Admin)) => Ok(r),
        _ => Err(format!("{name:?} is not a token role: reader or admin")),
    }
}

fn add_token(tokens: &std::path::Path, role: Role, name: &str) -> ExitCode {
    match jek_service_server::auth::add_token(tokens, role, name) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, jek_errors::chain_line(&e)),
    }
}

fn fail(code: u8, what: impl std::fmt::Display) -> ExitCode {
    eprintln!("{PROGRAM}: {what}");
    ExitCode::from(code)
}

/// Runs the program (also the entry of the `jek-verifier` alias).
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::AddToken { tokens, role, name }) = &args.command {
        return add_token(tokens, *role, name);
    }
    let Some(policy) = args.policy.clone() else {
        return fail(2, "--policy is required");
    };
    jek_service_server::http::init_logging(args.verbose);
    if args.tokens.is_none() && args.client_ca.is_none() {
        return fail(
            2,
            "no client authentication: give --tokens FILE, or --client-ca FILE with --tls-cert \
             (every route but the health check and the JWKS needs an authenticated client, \
             on loopback too)",
        );
    }
    let clients = Clients {
        tokens: match args.tokens.as_deref().map(TokenFile::load).transpose() {
            Ok(t) => t,
            Err(e) => return fail(2, jek_errors::chain_line(&e)),
        },
        certificates: args.client_ca.is_some(),
        peers: None,
    };
    let images =
        match jek_oci::ClientOptions::from_environment(args.plain_http, args.ca_file.as_deref()) {
            Ok(o) => o,
            Err(e) => return fail(2, jek_errors::chain_line(&e)),
        };
    let replica = args.replica.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}:{}", host.trim(), std::process::id())
    });
    let config = VerifierConfig {
        policy,
        bundles: args.bundles.clone(),
        interval: args.interval,
        agent_timeout: args.agent_timeout,
        result_ttl: args
            .result_ttl
            .unwrap_or_else(|| args.interval.saturating_mul(3) + args.agent_timeout),
        concurrency: args.concurrency,
        agent_concurrency: args.agent_concurrency,
        max_pods_per_agent: args.max_pods_per_agent,
        replica,
        webhook: args.webhook.clone(),
        ca_file: args.ca_file.clone(),
        agent_identity: args.agent_cert.clone().zip(args.agent_key.clone()),
        images,
    };
    let judge = match Judge::load(&config) {
        Ok(j) => j,
        Err(e) => return fail(2, jek_errors::chain_line(&e)),
    };
    let key = match jek_attestation_verifier::service::load_result_key(args.result_key.as_deref()) {
        Ok(k) => k,
        Err(e) => return fail(2, e),
    };
    let store = match jek_attestation_verifier::store::open(args.store.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(3, e),
    };
    let tls = args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles {
        cert,
        key,
        client_ca: args.client_ca.clone(),
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(3, format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let svc = match Service::new(config, store, key, judge) {
            Ok(s) => s,
            Err(e) => return fail(2, e),
        };
        if let Err(e) = svc.publish_key().await {
            return fail(3, e);
        }
        let listener = match Listener::bind(args.listen, tls.as_ref()).await {
            Ok(l) => l,
            Err(e) => return fail(2, jek_errors::chain_line(&e)),
        };
        jek_service_server::http::announce(PROGRAM, &listener);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let rounds = tokio::spawn(jek_attestation_verifier::rounds::run(
            svc.clone(),
            stop_rx.clone(),
        ));
        let hooks = svc.config.webhook.clone().map(|url| {
            tokio::spawn(jek_attestation_verifier::webhook::run(
                svc.clone(),
                url,
                stop_rx.clone(),
            ))
        });
        tokio::spawn(reload_on_hangup(svc.clone()));
        listener
            .serve(
                jek_attestation_verifier::api::router(svc.clone(), clients),
                jek_service_server::http::terminated(),
            )
            .await;
        let _ = stop_tx.send(true);
        let _ = rounds.await;
        if let Some(h) = hooks {
            let _ = h.await;
        }
        ExitCode::SUCCESS
    })
}

async fn reload_on_hangup(svc: Arc<Service>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let svc2 = svc.clone();
        match tokio::task::spawn_blocking(move || svc2.reload()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %jek_errors::chain_line(&e), "SIGHUP: the policy was not reloaded")
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: reload task failed"),
        }
    }
}
