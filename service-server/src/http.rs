//! What both servers share: listening on TCP with or without TLS (rustls) or on a Unix
//! socket, the gate that lets a request reach its route only with the credential it needs,
//! JSON error answers and the body-size limit.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use jek_service_client::wire::ErrorBody;

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

/// Where a server listens: a TCP address, or a Unix socket (`unix:/absolute/path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket's path (absolute).
    Unix(PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = Path::new(path);
            if !path.is_absolute() || path.file_name().is_none() {
                return Err(format!(
                    "{s:?}: a Unix socket is `unix:` and an absolute path to a file"
                ));
            }
            return Ok(Endpoint::Unix(path.to_path_buf()));
        }
        s.parse().map(Endpoint::Tcp).map_err(|_| {
            format!("{s:?} is neither an address and port (127.0.0.1:7070) nor unix:/path/to.sock")
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
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
    /// The Unix socket cannot be made.
    #[error("cannot listen on unix:{path}: {reason}")]
    Unix {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        reason: String,
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
    bound: Bound,
}

enum Bound {
    Tcp {
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    },
    Unix {
        listener: tokio::net::UnixListener,
        path: PathBuf,
    },
}

/// What a connection tells about its client, put in the extensions of each of its
/// requests for the gate to read.
#[derive(Clone, Default)]
struct ConnInfo {
    certificate: Option<crate::auth::ClientCertificate>,
    peer: Option<crate::auth::PeerCredentials>,
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
        Ok(Listener {
            bound: Bound::Tcp { listener, tls },
        })
    }

    /// Binds `endpoint`: a TCP address as [`Listener::bind`] does; a Unix socket with
    /// [`bind_unix`]'s rules and file mode `unix_mode` (TLS is not served there: a Unix
    /// socket's clients are known by their uid).
    pub async fn bind_endpoint(
        endpoint: &Endpoint,
        tls: Option<&TlsFiles>,
        unix_mode: u32,
    ) -> Result<Self, ServeError> {
        match endpoint {
            Endpoint::Tcp(addr) => Self::bind(*addr, tls).await,
            Endpoint::Unix(path) if tls.is_some() => Err(ServeError::Unix {
                path: path.clone(),
                reason: "TLS is served on TCP only; a Unix socket's clients are known by their uid"
                    .into(),
            }),
            Endpoint::Unix(path) => {
                let listener = bind_unix(path, unix_mode)?;
                Ok(Listener {
                    bound: Bound::Unix {
                        listener,
                        path: path.clone(),
                    },
                })
            }
        }
    }

    /// Its URL: `http://ADDR`, `https://ADDR` or `unix:/path`.
    pub fn url(&self) -> String {
        match &self.bound {
            Bound::Tcp { listener, tls } => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                match listener.local_addr() {
                    Ok(addr) => format!("{scheme}://{addr}"),
                    Err(_) => format!("{scheme}://?"),
                }
            }
            Bound::Unix { path, .. } => format!("unix:{}", path.display()),
        }
    }

    /// Serves `app` until `shutdown` resolves. Each connection has a header timeout, so a
    /// client that sends nothing holds nothing for long. A Unix socket is removed when
    /// serving ends.
    pub async fn serve(
        self,
        app: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        match self.bound {
            Bound::Tcp { listener, tls } => loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = &mut shutdown => return,
                };
                let Ok((stream, peer)) = accepted else {
                    continue;
                };
                let app = app.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let Some(acceptor) = tls else {
                        return serve_connection(
                            stream,
                            app,
                            ConnInfo::default(),
                            &peer.to_string(),
                        )
                        .await;
                    };
                    let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                    else {
                        tracing::debug!(%peer, "TLS handshake failed");
                        return;
                    };
                    let certificate = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| {
                            crate::auth::ClientCertificate(crate::auth::principal_from_cert(leaf))
                        });
                    let info = ConnInfo {
                        certificate,
                        peer: None,
                    };
                    serve_connection(s, app, info, &peer.to_string()).await;
                });
            },
            Bound::Unix { listener, path } => {
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        () = &mut shutdown => break,
                    };
                    let Ok((stream, _)) = accepted else {
                        continue;
                    };
                    // The kernel's word on who connected, taken when the client connected.
                    let Ok(cred) = stream.peer_cred() else {
                        continue;
                    };
                    let peer = crate::auth::PeerCredentials {
                        uid: cred.uid(),
                        pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
                    };
                    let info = ConnInfo {
                        certificate: None,
                        peer: Some(peer),
                    };
                    let app = app.clone();
                    tokio::spawn(async move {
                        let who = format!("uid {}", peer.uid);
                        serve_connection(stream, app, info, &who).await;
                    });
                }
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Serves one connection's requests, each with `info` in its extensions.
async fn serve_connection<I>(io: I, app: axum::Router, info: ConnInfo, peer: &str)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service = hyper::service::service_fn(move |mut req: axum::http::Request<_>| {
        let app = app.clone();
        if let Some(c) = &info.certificate {
            req.extensions_mut().insert(c.clone());
        }
        if let Some(p) = info.peer {
            req.extensions_mut().insert(p);
        }
        async move { tower::ServiceExt::oneshot(app, req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Makes the Unix socket `path`, mode `mode`. Its directory is made (mode 0700) when
/// missing. A file already there is replaced only when it is a socket of this user that
/// nothing listens on (a server that died); another user's file, a file that is not a
/// socket, or a live server's socket is an error naming it.
///
/// The socket has the mode umask gives it from `bind` to the `chmod` that follows; the
/// gate's uid check, not the mode, is what keeps other users out.
pub fn bind_unix(path: &Path, mode: u32) -> Result<tokio::net::UnixListener, ServeError> {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _};
    let err = |reason: String| ServeError::Unix {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(format!("cannot make its directory {}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.to_string())),
        Ok(meta) => {
            let me = rustix::process::geteuid().as_raw();
            if !meta.file_type().is_socket() {
                return Err(err("a file that is not a socket is there".into()));
            }
            if meta.uid() != me {
                return Err(err(format!(
                    "a socket of uid {} is there, not of this process's uid {me}",
                    meta.uid()
                )));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err("another server listens on it".into()));
            }
            std::fs::remove_file(path)
                .map_err(|e| err(format!("cannot remove the dead server's socket: {e}")))?;
        }
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| err(format!("cannot set its mode {mode:o}: {e}")))?;
    Ok(listener)
}

/// The gate in front of a server's routes: the credentials it takes, what each route
/// needs, and the realm a 401 names.
pub struct Gate {
    /// The credentials accepted.
    pub clients: crate::auth::Clients,
    /// What a route (as written in the router) needs.
    pub access: fn(&axum::http::Method, &str) -> crate::auth::Access,
    /// The realm of the `WWW-Authenticate` header of a 401.
    pub realm: &'static str,
}

impl Gate {
    /// `router`'s routes behind this gate, as both servers serve them: the gate on every
    /// route, the body-size limit ([`MAX_BODY`]) and JSON answers for axum's rejections.
    pub fn guard<S: Clone + Send + Sync + 'static>(
        self,
        router: axum::Router<S>,
    ) -> axum::Router<S> {
        router
            .route_layer(axum::middleware::from_fn_with_state(Arc::new(self), gate))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .layer(axum::middleware::from_fn(json_rejections))
    }
}

/// Lets a request through to its route when its client may use it (the client is then in
/// the request's extensions, for the audit), else answers 401 or 403. Install with
/// [`Gate::guard`].
pub async fn gate(
    axum::extract::State(gate): axum::extract::State<Arc<Gate>>,
    matched: axum::extract::MatchedPath,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use crate::auth::Refusal;
    let access = (gate.access)(req.method(), matched.as_str());
    let decided = gate.clients.authorize(
        access,
        req.extensions().get::<crate::auth::ClientCertificate>(),
        req.extensions().get::<crate::auth::PeerCredentials>(),
        req.headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    );
    match decided {
        Ok(who) => {
            if let Some(who) = who {
                req.extensions_mut().insert(who);
            }
            next.run(req).await
        }
        Err(refusal @ Refusal::Unauthenticated(_)) => {
            tracing::debug!(path = %matched.as_str(), reason = %refusal, "unauthenticated request refused");
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                refusal.to_string(),
            )
            .into_response();
            if let Ok(v) =
                axum::http::HeaderValue::from_str(&format!("Bearer realm=\"{}\"", gate.realm))
            {
                resp.headers_mut()
                    .insert(axum::http::header::WWW_AUTHENTICATE, v);
            }
            resp
        }
        Err(refusal @ Refusal::Forbidden { .. }) => {
            tracing::warn!(path = %matched.as_str(), reason = %refusal, "request refused");
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", refusal.to_string()).into_response()
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

// The HTTP client, the client certificate loading and the bounded body reader live in
// jek-service-client (the CLI and the shim link them without the server).
pub use jek_service_client::tls::{
    client, client_with_identity, identity_pem, read_body, IdentityError,
};

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
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{program} listening on {}", listener.url());
    let _ = out.flush();
}
