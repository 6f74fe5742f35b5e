//! What both servers share: listening with or without TLS (rustls), JSON error answers,
//! the body-size limit, and the HTTP client the verifier and the CLI use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::wire::ErrorBody;

/// The largest request body either server reads (a registration's pod file is the largest).
pub const MAX_BODY: usize = 256 << 10;

/// An error answer: a status, a stable code and a sentence naming what was wrong.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with `status`, `code` and `error`.
    pub fn new(status: StatusCode, code: &str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code: code.to_string(),
                error: error.into(),
            },
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", error)
    }

    /// 404: no such pod (or other resource).
    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", error)
    }

    /// 500: this server failed.
    pub fn internal(error: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Turns axum's own rejections (bad JSON, wrong content type, a body over the limit) into
/// the same JSON error shape as every other error.
pub async fn json_rejections(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (code, text) = match status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ("too_large", format!("the body is over {MAX_BODY} bytes"))
            }
            StatusCode::NOT_FOUND => ("not_found", "no such path".to_string()),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("method_not_allowed", "method not allowed here".to_string())
            }
            _ => {
                let bytes = axum::body::to_bytes(resp.into_body(), 4096)
                    .await
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes).into_owned();
                // axum answers a body that does not deserialize with 422; it is a
                // malformed request like any other.
                let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
                    StatusCode::BAD_REQUEST
                } else {
                    status
                };
                return ApiError::new(status, "bad_request", text).into_response();
            }
        };
        return ApiError::new(status, code, text).into_response();
    }
    resp
}

/// TLS for a server: a certificate chain and its private key, both PEM, and the CA that
/// issues client certificates, if clients may present one.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
    /// The CA (PEM) whose client certificates are accepted. A client without one may
    /// still connect (the health check and the JWKS are public, and a bearer token is
    /// another credential); which routes need what is the router's business.
    pub client_ca: Option<PathBuf>,
}

/// Why a server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Plain HTTP was asked for on an address other than loopback.
    #[error("{addr} is not a loopback address: plain HTTP is only served on loopback; give --tls-cert and --tls-key")]
    PlainOffLoopback {
        /// The address.
        addr: SocketAddr,
    },
    /// A TLS file cannot be read or used.
    #[error("TLS {what} {path}: {reason}")]
    Tls {
        /// Certificate or key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let err = |what, path: &Path, reason: String| ServeError::Tls {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err("certificate", &files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(
            "certificate",
            &files.cert,
            "no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| err("key", &files.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("certificate", &files.cert, e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            jek_fsio::check_strict(ca).map_err(|e| err("client CA", ca, e.to_string()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| err("client CA", ca, e.to_string()))?
            {
                roots
                    .add(cert)
                    .map_err(|e| err("client CA", ca, e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(err("client CA", ca, "no certificate in the file".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| err("client CA", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| err("key", &files.key, e.to_string()))?;
    Ok(Arc::new(config))
}

/// A bound server, ready to serve.
pub struct Listener {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Listener {
    /// Binds `addr`; with `tls`, serves HTTPS, else plain HTTP (loopback only).
    pub async fn bind(addr: SocketAddr, tls: Option<&TlsFiles>) -> Result<Self, ServeError> {
        let tls = match tls {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(tls_config(files)?)),
            None if addr.ip().is_loopback() => None,
            None => return Err(ServeError::PlainOffLoopback { addr }),
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Listener { listener, tls })
    }

    /// The address bound (port 0 becomes the port the system chose).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `app` until `shutdown` resolves. Each connection has a header timeout, so a
    /// client that sends nothing holds nothing for long.
    pub async fn serve(
        self,
        app: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                () = &mut shutdown => return,
            };
            let Ok((stream, peer)) = accepted else {
                continue;
            };
            let app = app.clone();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let service = |client: Option<crate::auth::ClientCertificate>| {
                    hyper::service::service_fn(move |mut req: axum::http::Request<_>| {
                        let app = app.clone();
                        if let Some(c) = &client {
                            req.extensions_mut().insert(c.clone());
                        }
                        async move { tower::ServiceExt::oneshot(app, req).await }
                    })
                };
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10));
                let _ = TokioExecutor::new();
                let result = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => {
                                let client = s
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .map(|leaf| {
                                        crate::auth::ClientCertificate(
                                            crate::auth::principal_from_cert(leaf),
                                        )
                                    });
                                builder
                                    .serve_connection(TokioIo::new(s), service(client))
                                    .await
                            }
                            _ => {
                                tracing::debug!(%peer, "TLS handshake failed");
                                return;
                            }
                        }
                    }
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service(None))
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// The HTTP client the verifier talks to agents and webhooks with, and the CLI to the
/// verifier: rustls, the system's roots plus `ca_pem`, and a per-request timeout.
pub fn client(ca_pem: Option<&[u8]>, timeout: Duration) -> Result<reqwest::Client, String> {
    client_with_identity(ca_pem, None, timeout)
}

/// [`client`], presenting a client certificate: `identity_pem` holds the chain and its
/// private key, PEM.
pub fn client_with_identity(
    ca_pem: Option<&[u8]>,
    identity_pem: Option<&[u8]>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
        builder = builder.tls_certs_merge(certs);
    }
    if let Some(pem) = identity_pem {
        let identity = reqwest::Identity::from_pem(pem)
            .map_err(|e| format!("the client certificate and key: {e}"))?;
        builder = builder.identity(identity);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Reads a response body of at most `limit` bytes.
pub async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > limit {
            return Err(format!("the answer is over {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Logs to stderr: info and up, or debug with `verbose`; `RUST_LOG` overrides.
pub fn init_logging(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Prints the URL a server listens on, as its first line on stdout (tests and scripts
/// read it, so `--listen 127.0.0.1:0` can pick a free port).
pub fn announce(program: &str, listener: &Listener) {
    use std::io::Write as _;
    let scheme = if listener.is_tls() { "https" } else { "http" };
    if let Ok(addr) = listener.local_addr() {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{program} listening on {scheme}://{addr}");
        let _ = out.flush();
    }
}
